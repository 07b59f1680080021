"""What a VAE is trained and evaluated on: targets made from pipeline images in [-1, 1].

See :mod:`jaxgen.families.vae` for the choices (soft or dynamically binarized Bernoulli
targets, dequantized Gaussian targets).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def conditional(config) -> bool:
  return config.model.num_classes > 0


def likelihood(config) -> str:
  return 'gaussian' if config.model.name == 'linear_vae' else config.model.likelihood


def prepare_targets(config, images, rng):
  """Training targets from pipeline images in [-1, 1] (see the module docstring); jittable."""
  if config.model.name == 'linear_vae':
    return images
  x01 = (images + 1.0) * 0.5
  if config.binarize == 'dynamic':
    return jax.random.bernoulli(rng, x01).astype(jnp.float32)
  if config.dequantize:
    # 8-bit levels v/255 -> (v + u) / 256, u ~ U[0, 1): a density on [0, 1].
    return (x01 * 255.0 + jax.random.uniform(rng, x01.shape)) / 256.0
  return x01


class EvalTargets:
  """Evaluation targets, batch by batch, identical whatever the batch size.

  The fixed binarization of a test split draws its uniforms from one numpy generator seeded
  with ``eval.binarize_seed``, consumed in order, so batch sizes do not change it; the
  Gaussian case uses the mid-point of each 8-bit bin when ``dequantize`` is on.
  """

  def __init__(self, config):
    self._config = config
    self._rng = np.random.default_rng(config.eval.binarize_seed)

  def __call__(self, images):
    config = self._config
    images = np.asarray(images, np.float32)
    if config.model.name == 'linear_vae':
      return images
    x01 = (images + 1.0) * 0.5
    if config.binarize == 'dynamic':
      return (self._rng.random(x01.shape, dtype=np.float32) < x01).astype(np.float32)
    if config.dequantize:
      return (x01 * 255.0 + 0.5) / 256.0
    return x01
