"""Shared absl entry point: ``--config`` (ml_collections config file[:variant]), ``--workdir``
and ``--results`` (after training, a stamped results file, :mod:`jaxgen.results`, holding the
run's final ``eval.json``, the wall time of this call, the workdir and the config)."""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags


def run(default_config: str, train_fn_path: str = 'jaxgen.engine.loop:train_and_evaluate'):
  """Parses flags and calls ``train_fn(config, workdir)``; errors become one clear line."""
  config_flags.DEFINE_config_file('config', default_config, 'Experiment config (path[:variant]).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.')
  flags.mark_flags_as_required(['workdir'])
  flags.DEFINE_string('results', '', 'Also write a stamped results file here (jaxgen.results).')
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
      start = time.time()
      train_fn(flags.FLAGS.config, flags.FLAGS.workdir)
      if flags.FLAGS.results:
        write_results(flags.FLAGS.results, flags.FLAGS.config, flags.FLAGS.workdir,
                      time.time() - start)
    except (ValueError, RuntimeError) as e:
      # jaxgen's own "what was wrong and what is accepted" errors: one line, no traceback.
      if type(e).__name__ in ('ValueError', 'BadImagesError', 'DatasetNotAvailableError',
                              'DivergenceError', 'CheckpointWriteError'):
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
      raise
    print(f'done: outputs in {flags.FLAGS.workdir}')

  app.run(main)


def write_results(path: str, config, workdir: str, wall_seconds: float):
  """The run's final evaluation (``eval.json``) as a stamped results file at ``path``."""
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  eval_file = os.path.join(workdir, loop.EVAL_FILE)
  if not os.path.exists(eval_file):
    raise ValueError(f'--results: {eval_file} is missing (the run has not reached its last '
                     'step, or its family has no evaluation); nothing written.')
  with open(eval_file) as f:
    final = json.load(f)
  main = sys.modules['__main__']
  prog = getattr(getattr(main, '__spec__', None), 'name', None) or sys.argv[0]
  results.write(path, {'eval': final, 'workdir': workdir, 'wall_seconds_this_call': wall_seconds,
                       'config': config.to_dict()},
                results.command_line(f'python -m {prog}'))
