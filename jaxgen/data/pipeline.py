"""The input pipeline: TFDS (or a folder of images) -> tf.data -> numpy batches.

Images come out as float32 NHWC in [-1, 1] (``label`` int32 where the dataset has one). The
pipeline is split per process with ``tfds.even_splits`` (or ``Dataset.shard`` for folders),
so each host reads only its own examples, and it is *positioned*: the stream of training
batches is a pure function of (seed, process, step), shuffled afresh each epoch with the
seed ``(seed, epoch)``. ``start_step`` resumes it exactly where a run stopped, skipping whole
epochs for free and at most one epoch of examples.

TensorFlow is only used on the host: it is never allowed to claim a GPU.
"""
from __future__ import annotations

import functools
import glob
import os
from typing import Iterator

import jax
import numpy as np

# name -> how images are brought to a square of ``resolution``.
CROPS = {
    'jaxgen_digits': 'resize',
    'mnist': 'resize',
    'fashion_mnist': 'resize',
    'binarized_mnist': 'resize',  # Stored as 0/1 pixels: VALUE_SCALE maps them to 0/255.
    'cifar10': 'resize',
    'celeb_a': 'celeba',        # DCGAN-style: centre 108x108 crop of the 218x178 image, resize.
    'lsun/bedroom': 'center',   # centre square crop, resize.
    'caltech_birds2011': 'center',
    'oxford_flowers102': 'center',
}
# name -> factor bringing stored pixel values to 0..255.
VALUE_SCALE = {'binarized_mnist': 255.0}
FOLDER = 'folder'
TOY2D = ('toy2d_ring', 'toy2d_grid')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


class DatasetNotAvailableError(RuntimeError):
  """A dataset that is not prepared locally (nothing is ever downloaded)."""


def known_names():
  return tuple(CROPS) + (FOLDER,) + TOY2D


@functools.cache
def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # TF must never claim an accelerator.
  return tf


def default_data_dir(data_dir=None):
  return os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets')


def validate(data_config):
  """Checks names and values before anything is read; raises ValueError."""
  name = data_config.name
  if name not in known_names():
    raise ValueError(f'Unknown dataset {name!r}; accepted: {", ".join(known_names())} '
                     '(a TFDS name from that list, or "folder" with data.path).')
  if name in TOY2D:
    return
  res = data_config.resolution
  if not isinstance(res, int) or res < 1:
    raise ValueError(f'data.resolution must be a positive integer; got {res!r}.')
  if name == 'jaxgen_digits':
    from jaxgen.data import digits  # pylint: disable=g-import-not-at-top
    if res not in digits.RESOLUTIONS:
      raise ValueError(f'jaxgen_digits comes in resolutions {digits.RESOLUTIONS}; got {res}.')
  if data_config.get('channels', 3) not in (1, 3):
    raise ValueError(f'data.channels must be 1 or 3; got {data_config.channels!r}.')
  if name == FOLDER:
    path = data_config.get('path')
    if not path or not os.path.isdir(path):
      raise ValueError(f'data.name="folder" needs data.path to be a directory of images; '
                       f'got {path!r}.')
    _folder_files(data_config)  # Unreadable files are found here, before any training.


def _tfds_builder(data_config):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _tf()
  name, data_dir = data_config.name, default_data_dir(data_config.get('data_dir'))
  if name == 'jaxgen_digits':
    from jaxgen.data import digits  # pylint: disable=g-import-not-at-top
    builder = digits.JaxgenDigits(config=str(data_config.resolution), data_dir=data_dir)
    if not builder.is_prepared():  # Built from data inside scikit-learn: no network.
      print(f'Preparing jaxgen_digits/{data_config.resolution} in {data_dir} (once, seconds).')
      tfds.display_progress_bar(False)
      try:
        builder.download_and_prepare()
      finally:
        tfds.display_progress_bar(True)
    return builder
  return tfds.builder(name, data_dir=data_dir)


def _not_prepared(data_config, builder):
  name, data_dir = data_config.name, default_data_dir(data_config.get('data_dir'))
  return DatasetNotAvailableError(
      f'TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} '
      f'(looked for {builder.data_dir}) and jaxgen never downloads. Prepare it on a machine '
      f'with network access: `tfds build {name} --data_dir={data_dir}` (some sets, e.g. '
      'celeb_a and lsun, need manual downloads: see the TFDS catalogue), then copy the folder '
      'here and pass --config.data.data_dir=<that folder> (or set TFDS_DATA_DIR).')


def _process_split(split):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return split
  return tfds.even_splits(split, n=jax.process_count(), drop_remainder=True)[jax.process_index()]


class BadImagesError(ValueError):
  """Unreadable image files in a folder dataset (data.skip_bad_images=False)."""


@functools.cache
def _scan_folder(root: str, channels: int, skip_bad: bool):
  """Lists readable images under ``root``; counts unreadable ones and channel conversions.

  Every file is opened and verified once (PIL), so a corrupt file is found before training
  rather than as a crash mid-run. Returns (files, bad files, files whose channel count
  differs from ``channels``; those are converted on decode).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = sorted(f for f in glob.glob(os.path.join(root, '**', '*'), recursive=True)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) found under {root!r}.')
  good, bad, converted = [], [], []
  for f in files:
    try:
      with Image.open(f) as im:
        im.verify()
      with Image.open(f) as im:
        im.load()
        bands = len(im.getbands())
    except Exception:  # pylint: disable=broad-except
      bad.append(f)
      continue
    good.append(f)
    if bands not in (channels, channels + 1):  # An alpha band is dropped silently.
      converted.append(f)
  if bad and not skip_bad:
    shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
    raise BadImagesError(f'{len(bad)} of {len(files)} files under {root!r} are not readable '
                         f'images: {shown}. Remove them, or set '
                         '--config.data.skip_bad_images=True to skip them.')
  if not good:
    raise ValueError(f'None of the {len(files)} image files under {root!r} is readable.')
  if jax.process_index() == 0 and (bad or converted):
    print(f'{root}: {len(good)} images; skipped {len(bad)} unreadable; converted '
          f'{len(converted)} to {channels} channel(s).')
  return tuple(good), tuple(bad), tuple(converted)


def _folder_files(data_config):
  files, _, _ = _scan_folder(os.path.abspath(data_config.path), data_config.get('channels', 3),
                             bool(data_config.get('skip_bad_images', False)))
  return list(files)


def _preprocess(image, data_config):
  """uint8 HWC of any size -> float32 [res, res, channels] in [-1, 1]."""
  tf = _tf()
  res, channels = data_config.resolution, data_config.get('channels', 3)
  crop = CROPS.get(data_config.name, data_config.get('crop', 'center'))
  image = tf.cast(image, tf.float32) * VALUE_SCALE.get(data_config.name, 1.0)
  if crop == 'celeba':
    image = tf.image.crop_to_bounding_box(image, 55, 35, 108, 108)
  elif crop == 'center':
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    s = tf.minimum(h, w)
    image = tf.image.crop_to_bounding_box(image, (h - s) // 2, (w - s) // 2, s, s)
  image = tf.image.resize(image, (res, res), method='bicubic', antialias=True)
  if image.shape[-1] == 1 and channels == 3:
    image = tf.tile(image, (1, 1, 3))
  elif image.shape[-1] in (3, 4) and channels == 1:
    image = tf.image.rgb_to_grayscale(image[..., :3])
  elif image.shape[-1] == 4:
    image = image[..., :3]
  image = tf.clip_by_value(image, 0.0, 255.0)
  return tf.ensure_shape(image / 127.5 - 1.0, (res, res, channels))


def _base_dataset(data_config, split, whole: bool = False, builder=None, extra=None):
  """Returns (deterministically ordered tf.data of {'image', 'label'?}, num_examples).

  This process's share of ``split``, or with ``whole`` every example (for evaluation: the
  same numbers whatever the number of processes). ``builder`` (a prepared TFDS builder)
  replaces the one named by ``data_config.name``; ``extra(example) -> dict`` adds features
  to each element (e.g. captions).
  """
  tf = _tf()
  if data_config.name == FOLDER:
    files = _folder_files(data_config)
    if not whole:
      files = files[jax.process_index()::jax.process_count()]
    channels = data_config.get('channels', 3)

    def load(path):
      image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                 expand_animations=False)
      return {'image': _preprocess(image, data_config)}

    ds = tf.data.Dataset.from_tensor_slices(files).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds, len(files)

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = builder or _tfds_builder(data_config)
  splits = builder.info.splits
  if splits and split not in splits:
    raise ValueError(f'Dataset {data_config.name!r} has no split {split!r}; it has: '
                     f'{", ".join(splits)}.')
  psplit = split if whole else _process_split(split)
  try:  # Fails at once when the data is absent (tfds.testing.mock_data also lands here).
    ds = builder.as_dataset(split=psplit, shuffle_files=False,
                            read_config=tfds.ReadConfig(interleave_cycle_length=1))
  except AssertionError as e:
    raise _not_prepared(data_config, builder) from e
  if splits:
    num = splits[psplit].num_examples
  else:
    num = int(ds.cardinality())
    if num < 0:
      num = int(ds.reduce(0, lambda n, _: n + 1))

  def prep(ex):
    out = {'image': _preprocess(ex['image'], data_config)}
    if 'label' in ex:
      out['label'] = tf.cast(ex['label'], tf.int32)
    if extra is not None:
      out.update(extra(ex))
    return out

  return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), num


def make_dataset(data_config, split: str, batch_size: int, *, seed: int = 0,
                 start_step: int = 0, repeat: bool = True, whole: bool = False
                 ) -> Iterator[dict]:
  """Yields numpy batches of ``batch_size`` examples from this process's share of ``split``.

  With ``repeat`` (training) batches never end, each epoch is reshuffled with seed
  ``(seed, epoch)``, incomplete batches are dropped at the end of the stream only (epochs
  run into each other), and ``start_step`` positions the stream at batch ``start_step``.
  Without it, the split is read once in order and the last batch may be short; ``whole``
  then reads every example of the split rather than this process's share.
  """
  validate(data_config)
  if data_config.name in TOY2D:
    from jaxgen.data import toy2d  # pylint: disable=g-import-not-at-top
    return toy2d.make_dataset(data_config, split, batch_size, seed=seed, start_step=start_step)
  base, num = _base_dataset(data_config, split, whole=whole and not repeat)
  if data_config.get('cache', True):
    base = base.cache()
  if not repeat:
    return _numpy_iter(base.batch(batch_size).prefetch(2))
  return _numpy_iter(positioned_batches(base, num, data_config, split, batch_size, seed=seed,
                                        start_step=start_step))


def epoch_seed(seed, epoch):
  """The shuffling seed of epoch ``epoch`` of a stream seeded ``seed`` (ints or tf scalars)."""
  return seed * 1_000_003 + epoch


def positioned_batches(base, num: int, data_config, split: str, batch_size: int, *, seed: int,
                       start_step: int, per_epoch=None):
  """The endless, positioned training stream over ``base`` (``num`` examples), batched.

  Epoch ``e`` is ``base`` shuffled with :func:`epoch_seed` ``(seed, e)`` (no reshuffling on
  re-iteration), then ``per_epoch(dataset, epoch seed)`` when given (e.g. a caption draw);
  epochs run into each other, only whole batches are kept, and the stream starts at batch
  ``start_step``: whole epochs are skipped for free, then at most one epoch of examples.
  """
  tf = _tf()
  if num < batch_size:
    raise ValueError(f'{data_config.name}:{split} has {num} examples on this process, fewer '
                     f'than one batch of {batch_size}.')
  buffer = min(num, data_config.get('shuffle_buffer', 10_000))
  first_epoch, offset = divmod(start_step * batch_size, num)

  def epoch(e):
    s = epoch_seed(seed, e)
    shuffled = base.shuffle(buffer, seed=s, reshuffle_each_iteration=False)
    return shuffled if per_epoch is None else per_epoch(shuffled, s)

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _numpy_iter(ds):
  for batch in ds.as_numpy_iterator():
    yield batch


def split_size(data_config, split: str) -> int:
  """Examples in the whole ``split`` (every process's share together)."""
  validate(data_config)
  return _base_dataset(data_config, split, whole=True)[1]


def load_split_arrays(data_config, split: str, max_examples: int | None = None):
  """Reads (a prefix of) a whole split into memory, the same on every process.

  Returns (images float32 NHWC in [-1, 1], labels or None). For evaluation and statistics:
  every process gets every example, so scores do not depend on the number of processes.
  """
  images, labels = [], []
  n = 0
  for batch in make_dataset(data_config, split, 256, repeat=False, whole=True):
    images.append(batch['image'])
    if 'label' in batch:
      labels.append(batch['label'])
    n += len(batch['image'])
    if max_examples is not None and n >= max_examples:
      break
  images = np.concatenate(images)[:max_examples]
  labels = np.concatenate(labels)[:max_examples] if labels else None
  return images, labels
