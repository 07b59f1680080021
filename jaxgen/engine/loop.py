"""``train_and_evaluate(config, workdir)``: the one training loop, for every model family.

What it does, in order:
1. Checks the config (the engine's fields, the dataset, the family's own checks, batch
   divisibility) and, when ``workdir`` already holds a run, that it is the same family with the
   same networks. Any problem raises ``ValueError`` before anything is written.
2. Builds the family (``config.family``, see :mod:`jaxgen.families`) and a device mesh with one
   ``data`` axis over every device: the state is replicated, every feature of the batch is
   sharded along ``data`` (BatchNorm statistics are over the global batch).
3. Restores the newest checkpoint in ``workdir/checkpoints`` if there is one, or else imports
   the networks named in ``config.init_from`` from other runs, and positions the input
   pipeline so a resumed run sees exactly the batches it would have seen.
4. Trains with a tqdm bar; logs scalars to ``metrics.jsonl`` and TensorBoard; applies the
   divergence policy; writes sample grids at 10 %, ..., 100 % of training and a progress
   strip; runs the family's evaluation and the named evaluators every ``eval_every`` steps and
   at the end (``eval.json``); checkpoints every ``checkpoint_every`` steps, at the end, and on
   SIGTERM/SIGINT; then writes the family's figures.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxgen import families, images as image_lib
from jaxgen.data import source
from jaxgen.engine import checkpoint, imports, preemption
from jaxgen.engine import config as engine_config
from jaxgen.engine import workdir as workdir_lib
from jaxgen.engine.writers import Writer, truncate_after
from jaxgen.families import base

EVAL_FILE = 'eval.json'
GRID_SEED_OFFSET = 7919  # The fixed z of the sample grids: PRNGKey(seed + 7919).


class DivergenceError(RuntimeError):
  """Training produced non-finite losses or gradients (divergence_policy='stop')."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions); older ones are intact."""


def prepare(config):
  """An unlocked, resolved and checked copy of ``config`` and its family module."""
  config = ml_collections.ConfigDict(
      config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  module = families.get(config.family)
  if hasattr(module, 'resolve'):
    module.resolve(config)
  engine_config.validate(config)
  source.validate(config.data)
  module.validate(config)
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if config.batch_size % n_dev or config.batch_size % n_proc:
    raise ValueError(f'batch_size {config.batch_size} must divide evenly across the {n_dev} '
                     f'devices and {n_proc} processes; use a multiple of {n_dev}.')
  for name in config.evaluators:
    _evaluators().check_name(name)
  return config, module


def make_mesh():
  """One 'data' axis over every device.

  The axis is 'Auto' (GSPMD propagates shardings from the jit's in/out shardings): with
  jax's default 'Explicit' axes every reshape that touches the sharded batch axis inside a
  model (phase interleaving, flattening, [S * B] <-> [S, B]) would need a hand-written
  out_sharding.
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def with_divergence_policy(train_step, policy: str):
  """``skip``: a step whose metrics say non-finite leaves every network as it was.

  Done here for the whole state rather than per optimizer (``optax.apply_if_finite``): a GAN
  step updates two networks and their BatchNorm/spectral-norm variables, and a skipped step
  must drop all of it together, or G and D drift apart.
  """
  if policy != 'skip':
    return train_step

  def step(state, batch):
    new, metrics = train_step(state, batch)
    kept = state.replace(step=new.step)
    ok = metrics['finite'] > 0
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, kept), metrics
  return step


def make_multi_step(train_step, num_steps: int):
  """``num_steps`` train steps per dispatch; every batch leaf has a leading step axis.

  A single step is not wrapped in a scan: XLA:CPU runs convolutions inside loops on a slow
  path (an SN-DCGAN step took 10 s in a loop, 0.6 s outside, one core).
  """
  if num_steps == 1:
    def single(state, batches):
      state, metrics = train_step(state, jax.tree.map(lambda x: x[0], batches))
      return state, jax.tree.map(lambda x: x[None], metrics)
    return single
  return lambda state, batches: jax.lax.scan(train_step, state, batches)


class Sampler:
  """The family's ``sample``, jitted: fixed grids, and ``generate(num, seed)`` for evaluators."""

  def __init__(self, family, config):
    self._sample = jax.jit(family.sample, static_argnums=2)
    self.grid_key = jax.random.PRNGKey(config.seed + GRID_SEED_OFFSET)
    self.num_grid = config.num_grid_samples

  def grid(self, state):
    return np.asarray(self._sample(state, self.grid_key, self.num_grid))

  def generate(self, state, num: int, seed: int):
    """``num`` samples; those of index i..i+255 from ``fold_in(PRNGKey(seed), i)``."""
    out, key = [], jax.random.PRNGKey(seed)
    for i in range(0, num, 256):
      out.append(np.asarray(self._sample(state, jax.random.fold_in(key, i), min(256, num - i))))
    return np.concatenate(out)


def train_and_evaluate(config, workdir: str):
  """Trains the family of ``config`` in ``workdir`` (resuming); returns the final state."""
  config, module = prepare(config)
  workdir_lib.check_same_run(config, workdir, module.structure)
  family = module.build(config)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  # A resume restores into the abstract state: the init is compiled and run only for a first
  # start, a run whose checkpoints all fail to restore, or a rollback.
  init_fn = base.jit_init(family, config.seed, replicated)
  abstract = checkpoint.abstract_state(init_fn, replicated)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  workdir_lib.check_writable(workdir, state_bytes, config.keep_checkpoints)
  # The dataset is opened before the checkpoint manager exists, so a missing dataset fails
  # before anything is written (and tfds.testing.mock_data, which patches the file system
  # while a dataset is opened, never overlaps orbax's background threads).
  spd, steps_total = config.steps_per_dispatch, config.num_steps
  local_bs = family.examples_per_step // jax.process_count()
  open_data = lambda position: source.make_dataset(
      config.data, config.data.split, local_bs, seed=config.seed, start_step=position)
  position = checkpoint.latest_listed_step(workdir)
  state = None if position else init_fn()
  if not position and config.init_from:  # A first start: import before reading any data.
    state = imports.import_nets(state, config.init_from, replicated)
  data = open_data(position)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  # A checkpoint always wins over imports.
  restored = checkpoint.restore(manager, abstract if state is None else state)
  if restored is not None:
    state = restored
  elif state is None:
    state = init_fn()
  step = int(state.step)
  if step + int(state.data_offset) != position:  # The listing and orbax disagree.
    data = open_data(step + int(state.data_offset))
  truncate_after(workdir, step)  # Records of a killed run logged after its last checkpoint.
  workdir_lib.write_config(config, workdir)

  block_sharding = NamedSharding(mesh, P(None, 'data'))
  multi_step = jax.jit(make_multi_step(with_divergence_policy(family.train_step,
                                                              config.divergence_policy), spd),
                       in_shardings=(replicated, block_sharding),
                       out_shardings=(replicated, replicated), donate_argnums=0)

  def next_block():
    batches = [next(data) for _ in range(spd)]
    stacked = {k: np.stack([b[k] for b in batches]) for k in family.batch_keys}
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        block_sharding, x, (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:])),
                        stacked)

  is_main = jax.process_index() == 0
  writer = Writer(workdir)
  sampler = Sampler(family, config) if family.sample is not None else None
  grids = _GridWriter(config, workdir, writer, enabled=sampler is not None
                      and not config.data.name.startswith('toy2d'))
  evaluators = [_evaluators().make_evaluator(n, config) for n in config.evaluators]
  rollbacks, pending, bar = 0, [], None
  if is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=steps_total, initial=step, desc=os.path.basename(workdir), unit='step',
               dynamic_ncols=True)
  timer = [time.time(), step]

  def flush_metrics():
    """Pulls pending metrics; returns (merged, (first non-finite step, its terms) or None)."""
    nonlocal pending
    if not pending:
      return None, None
    host = jax.device_get(pending)
    pending = []
    merged = {k: np.concatenate([np.asarray(m[k]) for m in host]) for k in host[0]}
    bad = None
    if config.divergence_policy != 'skip' and merged['finite'].min() < 1:
      idx = int(np.argmin(merged['finite']))
      bad = (step - len(merged['finite']) + idx + 1,
             {k: float(v[idx]) for k, v in merged.items() if k != 'finite'})
    return merged, bad

  def log(merged):
    now = time.time()
    scalars = {k: float(v[-1]) for k, v in merged.items()}
    scalars['nonfinite_steps'] = float((merged['finite'] < 1).sum())
    scalars['steps_per_sec'] = (step - timer[1]) / max(now - timer[0], 1e-9)
    timer[:] = [now, step]
    writer.scalars(step, scalars)
    if bar is not None:
      bar.set_postfix({k: f'{scalars[k]:.3f}' for k in family.progress_keys if k in scalars})

  def save(at_step, force=False):
    try:
      checkpoint.save(manager, at_step, state, force=force)
      if force:
        manager.wait_until_finished()
    except OSError as e:
      raise CheckpointWriteError(
          f'Writing the checkpoint for step {at_step} to {workdir!r} failed ({e}); the '
          f'checkpoints already there ({manager.all_steps()}) are intact. Free space or fix '
          'permissions, then run the same command to resume.') from e

  final_results = None
  try:
    with jax.set_mesh(mesh), preemption.StopRequest() as stop:
      while step < steps_total:
        state, metrics = multi_step(state, next_block())
        step += spd
        pending.append(metrics)
        if bar is not None:
          bar.update(spd)
        crossed = lambda every: step // every != (step - spd) // every
        final = step >= steps_total
        want_ckpt = crossed(config.checkpoint_every) or final
        stopping = stop.requested(sync=jax.process_count() == 1 or crossed(config.log_every)
                                  or want_ckpt)
        if crossed(config.log_every) or want_ckpt or stopping:
          merged, bad = flush_metrics()
          if bad is not None:
            if config.divergence_policy == 'rollback' and rollbacks < config.max_rollbacks:
              rollbacks += 1
              # The input stream stays where it is: the restored state's data_offset says so.
              state, step = _rollback(state, manager, init_fn, step, bad, workdir, bar,
                                      rollbacks)
              continue
            _raise_divergence(bad, manager, bar, config.divergence_policy, rollbacks)
          if merged is not None:
            log(merged)
        if grids.enabled and grids.due(step, spd):
          grids.write(step, sampler.grid(state))
        if final or (config.eval_every and crossed(config.eval_every)):
          results = _evaluate(family, evaluators, sampler, state, final)
          if results:
            writer.scalars(step, results)
          if final:
            final_results = results
        if stopping:
          save(step, force=True)
          if bar is not None:
            bar.close()
            bar = None
          print(f'Stopped by {stop.name} at step {step}/{steps_total}; checkpoint saved in '
                f'{os.path.join(workdir, checkpoint.LATEST_DIR)}. Run the same command to '
                'resume.', flush=True)
          break
        if want_ckpt:
          save(step)
    manager.wait_until_finished()
  finally:
    manager.close()
    writer.close()
    if bar is not None:
      bar.close()
  if final_results is not None:  # Training reached its last step in this call.
    if final_results:
      workdir_lib.write_json(os.path.join(workdir, EVAL_FILE), dict(step=step, **final_results))
    if family.figures is not None and config.write_figures and is_main:
      family.figures(state, os.path.join(workdir, 'figures'))
  return state


def _evaluate(family, evaluators, sampler, state, final):
  """The family's evaluation and the named evaluators (sharing one set of samples)."""
  results = {}
  if family.evaluate is not None:
    results.update({k: float(v) for k, v in family.evaluate(state, final=final).items()})
  if evaluators:
    generate = lambda num, seed: sampler.generate(state, num, seed)  # one function: shared
    for ev in evaluators:
      for name, value in ev.run(generate):
        results[f'eval/{name}'] = float(value)
  return results


def _evaluators():
  from jaxgen.metrics import evaluators  # pylint: disable=g-import-not-at-top
  return evaluators


def _rollback(state, manager, init_fn, step, bad, workdir, bar, count):
  """Restores the last good checkpoint and moves the input past the batches that diverged."""
  bad_step, terms = bad
  data_position = step + int(state.data_offset)
  good = checkpoint.restore(manager, init_fn())
  if good is None:
    good = init_fn()
  good_step = int(good.step)
  skipped = data_position - good_step - int(good.data_offset)
  good = good.replace(data_offset=jnp.asarray(data_position - good_step, jnp.int32),
                      rng=jax.random.fold_in(good.rng, data_position))
  truncate_after(workdir, good_step)
  msg = (f'Non-finite values at step {bad_step} ({_nonfinite_terms(terms)}); rollback {count}: '
         f'back to step {good_step}, skipping the {skipped} batches read since then.')
  (bar.write if bar is not None else print)(msg)
  if bar is not None:
    bar.n = good_step
    bar.refresh()
  return good, good_step


def _nonfinite_terms(terms):
  names = [k for k, v in terms.items() if not np.isfinite(v)]
  return 'non-finite: ' + (', '.join(names) if names else 'gradients only')


def _raise_divergence(bad, manager, bar, policy, rollbacks):
  bad_step, terms = bad
  if bar is not None:
    bar.close()
  manager.wait_until_finished()
  extra = f' after {rollbacks} rollbacks' if policy == 'rollback' else ''
  raise DivergenceError(
      f'Non-finite loss or gradient at step {bad_step}{extra} ({_nonfinite_terms(terms)}; '
      f'terms at that step: {terms}). Nothing after the last good checkpoint (step '
      f'{manager.latest_step()}) was saved. Lower the learning rate, or set '
      '--config.divergence_policy=skip (drop such updates) or =rollback.')


class _GridWriter:
  """Grids from one fixed key at 10 %, ..., 100 % of training, and the progress strip."""

  def __init__(self, config, workdir, writer, enabled):
    self.enabled, self.workdir, self.writer = enabled, workdir, writer
    self.dir = os.path.join(workdir, 'samples')
    n = max(1, config.num_sample_snapshots)
    self.steps = sorted({max(1, round(config.num_steps * (i + 1) / n)) for i in range(n)})

  def path(self, step):
    return os.path.join(self.dir, f'step_{step:07d}.png')

  def due(self, step, spd):
    return any(step - spd < s <= step for s in self.steps)

  def write(self, step, samples):
    # Every process computed the samples (one program over all devices); process 0 writes.
    if jax.process_index() != 0:
      return
    g = image_lib.grid(samples)
    image_lib.save_png(self.path(step), g)
    self.writer.images(step, {'samples': g[None]})
    from PIL import Image  # pylint: disable=g-import-not-at-top
    grids = [np.asarray(Image.open(self.path(s))) for s in self.steps
             if s <= step and os.path.exists(self.path(s))]
    grids = [x[..., None] if x.ndim == 2 else x for x in grids]
    image_lib.save_png(os.path.join(self.workdir, 'progress.png'), image_lib.hstack(grids))
