"""Checkpoints through orbax's CheckpointManager.

Orbax writes each step into a temporary folder and renames it only once complete, so a
process killed at any moment leaves the newest *complete* checkpoint loadable. States are
saved as nested dicts (``flax.serialization.to_state_dict``) so any flax struct round-trips.
"""
from __future__ import annotations

import os

import flax
import jax
import orbax.checkpoint as ocp

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'


def make_manager(workdir: str, keep: int = 3, *, subdir: str = LATEST_DIR,
                 best_metric: str | None = None, best_mode: str = 'min',
                 create: bool = True) -> ocp.CheckpointManager:
  """Manager keeping the last ``keep`` steps (or, with ``best_metric``, the best ``keep``)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode=best_mode, keep_checkpoints_without_metrics=not best_metric)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, subdir)), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, metrics=None, *,
         force: bool = False) -> bool:
  return manager.save(int(step), args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                      metrics=metrics, force=force)


def restore(manager: ocp.CheckpointManager, target, step: int | None = None):
  """Restores ``step`` (default: newest) into the structure, dtypes and shardings of ``target``.

  Returns None when there is nothing to restore.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  target_dict = flax.serialization.to_state_dict(target)

  def abstract(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  restored = manager.restore(step, args=ocp.args.StandardRestore(
      jax.tree.map(abstract, target_dict)))
  return flax.serialization.from_state_dict(target, restored)
