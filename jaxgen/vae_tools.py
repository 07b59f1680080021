"""Figures and commands for trained VAEs / CVAEs (a workdir written by ``experiments.vae``/``cvae``).

  python -m jaxgen.vae_tools evaluate    --workdir=runs/vae [--k=5000] [--split=test]
  python -m jaxgen.vae_tools figures     --workdir=runs/vae          # everything below
  python -m jaxgen.vae_tools samples     --workdir=runs/vae [--num=64]
  python -m jaxgen.vae_tools latent-grid --workdir=runs/vae2d [--n=20] [--label=3]
  python -m jaxgen.vae_tools generate    --workdir=runs/cvae --label=7 [--num=64]   # (a)
  python -m jaxgen.vae_tools rerender    --workdir=runs/cvae [--num=10]             # (b)
  python -m jaxgen.vae_tools class-accuracy --workdir=runs/cvae [--num=1000]

``evaluate`` and ``class-accuracy`` take ``--results=PATH``: their output as a stamped results
file (:func:`jaxgen.results.write`), with the run's config.

``generate`` draws z ~ N(0, I) and decodes it as the requested class. ``rerender`` takes real
test images, keeps their style z (the posterior mean given image and true label) and decodes
it as every class: row i is [original | class 0 | ... | class 9], the same handwriting
written as each digit. Images are the decoder's mean (sigmoid of the logits for a Bernoulli
likelihood). Output PNGs go to ``<workdir>/figures`` unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from jaxgen.engine import runs
from jaxgen.families import vae as vae_family
from jaxgen.families.vae_figures import (class_grid, check_label, generate, latent_grid,
                                         num_classes, save, rerender, to_pm1, write_figures)
from jaxgen.models import vae as vae_models


def load_run(workdir: str, step: int | None = None):
  """(config, model, params, step) of a VAE/CVAE run (newest checkpoint by default)."""
  config, _, _, state = runs.restore_run(workdir, step, family='vae',
                                         build_kwargs={'with_data': False})
  return config, vae_models.make_vae(config.model), state.nets['vae']['params'], int(state.step)


def class_accuracy(config, model, params, num=1000, seed=0, cache_dir=None) -> dict:
  """Accuracy of the project's digit classifier on CVAE samples of each requested class.

  ``num // classes`` samples per class from z ~ N(0, I). The classifier's accuracy on the
  real test split is returned alongside as the reference ceiling.
  """
  from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
  n = num_classes(config)
  if not n:
    raise ValueError('class-accuracy needs a conditional VAE (model.num_classes > 0).')
  clf = classifier.get_classifier(config.data, cache_dir)
  images, labels = [], []
  for c in range(n):
    x01 = generate(config, model, params, label=c, num=max(1, num // n), seed=seed + c)
    images.append(to_pm1(x01))
    labels.append(np.full((len(x01),), c))
  images, labels = np.concatenate(images), np.concatenate(labels)
  pred = clf(images)['logits'].argmax(axis=1)
  per_class = {str(c): float(np.mean(pred[labels == c] == c)) for c in range(n)}
  return {'accuracy': float(np.mean(pred == labels)), 'per_class': per_class,
          'num_samples': int(len(images)),
          'classifier_test_accuracy': clf.meta.get('test_accuracy'),
          'classifier': clf.cache_id}


def _load_eval_split(config, split, max_examples):
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_split_arrays(config.data, split, max_examples=max_examples or None)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m jaxgen.vae_tools', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)

  def add(name, help_text):
    p = sub.add_parser(name, help=help_text)
    p.add_argument('--workdir', required=True, help='Directory of a VAE/CVAE run.')
    p.add_argument('--step', type=int, default=None, help='Checkpoint step (default: newest).')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=None, help='Output PNG (or folder for "figures").')
    return p

  p = add('evaluate', 'Test ELBO and IWAE log p(x).')
  p.add_argument('--k', type=int, default=5000, help='Importance samples (IWAE).')
  p.add_argument('--split', default=None, help='Default: the run\'s eval split.')
  p.add_argument('--max-examples', type=int, default=0)
  p.add_argument('--results', default=None, help='Also write a stamped results file here.')
  add('figures', 'All figures.')
  p = add('samples', 'Samples from the prior.')
  p.add_argument('--num', type=int, default=64)
  p = add('latent-grid', 'Decoded grid over a 2-d latent plane.')
  p.add_argument('--n', type=int, default=20)
  p.add_argument('--label', type=int, default=None)
  p = add('generate', 'Samples of one class (CVAE).')
  p.add_argument('--label', type=int, required=True)
  p.add_argument('--num', type=int, default=64)
  p = add('rerender', 'Test images re-rendered as every class (CVAE).')
  p.add_argument('--num', type=int, default=10)
  p = add('class-accuracy', 'Digit classifier accuracy on CVAE samples of each class.')
  p.add_argument('--num', type=int, default=1000)
  p.add_argument('--cache-dir', default=None, help='Classifier cache (jaxgen default).')
  p.add_argument('--results', default=None, help='Also write a stamped results file here.')
  args = parser.parse_args(argv)

  def stamped(result):
    if args.results:
      from jaxgen import results  # pylint: disable=g-import-not-at-top
      results.write(args.results, dict(result, workdir=args.workdir, config=config.to_dict()),
                    results.command_line('python -m jaxgen.vae_tools',
                                         sys.argv[1:] if argv is None else argv))

  try:
    config, model, params, step = load_run(args.workdir, args.step)
    out_dir = os.path.join(args.workdir, 'figures')
    out = lambda name: args.out or os.path.join(out_dir, name)
    if args.command == 'evaluate':
      split = args.split or config.data.get('eval_split', 'test')
      images, labels = _load_eval_split(config, split, args.max_examples)
      res = vae_family.evaluate_params(config, model, params, images, labels, iwae_k=args.k,
                                 seed=args.seed)
      res.update(step=step, split=split)
      print(json.dumps(res, indent=2))
      stamped(res)
    elif args.command == 'figures':
      images, labels = _load_eval_split(config, config.data.get('eval_split', 'test'), 64)
      for path in write_figures(config, model, params, images, labels, args.out or out_dir,
                                args.seed):
        print(path)
    elif args.command == 'samples':
      if num_classes(config):  # A CVAE: one row per class, one column per style z.
        print(save(out('class_grid.png'), class_grid(config, model, params, seed=args.seed),
                   ncol=num_classes(config)))
      else:
        print(save(out('samples.png'), generate(config, model, params, num=args.num,
                                                seed=args.seed), ncol=8))
    elif args.command == 'latent-grid':
      print(save(out('latent_grid.png'), latent_grid(config, model, params, args.n, args.label),
                 ncol=args.n, scale=1))
    elif args.command == 'generate':
      check_label(config, args.label)
      print(save(out(f'class_{args.label}.png'),
                 generate(config, model, params, args.label, args.num, args.seed), ncol=8))
    elif args.command == 'rerender':  # rerender() refuses an unconditional VAE.
      images, labels = _load_eval_split(config, config.data.get('eval_split', 'test'), args.num)
      print(save(out('rerender.png'), rerender(config, model, params, images, labels),
                 ncol=num_classes(config) + 1))
    elif args.command == 'class-accuracy':
      res = class_accuracy(config, model, params, args.num, args.seed, args.cache_dir)
      print(json.dumps(res, indent=2))
      stamped(dict(res, step=step))
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
