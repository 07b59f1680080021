"""Pretrain a text encoder (char-CNN-RNN or DAMSM bi-LSTM) on image-text matching.

  python -m experiments.text_encoder --config=experiments/configs/text_encoder.py:bilstm \
      --workdir=runs/text_bilstm [--results=docs/results/text_encoder/bilstm.json]

Writes checkpoints, metrics.jsonl / TensorBoard and eval.json (caption -> image retrieval
top-1/top-5 among 100) into the workdir; with ``--results`` also a stamped results file
(:mod:`jaxgen.results`) holding eval.json, the training time and the config. Text-to-image
runs import its ``text`` network: ``init_from = {'text': '<workdir>:text'}``.
"""
from absl import flags

from experiments import launch


def train_and_evaluate(config, workdir: str, results_path: str | None = None):
  """The engine's run, then the final evaluation as a results file when ``results_path``
  (default: the ``--results`` flag, when the launcher defined it) is set."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  if results_path is None and 'results' in flags.FLAGS:
    results_path = flags.FLAGS.results
  start = time.time()
  state = loop.train_and_evaluate(config, workdir)
  if results_path:
    with open(os.path.join(workdir, loop.EVAL_FILE)) as f:
      final = json.load(f)
    results.write(results_path,
                  {'eval': final, 'workdir': workdir, 'wall_seconds_this_call': time.time() - start,
                   'config': config.to_dict()},
                  results.command_line('python -m experiments.text_encoder'))
  return state


if __name__ == '__main__':
  flags.DEFINE_string('results', '', 'Also write a stamped results file here (jaxgen.results).')
  launch.run('experiments/configs/text_encoder.py', 'experiments.text_encoder:train_and_evaluate')
