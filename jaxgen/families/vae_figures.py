"""Figures of a trained VAE / CVAE: reconstructions, interpolations, samples, class grids,
re-renderings of real images as every class, and the decoded latent plane (2-d latents).

Images are decoder means (sigmoid of the logits for a Bernoulli likelihood) in [0, 1].
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import images as image_lib
from jaxgen.families import vae_targets


def num_classes(config) -> int:
  return config.model.get('num_classes', 0)


def to_pm1(x01):
  return np.asarray(x01, np.float32) * 2.0 - 1.0


def encode_mean(config, model, params, images, labels=None) -> np.ndarray:
  """Posterior means E_q[z | x(, y)] of pipeline images (prepared as evaluation targets)."""
  x = jnp.asarray(vae_targets.EvalTargets(config)(images))
  y = None if not num_classes(config) else jnp.asarray(labels, jnp.int32)
  mu, _ = jax.jit(lambda p, x, y: model.apply({'params': p}, x, y, method=model.encode))(
      params, x, y)
  return np.asarray(mu)


def decode_mean(config, model, params, z, labels=None) -> np.ndarray:
  """E[x | z(, y)] in [0, 1] for latent codes ``z`` [N, D]."""
  y = None if not num_classes(config) else jnp.asarray(labels, jnp.int32)
  out = jax.jit(lambda p, z, y: model.apply({'params': p}, z, y, method=model.mean_image))(
      params, jnp.asarray(z, jnp.float32), y)
  return np.asarray(out)


def check_label(config, label):
  n = num_classes(config)
  if not n:
    raise ValueError('This run is an unconditional VAE: it has no classes to choose from.')
  if not isinstance(label, (int, np.integer)) or not 0 <= label < n:
    raise ValueError(f'label must be an integer in [0, {n - 1}]; got {label!r}.')


def generate(config, model, params, label=None, num=64, seed=0) -> np.ndarray:
  """``num`` samples (decoder means) from the prior, of class ``label`` for a CVAE."""
  if label is not None or num_classes(config):
    check_label(config, label)  # A CVAE needs a valid class; a VAE accepts none.
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, config.model.latent_dim))
  labels = None if label is None else np.full((num,), label, np.int32)
  return decode_mean(config, model, params, z, labels)


def class_grid(config, model, params, num_styles=10, seed=0) -> np.ndarray:
  """[classes * num_styles] images: row c holds class c, column j shares the z of style j."""
  n = num_classes(config)
  z = jax.random.normal(jax.random.PRNGKey(seed), (num_styles, config.model.latent_dim))
  zz = np.tile(np.asarray(z), (n, 1))
  labels = np.repeat(np.arange(n), num_styles)
  return decode_mean(config, model, params, zz, labels)


def rerender(config, model, params, images, labels) -> np.ndarray:
  """[N * (1 + classes)] images: each row is the original, then its style z as every class."""
  n = num_classes(config)
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
  ys = None if labels is None or not num_classes(config) else np.repeat(
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
  if num_classes(config):
    check_label(config, 0 if label is None else label)
    labels = np.full((len(z),), 0 if label is None else label, np.int32)
  return decode_mean(config, model, params, z, labels)


def save(path, images01, ncol, scale=2):
  image_lib.save_grid(path, to_pm1(images01), ncol=ncol, scale=scale)
  return path


def write_figures(config, model, params, images, labels, out_dir, seed=0) -> list[str]:
  """All figures for a run into ``out_dir``; returns the paths written."""
  os.makedirs(out_dir, exist_ok=True)
  n = num_classes(config)
  first = lambda k: (images[:k], None if labels is None else labels[:k])
  figures = [  # (file, images in [0, 1], columns, scale)
      ('reconstructions.png', reconstructions(config, model, params, *first(32)), 8, 2),
      ('interpolations.png', interpolations(config, model, params, *first(16)), 10, 2)]
  if n:
    figures += [('class_grid.png', class_grid(config, model, params, seed=seed), 10, 2),
                ('rerender.png', rerender(config, model, params, *first(10)), n + 1, 2)]
  else:
    figures.append(('samples.png', generate(config, model, params, num=64, seed=seed), 8, 2))
  if config.model.latent_dim == 2:
    for c in (range(n) if n else [None]):
      name = 'latent_grid.png' if c is None else f'latent_grid_class{c}.png'
      figures.append((name, latent_grid(config, model, params, 20, c), 20, 1))
  return [save(os.path.join(out_dir, name), x, ncol=ncol, scale=scale)
          for name, x, ncol, scale in figures]
