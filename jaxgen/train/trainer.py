"""``train_and_evaluate(config, workdir)``: the GAN training loop.

What it does, in order:
1. Checks the config (names, ranges, batch divisibility) and, when ``workdir`` already holds
   a run, that the run's saved ``config.json`` describes the same networks. Any problem
   raises ``ValueError`` before anything is written.
2. Builds a device mesh with one ``data`` axis over every device: the state is replicated,
   the global batch is sharded along ``data`` (BatchNorm statistics are over the global batch).
3. Restores the newest checkpoint in ``workdir/checkpoints`` if there is one and positions
   the input pipeline at that step, so a resumed run sees the batches it would have seen.
4. Trains with a tqdm bar, logs scalars to TensorBoard and ``metrics.jsonl``, writes sample
   grids from a fixed batch of z at 10 %, 20 %, ..., 100 % of training (and a progress strip),
   runs the configured evaluators, and checkpoints every ``checkpoint_every`` steps and at
   the end.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxgen import models
from jaxgen.data import pipeline
from jaxgen.losses import gan as gan_losses
from jaxgen.train import checkpoint, images as image_lib, preemption, state as state_lib
from jaxgen.train import step as step_lib
from jaxgen.train.writers import Writer, truncate_after

CONFIG_FILE = 'config.json'
DIVERGENCE_POLICIES = ('stop', 'skip', 'rollback')
# Config entries that decide the shapes of the saved state: a checkpoint written under other
# values cannot be restored.
STRUCTURAL_KEYS = ('model', 'data.resolution', 'data.channels', 'ema_decay_enabled',
                   'lr_schedule_enabled')


class DivergenceError(RuntimeError):
  """Training produced non-finite losses or gradients (divergence_policy='stop')."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions); older ones are intact."""


# ---------------------------------------------------------------------------- checks


def validate_config(config) -> None:
  """Raises ValueError naming the field, the value and what is accepted."""
  def positive(name, value, kind=(int, float)):
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
      raise ValueError(f'{name} must be positive; got {value!r}.')

  positive('batch_size', config.batch_size, int)
  positive('num_steps', config.num_steps, int)
  positive('n_dis', config.n_dis, int)
  positive('optimizer.g_lr', config.optimizer.g_lr)
  positive('optimizer.d_lr', config.optimizer.d_lr)
  state_lib.learning_rate(1.0, config.optimizer, config.num_steps)  # Checks the schedule.
  for b in ('b1', 'b2'):
    v = config.optimizer[b]
    if not 0.0 <= v < 1.0:
      raise ValueError(f'optimizer.{b} must be in [0, 1); got {v!r}.')
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f'ema_decay must be in [0, 1) (0 disables EMA); got {config.ema_decay!r}.')
  gan_losses.get_gan_loss(config.loss.name)
  if config.penalty.name != 'none':
    from jaxgen.losses import penalties  # pylint: disable=g-import-not-at-top
    penalties.get_penalty(config.penalty.name)
    if config.penalty.weight < 0:
      raise ValueError(f'penalty.weight must be >= 0; got {config.penalty.weight!r}.')
  policy = config.get('divergence_policy', 'stop')
  if policy not in DIVERGENCE_POLICIES:
    raise ValueError(f'Unknown divergence_policy {policy!r}; accepted: '
                     f'{", ".join(DIVERGENCE_POLICIES)}.')
  for name in ('log_every', 'checkpoint_every', 'keep_checkpoints', 'steps_per_dispatch'):
    positive(name, config.get(name, 1), int)
  pipeline.validate(config.data)
  models.get_gan_module(config.model.name)
  if config.data.name not in pipeline.TOY2D:
    if config.model.resolution != config.data.resolution:
      raise ValueError(f'model.resolution ({config.model.resolution}) must equal '
                       f'data.resolution ({config.data.resolution}).')
    if config.model.channels != config.data.get('channels', 3):
      raise ValueError(f'model.channels ({config.model.channels}) must equal data.channels '
                       f'({config.data.get("channels", 3)}).')
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if config.batch_size % n_dev or config.batch_size % n_proc:
    raise ValueError(f'batch_size {config.batch_size} must divide evenly across the '
                     f'{n_dev} devices and {n_proc} processes; use a multiple of {n_dev}.')
  models.get_gan(config.model)  # The model's own checks (e.g. resolution).
  for name in config.get('evaluators', ()):
    from jaxgen.metrics import evaluators  # pylint: disable=g-import-not-at-top
    evaluators.check_name(name)


def _structure(config) -> dict:
  flat = {'model': config.model.to_dict(),
          'data.resolution': config.data.get('resolution'),
          'data.channels': config.data.get('channels'),
          'ema_decay_enabled': config.ema_decay > 0,
          # A decaying schedule adds a step count to both optimizers' states.
          'lr_schedule_enabled': config.optimizer.get('schedule', 'constant') != 'constant'}
  return json.loads(json.dumps(flat))


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir whose saved run has other networks than ``config`` describes."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  saved_cfg = ml_collections.ConfigDict(saved)
  try:
    old = _structure(saved_cfg)
  except (KeyError, AttributeError):
    return
  new = _structure(config)
  diffs = []
  for key in STRUCTURAL_KEYS:
    if old[key] != new[key]:
      if isinstance(old[key], dict):
        for k in sorted(set(old[key]) | set(new[key])):
          if old[key].get(k) != new[key].get(k):
            diffs.append(f'{key}.{k}: saved {old[key].get(k)!r}, now {new[key].get(k)!r}')
      else:
        diffs.append(f'{key}: saved {old[key]!r}, now {new[key]!r}')
  if diffs:
    raise ValueError(
        f'{workdir!r} holds a run with a different architecture, so its checkpoints cannot be '
        f'restored: ' + '; '.join(diffs) + '. Use a new --workdir, or the saved settings.')


# ---------------------------------------------------------------------------- helpers


def make_mesh():
  """One 'data' axis over every device.

  The axis is 'Auto' (GSPMD propagates shardings from the jit's in/out shardings): with
  jax's default 'Explicit' axes every reshape that touches the sharded batch axis inside a
  model (phase interleaving, flattening) would need a hand-written out_sharding.
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def _global_batch(batch, mesh, global_shape_fn):
  sharding = NamedSharding(mesh, P(None, 'data'))

  def put(x):
    return jax.make_array_from_process_local_data(sharding, x, global_shape_fn(x))
  return jax.tree.map(put, batch)


def make_generate_fn(config, generator):
  """Jitted eval-mode sampler: (g_vars, z) -> images."""
  @jax.jit
  def generate(g_vars, z):
    return generator.apply(g_vars, z, train=False)
  return generate


def sampling_vars(state):
  params = state.ema_params if jax.tree.leaves(state.ema_params) else state.g_params
  return {'params': params, **state.g_state}


def build(config):
  """Model, optimizers, a state initialiser (call it under jit) and the data shape."""
  generator, discriminator = models.get_gan(config.model)
  g_tx, d_tx = state_lib.make_optimizers(config.optimizer, config.num_steps, config.n_dis)
  if config.data.name in pipeline.TOY2D:
    data_shape = (2,)
  else:
    data_shape = (config.data.resolution, config.data.resolution, config.data.get('channels', 3))
  def init():
    return state_lib.init_state(config, generator, discriminator, g_tx, d_tx, data_shape)
  return generator, discriminator, g_tx, d_tx, init, data_shape


def _write_config(config, workdir):
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json(indent=2))
  os.replace(path + '.tmp', path)


# ---------------------------------------------------------------------------- main loop


def check_writable(config, workdir: str, state_bytes: int) -> None:
  """Fails early on a workdir that cannot be written or lacks room for the checkpoints."""
  # One probe per process: processes sharing a workdir must not remove each other's.
  probe = os.path.join(workdir, f'.jaxgen_write_probe_{jax.process_index()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'workdir {workdir!r} is not writable ({e.strerror}); choose another '
                     '--workdir.') from None
  need = state_bytes * (config.keep_checkpoints + 1) + (64 << 20)
  free = shutil.disk_usage(workdir).free
  if free < need:
    raise ValueError(f'workdir {workdir!r} has {free / 2**20:.0f} MiB free; keeping '
                     f'{config.keep_checkpoints} checkpoints of {state_bytes / 2**20:.1f} MiB '
                     f'needs about {need / 2**20:.0f} MiB. Free space, lower '
                     '--config.keep_checkpoints or use another --workdir.')


def train_and_evaluate(config, workdir: str):
  """Trains the GAN described by ``config`` in ``workdir``; returns the final state."""
  config = ml_collections.ConfigDict(config)
  validate_config(config)
  check_workdir(config, workdir)
  generator, discriminator, g_tx, d_tx, init, data_shape = build(config)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(init)))
  check_writable(config, workdir, state_bytes)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  state = jax.jit(init, out_shardings=replicated)()
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
  start_step = int(state.step)
  truncate_after(workdir, start_step)  # Records a killed run logged after its last checkpoint.
  _write_config(config, workdir)

  spd = config.get('steps_per_dispatch', 1)
  train_step = step_lib.make_train_step(config, generator, discriminator, g_tx, d_tx)
  multi_step = jax.jit(step_lib.make_multi_step(train_step, spd),
                       in_shardings=(replicated, NamedSharding(mesh, P(None, 'data'))),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  local_bs = config.batch_size * config.n_dis // jax.process_count()

  data = pipeline.make_dataset(config.data, config.data.get('split', 'train'), local_bs,
                               seed=config.seed, start_step=start_step + int(state.data_offset))

  def next_block():
    batches = [next(data) for _ in range(spd)]
    stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
    return _global_batch(stacked, mesh,
                         lambda x: (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:]))

  is_main = jax.process_index() == 0
  writer = Writer(workdir)
  # Every process computes the grids (one program over all devices), process 0 writes them.
  samples = _SampleWriter(config, generator, workdir, writer, enabled=len(data_shape) == 3)
  evaluators = _make_evaluators(config)
  policy = config.get('divergence_policy', 'stop')
  rollbacks = 0
  pending = []  # Device metrics not yet pulled to the host: no sync per step.
  bar = None
  if is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=config.num_steps, initial=start_step, desc=os.path.basename(workdir),
               unit='step', dynamic_ncols=True)
  step = start_step
  timer = [time.time(), step]

  def flush_metrics():
    """Pulls pending metrics; returns (merged, first non-finite step or None)."""
    nonlocal pending
    if not pending:
      return None, None
    host = jax.device_get(pending)
    pending = []
    merged = {k: np.concatenate([np.asarray(m[k]) for m in host]) for k in host[0]}
    bad = None
    if policy != 'skip' and merged['finite'].min() < 1:
      idx = int(np.argmin(merged['finite']))
      bad = (step - len(merged['finite']) + idx + 1, {k: float(v[idx]) for k, v in
                                                       merged.items() if k != 'finite'})
    return merged, bad

  def log(merged):
    now = time.time()
    scalars = {k: float(v[-1]) for k, v in merged.items()}
    scalars['nonfinite_steps'] = float((merged['finite'] < 1).sum())
    scalars['steps_per_sec'] = (step - timer[1]) / max(now - timer[0], 1e-9)
    timer[:] = [now, step]
    writer.scalars(step, scalars)
    if bar is not None:
      bar.set_postfix(d=f'{scalars["d_loss"]:.3f}', g=f'{scalars["g_loss"]:.3f}')

  def save(at_step, force=False):
    try:
      checkpoint.save(manager, at_step, state, force=force)
      manager.wait_until_finished() if force else None
    except OSError as e:
      raise CheckpointWriteError(
          f'Writing the checkpoint for step {at_step} to {workdir!r} failed ({e}); the '
          f'checkpoints already there ({manager.all_steps()}) are intact. Free space or fix '
          'permissions, then run the same command to resume.') from e

  try:
    with jax.set_mesh(mesh), preemption.StopRequest() as stop:
      while step < config.num_steps:
        state, metrics = multi_step(state, next_block())
        step += spd
        pending.append(metrics)
        if bar is not None:
          bar.update(spd)
        crossed = lambda every: step // every != (step - spd) // every
        final = step >= config.num_steps
        want_ckpt = crossed(config.checkpoint_every) or final
        stopping = stop.requested(sync=jax.process_count() == 1 or crossed(config.log_every)
                                  or want_ckpt)
        if crossed(config.log_every) or want_ckpt or stopping or final:
          merged, bad = flush_metrics()
          if bad is not None:
            if policy == 'rollback' and rollbacks < config.get('max_rollbacks', 3):
              rollbacks += 1
              state, step = _rollback(state, manager, init, replicated, step, bad, workdir,
                                      bar, rollbacks)
              continue
            _raise_divergence(bad, manager, bar, policy, rollbacks)
          if merged is not None:
            log(merged)
        samples.maybe_write(step, spd, state)
        if config.get('eval_every', 0) and (crossed(config.eval_every) or final):
          _run_evaluators(config, evaluators, samples.generate, state, writer, step)
        if stopping:
          save(step, force=True)
          msg = (f'Stopped by {stop.name} at step {step}/{config.num_steps}; checkpoint saved in '
                 f'{os.path.join(workdir, checkpoint.LATEST_DIR)}. Run the same command to resume.')
          if bar is not None:
            bar.close()
            bar = None
          print(msg, flush=True)
          break
        if want_ckpt:
          save(step)
    manager.wait_until_finished()
  finally:
    manager.close()
    writer.close()
    if bar is not None:
      bar.close()
  return state


def _rollback(state, manager, init, sharding, step, bad, workdir, bar, count):
  """Restores the last good checkpoint and moves the input past the batches that diverged."""
  bad_step, terms = bad
  data_position = step + int(state.data_offset)
  good = checkpoint.restore(manager, jax.jit(init, out_shardings=sharding)())
  if good is None:
    good = jax.jit(init, out_shardings=sharding)()
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


class _SampleWriter:
  """Grids from a fixed batch of z at 10 %, ..., 100 % of training, and the progress strip."""

  def __init__(self, config, generator, workdir, writer, enabled):
    self.enabled, self.workdir, self.writer = enabled, workdir, writer
    self.dir = os.path.join(workdir, 'samples')
    self.config = config
    self._apply = make_generate_fn(config, generator)
    self.fixed_z = state_lib.sample_latent(
        jax.random.PRNGKey(config.seed + 7919), config.get('num_grid_samples', 64),
        config.model.latent_dim, config.model.get('latent_prior', 'normal'))
    n = max(1, config.get('num_sample_snapshots', 10))
    self.steps = sorted({max(1, round(config.num_steps * (i + 1) / n)) for i in range(n)})

  def path(self, step):
    return os.path.join(self.dir, f'step_{step:07d}.png')

  def generate(self, state, num, seed):
    out, key = [], jax.random.PRNGKey(seed)
    for i in range(0, num, 256):
      z = state_lib.sample_latent(jax.random.fold_in(key, i), min(256, num - i),
                                  self.config.model.latent_dim,
                                  self.config.model.get('latent_prior', 'normal'))
      out.append(np.asarray(self._apply(sampling_vars(state), z)))
    return np.concatenate(out)

  def maybe_write(self, step, spd, state):
    if not self.enabled or not any(step - spd < s <= step for s in self.steps):
      return
    g = image_lib.grid(np.asarray(self._apply(sampling_vars(state), self.fixed_z)))
    if jax.process_index() != 0:
      return
    image_lib.save_png(self.path(step), g)
    self.writer.images(step, {'samples': g[None]})
    from PIL import Image  # pylint: disable=g-import-not-at-top
    grids = [np.asarray(Image.open(self.path(s))) for s in self.steps
             if s <= step and os.path.exists(self.path(s))]
    grids = [x[..., None] if x.ndim == 2 else x for x in grids]
    image_lib.save_png(os.path.join(self.workdir, 'progress.png'), image_lib.hstack(grids))


def _run_evaluators(config, evaluators, generate, state, writer, step):
  results = {}
  gen = lambda num, seed: generate(state, num, seed)  # one function: evaluators share samples
  for ev in evaluators:
    for name, value in ev.run(gen):
      results[f'eval/{name}'] = float(value)
  if results:
    writer.scalars(step, results)
  return results


def _make_evaluators(config):
  names = tuple(config.get('evaluators', ()))
  if not names:
    return []
  from jaxgen.metrics import evaluators  # pylint: disable=g-import-not-at-top
  return [evaluators.make_evaluator(n, config) for n in names]


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{workdir!r} holds no trained run ({CONFIG_FILE} is missing).')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_run(workdir: str, step: int | None = None):
  """Loads a trained GAN run: returns (config, generator, discriminator, state).

  ``step`` defaults to the newest checkpoint. Raises ValueError when there is none.
  """
  config = load_config(workdir)
  generator, discriminator, _, _, init, _ = build(config)
  state = jax.jit(init)()
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, create=False)
  try:
    restored = checkpoint.restore(manager, state, step)
  finally:
    manager.close()
  if restored is None:
    raise ValueError(f'{workdir!r} has no checkpoint to restore.')
  return config, generator, discriminator, restored
