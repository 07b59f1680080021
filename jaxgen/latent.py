"""Latent-space tools for a trained GAN run: sample grids, interpolation, vector arithmetic.

  python -m jaxgen.latent --workdir=runs/dcgan --mode=grid
  python -m jaxgen.latent --workdir=runs/dcgan --mode=interpolate --pairs=0:1,2:3 --steps=9
  python -m jaxgen.latent --workdir=runs/dcgan --mode=arithmetic \
      --groups=3,17,22:5,8,9:1,2,4 --expression=A-B+C

Every mode draws a pool of latent vectors from ``--seed`` and first writes ``pool.png``, the
decoded pool; its indices count from 0 in reading order (row by row), so indices for
``--pairs`` and ``--groups`` can be chosen by eye.
Interpolation writes one row per pair, linear (``lerp``) and spherical (``slerp``, along the
great circle, which keeps Gaussian z at typical norms). Arithmetic follows Radford et al.:
each group's z vectors are averaged, then combined with the signed expression, e.g.
``A-B+C`` for "smiling woman - neutral woman + neutral man"; the output shows each group's
members and their mean decoded, then the result decoded with small noise added, as the
paper does. PNG files go to ``--out`` (default ``<workdir>/latent``).
"""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxgen import images as image_lib
from jaxgen import models
from jaxgen.engine import runs
from jaxgen.families import base, gan

MODES = ('grid', 'interpolate', 'arithmetic')


def lerp(z0, z1, t):
  return (1.0 - t) * z0 + t * z1


def slerp(z0, z1, t):
  """Spherical interpolation; falls back to lerp for (nearly) parallel vectors."""
  z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
  cos = np.clip(np.dot(z0 / n0, z1 / n1), -1.0, 1.0)
  omega = np.arccos(cos)
  if omega < 1e-6:
    return lerp(z0, z1, t)
  return (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)


def parse_pairs(text: str):
  try:
    return [tuple(int(i) for i in p.split(':')) for p in text.split(',') if p]
  except ValueError:
    raise ValueError(f'--pairs must look like 0:1,2:3; got {text!r}.') from None


def parse_groups(text: str):
  try:
    return [[int(i) for i in g.split(',') if i] for g in text.split(':')]
  except ValueError:
    raise ValueError(f'--groups must look like 3,17,22:5,8,9; got {text!r}.') from None


def parse_expression(expr: str, num_groups: int):
  """'A-B+C' -> [+1, -1, +1] coefficients for groups A, B, C."""
  expr = expr.replace(' ', '')
  if not re.fullmatch(r'[+-]?[A-Z]([+-][A-Z])*', expr):
    raise ValueError(f'--expression must be letters joined by + and -, e.g. A-B+C; got {expr!r}.')
  coefs = [0.0] * num_groups
  for sign, letter in re.findall(r'([+-]?)([A-Z])', expr):
    idx = ord(letter) - ord('A')
    if idx >= num_groups:
      raise ValueError(f'--expression uses group {letter} but only {num_groups} groups were '
                       'given in --groups.')
    coefs[idx] += -1.0 if sign == '-' else 1.0
  return coefs


class Decoder:
  """Decodes latent vectors with a restored run's (EMA) generator in eval mode."""

  def __init__(self, workdir: str, step: int | None = None):
    self.config, _, _, state = runs.restore_run(workdir, step, family='gan')
    generator, _ = models.get_gan(self.config.model)
    self.step = int(state.step)
    self.vars = base.variables(state.nets['g'], use_ema=True)
    self._apply = jax.jit(lambda v, z: generator.apply(v, z, train=False))

  def __call__(self, z):
    return np.asarray(self._apply(self.vars, jnp.asarray(z, jnp.float32)))

  def pool(self, num: int, seed: int):
    return np.asarray(gan.sample_latent(
        jax.random.PRNGKey(seed), num, self.config.model.latent_dim,
        self.config.model.latent_prior))


def interpolation_rows(decoder, z, pairs, steps):
  ts = np.linspace(0.0, 1.0, steps)
  rows = {}
  for name, fn in (('lerp', lerp), ('slerp', slerp)):
    zs = np.stack([fn(z[a], z[b], t) for a, b in pairs for t in ts])
    rows[name] = decoder(zs)
  return rows


def arithmetic(decoder, z, groups, coefs, noise: float = 0.25, num_results: int = 8, seed=0):
  means = np.stack([z[g].mean(axis=0) for g in groups])
  result = np.tensordot(np.asarray(coefs), means, axes=1)
  rng = np.random.default_rng(seed)
  results = result[None] + noise * rng.standard_normal((num_results, result.shape[-1]))
  results[0] = result
  width = max(max(len(g) for g in groups) + 1, num_results)
  rows = []
  blank = None
  for g, mean in zip(groups, means):
    row = list(decoder(np.concatenate([z[g], mean[None]])))
    blank = np.ones_like(row[0]) if blank is None else blank
    rows.extend(row + [blank] * (width - len(row)))
  res = list(decoder(results))
  rows.extend(res + [blank] * (width - len(res)))
  return np.stack(rows), width


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if f.mode not in MODES:
    raise app.UsageError(f'--mode must be one of {", ".join(MODES)}; got {f.mode!r}.')
  decoder = Decoder(f.workdir, f.step)
  out = f.out or os.path.join(f.workdir, 'latent')
  z = decoder.pool(f.pool_size, f.seed)
  image_lib.save_grid(os.path.join(out, 'pool.png'), decoder(z), scale=f.scale)
  written = [os.path.join(out, 'pool.png')]
  if f.mode == 'grid':
    pass
  elif f.mode == 'interpolate':
    pairs = parse_pairs(f.pairs)
    for a, b in pairs:
      if max(a, b) >= f.pool_size:
        raise app.UsageError(f'--pairs index {max(a, b)} is outside the pool of {f.pool_size}.')
    for name, imgs in interpolation_rows(decoder, z, pairs, f.steps).items():
      path = os.path.join(out, f'interpolate_{name}.png')
      image_lib.save_grid(path, imgs, ncol=f.steps, scale=f.scale)
      written.append(path)
  else:
    groups = parse_groups(f.groups)
    coefs = parse_expression(f.expression, len(groups))
    if any(i >= f.pool_size for g in groups for i in g) or any(not g for g in groups):
      raise app.UsageError(f'--groups must be non-empty index lists below {f.pool_size}.')
    imgs, width = arithmetic(decoder, z, groups, coefs, seed=f.seed)
    path = os.path.join(out, 'arithmetic.png')
    image_lib.save_grid(path, imgs, ncol=width, scale=f.scale)
    written.append(path)
  print(f'step {decoder.step}: wrote ' + ', '.join(written))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A trained GAN run.', required=True)
  flags.DEFINE_string('mode', 'grid', f'One of {MODES}.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: newest).')
  flags.DEFINE_integer('seed', 0, 'Seed of the latent pool.')
  flags.DEFINE_integer('pool_size', 64, 'Number of latent vectors in the pool.')
  flags.DEFINE_string('pairs', '0:1,2:3,4:5,6:7', 'Interpolation pairs of pool indices.')
  flags.DEFINE_integer('steps', 10, 'Images per interpolation row.')
  flags.DEFINE_string('groups', '0,1,2:3,4,5:6,7,8', 'Pool-index groups for arithmetic.')
  flags.DEFINE_string('expression', 'A-B+C', 'Signed combination of the groups.')
  flags.DEFINE_string('out', '', 'Output folder (default <workdir>/latent).')
  flags.DEFINE_integer('scale', 2, 'Nearest-neighbour upscaling of the PNGs.')
  app.run(main)
