"""SN-DCGAN: the "standard CNN" of Miyato et al. 2018 (Table 3), with spectral normalisation.

G: z -> dense -> (M/8 x M/8 x 8w), then three 4x4 stride-2 transposed convolutions halving
the channels (8w -> 4w -> 2w -> w), BatchNorm + ReLU after the dense layer and each
transposed convolution, and a 3x3 stride-1 convolution to the image with tanh.
D: 3x3 s1 conv w, 4x4 s2 conv w, 3x3 s1 conv 2w, 4x4 s2 conv 2w, 3x3 s1 conv 4w, 4x4 s2 conv
4w, 3x3 s1 conv 8w, each followed by LeakyReLU(0.1), then a dense layer to one logit. With
w = 64 this is the paper's network (512 channels at the bottom). Every layer of D (all
seven convolutions and the dense head) is wrapped in ``flax.linen.SpectralNorm``: the kernel
is divided by its largest singular value, estimated with one power-iteration step per
training-mode call from a persistent vector ``u`` kept (with the last ``sigma``) in D's
``batch_stats`` collection. flax flattens a conv kernel (kh, kw, in, out) to
(kh*kw*in, out), the transpose of Miyato et al.'s (out, in*kh*kw) reshape: the same
singular values. In evaluation mode (``train=False``) the stored ``u`` is not updated.
Weights are drawn from N(0, 0.02), as in pfnet's chainer-gan-lib SN-DCGAN.

Model-config fields: resolution (a multiple of 8), channels, latent_dim, g_width, d_width,
spectral_norm (SN on D; default True), g_spectral_norm (SN on G's layers too; default False),
leaky_slope (0.1), compute_dtype, conv_impl ('plain' flax layers or 'fast', the
phase-decomposed layers of :mod:`jaxgen.nn.fast_conv`: same parameters and outputs, faster
on XLA:CPU).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgen.models import dcgan, with_defaults

# Optional model.* fields and their defaults (required: resolution, channels, latent_dim,
# g_width, d_width).
DEFAULTS = dict(compute_dtype='float32', conv_impl='plain', spectral_norm=True,
                g_spectral_norm=False, leaky_slope=0.1)

init_normal = nn.initializers.normal(0.02)


def _sn(layer, x, enabled, train):
  if enabled:
    return nn.SpectralNorm(layer)(x, update_stats=train)
  return layer(x)


class Generator(nn.Module):
  resolution: int = 32
  channels: int = 3
  width: int = 64
  spectral_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, z, train: bool = True):
    conv, conv_t = dcgan.conv_layers(self.conv_impl)
    bottom = self.resolution // 8
    feats = 8 * self.width

    def bn_relu(h):
      return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                  dtype=self.dtype)(h))

    x = z.astype(self.dtype)
    x = _sn(nn.Dense(bottom * bottom * feats, kernel_init=init_normal, dtype=self.dtype), x,
            self.spectral_norm, train)
    x = bn_relu(x).reshape((z.shape[0], bottom, bottom, feats))
    for _ in range(3):
      feats //= 2
      x = _sn(conv_t(feats, (4, 4), strides=(2, 2), padding='SAME', use_bias=False,
                     kernel_init=init_normal, dtype=self.dtype), x,
              self.spectral_norm, train)
      x = bn_relu(x)
    x = _sn(conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init_normal,
                 dtype=self.dtype), x, self.spectral_norm, train)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  width: int = 64
  spectral_norm: bool = True
  leaky_slope: float = 0.1
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv_cls, _ = dcgan.conv_layers(self.conv_impl)
    w = self.width
    # (kernel, stride, features) of Miyato et al.'s Table 3 discriminator.
    layers = ((3, 1, w), (4, 2, w), (3, 1, 2 * w), (4, 2, 2 * w), (3, 1, 4 * w), (4, 2, 4 * w),
              (3, 1, 8 * w))
    x = x.astype(self.dtype)
    for k, s, f in layers:
      conv = conv_cls(f, (k, k), strides=(s, s), padding=((1, 1), (1, 1)),
                      kernel_init=init_normal, dtype=self.dtype)
      x = nn.leaky_relu(_sn(conv, x, self.spectral_norm, train), self.leaky_slope)
    x = x.reshape((x.shape[0], -1))
    x = _sn(nn.Dense(1, kernel_init=init_normal, dtype=self.dtype), x, self.spectral_norm, train)
    return x[:, 0].astype(jnp.float32)


def make_gan(cfg):
  cfg = with_defaults(cfg, DEFAULTS)
  res = cfg.resolution
  if not isinstance(res, int) or res < 8 or res % 8:
    raise ValueError(f'sngan needs a resolution that is a multiple of 8 (three 2x upsamplings '
                     f'from M/8 x M/8, e.g. 32 for CIFAR-10, 48 for STL-10); got {res!r}.')
  if cfg.channels not in (1, 3):
    raise ValueError(f'sngan needs channels in (1, 3); got {cfg.channels!r}.')
  for name in ('g_width', 'd_width'):
    if not isinstance(cfg[name], int) or cfg[name] < 1:
      raise ValueError(f'model.{name} must be a positive integer; got {cfg[name]!r}.')
  dtype = jnp.dtype(cfg.compute_dtype)
  conv_impl = cfg.conv_impl
  dcgan.conv_layers(conv_impl)  # Refuses unknown names, listing the accepted ones.
  g = Generator(res, cfg.channels, cfg.g_width, cfg.g_spectral_norm, dtype,
                conv_impl)
  d = Discriminator(cfg.d_width, cfg.spectral_norm, cfg.leaky_slope,
                    dtype, conv_impl)
  return g, d
