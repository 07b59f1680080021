"""Checkpoints through orbax's CheckpointManager.

Orbax writes each step into a temporary folder and renames it only once complete, so a
process killed at any moment leaves the newest *complete* checkpoint loadable. States are
saved as nested dicts (``flax.serialization.to_state_dict``) so any flax struct round-trips.
"""
from __future__ import annotations

import os

import flax
from absl import logging
import jax
import orbax.checkpoint as ocp

LATEST_DIR = 'checkpoints'


def make_manager(workdir: str, keep: int = 3, *, create: bool = True) -> ocp.CheckpointManager:
  """Manager keeping the last ``keep`` steps under ``workdir/checkpoints``."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create,
      cleanup_tmp_directories=True)  # Remove halves of writes cut short by a crash.
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, LATEST_DIR)),
                               options=options)


def latest_listed_step(workdir: str) -> int:
  """The newest finished checkpoint step under ``workdir`` (0 when none), read without a manager."""
  path = os.path.join(workdir, LATEST_DIR)
  steps = list(ocp.utils.checkpoint_steps(path)) if os.path.isdir(path) else []
  return max(steps) if steps else 0


def save(manager: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> bool:
  return manager.save(int(step), args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                      force=force)


def restore(manager: ocp.CheckpointManager, target, step: int | None = None):
  """Restores ``step`` into the structure, dtypes and shardings of ``target``.

  Without ``step``, the newest checkpoint that restores is used: one that fails to read (say,
  damaged on disk) is reported and the next older one is tried. Returns None when there is
  nothing to restore; raises ValueError when checkpoints exist but none fits ``target``.
  """
  if step is not None:
    steps = sorted(manager.all_steps())
    if int(step) not in steps:
      raise ValueError(f'{manager.directory} has no checkpoint at step {step}; it has: '
                       f'{", ".join(map(str, steps)) or "none"}.')
    return _restore_step(manager, target, int(step))
  errors = []
  for s in sorted(manager.all_steps(), reverse=True):
    try:
      return _restore_step(manager, target, s)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {s}: {type(e).__name__}: {str(e)[:300]}')
      logging.warning('Checkpoint at step %d could not be restored (%s); trying an older one.',
                      s, e)
  if errors:
    raise ValueError(f'No checkpoint in {manager.directory} fits this config: '
                     + ' | '.join(errors))
  return None


def abstract_state(init, sharding):
  """``init()``'s shapes and dtypes, each on ``sharding``: a restore target for which nothing
  is compiled or run (on XLA:CPU compiling a family's init alone took 6-25 s at the tests'
  tiny sizes)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      jax.eval_shape(init))


def _restore_step(manager, target, step):
  target_dict = flax.serialization.to_state_dict(target)

  def abstract(x):  # target: arrays, or ShapeDtypeStructs with a sharding
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  restored = manager.restore(step, args=ocp.args.StandardRestore(
      jax.tree.map(abstract, target_dict)))
  return flax.serialization.from_state_dict(target, restored)
