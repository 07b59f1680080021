"""Figures and commands for trained VAEs / CVAEs (a workdir written by ``experiments.vae``/``cvae``).

  python -m jaxgen.vae_tools evaluate    --workdir=runs/vae [--k=5000] [--split=test]
  python -m jaxgen.vae_tools figures     --workdir=runs/vae          # everything below
  python -m jaxgen.vae_tools samples     --workdir=runs/vae [--num=64]
  python -m jaxgen.vae_tools latent-grid --workdir=runs/vae2d [--n=20] [--label=3]
  python -m jaxgen.vae_tools generate    --workdir=runs/cvae --label=7 [--num=64]   # (a)
  python -m jaxgen.vae_tools rerender    --workdir=runs/cvae [--num=10]             # (b)
  python -m jaxgen.vae_tools class-accuracy --workdir=runs/cvae [--num=1000]

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

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.train import images as image_lib
from jaxgen.train import vae_trainer


def _num_classes(config) -> int:
  return config.model.get('num_classes', 0)


def _to_pm1(x01):
  return np.asarray(x01, np.float32) * 2.0 - 1.0


def encode_mean(config, model, params, images, labels=None) -> np.ndarray:
  """Posterior means E_q[z | x(, y)] of pipeline images (prepared as evaluation targets)."""
  x = jnp.asarray(vae_trainer.EvalTargets(config)(images))
  y = None if not _num_classes(config) else jnp.asarray(labels, jnp.int32)
  mu, _ = jax.jit(lambda p, x, y: model.apply({'params': p}, x, y, method=model.encode))(
      params, x, y)
  return np.asarray(mu)


def decode_mean(config, model, params, z, labels=None) -> np.ndarray:
  """E[x | z(, y)] in [0, 1] for latent codes ``z`` [N, D]."""
  y = None if not _num_classes(config) else jnp.asarray(labels, jnp.int32)
  out = jax.jit(lambda p, z, y: model.apply({'params': p}, z, y, method=model.mean_image))(
      params, jnp.asarray(z, jnp.float32), y)
  return np.asarray(out)


def check_label(config, label):
  n = _num_classes(config)
  if not n:
    raise ValueError('This run is an unconditional VAE: it has no classes to choose from.')
  if not isinstance(label, (int, np.integer)) or not 0 <= label < n:
    raise ValueError(f'label must be an integer in [0, {n - 1}]; got {label!r}.')


def generate(config, model, params, label=None, num=64, seed=0) -> np.ndarray:
  """``num`` samples (decoder means) from the prior, of class ``label`` for a CVAE."""
  if label is not None or _num_classes(config):
    check_label(config, label)  # A CVAE needs a valid class; a VAE accepts none.
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, config.model.latent_dim))
  labels = None if label is None else np.full((num,), label, np.int32)
  return decode_mean(config, model, params, z, labels)


def class_grid(config, model, params, num_styles=10, seed=0) -> np.ndarray:
  """[classes * num_styles] images: row c holds class c, column j shares the z of style j."""
  n = _num_classes(config)
  z = jax.random.normal(jax.random.PRNGKey(seed), (num_styles, config.model.latent_dim))
  zz = np.tile(np.asarray(z), (n, 1))
  labels = np.repeat(np.arange(n), num_styles)
  return decode_mean(config, model, params, zz, labels)


def rerender(config, model, params, images, labels) -> np.ndarray:
  """[N * (1 + classes)] images: each row is the original, then its style z as every class."""
  n = _num_classes(config)
  if not n:
    raise ValueError('rerender needs a conditional VAE (model.num_classes > 0).')
  z = encode_mean(config, model, params, images, labels)
  zz = np.repeat(z, n, axis=0)
  ys = np.tile(np.arange(n), len(z))
  out = decode_mean(config, model, params, zz, ys).reshape(len(z), n, *images.shape[1:])
  originals = ((np.asarray(images, np.float32) + 1.0) * 0.5)[:, None]
  return np.concatenate([originals, out], axis=1).reshape(-1, *images.shape[1:])


def reconstructions(config, model, params, images, labels=None, per_row=8) -> np.ndarray:
  """Rows alternate originals and reconstructions (decoder mean at the posterior mean)."""
  z = encode_mean(config, model, params, images, labels)
  rec = decode_mean(config, model, params, z, labels)
  orig = (np.asarray(images, np.float32) + 1.0) * 0.5
  n = len(images) // per_row * per_row
  rows = []
  for i in range(0, n, per_row):
    rows += [orig[i:i + per_row], rec[i:i + per_row]]
  return np.concatenate(rows)


def interpolations(config, model, params, images, labels=None, steps=10) -> np.ndarray:
  """Each row decodes (1 - t) z_a + t z_b between posterior means of consecutive image pairs.

  A CVAE row keeps the label of its first image.
  """
  z = encode_mean(config, model, params, images, labels)
  pairs = len(z) // 2
  t = np.linspace(0.0, 1.0, steps)[None, :, None]
  zz = ((1 - t) * z[0:2 * pairs:2, None] + t * z[1:2 * pairs:2, None]).reshape(-1, z.shape[1])
  ys = None if labels is None or not _num_classes(config) else np.repeat(
      np.asarray(labels)[0:2 * pairs:2], steps)
  return decode_mean(config, model, params, zz, ys)


def latent_grid(config, model, params, n=20, label=None) -> np.ndarray:
  """n x n decoder means over the 2-d latent plane, at Gaussian quantiles 0.05..0.95.

  As in Kingma & Welling (2013, Fig. 4): the coordinates are the inverse CDF of N(0, 1) at
  evenly spaced probabilities, so each cell holds equal prior mass.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if config.model.latent_dim != 2:
    raise ValueError(f'latent-grid needs a 2-d latent space; this run has '
                     f'model.latent_dim={config.model.latent_dim}.')
  if n < 2:
    raise ValueError(f'n must be >= 2; got {n}.')
  q = stats.norm.ppf(np.linspace(0.05, 0.95, n))
  z = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2)  # Row-major, z2 decreasing.
  labels = None
  if _num_classes(config):
    check_label(config, 0 if label is None else label)
    labels = np.full((len(z),), 0 if label is None else label, np.int32)
  return decode_mean(config, model, params, z, labels)


def save(path, images01, ncol, scale=2):
  image_lib.save_grid(path, _to_pm1(images01), ncol=ncol, scale=scale)
  return path


def write_figures(config, model, params, images, labels, out_dir, seed=0) -> list[str]:
  """All figures for a run into ``out_dir``; returns the paths written."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  take = min(len(images), 32)
  lab = None if labels is None else labels[:take]
  written.append(save(os.path.join(out_dir, 'reconstructions.png'),
                      reconstructions(config, model, params, images[:take], lab), ncol=8))
  written.append(save(os.path.join(out_dir, 'interpolations.png'),
                      interpolations(config, model, params, images[:16],
                                     None if labels is None else labels[:16]), ncol=10))
  if _num_classes(config):
    n = _num_classes(config)
    written.append(save(os.path.join(out_dir, 'class_grid.png'),
                        class_grid(config, model, params, seed=seed), ncol=10))
    take = min(len(images), 10)
    written.append(save(os.path.join(out_dir, 'rerender.png'),
                        rerender(config, model, params, images[:take], labels[:take]),
                        ncol=n + 1))
  else:
    written.append(save(os.path.join(out_dir, 'samples.png'),
                        generate(config, model, params, num=64, seed=seed), ncol=8))
  if config.model.latent_dim == 2:
    labels_to_draw = range(_num_classes(config)) if _num_classes(config) else [None]
    for c in labels_to_draw:
      name = 'latent_grid.png' if c is None else f'latent_grid_class{c}.png'
      written.append(save(os.path.join(out_dir, name),
                          latent_grid(config, model, params, 20, c), ncol=20, scale=1))
  return written


def class_accuracy(config, model, params, num=1000, seed=0, cache_dir=None) -> dict:
  """Accuracy of the project's digit classifier on CVAE samples of each requested class.

  ``num // classes`` samples per class from z ~ N(0, I). The classifier's accuracy on the
  real test split is returned alongside as the reference ceiling.
  """
  try:
    from jaxgen.metrics import classifier  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError('jaxgen.metrics.classifier is not available in this checkout; '
                     'class-accuracy needs it.') from e
  n = _num_classes(config)
  if not n:
    raise ValueError('class-accuracy needs a conditional VAE (model.num_classes > 0).')
  clf = classifier.get_classifier(config.data, cache_dir)
  images, labels = [], []
  for c in range(n):
    x01 = generate(config, model, params, label=c, num=max(1, num // n), seed=seed + c)
    images.append(_to_pm1(x01))
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
  args = parser.parse_args(argv)

  try:
    config, model, params, step = vae_trainer.load_run(args.workdir, args.step)
    out_dir = os.path.join(args.workdir, 'figures')
    out = lambda name: args.out or os.path.join(out_dir, name)
    if args.command == 'evaluate':
      split = args.split or config.data.get('eval_split', 'test')
      images, labels = _load_eval_split(config, split, args.max_examples)
      res = vae_trainer.evaluate(config, model, params, images, labels, iwae_k=args.k,
                                 seed=args.seed)
      res.update(step=step, split=split)
      print(json.dumps(res, indent=2))
    elif args.command == 'figures':
      images, labels = _load_eval_split(config, config.data.get('eval_split', 'test'), 64)
      for path in write_figures(config, model, params, images, labels, args.out or out_dir,
                                args.seed):
        print(path)
    elif args.command == 'samples':
      if _num_classes(config):  # A CVAE: one row per class, one column per style z.
        print(save(out('class_grid.png'), class_grid(config, model, params, seed=args.seed),
                   ncol=_num_classes(config)))
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
    elif args.command == 'rerender':
      if not _num_classes(config):
        raise ValueError('rerender needs a conditional VAE (model.num_classes > 0).')
      images, labels = _load_eval_split(config, config.data.get('eval_split', 'test'), args.num)
      print(save(out('rerender.png'), rerender(config, model, params, images, labels),
                 ncol=_num_classes(config) + 1))
    elif args.command == 'class-accuracy':
      print(json.dumps(class_accuracy(config, model, params, args.num, args.seed,
                                                      args.cache_dir), indent=2))
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
