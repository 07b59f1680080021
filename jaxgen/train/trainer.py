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
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxgen import models
from jaxgen.data import pipeline
from jaxgen.losses import gan as gan_losses
from jaxgen.train import checkpoint, images as image_lib, state as state_lib, step as step_lib
from jaxgen.train.writers import Writer, truncate_after

CONFIG_FILE = 'config.json'
DIVERGENCE_POLICIES = ('stop', 'skip', 'rollback')
# Config entries that decide the shapes of the saved state: a checkpoint written under other
# values cannot be restored.
STRUCTURAL_KEYS = ('model', 'data.resolution', 'data.channels', 'ema_decay_enabled')


class DivergenceError(RuntimeError):
  """Training produced non-finite losses or gradients (divergence_policy='stop')."""


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
          'ema_decay_enabled': config.ema_decay > 0}
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
  return jax.make_mesh((jax.device_count(),), ('data',))


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
  g_tx, d_tx = state_lib.make_optimizers(config.optimizer)
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


def train_and_evaluate(config, workdir: str):
  """Trains the GAN described by ``config`` in ``workdir``; returns the final state."""
  config = ml_collections.ConfigDict(config)
  validate_config(config)
  check_workdir(config, workdir)

  generator, discriminator, g_tx, d_tx, init, data_shape = build(config)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  state = jax.jit(init, out_shardings=replicated)()

  os.makedirs(workdir, exist_ok=True)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
  start_step = int(state.step)
  if start_step:
    truncate_after(workdir, start_step)
  _write_config(config, workdir)

  spd = config.get('steps_per_dispatch', 1)
  train_step = step_lib.make_train_step(config, generator, discriminator, g_tx, d_tx)
  multi_step = jax.jit(step_lib.make_multi_step(train_step, spd),
                       in_shardings=(replicated, NamedSharding(mesh, P(None, 'data'))),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  global_bs = config.batch_size * config.n_dis
  local_bs = global_bs // jax.process_count()
  data = pipeline.make_dataset(config.data, config.data.get('split', 'train'), local_bs,
                               seed=config.seed, start_step=start_step)

  def next_block():
    batches = [next(data) for _ in range(spd)]
    stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
    return _global_batch(stacked, mesh,
                         lambda x: (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:]))

  is_image = len(data_shape) == 3
  generate = make_generate_fn(config, generator)
  fixed_z = state_lib.sample_latent(jax.random.PRNGKey(config.seed + 7919),
                                    config.get('num_grid_samples', 64), config.model.latent_dim,
                                    config.model.get('latent_prior', 'normal'))
  snapshots = max(1, config.get('num_sample_snapshots', 10))
  snapshot_steps = sorted({max(1, round(config.num_steps * (i + 1) / snapshots))
                           for i in range(snapshots)})
  sample_dir = os.path.join(workdir, 'samples')
  writer = Writer(workdir)
  evaluators = _make_evaluators(config)
  is_main = jax.process_index() == 0

  def write_samples(step):
    if not is_image or not is_main:
      return
    imgs = np.asarray(generate(sampling_vars(state), fixed_z))
    g = image_lib.grid(imgs)
    image_lib.save_png(os.path.join(sample_dir, f'step_{step:07d}.png'), g)
    writer.images(step, {'samples': g[None]})
    done = [s for s in snapshot_steps if s <= step and
            os.path.exists(os.path.join(sample_dir, f'step_{s:07d}.png'))]
    if done:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      grids = [np.asarray(Image.open(os.path.join(sample_dir, f'step_{s:07d}.png')))
               for s in done]
      grids = [g[..., None] if g.ndim == 2 else g for g in grids]
      image_lib.save_png(os.path.join(workdir, 'progress.png'), image_lib.hstack(grids))

  def run_evaluators(step):
    if not evaluators:
      return {}
    def gen(num, seed):
      out, key = [], jax.random.PRNGKey(seed)
      for i in range(0, num, 256):
        z = state_lib.sample_latent(jax.random.fold_in(key, i), min(256, num - i),
                                    config.model.latent_dim,
                                    config.model.get('latent_prior', 'normal'))
        out.append(np.asarray(generate(sampling_vars(state), z)))
      return np.concatenate(out)
    results = {}
    for ev in evaluators:
      for name, value in ev.run(gen):
        results[f'eval/{name}'] = float(value)
    writer.scalars(step, results)
    return results

  log_every = config.log_every
  eval_every = config.get('eval_every', 0)
  policy = config.get('divergence_policy', 'stop')
  pending = []  # Device metrics not yet pulled to the host (no per-step sync).
  bar = None
  if is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=config.num_steps, initial=start_step, desc=os.path.basename(workdir),
               unit='step', dynamic_ncols=True)
  step = start_step
  last_time, last_step = time.time(), step
  with jax.set_mesh(mesh):
    while step < config.num_steps:
      block = next_block()
      state, metrics = multi_step(state, block)
      step += spd
      pending.append(metrics)
      if bar is not None:
        bar.update(spd)
      boundary = lambda every: step // every != (step - spd) // every
      if boundary(log_every) or step >= config.num_steps:
        host = jax.device_get(pending)
        pending = []
        merged = {k: np.concatenate([np.asarray(m[k]) for m in host]) for k in host[0]}
        if policy != 'skip' and merged['finite'].min() < 1:
          bad = int(np.argmin(merged['finite']))
          bad_step = step - len(merged['finite']) + bad + 1
          _report_divergence(config, workdir, merged, bad, bad_step, manager, bar)
        now = time.time()
        scalars = {k: float(v[-1]) for k, v in merged.items()}
        scalars['nonfinite_steps'] = float((merged['finite'] < 1).sum())
        scalars['steps_per_sec'] = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        writer.scalars(step, scalars)
        if bar is not None:
          bar.set_postfix(d=f'{scalars["d_loss"]:.3f}', g=f'{scalars["g_loss"]:.3f}')
      if any(step - spd < s <= step for s in snapshot_steps):
        write_samples(step)
      if eval_every and (boundary(eval_every) or step >= config.num_steps):
        run_evaluators(step)
      if boundary(config.checkpoint_every) or step >= config.num_steps:
        checkpoint.save(manager, step, state)
  manager.wait_until_finished()
  manager.close()
  writer.flush()
  writer.close()
  if bar is not None:
    bar.close()
  return state


def _make_evaluators(config):
  names = tuple(config.get('evaluators', ()))
  if not names:
    return []
  from jaxgen.metrics import evaluators  # pylint: disable=g-import-not-at-top
  return [evaluators.make_evaluator(n, config) for n in names]


def _report_divergence(config, workdir, merged, bad, bad_step, manager, bar):
  terms = {k: float(v[bad]) for k, v in merged.items() if k != 'finite'}
  nonfinite = [k for k, v in terms.items() if not np.isfinite(v)]
  if bar is not None:
    bar.close()
  manager.wait_until_finished()
  raise DivergenceError(
      f'Non-finite loss or gradient at step {bad_step} (terms: {terms}; non-finite: '
      f'{nonfinite or "gradients only"}). Nothing after the last checkpoint '
      f'(step {manager.latest_step()}) was saved. Lower the learning rate, or set '
      '--config.divergence_policy=skip to drop such updates.')


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
