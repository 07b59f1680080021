"""The original fully connected GAN (Goodfellow et al. 2014).

G maps z through ReLU hidden layers to a tanh image; D maps the flattened image through
maxout hidden layers (as in the paper's MNIST model) to one logit. ``compute_dtype``
(bfloat16) sets the dtype of the matmuls; parameters, G's image and D's logit stay float32.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxgen.models import with_defaults

# Optional model.* fields and their defaults (empty hidden: two layers of g_width / d_width).
DEFAULTS = dict(g_hidden=(), d_hidden=(), maxout_pieces=2, compute_dtype='float32')


class MLPGenerator(nn.Module):
  output_shape: Sequence[int]
  hidden: Sequence[int] = (256, 256)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    x = z.astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    x = nn.Dense(int(np.prod(self.output_shape)), dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32)).reshape((z.shape[0], *self.output_shape))


class Maxout(nn.Module):
  features: int
  pieces: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.features * self.pieces, dtype=self.dtype)(x)
    return jnp.max(y.reshape(*x.shape[:-1], self.features, self.pieces), axis=-1)


class MLPDiscriminator(nn.Module):
  hidden: Sequence[int] = (256, 256)
  pieces: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden:
      x = Maxout(width, self.pieces, self.dtype)(x)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def make_gan(cfg):
  cfg = with_defaults(cfg, DEFAULTS)
  if cfg.resolution < 1 or cfg.channels not in (1, 3):
    raise ValueError(f'mlp_gan needs resolution >= 1 and channels in (1, 3); got '
                     f'resolution={cfg.resolution}, channels={cfg.channels}.')
  shape = (cfg.resolution, cfg.resolution, cfg.channels)
  g_hidden = tuple(cfg.g_hidden or (cfg.g_width, cfg.g_width))
  d_hidden = tuple(cfg.d_hidden or (cfg.d_width, cfg.d_width))
  from jaxgen.models import dcgan  # pylint: disable=g-import-not-at-top
  dtype = dcgan.compute_dtype(cfg)  # The same accepted names and checks as DCGAN's.
  return (MLPGenerator(shape, g_hidden, dtype),
          MLPDiscriminator(d_hidden, cfg.maxout_pieces, dtype))
