"""DCGAN against SN-DCGAN: Inception-style scores over training, both models on equal budgets.

  python -m experiments.compare_sn --data=digits --out=runs/compare_sn \
      --results=docs/results/compare_sn/digits.json
  python -m experiments.compare_sn --data=celeba64 --out=runs/compare_sn_celeba \
      --inception_weights=pt_inception-2015-12-05-6726825d.pth

Miyato et al. (2018) compare a DCGAN-style network trained with and without spectral
normalisation of the discriminator by the Inception Score over training (on CelebA 64x64 their
SN variant ends ahead). This experiment does that comparison: ``dcgan`` (BatchNorm in D) and
``dcgan_sn`` (the same networks, spectral norm on every D layer instead of BatchNorm), the same
data, seed, optimiser and number of steps, evaluated every ``--eval_every`` steps by the
engine's evaluators (IS and FID: the digits classifier's feature space on the embedded
digits, Inception on CelebA). Each model is an ordinary run under ``--out/<model>`` (rerunning
the command resumes them); afterwards the curves go to ``--out/compare.png`` (IS and FID
against steps and against training wall time) and, with ``--results``, to a stamped results
file.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

SETTINGS = {
    # data: (config variant, evaluator space, default steps, default eval_every)
    'digits': ('digits', 'digits', 3000, 250),
    'celeba64': ('celeba64', 'inception', 50_000, 2500),
    'tiny': ('tiny', 'digits', 20, 10),  # a seconds-long smoke run (16x16, widths 8)
}
MODELS = ('dcgan', 'dcgan_sn')

flags.DEFINE_enum('data', 'digits', list(SETTINGS), 'Dataset setting.')
flags.DEFINE_list('models', list(MODELS), f'Models to compare, of {", ".join(MODELS)}.')
flags.DEFINE_integer('num_steps', 0, 'Train steps of each model (0: the setting\'s default).')
flags.DEFINE_integer('eval_every', 0, 'Steps between evaluations (0: the setting\'s default).')
flags.DEFINE_integer('eval_num_samples', 1000, 'Generated samples per evaluation.')
flags.DEFINE_string('out', 'runs/compare_sn', 'Folder of the runs and the plot.')
flags.DEFINE_string('results', '', 'Stamped results file to write (jaxgen.results).')
flags.DEFINE_string('plot', '', 'Where to write the plot (default: --out/compare.png).')
flags.DEFINE_string('data_dir', '', 'TFDS data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).')
flags.DEFINE_string('inception_weights', '', 'Inception weight file (celeba64).')


def make_config(data: str, model: str, num_steps: int, eval_every: int, num_samples: int):
  from experiments.configs import dcgan  # pylint: disable=g-import-not-at-top
  variant, space, default_steps, default_every = SETTINGS[data]
  c = dcgan.get_config(variant)
  c.model.spectral_norm = model == 'dcgan_sn'
  c.num_steps = num_steps or default_steps
  c.eval_every = eval_every or default_every
  c.evaluators = (f'{space}_is', f'{space}_fid')
  c.eval_num_samples = num_samples
  if data == 'tiny':
    c.eval_classifier_steps = 60  # a quick classifier: the smoke run checks the plumbing
  return c


def curves(workdir: str) -> dict:
  """IS and FID at each evaluated step, with the training seconds spent up to that step.

  Training time is summed from the logged throughput (steps between records / steps per
  second), so the time spent evaluating is not counted.
  """
  from jaxgen.engine.writers import read_metrics  # pylint: disable=g-import-not-at-top
  out = {'step': [], 'is': [], 'fid': [], 'train_seconds': []}
  seconds, last = 0.0, 0
  for r in read_metrics(workdir):
    if 'steps_per_sec' in r and r['steps_per_sec'] > 0:
      seconds += (r['step'] - last) / r['steps_per_sec']
      last = r['step']
    is_key = next((k for k in r if k.startswith('eval/') and k.endswith('_is')), None)
    fid_key = next((k for k in r if k.startswith('eval/') and k.endswith('_fid')), None)
    if is_key and fid_key:
      out['step'].append(r['step'])
      out['is'].append(r[is_key])
      out['fid'].append(r[fid_key])
      out['train_seconds'].append(seconds)
  return out


def plot(results: dict, path: str) -> None:
  """IS and FID against steps and against training wall time, one line per model."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
  for name, c in results['models'].items():
    for row, metric in enumerate(('is', 'fid')):
      axes[row, 0].plot(c['step'], c[metric], marker='o', ms=3, label=name)
      axes[row, 1].plot([s / 60 for s in c['train_seconds']], c[metric], marker='o', ms=3,
                        label=name)
  space = results['space']
  for row, metric in enumerate((f'{space} IS (higher is better)',
                                f'{space} FID (lower is better)')):
    axes[row, 0].set_ylabel(metric)
    axes[row, 0].set_xlabel('train step')
    axes[row, 1].set_xlabel('training wall time (min)')
  for ax in axes.ravel():
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(f'DCGAN vs SN-DCGAN on {results["data"]}, {results["num_samples"]} samples '
               'per evaluation')
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()
  from jaxgen import results as results_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  unknown = [m for m in f.models if m not in MODELS]
  if unknown or not f.models:
    print(f'error: --models takes names of {", ".join(MODELS)}; got {f.models}.',
          file=sys.stderr)
    return 2
  out = {'data': f.data, 'space': SETTINGS[f.data][1], 'num_samples': f.eval_num_samples,
         'models': {}}
  for model in f.models:
    config = make_config(f.data, model, f.num_steps, f.eval_every, f.eval_num_samples)
    if f.data_dir:
      config.data.data_dir = f.data_dir
    if f.inception_weights:
      config.inception_weights = f.inception_weights
    workdir = os.path.join(f.out, model)
    try:
      loop.train_and_evaluate(config, workdir)
    except (ValueError, FileNotFoundError) as e:
      print(f'error: {model}: {e}', file=sys.stderr)
      return 2
    out['models'][model] = curves(workdir)
    out['num_steps'] = config.num_steps
    out['eval_every'] = config.eval_every
  plot_path = f.plot or os.path.join(f.out, 'compare.png')
  os.makedirs(os.path.dirname(plot_path) or '.', exist_ok=True)
  plot(out, plot_path)
  out['plot'] = plot_path
  for model, c in out['models'].items():
    print(f'{model}: IS {c["is"][-1]:.3f}, FID {c["fid"][-1]:.2f} at step {c["step"][-1]}, '
          f'{c["train_seconds"][-1] / 60:.1f} min of training')
  print(f'plot: {plot_path}')
  if f.results:
    results_lib.write(f.results, out, results_lib.command_line('python -m experiments.compare_sn'))
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
