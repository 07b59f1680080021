"""Score a trained run of any family that samples images (GAN, VAE, CVAE), or a real split,
with IS, FID and KID.

  python -m jaxgen.evaluate --workdir=runs/dcgan --metrics=is,fid,kid --num_samples=1000

restores the newest checkpoint of the run in ``--workdir`` (its ``config.json`` describes the
networks), generates ``--num_samples`` images through the family's ``sample`` with the fixed
``--seed`` (the same samples as the engine's periodic evaluation with ``eval_seed``), and scores them with the protocol of
:mod:`jaxgen.metrics.evaluators`. Short metric names (``is``, ``fid``, ``kid``) are taken in
``--space`` (``auto``: the project classifier when the dataset has one, else Inception); full
names (``digits_fid``, ``inception_is``, ...) choose the space themselves.

  python -m jaxgen.evaluate --real_split=test --dataset=jaxgen_digits --resolution=32

scores real images instead of samples: the IS of real data (the ceiling) and the FID/KID of
the ``test`` split against the reference split (the noise floor of a perfect generator with
that many samples).

Results are printed, appended as one JSON line to ``<workdir>/evaluation.jsonl`` and, with
``--output``, written to a JSON file; ``--results=PATH`` writes them as a stamped results file
(:func:`jaxgen.results.write`: the command line, the machine, versions and git commit).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import ml_collections

from jaxgen.metrics import evaluators

RESULTS_FILE = 'evaluation.jsonl'


def _parse(argv):
  p = argparse.ArgumentParser(prog='python -m jaxgen.evaluate', description=__doc__.split('\n')[0])
  p.add_argument('--workdir', default=None, help='A trained GAN run (holds config.json).')
  p.add_argument('--metrics', default='is,fid,kid',
                 help=f'Comma-separated: is, fid, kid (in --space) or any of {", ".join(evaluators.NAMES)}.')
  p.add_argument('--space', default='auto', choices=('auto',) + evaluators.SPACES)
  p.add_argument('--num_samples', type=int, default=None,
                 help='Generated images to score (default: the run\'s eval_num_samples).')
  p.add_argument('--seed', type=int, default=None, help='Sampling seed (default: eval_seed, 0).')
  p.add_argument('--step', type=int, default=None, help='Checkpoint step (default: newest).')
  p.add_argument('--reference_split', default=None, help='Real split for FID/KID (train).')
  p.add_argument('--real_split', default=None,
                 help='Score this real split instead of generated images (ceilings).')
  p.add_argument('--dataset', default=None, help='With --real_split and no --workdir.')
  p.add_argument('--resolution', type=int, default=None)
  p.add_argument('--data_dir', default=None)
  p.add_argument('--inception_weights', default=None, help='InceptionV3 FID weight file.')
  p.add_argument('--inception_protocol', default=None, choices=('tf1', 'pytorch_fid'))
  p.add_argument('--cache_dir', default=None, help='Classifier and reference-statistics cache.')
  p.add_argument('--classifier_steps', type=int, default=None,
                 help='Training steps of the project classifier (default: the run\'s '
                      'eval_classifier_steps, else 800); each value is its own cached classifier.')
  p.add_argument('--output', default=None, help='Also write the results to this JSON file.')
  p.add_argument('--results', default=None,
                 help='Also write them as a stamped results file (jaxgen.results) here.')
  p.add_argument('--no_progress', action='store_true')
  return p.parse_args(argv)


def _config(args):
  if args.workdir:
    from jaxgen.engine import workdir  # pylint: disable=g-import-not-at-top
    config = workdir.load_config(args.workdir)
  else:
    if not args.real_split or not args.dataset or not args.resolution:
      raise ValueError('Pass --workdir=<trained run>, or --real_split with --dataset and '
                       '--resolution to score real data.')
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(name=args.dataset, resolution=args.resolution,
                                                 channels=1 if args.dataset == 'jaxgen_digits'
                                                 else 3, data_dir=''))
  overrides = {'eval_num_samples': args.num_samples, 'eval_seed': args.seed,
               'eval_reference_split': args.reference_split,
               'inception_weights': args.inception_weights,
               'inception_protocol': args.inception_protocol, 'eval_cache_dir': args.cache_dir,
               'eval_classifier_steps': args.classifier_steps}
  for key, value in overrides.items():
    if value is not None:
      config[key] = value
  if args.data_dir is not None:
    config.data.data_dir = args.data_dir
  return config


def metric_names(metrics: str, space: str, data_name: str) -> list[str]:
  """'is,fid,kid' + space -> evaluator names; full names pass through."""
  from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
  if space == 'auto':
    space = 'digits' if data_name in classifier.DATASETS else 'inception'
  names = []
  for item in (m.strip() for m in metrics.split(',') if m.strip()):
    name = item if '_' in item else f'{space}_{item}'
    evaluators.check_name(name)
    if name not in names:
      names.append(name)
  if not names:
    raise ValueError(f'--metrics is empty; accepted: is, fid, kid or {", ".join(evaluators.NAMES)}.')
  return names


def evaluate(args) -> dict:
  config = _config(args)
  names = metric_names(args.metrics, args.space, config.data.name)
  progress = not args.no_progress
  evs = [evaluators.make_evaluator(n, config, progress=progress) for n in names]
  record = {'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'metrics': {}}
  if args.real_split:
    from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
    images, _ = pipeline.load_split_arrays(config.data, args.real_split)
    record.update(source=f'real:{args.real_split}', num_samples=int(len(images)))
    for ev in evs:
      outputs = evaluators.reference_outputs(ev.extractor, config.data, args.real_split, None,
                                             ev.cache_dir, progress)
      record['metrics'].update(ev.score_outputs(outputs))
  else:
    from jaxgen.engine import loop, runs  # pylint: disable=g-import-not-at-top
    run_config, _, family, state = runs.restore_run(args.workdir, args.step,
                                                    build_kwargs={'with_data': False})
    if family.sample is None:
      raise ValueError(f'{args.workdir!r} holds a {run_config.family!r} run, which draws no '
                       'samples to score.')
    sampler = loop.Sampler(family, run_config)
    # The trainer's periodic evaluation draws the same samples (loop.Sampler.generate).
    generate = lambda num, seed: sampler.generate(state, num, seed)
    record.update(source='generated', step=int(state.step), num_samples=evs[0].num_samples,
                  seed=evs[0].seed)
    for ev in evs:
      record['metrics'].update(ev.run(generate))
  record['metrics'] = {k: float(v) for k, v in record['metrics'].items()}
  record.update(dataset=config.data.name, resolution=config.data.get('resolution'),
                reference_split=evs[0].reference_split,
                feature_spaces={ev.space: ev.extractor.cache_id for ev in evs})
  for ev in evs:
    if ev.space == 'digits':
      record['classifier_test_accuracy'] = ev.extractor.meta.get('test_accuracy')
  return record


def main(argv=None):
  args = _parse(argv)
  try:
    record = evaluate(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  width = max(len(k) for k in record['metrics'])
  what = record['source'] + (f' (step {record["step"]})' if 'step' in record else '')
  print(f'{record["dataset"]}/{record["resolution"]}, {what}, N={record["num_samples"]}, '
        f'reference={record["reference_split"]}')
  for k, v in record['metrics'].items():
    print(f'  {k:<{width}}  {v:.6g}')
  if args.workdir:
    with open(os.path.join(args.workdir, RESULTS_FILE), 'a') as f:
      f.write(json.dumps(record) + '\n')
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(record, f, indent=2)
  if args.results:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(args.results, dict(record, workdir=args.workdir),
                  results.command_line('python -m jaxgen.evaluate',
                                       sys.argv[1:] if argv is None else argv))
  return 0


if __name__ == '__main__':
  sys.exit(main())
