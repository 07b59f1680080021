"""TFDS builders for CUB-200-2011 and Oxford-102 with Reed et al.'s ten captions per image.

Reed, Akata, Lee & Schiele ("Learning Deep Representations of Fine-Grained Visual
Descriptions", CVPR 2016) collected ten single-sentence visual descriptions for every image
of the Caltech-UCSD Birds (CUB-200-2011, 11,788 images of 200 species) and the Oxford-102
flowers (8,189 images of 102 species). These are the captions of GAN-INT-CLS (Reed et al.,
ICML 2016), StackGAN, AttnGAN and DF-GAN. Neither set can be downloaded automatically here:
the builders read a ``manual_dir`` laid out as the original archives extract:

CUB (``jaxgen_cub_captions``)::

    <manual_dir>/CUB_200_2011/images/<class dir>/<image>.jpg    # CUB_200_2011.tgz
    <manual_dir>/CUB_200_2011/images.txt, bounding_boxes.txt    # (bbox_crop config only)
    <manual_dir>/<text root>/text_c10/<class dir>/<image>.txt   # Reed's cvpr2016_cub
    <manual_dir>/<text root>/trainvalclasses.txt, testclasses.txt

Oxford-102 (``jaxgen_flowers_captions``)::

    <manual_dir>/jpg/<image>.jpg                                # 102flowers.tgz
    <manual_dir>/<text root>/text_c10/class_<5 digits>/<image>.txt  # Reed's cvpr2016_flowers
    <manual_dir>/<text root>/trainvalclasses.txt, testclasses.txt

where ``<text root>`` is ``<manual_dir>`` itself or one of ``TEXT_ROOTS`` below it (the
archive names ``cvpr2016_cub``/``cvpr2016_flowers``, or ``cub``/``birds``/``flowers``), and
``text_c10`` may also be called ``text`` (the same files as StackGAN/AttnGAN's ``birds/text``).

Splits are Reed's zero-shot class splits: ``train`` holds the images of the classes listed
in ``trainvalclasses.txt`` (150 for CUB, 82 for Oxford), ``test`` those of
``testclasses.txt`` (50 and 20). Without the split files the builder warns and falls back to
the classes in sorted order, the first 150 (82) for train: *not* Reed's split.

Stored per example: ``image`` (JPEG, RGB; grey images are converted), ``captions`` (the
non-empty lines of the caption file, ten in Reed's data), ``label`` (the class number in
the directory name minus one: ``001.Black_footed_Albatross`` -> 0, ``class_00102`` -> 101)
and ``filename`` (``<class dir>/<image stem>``, the key used in StackGAN's
``filenames.pickle``). CUB's ``bbox_crop`` config stores StackGAN's crop: a
square of side 1.5 * max(w, h) centred on the bird's bounding box, clipped to the image.
"""
from __future__ import annotations

import os
import re

import numpy as np
import tensorflow_datasets as tfds

TEXT_ROOTS = ('', 'cvpr2016_cub', 'cvpr2016_flowers', 'cub', 'birds', 'flowers')
TEXT_DIRS = ('text_c10', 'text')
SPLIT_FILES = {'train': 'trainvalclasses.txt', 'test': 'testclasses.txt'}
REED_URL = 'https://github.com/reedscot/cvpr2016 (the "CUB" / "Oxford-102" caption archives)'
CUB_URL = 'https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)'
FLOWERS_URL = 'https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz)'
CUB_NUM_CLASSES, CUB_TRAIN_CLASSES = 200, 150
FLOWERS_NUM_CLASSES, FLOWERS_TRAIN_CLASSES = 102, 82
BBOX_ENLARGE = 0.75  # StackGAN: half-side of the crop = 0.75 * max(w, h).


class ManualDataError(FileNotFoundError):
  """Files missing from a manual_dir; the message says what to download and where."""


def find_text_dir(manual_dir: str, dataset: str) -> str:
  """The caption directory (``text_c10`` or ``text``) under ``manual_dir``, or an error."""
  candidates = [os.path.join(manual_dir, root, name) for root in TEXT_ROOTS
                for name in TEXT_DIRS]
  for path in candidates:
    if os.path.isdir(path):
      return os.path.normpath(path)
  tried = ', '.join(os.path.normpath(p) for p in candidates)
  raise ManualDataError(
      f'No text_c10 caption directory for {dataset} under manual_dir={manual_dir!r} (tried '
      f'{tried}). Download Reed et al.\'s captions from {REED_URL} and extract them so that '
      '<manual_dir>/text_c10/<class dir>/<image>.txt exists.')


def read_captions(path: str) -> list[str]:
  """The non-empty, stripped lines of one caption file (UTF-8, bad bytes replaced)."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [line.strip() for line in f]
  lines = [line for line in lines if line]
  if not lines:
    raise ValueError(f'Caption file {path!r} has no caption lines.')
  return lines


def class_dirs(text_dir: str) -> list[str]:
  dirs = sorted(d for d in os.listdir(text_dir) if os.path.isdir(os.path.join(text_dir, d)))
  if not dirs:
    raise ManualDataError(f'{text_dir!r} holds no class directories.')
  return dirs


def split_classes(text_root: str, classes: list[str], num_train: int) -> dict[str, list[str]]:
  """{'train': [...], 'test': [...]} class dirs from Reed's split files (or a fallback).

  The split files are looked for in ``text_root``, the directory holding the caption folder.
  """
  paths = {s: os.path.join(text_root, f) for s, f in SPLIT_FILES.items()}
  if not all(os.path.isfile(p) for p in paths.values()):
    print(f'WARNING: {" / ".join(SPLIT_FILES.values())} not found in {text_root!r}; using '
          f'the first {num_train} classes in sorted order for train and the rest for test. '
          "This is NOT Reed et al.'s split: copy their split files there for comparable "
          'numbers.')
    ordered = sorted(classes)
    return {'train': ordered[:num_train], 'test': ordered[num_train:]}
  out = {}
  for split, path in paths.items():
    with open(path, encoding='utf-8') as f:
      names = [line.strip() for line in f if line.strip()]
    unknown = [n for n in names if n not in classes]
    if unknown:
      raise ValueError(f'{path!r} names classes that are not directories of text_c10: '
                       f'{unknown[:5]} ({len(unknown)} in all).')
    out[split] = names
  overlap = set(out['train']) & set(out['test'])
  if overlap:
    raise ValueError(f'Train and test class files share classes: {sorted(overlap)[:5]}.')
  return out


def class_index(class_dir: str) -> int:
  """0-based class from the first number in a class directory name ('001.X', 'class_00001')."""
  match = re.search(r'\d+', class_dir)
  if not match or int(match.group()) < 1:
    raise ValueError(f'Class directory {class_dir!r} does not start with a class number '
                     "(expected e.g. '001.Black_footed_Albatross' or 'class_00001').")
  return int(match.group()) - 1


def load_rgb(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB'))


def stackgan_crop(image: np.ndarray, bbox) -> np.ndarray:
  """StackGAN's CUB crop: a square of half-side 0.75 * max(w, h) around the box centre.

  ``bbox`` is CUB's (x, y, width, height) in pixels; the square is clipped to the image.
  """
  x, y, w, h = bbox
  height, width = image.shape[:2]
  r = int(np.maximum(w, h) * BBOX_ENLARGE)
  cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
  y1, y2 = max(0, cy - r), min(height, cy + r)
  x1, x2 = max(0, cx - r), min(width, cx + r)
  return image[y1:y2, x1:x2]


def read_cub_bboxes(cub_root: str) -> dict[str, tuple[float, float, float, float]]:
  """'<class dir>/<image stem>' -> (x, y, w, h) from CUB's images.txt and bounding_boxes.txt."""
  files = {n: os.path.join(cub_root, n) for n in ('images.txt', 'bounding_boxes.txt')}
  missing = [p for p in files.values() if not os.path.isfile(p)]
  if missing:
    raise ManualDataError(f'The bbox_crop config needs {missing}; they ship in {CUB_URL}: '
                          'extract it so that <manual_dir>/CUB_200_2011/images.txt exists.')
  with open(files['images.txt'], encoding='utf-8') as f:
    names = dict(line.split() for line in f if line.strip())
  boxes = {}
  with open(files['bounding_boxes.txt'], encoding='utf-8') as f:
    for line in f:
      if line.strip():
        image_id, *box = line.split()
        boxes[os.path.splitext(names[image_id])[0]] = tuple(float(v) for v in box)
  return boxes


class _ReedCaptionsBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared reading of ``text_c10`` and the class splits."""

  NUM_CLASSES = 0
  NUM_TRAIN_CLASSES = 0
  DATASET = ''

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'captions': tfds.features.Sequence(tfds.features.Text()),
            'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            'filename': tfds.features.Text(),
        }),
        homepage='https://github.com/reedscot/cvpr2016',
    )

  def _image_path(self, manual_dir, class_dir, stem):
    raise NotImplementedError

  def _check_images(self, manual_dir):
    raise NotImplementedError

  def _transform(self, image, key):
    del key
    return image

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise ManualDataError(f'manual_dir {manual_dir!r} for {self.DATASET} does not exist; '
                            'see the jaxgen.data.caption_sets docstring for its layout.')
    text_dir = find_text_dir(manual_dir, self.DATASET)
    self._check_images(manual_dir)
    classes = class_dirs(text_dir)
    if len(classes) != self.NUM_CLASSES:
      print(f'WARNING: {self.DATASET}: {len(classes)} class directories in text_c10 '
            f'(expected {self.NUM_CLASSES}).')
    splits = split_classes(os.path.dirname(text_dir), classes, self.NUM_TRAIN_CLASSES)
    return {s: self._generate_examples(manual_dir, text_dir, names)
            for s, names in splits.items()}

  def _generate_examples(self, manual_dir, text_dir, split_class_dirs):
    for class_dir in split_class_dirs:
      label = class_index(class_dir)
      if label >= self.NUM_CLASSES:
        raise ValueError(f'{self.DATASET}: class {class_dir!r} has index {label}, beyond '
                         f'the {self.NUM_CLASSES} classes.')
      folder = os.path.join(text_dir, class_dir)
      for txt in sorted(f for f in os.listdir(folder) if f.endswith('.txt')):
        stem = txt[:-4]
        key = f'{class_dir}/{stem}'
        path = self._image_path(manual_dir, class_dir, stem)
        if not os.path.isfile(path):
          raise ManualDataError(f'{self.DATASET}: image {path!r} for captions '
                                f'{os.path.join(folder, txt)!r} is missing.')
        yield key, {
            'image': self._transform(load_rgb(path), key),
            'captions': read_captions(os.path.join(folder, txt)),
            'label': label,
            'filename': key,
        }


class JaxgenCubCaptionsConfig(tfds.core.BuilderConfig):

  def __init__(self, *, crop: str, **kwargs):
    super().__init__(name=crop, **kwargs)
    self.crop = crop


class JaxgenCubCaptions(_ReedCaptionsBuilder):
  """CUB-200-2011 birds with Reed et al.'s captions (manual download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      JaxgenCubCaptionsConfig(crop='full', description='whole images'),
      JaxgenCubCaptionsConfig(crop='bbox_crop',
                              description="StackGAN's enlarged bounding-box crop"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Images: {CUB_URL}, extracted to <manual_dir>/CUB_200_2011. Captions and class splits: '
      f'{REED_URL}, extracted so that <manual_dir>/[cvpr2016_cub/]text_c10 and '
      'trainvalclasses.txt / testclasses.txt exist.')
  NUM_CLASSES, NUM_TRAIN_CLASSES, DATASET = CUB_NUM_CLASSES, CUB_TRAIN_CLASSES, 'CUB-200-2011'

  def _check_images(self, manual_dir):
    images = os.path.join(manual_dir, 'CUB_200_2011', 'images')
    if not os.path.isdir(images):
      raise ManualDataError(f'CUB images not found at {images!r}: download {CUB_URL} and '
                            'extract it in manual_dir (it unpacks to CUB_200_2011/).')
    self._boxes = (read_cub_bboxes(os.path.join(manual_dir, 'CUB_200_2011'))
                   if self.builder_config.crop == 'bbox_crop' else None)

  def _image_path(self, manual_dir, class_dir, stem):
    return os.path.join(manual_dir, 'CUB_200_2011', 'images', class_dir, stem + '.jpg')

  def _transform(self, image, key):
    if self._boxes is None:
      return image
    if key not in self._boxes:
      raise ValueError(f'No bounding box for {key!r} in bounding_boxes.txt / images.txt.')
    return stackgan_crop(image, self._boxes[key])


class JaxgenFlowersCaptions(_ReedCaptionsBuilder):
  """Oxford-102 flowers with Reed et al.'s captions (manual download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Images: {FLOWERS_URL}, extracted so that <manual_dir>/jpg/image_00001.jpg exists. '
      f'Captions and class splits: {REED_URL}, extracted so that '
      '<manual_dir>/[cvpr2016_flowers/]text_c10 and trainvalclasses.txt / testclasses.txt '
      'exist.')
  NUM_CLASSES = FLOWERS_NUM_CLASSES
  NUM_TRAIN_CLASSES, DATASET = FLOWERS_TRAIN_CLASSES, 'Oxford-102'

  def _check_images(self, manual_dir):
    images = os.path.join(manual_dir, 'jpg')
    if not os.path.isdir(images):
      raise ManualDataError(f'Oxford-102 images not found at {images!r}: download '
                            f'{FLOWERS_URL} and extract it in manual_dir (it unpacks to jpg/).')

  def _image_path(self, manual_dir, class_dir, stem):
    del class_dir
    return os.path.join(manual_dir, 'jpg', stem + '.jpg')
