"""Finished (or interrupted) runs, for the tools that read them (sampling, evaluation, figures)."""
from __future__ import annotations

import jax

from jaxgen.engine import checkpoint, loop
from jaxgen.engine.workdir import load_config


def restore_run(workdir: str, step: int | None = None, *, family: str | None = None,
                build_kwargs=None):
  """Loads a run: returns (config, family module, family, state) at ``step`` (default newest).

  ``family`` refuses runs of another family. Raises ValueError when there is nothing to load.
  """
  config, module = loop.prepare(load_config(workdir))
  if family is not None and config.family != family:
    raise ValueError(f'{workdir!r} holds a {config.family!r} run; this needs a {family!r} run.')
  fam = module.build(config, **(build_kwargs or {}))
  target = checkpoint.abstract_state(lambda: fam.init(jax.random.PRNGKey(config.seed)),
                                     jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, create=False)
  try:
    state = checkpoint.restore(manager, target, step)
  finally:
    manager.close()
  if state is None:
    raise ValueError(f'{workdir!r} has no checkpoint to restore.')
  return config, module, fam, state
