"""The 2-D mode-coverage table: S seeds x methods x {ring, grid}, as in PacGAN's Table 1.

  python -m experiments.gan_2d_report --datasets=ring,grid --methods=gan,sn_hinge --seeds=10 \
      --out=runs/gan_2d_report

For every (dataset, method) it trains ``--seeds`` GANs (seeds 0..S-1) with the configuration
``experiments/configs/gan_2d.py:<dataset>,<method>``, draws 2,500 points from each final
generator and scores them with :mod:`jaxgen.metrics.mode_coverage`. It prints a markdown table
(mean and standard error over seeds of modes covered, % high-quality samples and reverse KL)
and writes ``table.md``, ``results.json`` (every run) and ``<dataset>_<method>.png`` (one
scatter plot of samples over the modes per seed) under ``--out``.
``--tabulate=dir1,dir2`` prints one table from earlier reports' ``results.json`` files.
``--results=PATH`` also writes a stamped copy of ``results.json`` (:func:`jaxgen.results.write`:
``{"runs": [...], "published": [...]}`` with the command line, machine, versions and commit),
the file the documentation's mode-coverage tables are rendered from.

Speed: all seeds of a row train together. The GAN family's train step (the step the
engine runs) is vmapped over the seed axis and scanned over ``--chunk`` steps in one jitted
dispatch, so 10 small MLP GANs cost little more than one on a 2-core CPU. Seed s gets the
same initial state, data stream and per-step keys as
``python -m experiments.gan_2d --config=...:<dataset>,<method> --config.seed=s``.
"""
from __future__ import annotations

import ast
import json
import os
import time

import numpy as np

PUBLISHED = {  # PacGAN (Lin et al. 2018) Table 1: (modes, HQ %).
    ('ring', 'GAN (PacGAN Table 1)'): (6.3, 98.2),
    ('ring', 'PacGAN4 (PacGAN Table 1)'): (7.8, 95.9),
    ('grid', 'GAN (PacGAN Table 1)'): (17.3, 94.8),
    ('grid', 'PacGAN4 (PacGAN Table 1)'): (24.8, 93.6),
}


def apply_overrides(config, overrides):
  """``['ema_decay=0.999', 'model.latent_dim=8']`` -> config with those fields set (a value
  that is not a Python literal is taken as a string)."""
  values = {}
  for item in overrides:
    key, sep, text = (s.strip() for s in item.partition('='))
    if not sep:
      raise ValueError(f'--set takes dotted.key=value; got {item!r}.')
    try:
      values[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      values[key] = text
  config.lock()  # A locked ConfigDict refuses a field it does not have.
  try:
    config.update_from_flattened_dict(values)
  except KeyError as e:
    raise ValueError(f'--set: no such config field ({e}).') from e
  config.unlock()
  return config


def make_config(dataset: str, method: str, overrides=()):
  from experiments.configs import gan_2d  # pylint: disable=g-import-not-at-top
  return apply_overrides(gan_2d.get_config(f'{dataset},{method}'), overrides)


def train_seeds(config, seeds, *, chunk: int = 1000, log=print):
  """Trains one GAN per seed in lockstep; returns (stacked final states, info dict)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxgen.data import toy2d  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top

  config, module = loop.prepare(config)
  family = module.build(config)
  states = [family.init(jax.random.PRNGKey(int(s))) for s in seeds]
  states = jax.tree.map(lambda *x: jnp.stack(x), *states)
  # The engine's step (its divergence policy included), vmapped over the seeds.
  train_step = loop.with_divergence_policy(family.train_step, config.divergence_policy)

  @jax.jit
  def run_chunk(states, images):  # images: [chunk, seeds, n_dis * batch, 2]
    def body(st, img):
      st, metrics = jax.vmap(train_step)(st, {'image': img})
      return st, metrics['finite']
    return jax.lax.scan(body, states, images)

  per_step = config.batch_size * config.n_dis
  total = config.num_steps

  def batches(start, num):
    return np.stack([np.stack([toy2d.batch_at(config.data, 'train', per_step, seed=int(s),
                                              step=start + i)['image'] for s in seeds])
                     for i in range(num)])

  t0 = time.time()
  nonfinite = np.zeros(len(seeds), np.int64)
  start, pending = 0, None
  next_images = batches(0, min(chunk, total))
  while start < total:
    num = min(chunk, total - start)
    states, finite = run_chunk(states, next_images)  # asynchronous dispatch ...
    if start + num < total:  # ... so the next chunk's data is drawn meanwhile.
      next_images = batches(start + num, min(chunk, total - start - num))
    if pending is not None:
      nonfinite += np.sum(np.asarray(pending) < 1, axis=0)
    pending = finite
    start += num
    if log is not None and (start // chunk) % 5 == 0:
      log(f'  step {start}/{total} ({time.time() - t0:.0f}s)')
  nonfinite += np.sum(np.asarray(pending) < 1, axis=0)
  jax.block_until_ready(states)
  return states, {'train_seconds': time.time() - t0, 'nonfinite_steps': nonfinite.tolist()}


def evaluate_seeds(config, states, seeds, num_samples: int = 2500):
  """Samples and scores every seed's generator; returns (records, samples per seed)."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import gan_2d  # pylint: disable=g-import-not-at-top
  from jaxgen import models  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top
  generator, _ = models.get_gan(config.model)
  records, all_samples, results = [], [], []
  for i, s in enumerate(seeds):
    state = jax.tree.map(lambda x, i=i: x[i], states)
    samples = gan_2d.sample_points(config, generator,
                                   base.variables(state.nets['g'], use_ema=True), num_samples,
                                   int(s))
    result = gan_2d.score(config, samples)
    records.append(dict(gan_2d.result_dict(result, samples), seed=int(s)))
    all_samples.append(samples)
    results.append(result)
  return records, all_samples, results


def summarize(records) -> dict:
  from jaxgen.metrics import mode_coverage as mc  # pylint: disable=g-import-not-at-top
  kls = [r['reverse_kl'] for r in records if r['reverse_kl'] is not None]
  return {
      'modes': mc.mean_and_stderr([r['modes'] for r in records]),
      'hq_percent': mc.mean_and_stderr([r['hq_percent'] for r in records]),
      'reverse_kl': mc.mean_and_stderr(kls) if kls else (float('nan'), 0.0),
      'all_modes_runs': sum(r['modes'] == r.get('num_modes', -1) for r in records),
      'diverged_runs': sum(r['diverged'] for r in records),
      'num_seeds': len(records),
  }


def report_table(run_lists, datasets) -> str:
  """One markdown table of the runs of each list (its number in the ``from`` column) and the
  published rows for ``datasets``: the renderer of the documentation's table."""
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  docs = [{'runs': runs, 'published': published_rows(datasets)} for runs in run_lists]
  return results.render_mode_coverage(docs, []).rstrip()


def scatter_grid(config, all_samples, results, seeds, size: int = 240):
  from experiments import gan_2d  # pylint: disable=g-import-not-at-top
  from jaxgen import images  # pylint: disable=g-import-not-at-top
  tiles = []
  for s, samples, result in zip(seeds, all_samples, results):
    if result is None:
      title = f'seed {s}: diverged'
    else:
      title = (f'seed {s}: {result.modes_covered}/{result.num_modes} modes, '
               f'{100 * result.hq_fraction:.1f}% HQ')
    tiles.append(gan_2d.scatter_image(samples, config.data, title=title, size=size))
  return images.grid(np.stack(tiles), ncol=min(5, len(tiles)), pad=4)


def published_rows(datasets) -> list[dict]:
  """The published rows of :data:`PUBLISHED` for ``datasets``, as stored in results files."""
  return [{'dataset': d, 'method': name, 'modes': modes, 'hq_percent': hq,
           'source': 'Lin et al. 2018, Table 1'}
          for (d, name), (modes, hq) in PUBLISHED.items() if d in datasets]


def run_report(datasets, methods, seeds, out_dir, overrides=(), chunk=1000, log=print,
               results_path=None, command=''):
  """Trains and scores every (dataset, method); writes the outputs; returns the table text.

  With ``results_path``, the runs and the published rows are also written there as a stamped
  results file (``command`` is the command line recorded in it).
  """
  from jaxgen import images  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  train_log, log = log, log or (lambda *_: None)
  runs = []
  for dataset in datasets:
    for method in methods:
      config = make_config(dataset, method, overrides)
      log(f'{dataset} / {method}: {len(seeds)} seeds x {config.num_steps} steps')
      states, info = train_seeds(config, seeds, chunk=chunk, log=train_log)
      records, all_samples, scores = evaluate_seeds(
          config, states, seeds, config.get('num_eval_samples', 2500))
      for r, nf in zip(records, info['nonfinite_steps']):
        r.update(dataset=dataset, method=method, nonfinite_steps=int(nf))
      summ = summarize(records)
      runs.append({'dataset': dataset, 'method': method, 'summary': summ,
                   'train_seconds': info['train_seconds'], 'config': config.to_dict(),
                   'runs': records})
      images.save_png(os.path.join(out_dir, f'{dataset}_{method}.png'),
                      scatter_grid(config, all_samples, scores, seeds))
      log(report_table([runs[-1:]], ()).splitlines()[-1])
      with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(runs, f, indent=1)
  table = report_table([runs], datasets)
  with open(os.path.join(out_dir, 'table.md'), 'w') as f:
    f.write(table + '\n')
  if results_path:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(results_path, {'runs': runs, 'published': published_rows(datasets)}, command)
  return table


def tabulate(result_dirs) -> str:
  """One table from the ``results.json`` of earlier reports (rows grouped by dataset)."""
  run_lists = []
  for d in result_dirs:
    path = os.path.join(d, 'results.json')
    if not os.path.exists(path):
      raise ValueError(f'No results.json in {d!r}: run the report with --out={d} first.')
    with open(path) as f:
      run_lists.append(json.load(f))
  return report_table(run_lists, {r['dataset'] for runs in run_lists for r in runs})


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.tabulate and f.results:
    raise ValueError('--results records runs trained by this command; --tabulate trains none.')
  if f.tabulate:
    print(tabulate([d for d in f.tabulate.split(',') if d]))
    return
  datasets = [d for d in f.datasets.split(',') if d]
  methods = [m for m in f.methods.split(',') if m]
  from experiments.configs import gan_2d  # pylint: disable=g-import-not-at-top
  for d in datasets:
    if d not in gan_2d.DATASETS:
      raise ValueError(f'Unknown dataset {d!r}; accepted: {", ".join(gan_2d.DATASETS)}.')
  for m in methods:
    if m not in gan_2d.METHODS:
      raise ValueError(f'Unknown method {m!r}; accepted: {", ".join(gan_2d.METHODS)}.')
  if f.seeds < 1:
    raise ValueError(f'--seeds must be >= 1; got {f.seeds}.')
  import sys  # pylint: disable=g-import-not-at-top
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  table = run_report(datasets, methods, list(range(f.first_seed, f.first_seed + f.seeds)),
                     f.out, f.set, f.chunk, results_path=f.results or None,
                     command=results.command_line('python -m experiments.gan_2d_report',
                                                  sys.argv[1:]))
  print(table)


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('datasets', 'ring,grid', 'Comma-separated: ring, grid.')
  flags.DEFINE_string('methods', 'gan,sn_hinge,wgan_gp,r1',
                      'Comma-separated methods of experiments/configs/gan_2d.py.')
  flags.DEFINE_integer('seeds', 10, 'Number of seeds per row.')
  flags.DEFINE_integer('first_seed', 0, 'Seeds are first_seed .. first_seed + seeds - 1.')
  flags.DEFINE_integer('chunk', 1000, 'Train steps per jitted dispatch.')
  flags.DEFINE_multi_string('set', [], 'Override for every row: dotted.key=value.')
  flags.DEFINE_string('out', 'runs/gan_2d_report', 'Output directory.')
  flags.DEFINE_string('results', '', 'Also write a stamped copy of results.json (with the '
                      'published rows) to this file (jaxgen.results).')
  flags.DEFINE_string('tabulate', '', 'Only print one table from the results.json of these '
                      'comma-separated earlier --out directories (nothing is trained).')
  app.run(main)
