"""Classifiers trained in the project, as feature extractors for IS/FID/KID on embedded datasets.

InceptionV3 knows nothing about 8x8 handwritten digits upsampled to 32x32, so, as the "MNIST
score" of the GAN literature, jaxgen scores digit samples in the feature space of a small CNN
trained on the digits themselves: its 10-way softmax gives an IS-style score (at most 10), its
128-d penultimate layer (after ReLU, like Inception's pool_3) FID- and KID-style distances.

One classifier per (dataset, resolution) is trained on the ``train`` split on first use (a
deterministic run from a fixed seed, well under a minute on a laptop CPU), evaluated on the
``test`` split, and cached with its metadata in ``<cache_dir>/classifiers/``. The cache key
includes :data:`TRAIN_VERSION`, so a change of recipe never reuses stale weights; the weights'
SHA-256 names the feature space in cached real-data statistics.

Images go through the same uint8 quantisation as for Inception (what a PNG would store), and
3-channel images are averaged to grey.

Command line (trains or loads, prints test accuracy)::

  python -m jaxgen.metrics.classifier --dataset=jaxgen_digits --resolution=32
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

TRAIN_VERSION = 1
# name -> number of classes. (jaxgen_shapes has its attribute classifier: attributes.py.)
DATASETS = {'jaxgen_digits': 10}
FEATURE_DIM = 128
CACHE_ENV = 'JAXGEN_CACHE_DIR'


def default_cache_dir(cache_dir: str | None = None) -> str:
  if cache_dir:
    return os.path.expanduser(cache_dir)
  if os.environ.get(CACHE_ENV):
    return os.path.expanduser(os.environ[CACHE_ENV])
  return os.path.join(os.path.expanduser(os.environ.get('XDG_CACHE_HOME', '~/.cache')), 'jaxgen')


def quantize(images, grey: bool = True) -> jax.Array:
  """[-1, 1] float (or uint8) NHWC -> [-1, 1] on the 256 uint8 levels; 3 channels averaged
  to grey unless ``grey=False``."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32)
  else:
    x = jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0.0, 255.0)
  if grey and x.shape[-1] == 3:
    x = jnp.mean(x, axis=-1, keepdims=True)
  return x / 127.5 - 1.0


class DigitsCNN(nn.Module):
  """Strided 4x4 stem convs down to 8x8, two 3x3 convs, 2x2 max pool, a 3x3 conv, global
  average, 128-d ReLU features, dropout, logits. Sized for a CPU: the digits hold 8x8 of
  information at any resolution, so full-resolution stages would only cost time."""
  num_classes: int = 10
  width: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    n_stem = max(0, int(round(np.log2(x.shape[1]))) - 3)
    for i in range(n_stem):
      feats = self.width // 2 ** (n_stem - 1 - i)
      x = nn.relu(nn.Conv(max(feats, 8), (4, 4), (2, 2), name=f'stem{i}')(x))
    x = nn.relu(nn.Conv(self.width, (3, 3), name='conv0')(x))
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), name='conv1')(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(4 * self.width, (3, 3), name='conv2')(x))
    x = jnp.mean(x, axis=(1, 2))
    features = nn.relu(nn.Dense(FEATURE_DIM, name='features')(x))
    h = nn.Dropout(0.3, deterministic=not train)(features)
    return {'features': features, 'logits': nn.Dense(self.num_classes, name='logits')(h)}


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
  seed: int = 0
  num_steps: int = 800
  batch_size: int = 64
  learning_rate: float = 2e-3
  weight_decay: float = 1e-4
  max_shift_fraction: float = 0.0625  # random translations of up to 1/16 of the image


def run_steps(step, params, opt_state, num_steps: int, desc: str, progress: bool):
  """``step(params, opt_state, i) -> (params, opt_state, loss)`` for i < num_steps, with a bar.

  Returns the final params and the last loss (a feature-space classifier's whole training).
  """
  steps = range(num_steps)
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    steps = tqdm(steps, desc=desc, unit='step')
  loss = None
  for i in steps:
    params, opt_state, loss = step(params, opt_state, i)
  return params, loss

def _shift(images, key, max_shift):
  """Random integer translations per image; the border is filled with background (-1)."""
  if max_shift == 0:
    return images
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                   constant_values=-1.0)
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def _data_config(data_config):
  cfg = ml_collections.ConfigDict(data_config.to_dict() if hasattr(data_config, 'to_dict')
                                  else dict(data_config))
  if cfg.name not in DATASETS:
    raise ValueError(f'No project classifier for dataset {cfg.name!r}; available for: '
                     f'{", ".join(DATASETS)}. Use the inception_* evaluators for other data.')
  cfg.channels = 1
  return cfg


def _load_split(data_config, split):
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  images, labels = pipeline.load_split_arrays(data_config, split)
  if labels is None:
    raise ValueError(f'{data_config.name}:{split} has no labels to train a classifier on.')
  return images, labels


def train(data_config, recipe: TrainRecipe = TrainRecipe(), *, progress: bool = False):
  """Trains a DigitsCNN on the train split; returns (params, metadata dict with test accuracy)."""
  cfg = _data_config(data_config)
  num_classes = DATASETS[cfg.name]
  x_train, y_train = _load_split(cfg, 'train')
  x_test, y_test = _load_split(cfg, 'test')
  model = DigitsCNN(num_classes)
  max_shift = int(round(recipe.max_shift_fraction * cfg.resolution))
  init_key, root = jax.random.split(jax.random.PRNGKey(recipe.seed))
  params = model.init(init_key, jnp.zeros((1, *x_train.shape[1:])))
  schedule = optax.cosine_decay_schedule(recipe.learning_rate, recipe.num_steps)
  tx = optax.adamw(schedule, weight_decay=recipe.weight_decay)
  opt_state = tx.init(params)
  x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)

  @jax.jit
  def step(params, opt_state, i):
    key = jax.random.fold_in(root, i)
    k_idx, k_shift, k_drop = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (recipe.batch_size,), 0, x_dev.shape[0])
    x = _shift(quantize(x_dev[idx]), k_shift, max_shift)

    def loss_fn(p):
      logits = model.apply(p, x, train=True, rngs={'dropout': k_drop})['logits']
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_dev[idx]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, loss = run_steps(step, params, opt_state, recipe.num_steps,
                           f'classifier {cfg.name}/{cfg.resolution}', progress)
  clf = Classifier(model, params, cfg.name, cfg.resolution)
  meta = {
      'dataset': cfg.name, 'resolution': cfg.resolution, 'num_classes': num_classes,
      'train_version': TRAIN_VERSION, 'recipe': dataclasses.asdict(recipe),
      'final_train_loss': float(loss),
      'train_accuracy': clf.accuracy(x_train, y_train),
      'test_accuracy': clf.accuracy(x_test, y_test),
      'num_train': int(len(y_train)), 'num_test': int(len(y_test)),
  }
  return params, meta


class Classifier:
  """A trained classifier as a feature extractor: images -> {'features', 'logits'}."""

  def __init__(self, model: DigitsCNN, params, dataset: str, resolution: int, meta=None):
    self.model, self.params = model, params
    self.dataset, self.resolution = dataset, resolution
    self.meta = meta or {}
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      h.update(jax.tree_util.keystr(path).encode())
      h.update(np.asarray(leaf, np.float32).tobytes())
    digest = h.hexdigest()
    self.cache_id = f'classifier:{dataset}:{resolution}:v{TRAIN_VERSION}:sha256={digest}'
    self._apply = jax.jit(lambda p, x: model.apply(p, quantize(x)))

  def __call__(self, images, batch_size: int = 500, progress: bool = False,
               desc: str = 'classifier') -> dict:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
      raise ValueError(f'Images must be a non-empty NHWC array with 1 or 3 channels; got '
                       f'shape {images.shape}.')
    if images.shape[1:3] != (self.resolution, self.resolution):
      raise ValueError(f'This {self.dataset} classifier takes {self.resolution}x{self.resolution}'
                       f' images; got {images.shape[1]}x{images.shape[2]}.')
    outs = []
    starts = range(0, len(images), batch_size)
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      starts = tqdm(starts, desc=desc, unit='batch', leave=False)
    for i in starts:
      batch = images[i:i + batch_size]
      k = len(batch)
      if k < batch_size and len(images) > batch_size:  # one compiled shape for all batches
        batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - k, axis=0)])
      out = self._apply(self.params, batch)
      outs.append({key: np.asarray(v)[:k] for key, v in out.items()})
    return {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}

  def accuracy(self, images, labels) -> float:
    pred = self(images)['logits'].argmax(axis=1)
    return float(np.mean(pred == np.asarray(labels)))


def _cache_paths(cache_dir, stem: str, recipe):
  """(weights, metadata) paths of ``<cache>/classifiers/<stem>_<recipe hash>``."""
  tag = hashlib.sha256(json.dumps(dataclasses.asdict(recipe), sort_keys=True).encode())
  base = os.path.join(default_cache_dir(cache_dir), 'classifiers',
                      f'{stem.replace("/", "_")}_{tag.hexdigest()[:10]}')
  return base + '.msgpack', base + '.json'


def _atomic_write(path, data: bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def load_or_train(stem: str, recipe, template: Callable[[], Any],
                  train_fn: Callable[[], tuple[Any, dict]], cache_dir: str | None = None,
                  retrain: bool = False) -> tuple[Any, dict]:
  """(params, metadata) of a project classifier, from the cache or trained and cached.

  The files are ``<cache_dir>/classifiers/<stem>_<hash of recipe>.msgpack`` and ``.json``
  (written atomically); ``stem`` should name the model, dataset, resolution and recipe
  version. ``template()`` gives params of the right structure to restore into;
  ``train_fn()`` returns (params, metadata) and runs only when the cache has no entry whose
  metadata holds this ``recipe`` (or with ``retrain``).
  """
  weights_path, meta_path = _cache_paths(cache_dir, stem, recipe)
  if not retrain and os.path.exists(weights_path) and os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get('recipe') == dataclasses.asdict(recipe):
      with open(weights_path, 'rb') as f:
        return flax.serialization.from_bytes(template(), f.read()), meta
  params, meta = train_fn()
  _atomic_write(weights_path, flax.serialization.to_bytes(params))
  _atomic_write(meta_path, json.dumps(meta, indent=2).encode())
  return params, meta


def get_classifier(data_config, cache_dir: str | None = None, *,
                   recipe: TrainRecipe = TrainRecipe(), retrain: bool = False,
                   progress: bool = False) -> Classifier:
  """Loads the cached classifier for ``data_config`` (name, resolution), training it if absent."""
  cfg = _data_config(data_config)
  model = DigitsCNN(DATASETS[cfg.name])
  params, meta = load_or_train(
      f'{cfg.name}_r{cfg.resolution}_v{TRAIN_VERSION}', recipe,
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg.resolution,
                                                           cfg.resolution, 1))),
      lambda: train(cfg, recipe, progress=progress), cache_dir, retrain)
  return Classifier(model, params, cfg.name, cfg.resolution, meta)


def _main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m jaxgen.metrics.classifier',
                                   description='Train (or load) and test a project classifier.')
  parser.add_argument('--dataset', default='jaxgen_digits', choices=sorted(DATASETS))
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--cache_dir', default=None)
  parser.add_argument('--retrain', action='store_true')
  args = parser.parse_args(argv)
  cfg = ml_collections.ConfigDict(dict(name=args.dataset, resolution=args.resolution,
                                       data_dir=args.data_dir, channels=1))
  clf = get_classifier(cfg, args.cache_dir, retrain=args.retrain, progress=True)
  print(json.dumps({**clf.meta, 'cache_id': clf.cache_id}, indent=2))


if __name__ == '__main__':
  _main()
