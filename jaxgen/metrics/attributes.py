"""Text-image consistency on ``jaxgen_shapes``: an attribute classifier and the scores it gives.

The captions of :mod:`jaxgen.data.shapes` name every object's shape, colour, size and
position, so a generated image can be checked against the caption it was generated from.
An :class:`AttributeNet` (a small CNN on the RGB image) predicts, for each of the five
positions, what is there: nothing or one of the six shapes, its colour and its size. It is
trained on the real renders of the ``train`` split plus as many *instrument* renders
(:func:`render_instrument`: objects from all 48 colour-shape pairs, the held-out ones
included, from seeds no split uses), so it has seen every pair a caption can name and scores a
held-out pair as fairly as a seen one. Training is deterministic (fixed seeds) and cached like
the digits classifier (:func:`jaxgen.metrics.classifier.load_or_train`).

:func:`attribute_accuracy` scores images against the attribute labels of their captions,
object by object (each object of a caption at its position):

* ``position``: the classifier sees an object at the caption's position;
* ``shape`` / ``colour`` / ``size``: the object there has the caption's shape / colour /
  size (wrong when nothing is there);
* ``object``: all four right; ``count``: the image holds exactly as many objects as the
  caption names (fraction of images).

:func:`text_image_scores` adds FID (:mod:`jaxgen.metrics.scores`) in the classifier's
feature space (its five 32-d position vectors) against real reference features, and
R-precision
(:func:`jaxgen.metrics.retrieval.r_precision`: each image ranks its own caption among
``num_candidates`` by the text encoder's image and caption embeddings). Scoring the real
test renders against their own captions gives the ceiling of every number (and FID of real
test against real train images the floor of FID); against shuffled captions the accuracies
fall to what independent guessing gets.

FID here is in the classifier's own units (one classifier per resolution) and, like every
FID, biased upward at small sample counts: real test (500) against real train (4,000) images
scores 383 at 32x32 and 1287 at 64x64 (docs/results/text_encoder/attributes_ceiling_*.json).
Compare models at equal sample counts, next to the real-vs-real floor at that count.

The default recipe's ceilings (real test renders against their own captions,
``python -m jaxgen.metrics.attributes --resolution=R``): at 64x64 position and count 1.00,
colour and size 0.999, shape 0.94; at 32x32, where the small objects are 4-5 pixels wide,
position and count 1.00, colour and size 0.996, shape 0.79.

Images go through the uint8 quantisation of a saved PNG (colour kept).

Command line (trains or loads; prints the scores of the real test renders against their own
captions, the ceiling, and FID of real test against real train features)::

  python -m jaxgen.metrics.attributes --resolution=64 [--results=PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.data import shapes
from jaxgen.metrics import classifier, retrieval, scores

# 2: trained on the train split plus as many instrument renders (every colour-shape pair).
TRAIN_VERSION = 2
NUM_POSITIONS = len(shapes.POSITIONS)
EMPTY = len(shapes.SHAPES)  # the "shape" class of a position with nothing on it
HEADS = {'shape': len(shapes.SHAPES) + 1, 'colour': len(shapes.COLOURS),
         'size': len(shapes.SIZES)}
OBJECT_KEYS = ('object_shape', 'object_colour', 'object_size', 'object_position')


def _window_starts(size: int) -> np.ndarray:
  """int [5, 2]: (row, col) of the 2x2 window of a ``size`` x ``size`` feature map around
  each position's centre (shapes.POSITION_XY)."""
  xy = np.asarray(shapes.POSITION_XY)
  rc = np.floor(xy[:, ::-1] * size - 0.5).astype(int)
  return np.clip(rc, 0, size - 2)


class AttributeNet(nn.Module):
  """A small CNN on RGB images, read out at the five positions.

  Pairs of 3x3 convs (the second strided) bring the image to 8x8, two more 3x3 convs widen
  the receptive field; at each position the 2x2 cells around its centre go through one
  shared ``per_position``-d ReLU layer and shared heads: logits ``shape`` [B, 5, 7] (class 6:
  nothing there), ``colour`` [B, 5, 8], ``size`` [B, 5, 2]. ``features`` [B, 5 *
  per_position] (the five position vectors) is the space FID is computed in. Sharing the
  readout over positions lets every object teach every position.
  """
  width: int = 16
  per_position: int = 32

  @nn.compact
  def __call__(self, x):
    n_down = max(1, int(round(np.log2(x.shape[1]))) - 3)
    for i in range(n_down):
      f = self.width * 2 ** min(i, 2)
      x = nn.relu(nn.Conv(f, (3, 3), name=f'conv{i}a')(x))
      x = nn.relu(nn.Conv(f, (3, 3), (2, 2), name=f'conv{i}b')(x))
    f = self.width * 2 ** min(n_down, 2)
    x = nn.relu(nn.Conv(f, (3, 3), name='context0')(x))
    x = nn.relu(nn.Conv(f, (3, 3), name='context1')(x))
    cells = [x[:, r:r + 2, c:c + 2, :].reshape((x.shape[0], -1))
             for r, c in _window_starts(x.shape[1])]
    h = nn.relu(nn.Dense(self.per_position, name='per_position')(jnp.stack(cells, axis=1)))
    out = {'features': h.reshape((h.shape[0], -1))}
    for head, n in HEADS.items():
      out[head] = nn.Dense(n, name=head)(h)
    return out


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
  seed: int = 0
  num_steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 2e-3
  weight_decay: float = 1e-4


def position_targets(labels: dict) -> dict:
  """Per-position targets from object slots: ``shape`` [N, 5] (EMPTY where nothing is),
  ``colour``, ``size`` [N, 5] (-1 where nothing is)."""
  pos = np.asarray(labels['object_position'])
  n = len(pos)
  out = {'shape': np.full((n, NUM_POSITIONS), EMPTY, np.int32),
         'colour': np.full((n, NUM_POSITIONS), -1, np.int32),
         'size': np.full((n, NUM_POSITIONS), -1, np.int32)}
  for k in range(pos.shape[1]):
    rows = np.flatnonzero(pos[:, k] >= 0)
    for head in HEADS:
      out[head][rows, pos[rows, k]] = np.asarray(labels[f'object_{head}'])[rows, k]
  return out


def load_split(data_config, split: str, max_examples: int | None = None) -> dict:
  """Images (float32 [-1, 1]) and object labels of a jaxgen_shapes split, every process."""
  from jaxgen.data import captions, text  # pylint: disable=g-import-not-at-top
  cfg = _data_config(data_config)
  data = captions.load_caption_split(cfg, split, text.CharVocab(max_len=1), max_examples,
                                     whole=True)
  return {k: data[k] for k in ('image', 'num_objects', *OBJECT_KEYS)}


def render_instrument(resolution: int, num: int) -> dict:
  """``num`` :data:`~jaxgen.data.shapes.INSTRUMENT` renders in :func:`load_split`'s format:
  objects from all 48 colour-shape pairs (the held-out ones included), never in any split."""
  feats = [shapes.example_features(shapes.sample_example(shapes.INSTRUMENT, i), resolution)
           for i in range(num)]
  out = {'image': np.stack([f['image'] for f in feats]).astype(np.float32) / 127.5 - 1.0,
         'num_objects': np.array([f['num_objects'] for f in feats], np.int64)}
  for key in OBJECT_KEYS:
    out[key] = np.stack([f[key] for f in feats])
  return out


def _data_config(data_config):
  cfg = ml_collections.ConfigDict(data_config.to_dict() if hasattr(data_config, 'to_dict')
                                  else dict(data_config))
  if cfg.name != 'jaxgen_shapes':
    raise ValueError(f'The attribute classifier is for jaxgen_shapes; got data.name '
                     f'{cfg.name!r}.')
  return cfg


def _loss(out, targets):
  total = optax.softmax_cross_entropy_with_integer_labels(out['shape'], targets['shape']).mean()
  present = targets['shape'] != EMPTY
  for head in ('colour', 'size'):
    ce = optax.softmax_cross_entropy_with_integer_labels(
        out[head], jnp.maximum(targets[head], 0))
    total += jnp.sum(ce * present) / jnp.maximum(present.sum(), 1)
  return total


def train(data_config, recipe: TrainRecipe = TrainRecipe(), *, progress: bool = False):
  """Trains an AttributeNet on the train split plus as many instrument renders (so it has
  seen every colour-shape pair, the held-out ones too); returns (params, metadata with
  accuracies)."""
  cfg = _data_config(data_config)
  split_set, test_set = load_split(cfg, 'train'), load_split(cfg, 'test')
  heldout_set = load_split(cfg, 'heldout')
  extra = render_instrument(cfg.resolution, len(split_set['image']))
  train_set = {k: np.concatenate([split_set[k], extra[k]]) for k in split_set}
  model = AttributeNet()
  init_key, root = jax.random.split(jax.random.PRNGKey(recipe.seed))
  params = model.init(init_key, jnp.zeros((1, *train_set['image'].shape[1:])))
  tx = optax.adamw(optax.cosine_decay_schedule(recipe.learning_rate, recipe.num_steps),
                   weight_decay=recipe.weight_decay)
  opt_state = tx.init(params)
  x_dev = jnp.asarray(train_set['image'])
  t_dev = {k: jnp.asarray(v) for k, v in position_targets(train_set).items()}

  @jax.jit
  def step(params, opt_state, i):
    idx = jax.random.randint(jax.random.fold_in(root, i), (recipe.batch_size,), 0,
                             x_dev.shape[0])
    x = classifier.quantize(x_dev[idx], grey=False)
    loss, grads = jax.value_and_grad(
        lambda p: _loss(model.apply(p, x), {k: v[idx] for k, v in t_dev.items()}))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, loss = classifier.run_steps(step, params, opt_state, recipe.num_steps,
                                      f'attribute classifier {cfg.resolution}', progress)
  clf = AttributeClassifier(model, params, cfg.resolution)
  meta = {'dataset': cfg.name, 'resolution': cfg.resolution, 'train_version': TRAIN_VERSION,
          'recipe': dataclasses.asdict(recipe), 'final_train_loss': float(loss),
          'test_accuracy': attribute_accuracy(clf(test_set['image']), test_set),
          'heldout_accuracy': attribute_accuracy(clf(heldout_set['image']), heldout_set),
          'num_train': len(train_set['image']), 'num_instrument': len(extra['image']),
          'num_test': len(test_set['image'])}
  return params, meta


class AttributeClassifier:
  """A trained AttributeNet: images -> {'features', 'shape', 'colour', 'size'} (numpy)."""

  def __init__(self, model: AttributeNet, params, resolution: int, meta=None):
    self.model, self.params, self.resolution = model, params, resolution
    self.meta = meta or {}
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      h.update(jax.tree_util.keystr(path).encode())
      h.update(np.asarray(leaf, np.float32).tobytes())
    self.cache_id = (f'attributes:jaxgen_shapes:{resolution}:v{TRAIN_VERSION}:'
                     f'sha256={h.hexdigest()}')
    self._apply = jax.jit(lambda p, x: model.apply(p, classifier.quantize(x, grey=False)))

  def __call__(self, images, batch_size: int = 250, **unused) -> dict:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (self.resolution, self.resolution, 3):
      raise ValueError(f'The attribute classifier takes [N, {self.resolution}, '
                       f'{self.resolution}, 3] images; got shape {images.shape}.')
    outs = []
    for i in range(0, len(images), batch_size):
      batch = images[i:i + batch_size]
      k = len(batch)
      if k < batch_size and len(images) > batch_size:  # one compiled shape for all batches
        batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - k, axis=0)])
      outs.append({key: np.asarray(v)[:k] for key, v in self._apply(self.params, batch).items()})
    return {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}


def get_attribute_classifier(data_config, cache_dir: str | None = None, *,
                             recipe: TrainRecipe = TrainRecipe(), retrain: bool = False,
                             progress: bool = False) -> AttributeClassifier:
  """The cached classifier for ``data_config.resolution``, trained on first use."""
  cfg = _data_config(data_config)
  model = AttributeNet()
  sizes = cfg.get('split_sizes')
  tag = '' if not sizes else '_' + '_'.join(f'{k}{v}' for k, v in sorted(dict(sizes).items()))
  params, meta = classifier.load_or_train(
      f'attributes_jaxgen_shapes{tag}_r{cfg.resolution}_v{TRAIN_VERSION}', recipe,
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg.resolution,
                                                           cfg.resolution, 3))),
      lambda: train(cfg, recipe, progress=progress), cache_dir, retrain)
  return AttributeClassifier(model, params, cfg.resolution, meta)


def attribute_accuracy(outputs: dict, labels: dict) -> dict:
  """Accuracy per attribute of classifier ``outputs`` against caption ``labels``.

  ``labels``: ``object_shape``/``_colour``/``_size``/``_position`` [N, 2] (-1: no second
  object), as jaxgen_shapes stores them. See the module docstring for the keys.
  """
  pred = {head: np.asarray(outputs[head]).argmax(-1) for head in HEADS}  # [N, 5] each
  pos = np.asarray(labels['object_position'])
  if pos.shape[0] != len(pred['shape']):
    raise ValueError(f'{len(pred["shape"])} images but {pos.shape[0]} label rows.')
  rows, slots = np.nonzero(pos >= 0)
  p = pos[rows, slots]
  there = pred['shape'][rows, p] != EMPTY
  ok = {'position': there}
  for head in HEADS:
    ok[head] = there & (pred[head][rows, p] == np.asarray(labels[f'object_{head}'])[rows, slots])
  ok['object'] = ok['position'] & ok['shape'] & ok['colour'] & ok['size']
  out = {k: float(v.mean()) for k, v in ok.items()}
  out['count'] = float(np.mean((pred['shape'] != EMPTY).sum(1) == (pos >= 0).sum(1)))
  out['num_objects'] = int(len(rows))
  return out


def first_object(labels: dict) -> dict:
  """The labels with every object but the first removed (position -1): on ``heldout`` the
  first object is the unseen colour-shape pair."""
  out = dict(labels)
  pos = np.array(labels['object_position'])
  pos[:, 1:] = -1
  out['object_position'] = pos
  return out


def text_image_scores(clf: AttributeClassifier, images, labels: dict, *, reference=None,
                      image_emb=None, caption_emb=None, num_candidates: int = 100,
                      similarity: str = 'cosine', seed: int = 0, outputs=None) -> dict:
  """Attribute accuracies of ``images`` against their captions' ``labels``; with
  ``reference`` (real ``features`` [M, 160] or their :class:`~jaxgen.metrics.scores.GaussianStats`)
  ``fid``; with the text encoder's ``image_emb`` and ``caption_emb`` ``r_precision``.
  ``outputs``: ``clf(images)`` when the caller already has it."""
  outputs = clf(images) if outputs is None else outputs
  out = attribute_accuracy(outputs, labels)
  if reference is not None:
    ref = reference if isinstance(reference, scores.GaussianStats) else scores.gaussian_stats(
        reference)
    out['fid'] = scores.fid_from_stats(scores.gaussian_stats(outputs['features']), ref)
  if image_emb is not None and caption_emb is not None:
    out['r_precision'] = retrieval.r_precision(image_emb, caption_emb,
                                               num_candidates=num_candidates, seed=seed,
                                               similarity=similarity)
  return out


def _main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m jaxgen.metrics.attributes',
                                   description='Train (or load) the jaxgen_shapes attribute '
                                   'classifier; print the real test renders\' scores.')
  parser.add_argument('--resolution', type=int, default=64, choices=shapes.RESOLUTIONS)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--cache_dir', default=None)
  parser.add_argument('--retrain', action='store_true')
  parser.add_argument('--results', default='', help='Also write a stamped results file here.')
  args = parser.parse_args(argv)
  cfg = ml_collections.ConfigDict(dict(name='jaxgen_shapes', resolution=args.resolution,
                                       data_dir=args.data_dir))
  clf = get_attribute_classifier(cfg, args.cache_dir, retrain=args.retrain, progress=True)
  test, train_set = load_split(cfg, 'test'), load_split(cfg, 'train')
  ceiling = text_image_scores(clf, test['image'], test,
                              reference=clf(train_set['image'])['features'])
  heldout = load_split(cfg, 'heldout')
  first = {k: v for k, v in attribute_accuracy(clf(heldout['image']),
                                               first_object(heldout)).items() if k != 'count'}
  out = {**clf.meta, 'real_test_scores': ceiling, 'real_heldout_first_object': first,
         'cache_id': clf.cache_id}
  print(json.dumps(out, indent=2))
  if args.results:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(args.results, out, results.command_line('python -m jaxgen.metrics.attributes',
                                                          argv))


if __name__ == '__main__':
  _main()
