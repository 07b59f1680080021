"""Shared absl entry point: ``--config`` (ml_collections config file[:variant]) and ``--workdir``."""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags


def run(default_config: str, train_fn_path: str = 'jaxgen.engine.loop:train_and_evaluate'):
  """Parses flags and calls ``train_fn(config, workdir)``; errors become one clear line."""
  config_flags.DEFINE_config_file('config', default_config, 'Experiment config (path[:variant]).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.')
  flags.mark_flags_as_required(['workdir'])
  from jaxgen import distributed  # pylint: disable=g-import-not-at-top
  distributed.define_flags(flags)  # --coordinator_address, --num_processes, --process_id.

  def main(argv):
    from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
    cpu_flags.configure()  # XLA:CPU flags, before anything starts a JAX backend.
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    import importlib  # pylint: disable=g-import-not-at-top
    module, fn = train_fn_path.split(':')
    train_fn = getattr(importlib.import_module(module), fn)
    logging.set_verbosity(logging.WARNING)
    try:
      distributed.initialize_from_flags(flags.FLAGS)  # Before anything touches a device.
      train_fn(flags.FLAGS.config, flags.FLAGS.workdir)
    except (ValueError, RuntimeError) as e:
      # jaxgen's own "what was wrong and what is accepted" errors: one line, no traceback.
      if type(e).__name__ in ('ValueError', 'BadImagesError', 'DatasetNotAvailableError',
                              'DivergenceError', 'CheckpointWriteError'):
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
      raise
    print(f'done: outputs in {flags.FLAGS.workdir}')

  app.run(main)
