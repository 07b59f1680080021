"""Evaluators chosen by name in a config: IS, FID and KID in Inception or classifier space.

``make_evaluator(name, config).run(generate)`` yields ``(metric_name, value)`` pairs, where
``generate(num, seed)`` returns ``num`` generated images (float32 NHWC in [-1, 1]). The
trainer calls it every ``eval_every`` steps and writes the pairs (prefixed ``eval/``) to
``metrics.jsonl`` and TensorBoard; ``python -m jaxgen.evaluate`` calls it on a finished run.

Names (:data:`NAMES`): ``<space>_<metric>`` with

* space ``digits``: the project's digits classifier (:mod:`jaxgen.metrics.classifier`;
  trained and cached on first use), for ``data.name='jaxgen_digits'``;
* space ``inception``: the 2015-12-05 InceptionV3 (:mod:`jaxgen.metrics.inception`); refused
  with :class:`~jaxgen.metrics.inception.InceptionWeightsNotFoundError` when no weight file is
  found - never computed with random weights;
* metric ``is`` (reports ``<space>_is`` and ``<space>_is_std`` over splits), ``fid``,
  ``kid`` (``<space>_kid`` and ``<space>_kid_std`` over subsets; raw MMD^2, papers often
  print it x 1000).

The protocol, fixed for every number jaxgen reports:

* ``config.eval_num_samples`` generated images (default 1000; papers use 50,000 for
  Inception scores), drawn with the fixed seed ``config.eval_seed`` (default 0), so successive
  evaluations of one run see the same z;
* quantised to uint8 like a saved PNG, then the extractor's own preprocessing;
* FID and KID against the dataset split ``config.eval_reference_split`` (default ``train``, the
  data the GAN fits), all of its examples unless ``config.eval_reference_samples`` caps them.
  The reference features and their Gaussian statistics are computed once per (feature space,
  dataset, resolution, split, count) and cached in ``<cache_dir>/reference/``;
* IS over ``config.eval_is_splits`` splits (default 10); KID over ``config.eval_kid_subsets``
  subsets (default 100) of ``min(config.eval_kid_subset_size (1000), N)`` examples.

``cache_dir`` is ``config.eval_cache_dir``, else ``$JAXGEN_CACHE_DIR``, else ``~/.cache/jaxgen``.
"""
from __future__ import annotations

import hashlib
import json
import os
import weakref

import numpy as np

from jaxgen.metrics import scores

SPACES = ('digits', 'inception')
METRICS = ('is', 'fid', 'kid')
NAMES = tuple(f'{s}_{m}' for s in SPACES for m in METRICS)
# space -> (output used for FID/KID, output used for IS).
OUTPUT_KEYS = {'digits': ('features', 'logits'), 'inception': ('pool', 'logits_unbiased')}
PROTOCOL_VERSION = 1


def check_name(name: str) -> None:
  if name not in NAMES:
    raise ValueError(f'Unknown evaluator {name!r}; accepted: {", ".join(NAMES)}.')


def _get(config, key, default):
  try:
    value = config.get(key, default)
  except AttributeError:
    value = default
  return default if value is None else value


def make_extractor(space: str, config, *, progress: bool = False):
  """The feature extractor of ``space`` for ``config`` (raises before any work if impossible)."""
  from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
  if space == 'inception':
    from jaxgen.metrics import inception  # pylint: disable=g-import-not-at-top
    return inception.InceptionExtractor.from_file(
        _get(config, 'inception_weights', '') or None,
        protocol=_get(config, 'inception_protocol', 'tf1'),
        batch_size=_get(config, 'eval_batch_size', 50))
  if space == 'digits':
    steps = _get(config, 'eval_classifier_steps', classifier.TrainRecipe.num_steps)
    return classifier.get_classifier(config.data, _get(config, 'eval_cache_dir', '') or None,
                                     recipe=classifier.TrainRecipe(num_steps=steps),
                                     progress=progress)
  raise ValueError(f'Unknown feature space {space!r}; accepted: {", ".join(SPACES)}.')


# ---------------------------------------------------------------------------- caches

# Extractors, per (space, relevant config): one classifier/Inception for all evaluators.
_EXTRACTORS: dict = {}
# generate function -> {(num, seed): images, (num, seed, cache_id): outputs}; entries vanish
# with the function, so evaluators of one evaluation round share samples and features.
_GENERATED: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()
# In-process copy of reference features (the disk cache holds them across processes).
_REFERENCE: dict = {}


def _extractor_key(space, config):
  data = config.data
  return (space, data.name, data.get('resolution'), _get(config, 'eval_cache_dir', ''),
          _get(config, 'inception_weights', ''), _get(config, 'inception_protocol', 'tf1'),
          _get(config, 'eval_classifier_steps', 0))


def shared_extractor(space, config, progress=False):
  key = _extractor_key(space, config)
  if key not in _EXTRACTORS:
    _EXTRACTORS[key] = make_extractor(space, config, progress=progress)
  return _EXTRACTORS[key]


def generated_outputs(generate, num, seed, extractor, progress=False) -> dict:
  """Extractor outputs on ``generate(num, seed)``, memoised per generate function."""
  try:
    memo = _GENERATED.setdefault(generate, {})
  except TypeError:  # not weak-referenceable: no memo
    memo = {}
  if (num, seed, extractor.cache_id) not in memo:
    if (num, seed) not in memo:
      images = np.asarray(generate(num, seed))
      if images.ndim != 4 or len(images) != num:
        raise ValueError(f'generate({num}, {seed}) must return {num} NHWC images; got shape '
                         f'{images.shape}.')
      memo[(num, seed)] = images
    memo[(num, seed, extractor.cache_id)] = extractor(memo[(num, seed)], progress=progress,
                                                      desc='features (generated)')
  return memo[(num, seed, extractor.cache_id)]


def reference_outputs(extractor, data_config, split: str, max_examples: int | None = None,
                      cache_dir: str | None = None, progress: bool = False) -> dict:
  """Extractor outputs on a real split (cached on disk), plus its Gaussian ``stats``."""
  from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
  desc = {'feature_space': extractor.cache_id, 'dataset': data_config.name,
          'resolution': data_config.get('resolution'), 'channels': data_config.get('channels'),
          'split': split, 'max_examples': max_examples, 'protocol_version': PROTOCOL_VERSION}
  key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]
  if key in _REFERENCE:
    return _REFERENCE[key]
  path = os.path.join(classifier.default_cache_dir(cache_dir), 'reference', f'{key}.npz')
  if os.path.exists(path):
    with np.load(path) as f:
      out = {k: f[k] for k in f.files if not k.startswith('stats_')}
      out['stats'] = scores.GaussianStats(f['stats_mu'], f['stats_sigma'],
                                          int(f['stats_num_examples']))
  else:
    from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
    images, _ = pipeline.load_split_arrays(data_config, split, max_examples)
    out = extractor(images, progress=progress, desc=f'features ({split} split)')
    fid_key = 'pool' if 'pool' in out else 'features'
    out['stats'] = stats = scores.gaussian_stats(out[fid_key])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.npz'
    np.savez(tmp, stats_mu=stats.mu, stats_sigma=stats.sigma,
             stats_num_examples=stats.num_examples,
             **{k: v for k, v in out.items() if k != 'stats'})
    os.replace(tmp, path)
    with open(path[:-4] + '.json', 'w') as f:
      json.dump(desc, f, indent=2)
  _REFERENCE[key] = out
  return out


# ---------------------------------------------------------------------------- evaluators


def metric_values(metric, space, outputs, reference=None, *, is_splits=10, kid_subsets=100,
                  kid_subset_size=1000, seed=0):
  """(name, value) pairs of one metric from extractor outputs (and reference outputs)."""
  feat_key, logit_key = OUTPUT_KEYS[space]
  if metric == 'is':
    n = len(outputs[logit_key])
    res = scores.inception_score(outputs[logit_key], num_splits=min(is_splits, n))
    return [(f'{space}_is', res.mean), (f'{space}_is_std', res.std)]
  if metric == 'fid':
    return [(f'{space}_fid', scores.fid_from_stats(scores.gaussian_stats(outputs[feat_key]),
                                                   reference['stats']))]
  if metric == 'kid':
    res = scores.kernel_distance(outputs[feat_key], reference[feat_key], num_subsets=kid_subsets,
                                 subset_size=kid_subset_size, seed=seed)
    return [(f'{space}_kid', res.mean), (f'{space}_kid_std', res.std)]
  raise ValueError(f'Unknown metric {metric!r}; accepted: {", ".join(METRICS)}.')


class Evaluator:
  """One named score; see the module docstring for the protocol."""

  def __init__(self, name: str, config, *, progress: bool = False):
    check_name(name)
    self.name = name
    self.space, self.metric = name.split('_')
    self.config = config
    if self.space == 'digits':
      from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
      if config.data.name not in classifier.DATASETS:
        raise ValueError(f'Evaluator {name!r} needs data.name in {sorted(classifier.DATASETS)} '
                         f'(its classifier); got {config.data.name!r}. Use inception_{self.metric}.')
    self.num_samples = int(_get(config, 'eval_num_samples', 1000))
    if self.num_samples < 2:
      raise ValueError(f'eval_num_samples must be at least 2; got {self.num_samples}.')
    self.seed = int(_get(config, 'eval_seed', 0))
    self.reference_split = _get(config, 'eval_reference_split', 'train')
    self.reference_samples = _get(config, 'eval_reference_samples', 0) or None
    self.is_splits = int(_get(config, 'eval_is_splits', 10))
    self.kid_subsets = int(_get(config, 'eval_kid_subsets', 100))
    self.kid_subset_size = int(_get(config, 'eval_kid_subset_size', 1000))
    self.cache_dir = _get(config, 'eval_cache_dir', '') or None
    self.progress = progress
    # Built now, so a missing weight file or unknown dataset stops a run before training.
    self.extractor = shared_extractor(self.space, config, progress=progress)

  def reference(self):
    return reference_outputs(self.extractor, self.config.data, self.reference_split,
                             self.reference_samples, self.cache_dir, self.progress)

  def score_outputs(self, outputs):
    ref = None if self.metric == 'is' else self.reference()
    return metric_values(self.metric, self.space, outputs, ref, is_splits=self.is_splits,
                         kid_subsets=self.kid_subsets, kid_subset_size=self.kid_subset_size,
                         seed=self.seed)

  def run(self, generate):
    outputs = generated_outputs(generate, self.num_samples, self.seed, self.extractor,
                                self.progress)
    return [(k, float(v)) for k, v in self.score_outputs(outputs)]


def make_evaluator(name: str, config, *, progress: bool = False) -> Evaluator:
  """The evaluator called ``name`` (one of :data:`NAMES`) for a run described by ``config``."""
  return Evaluator(name, config, progress=progress)
