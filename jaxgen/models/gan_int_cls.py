"""GAN-INT-CLS networks (Reed et al., ICML 2016) and the style encoder S, DCGAN-shaped.

* :class:`Generator` ``(z [B, latent], t [B, text_dim]) -> images [B, r, r, C]`` in [-1, 1]:
  the caption embedding goes through FC + LeakyReLU(0.2) to ``proj_dim`` (128 in the paper),
  is concatenated with z, and the DCGAN generator up-samples the result from 1x1 to r x r.
* :class:`Discriminator` ``(images, t) -> logits [B]``: DCGAN down-sampling to 4x4 features;
  the embedding, projected by its own FC + LeakyReLU, is replicated over the 4x4 grid and
  concatenated to them; a 1x1 convolution (+ BatchNorm + LeakyReLU) and the 4x4 output
  convolution give one logit. ``projection=True`` (``model.d_projection``; not in Reed et
  al.) adds the inner product of the spatially averaged 4x4 image features with a linear map
  of the projected embedding, the conditioning of Miyato and Koyama's projection
  discriminator (ICLR 2018), which matches image and caption features multiplicatively.
* :class:`StyleEncoder` ``images -> z [B, latent]``: the same down-sampling to 4x4 (no text)
  and a linear layer to the latent space, trained to invert G (||z - S(G(z, t))||^2).

Initialisation and layers follow :mod:`jaxgen.models.dcgan` (N(0, 0.02) weights, BatchNorm
everywhere but D's first layer, ``conv_impl='fast'`` for the phase-decomposed convolutions).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxgen.models import dcgan

RESOLUTIONS = dcgan.RESOLUTIONS


def _batch_norm(train):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=dcgan.bn_scale_init)


def _project(t, features: int, name: str):
  """Reed's text projection: FC + LeakyReLU(0.2)."""
  x = nn.Dense(features, kernel_init=dcgan.init_normal, name=name)(t.astype(jnp.float32))
  return nn.leaky_relu(x, 0.2)


class Generator(nn.Module):
  resolution: int = 64
  channels: int = 3
  width: int = 64
  proj_dim: int = 128
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, z, t, train: bool = True):
    h = jnp.concatenate([z, _project(t, self.proj_dim, 'text_proj')], axis=-1)
    return dcgan.Generator(self.resolution, self.channels, self.width, self.conv_impl,
                           name='dcgan')(h, train=train)


def _down(x, resolution: int, width: int, conv_impl: str, train: bool):
  """DCGAN's stride-2 convolutions from r x r down to 4x4 (BatchNorm from the second on)."""
  conv, _ = dcgan.conv_layers(conv_impl)
  feats = width
  for i in range(int(math.log2(resolution)) - 2):
    x = conv(feats, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
             kernel_init=dcgan.init_normal)(x)
    if i > 0:
      x = _batch_norm(train)(x)
    x = nn.leaky_relu(x, 0.2)
    feats *= 2
  return x


class Discriminator(nn.Module):
  resolution: int = 64
  width: int = 64
  proj_dim: int = 128
  conv_impl: str = 'plain'
  projection: bool = False

  @nn.compact
  def __call__(self, x, t, train: bool = True):
    image = _down(x.astype(jnp.float32), self.resolution, self.width, self.conv_impl, train)
    b, height, width, feats = image.shape
    text = _project(t, self.proj_dim, 'text_proj')
    tiled = jnp.broadcast_to(text[:, None, None, :], (b, height, width, self.proj_dim))
    h = jnp.concatenate([image, tiled], axis=-1)
    h = nn.Conv(feats, (1, 1), use_bias=False, kernel_init=dcgan.init_normal, name='joint')(h)
    h = nn.leaky_relu(_batch_norm(train)(h), 0.2)
    h = nn.Conv(1, (4, 4), padding='VALID', use_bias=False, kernel_init=dcgan.init_normal,
                name='out')(h)
    logits = h.reshape((b,))
    if self.projection:
      w_text = nn.Dense(feats, use_bias=False, kernel_init=dcgan.init_normal,
                        name='text_inner')(text)
      logits = logits + jnp.sum(jnp.mean(image, axis=(1, 2)) * w_text, axis=-1)
    return logits


class StyleEncoder(nn.Module):
  resolution: int = 64
  width: int = 64
  latent_dim: int = 100
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = _down(x.astype(jnp.float32), self.resolution, self.width, self.conv_impl, train)
    return nn.Dense(self.latent_dim, kernel_init=dcgan.init_normal, name='out')(
        h.reshape((h.shape[0], -1)))


def check(cfg) -> None:
  """Raises ValueError for a model config these networks cannot make."""
  if cfg.resolution not in RESOLUTIONS:
    raise ValueError(f'gan_int_cls cannot make {cfg.resolution}x{cfg.resolution} images; '
                     f'accepted resolutions: {", ".join(map(str, RESOLUTIONS))}.')
  if cfg.conv_impl not in dcgan.CONV_IMPLS:
    raise ValueError(f'Unknown model.conv_impl {cfg.conv_impl!r}; accepted: '
                     f'{", ".join(dcgan.CONV_IMPLS)}.')
  for name in ('latent_dim', 'proj_dim', 'g_width', 'd_width'):
    value = cfg[name]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f'model.{name} must be a positive integer; got {value!r}.')
  projection = cfg.get('d_projection', False)
  if not isinstance(projection, bool):
    raise ValueError(f'model.d_projection must be True or False; got {projection!r}.')


def make_gan(cfg):
  """``(Generator, Discriminator)`` for ``cfg`` (``config.model``)."""
  check(cfg)
  g = Generator(cfg.resolution, cfg.channels, cfg.g_width, cfg.proj_dim, cfg.conv_impl)
  d = Discriminator(cfg.resolution, cfg.d_width, cfg.proj_dim, cfg.conv_impl,
                    cfg.get('d_projection', False))
  return g, d


def make_style_encoder(cfg, width: int):
  check(cfg)
  if not isinstance(width, int) or width <= 0:
    raise ValueError(f'style.width must be a positive integer; got {width!r}.')
  return StyleEncoder(cfg.resolution, width, cfg.latent_dim, cfg.conv_impl)
