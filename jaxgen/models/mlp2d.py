"""Fully connected G and D for 2-D points (the mode-coverage benchmark).

Defaults follow the 2-D architecture PacGAN (Lin et al. 2018, Sec. 5.1) takes from VEEGAN:
G has four hidden layers of 400 ReLU units with BatchNorm and a linear 2-D output (the grid
spans [-4, 4], so no tanh); D has three hidden layers of 200 maxout units with 5 pieces and
no BatchNorm, then one logit.

Model-config fields (all optional but ``latent_dim``):
  g_hidden (400,)*4, d_hidden (200,)*3, maxout_pieces 5 (1 = a Dense layer followed by
  ``d_activation``), d_activation 'leaky_relu' (only used when maxout_pieces == 1; also
  'relu', 'tanh'), g_batch_norm True, spectral_norm False (flax.linen.SpectralNorm on every
  D layer), g_spectral_norm False (on every G layer), data_dim 2, d_output_scale 1.0.

``d_output_scale`` K multiplies D's logit. With spectral normalisation D is then (at most)
K-Lipschitz: Miyato et al. note this Lipschitz constant is SN's one hyperparameter, and the
default K = 1 cannot separate points 0.01-0.05 apart (the mixtures' scale) by a hinge
margin of 2.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxgen.models import with_defaults

# Optional model.* fields and their defaults (GAN paper's 2-D sizes; required: latent_dim).
DEFAULTS = dict(g_hidden=(400,) * 4, d_hidden=(200,) * 3, maxout_pieces=5,
                d_activation='leaky_relu', data_dim=2, g_batch_norm=True, g_spectral_norm=False,
                spectral_norm=False, d_output_scale=1.0)
ACTIVATIONS = {'leaky_relu': lambda x: nn.leaky_relu(x, 0.2), 'relu': nn.relu, 'tanh': jnp.tanh}


def _sn(layer, x, enabled, train):
  if enabled:
    return nn.SpectralNorm(layer)(x, update_stats=train)
  return layer(x)


class Generator(nn.Module):
  hidden: Sequence[int] = (400, 400, 400, 400)
  data_dim: int = 2
  batch_norm: bool = True
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, z, train: bool = True):
    x = z
    for width in self.hidden:
      x = _sn(nn.Dense(width, use_bias=not self.batch_norm), x, self.spectral_norm, train)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
      x = nn.relu(x)
    return _sn(nn.Dense(self.data_dim), x, self.spectral_norm, train)


class Discriminator(nn.Module):
  hidden: Sequence[int] = (200, 200, 200)
  pieces: int = 5
  activation: str = 'leaky_relu'
  spectral_norm: bool = False
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      y = _sn(nn.Dense(width * self.pieces), x, self.spectral_norm, train)
      if self.pieces > 1:  # maxout: the max over ``pieces`` linear units.
        x = jnp.max(y.reshape(*y.shape[:-1], width, self.pieces), axis=-1)
      else:
        x = ACTIVATIONS[self.activation](y)
    return self.output_scale * _sn(nn.Dense(1), x, self.spectral_norm, train)[:, 0]


def make_gan(cfg):
  cfg = with_defaults(cfg, DEFAULTS)
  g_hidden, d_hidden = tuple(cfg.g_hidden), tuple(cfg.d_hidden)
  pieces, activation = cfg.maxout_pieces, cfg.d_activation
  for name, widths in (('g_hidden', g_hidden), ('d_hidden', d_hidden)):
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
      raise ValueError(f'model.{name} must be a non-empty tuple of positive ints; got {widths!r}.')
  if not isinstance(pieces, int) or pieces < 1:
    raise ValueError(f'model.maxout_pieces must be a positive int; got {pieces!r}.')
  if activation not in ACTIVATIONS:
    raise ValueError(f'Unknown model.d_activation {activation!r}; accepted: '
                     f'{", ".join(ACTIVATIONS)}.')
  g = Generator(g_hidden, cfg.data_dim, cfg.g_batch_norm, cfg.g_spectral_norm)
  scale = cfg.d_output_scale
  if not scale > 0:
    raise ValueError(f'model.d_output_scale must be > 0; got {scale!r}.')
  d = Discriminator(d_hidden, pieces, activation, cfg.spectral_norm, float(scale))
  return g, d
