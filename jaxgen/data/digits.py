"""``jaxgen_digits``: a TFDS builder over the handwritten digits that ship inside scikit-learn.

The 1,797 real 8x8 digits of the UCI optical-digits set (``sklearn.datasets.load_digits``)
need no network. Grey levels 0..16 are scaled to 0..255 and upsampled with bicubic
interpolation to the resolution of the builder config (8, 16, 32 or 64). A fixed, stratified
split keeps 20 % of each class for ``test``.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

RESOLUTIONS = (8, 16, 32, 64)
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digit_arrays(resolution: int):
  """Returns (images uint8 [N, r, r, 1], labels int64 [N], split 'train'/'test' [N])."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  raw = datasets.load_digits()
  grey = np.clip(np.round(raw.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  if resolution == 8:
    images = grey
  else:
    images = np.stack([np.asarray(Image.fromarray(g).resize((resolution, resolution),
                                                            Image.BICUBIC)) for g in grey])
  labels = raw.target.astype(np.int64)
  rng = np.random.default_rng(SPLIT_SEED)
  split = np.array(['train'] * len(labels), dtype=object)
  for c in range(10):
    idx = np.flatnonzero(labels == c)
    n_test = int(round(TEST_FRACTION * len(idx)))
    split[rng.permutation(idx)[:n_test]] = 'test'
  return images[..., None], labels, split


class JaxgenDigitsConfig(tfds.core.BuilderConfig):

  def __init__(self, *, resolution: int, **kwargs):
    super().__init__(name=str(resolution), description=f'{resolution}x{resolution} grey digits',
                     **kwargs)
    self.resolution = resolution


class JaxgenDigits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits from scikit-learn, upsampled; no download."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [JaxgenDigitsConfig(resolution=r) for r in RESOLUTIONS]

  def _info(self):
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(r, r, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {'train': self._generate_examples('train'), 'test': self._generate_examples('test')}

  def _generate_examples(self, which):
    images, labels, split = digit_arrays(self.builder_config.resolution)
    for i in np.flatnonzero(split == which):
      yield int(i), {'image': images[i], 'label': int(labels[i])}
