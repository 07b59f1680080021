"""The engine's own config fields (every experiment config starts from :func:`defaults`).

Families add their own fields (model, losses, optimizer, ...); the engine reads only these.
"""
from __future__ import annotations

import ml_collections

from jaxgen.families.base import positive_int as positive

DIVERGENCE_POLICIES = ('stop', 'skip', 'rollback')


def defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.family = ''              # 'gan', 'vae', ... (jaxgen.families).
  c.seed = 0
  c.batch_size = 64          # global examples per update, across all devices and processes.
  c.num_steps = 1000
  c.num_epochs = 0           # > 0: num_steps from epochs of the training split (families that use it).
  c.steps_per_epoch = 0      # filled in by families that count epochs.
  c.steps_per_dispatch = 1   # train steps per host call, in one lax.scan (for tiny models).
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # What to do when a step produces a non-finite loss or gradient: 'stop' (raise), 'skip'
  # (drop the whole update of every network; the step counter still advances), 'rollback'
  # (restore the last checkpoint and move the input past the batches that diverged, at most
  # max_rollbacks times).
  c.divergence_policy = 'stop'
  c.max_rollbacks = 3
  c.num_sample_snapshots = 10  # sample grids at 10 %, 20 %, ..., 100 % of training.
  c.num_grid_samples = 64
  c.write_figures = True       # the family's figures once training ends.
  # Periodic evaluation: the family's own (e.g. test ELBO) and named evaluators
  # (jaxgen.metrics.evaluators: digits_/inception_ is, fid, kid) every eval_every steps
  # (0: only at the end) on eval_num_samples samples from eval_seed.
  c.evaluators = ()
  c.eval_every = 0
  c.eval_num_samples = 1000
  c.eval_seed = 0
  c.eval_reference_split = 'train'
  c.eval_cache_dir = ''
  c.inception_weights = ''
  # Networks imported from other runs at the first start (never on resume):
  # {net name: 'workdir' or 'workdir:net name there'}, shapes checked.
  c.init_from = ml_collections.ConfigDict()
  return c


def validate(config) -> None:
  """Raises ValueError naming the field, the value and what is accepted."""
  for name in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints',
               'steps_per_dispatch', 'num_grid_samples'):
    positive(name, config[name])
  if config.divergence_policy not in DIVERGENCE_POLICIES:
    raise ValueError(f'Unknown divergence_policy {config.divergence_policy!r}; accepted: '
                     f'{", ".join(DIVERGENCE_POLICIES)}.')
  if config.eval_every < 0:
    raise ValueError(f'eval_every must be >= 0 (0: at the end only); got {config.eval_every!r}.')
  for name, source in config.init_from.items():
    if not isinstance(source, str) or not source or source.endswith(':'):
      raise ValueError(f'init_from.{name} must be "workdir" or "workdir:net"; got {source!r}.')
