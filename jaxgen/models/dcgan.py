"""DCGAN (Radford, Metz & Chintala 2016), the widely used reference architecture.

G: z (1x1) -> 4x4 by a 4x4 transposed convolution, then stride-2 4x4 transposed convolutions
doubling the size, BatchNorm + ReLU after each but the last, tanh output. D mirrors it with
stride-2 4x4 convolutions, LeakyReLU(0.2), BatchNorm on all but the first layer, and a final
4x4 valid convolution to one logit. No biases anywhere (every hidden conv feeds BatchNorm),
weights from N(0, 0.02), BatchNorm scale from N(1, 0.02): at 64x64 with nz=100, ngf=ndf=64
this is exactly the reference (G 3,576,704 and D 2,765,568 parameters).

``conv_impl='fast'`` swaps in :mod:`jaxgen.nn.fast_conv` layers with the same parameters and
outputs (faster on XLA:CPU); ``spectral_norm=True`` wraps every D convolution in
``flax.linen.SpectralNorm`` (DCGAN-with-SN).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import with_defaults

RESOLUTIONS = (16, 32, 64, 128)
CONV_IMPLS = ('plain', 'fast')
COMPUTE_DTYPES = ('float32', 'bfloat16')
# Optional model.* fields and their defaults (required: resolution, channels, latent_dim,
# g_width, d_width).
DEFAULTS = dict(compute_dtype='float32', conv_impl='plain', spectral_norm=False)
init_normal = nn.initializers.normal(0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def conv_layers(conv_impl):
  """(Conv, ConvTranspose) classes for ``model.conv_impl``: 'plain' flax or 'fast'."""
  if conv_impl == 'plain':
    return nn.Conv, nn.ConvTranspose
  if conv_impl == 'fast':
    from jaxgen.nn import fast_conv  # pylint: disable=g-import-not-at-top
    return fast_conv.Conv, fast_conv.ConvTranspose
  raise ValueError(f'Unknown conv_impl {conv_impl!r}; accepted: {", ".join(CONV_IMPLS)}.')


def _batch_norm(train, name=None, dtype=jnp.float32):
  # Statistics and running averages are float32 whatever ``dtype`` (flax computes them in
  # at least float32); ``dtype`` is only that of the normalised output.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=bn_scale_init, dtype=dtype, name=name)


class Generator(nn.Module):
  resolution: int = 64
  channels: int = 3
  width: int = 64
  conv_impl: str = 'plain'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    _, conv_t = conv_layers(self.conv_impl)
    n_up = int(math.log2(self.resolution)) - 2
    x = z.reshape((z.shape[0], 1, 1, z.shape[-1])).astype(self.dtype)
    feats = self.width * 2 ** (n_up - 1)
    x = conv_t(feats, (4, 4), padding='VALID', use_bias=False,
               kernel_init=init_normal, dtype=self.dtype)(x)
    x = nn.relu(_batch_norm(train, dtype=self.dtype)(x))
    for i in range(n_up):
      last = i == n_up - 1
      feats = self.channels if last else feats // 2
      x = conv_t(feats, (4, 4), strides=(2, 2), padding='SAME', use_bias=False,
                 kernel_init=init_normal, dtype=self.dtype)(x)
      if not last:
        x = nn.relu(_batch_norm(train, dtype=self.dtype)(x))
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  resolution: int = 64
  width: int = 64
  conv_impl: str = 'plain'
  spectral_norm: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv, _ = conv_layers(self.conv_impl)
    n_down = int(math.log2(self.resolution)) - 2

    def apply(layer, h):
      if self.spectral_norm:
        return nn.SpectralNorm(layer)(h, update_stats=train)
      return layer(h)

    x = x.astype(self.dtype)
    feats = self.width
    for i in range(n_down):
      x = apply(conv(feats, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                     kernel_init=init_normal, dtype=self.dtype), x)
      if i > 0 and not self.spectral_norm:
        x = _batch_norm(train, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
      feats *= 2
    x = apply(nn.Conv(1, (4, 4), padding='VALID', use_bias=False, kernel_init=init_normal,
                      dtype=self.dtype), x)
    return x.reshape((x.shape[0],)).astype(jnp.float32)


def compute_dtype(cfg):
  """``cfg.compute_dtype`` as a dtype: float32, or bfloat16 for activations and matmuls.

  Parameters, optimizer state, BatchNorm statistics, outputs (G's tanh, D's logits) and so
  the losses and penalties stay float32. float16 is refused: without loss scaling its
  gradients underflow.
  """
  name = cfg.compute_dtype
  if name not in COMPUTE_DTYPES:
    raise ValueError(f'Unknown model.compute_dtype {name!r}; accepted: '
                     f'{", ".join(COMPUTE_DTYPES)}.')
  return jnp.dtype(name)


def make_gan(cfg):
  cfg = with_defaults(cfg, DEFAULTS)
  if cfg.resolution not in RESOLUTIONS:
    raise ValueError(f'dcgan cannot make {cfg.resolution}x{cfg.resolution} images; accepted '
                     f'resolutions: {", ".join(map(str, RESOLUTIONS))}.')
  conv_impl = cfg.conv_impl
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'Unknown conv_impl {conv_impl!r}; accepted: {", ".join(CONV_IMPLS)}.')
  dtype = compute_dtype(cfg)
  g = Generator(cfg.resolution, cfg.channels, cfg.g_width, conv_impl, dtype)
  d = Discriminator(cfg.resolution, cfg.d_width, conv_impl, cfg.spectral_norm, dtype)
  return g, d
