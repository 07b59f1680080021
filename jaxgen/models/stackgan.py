"""StackGAN networks (Zhang et al., ICCV 2017): conditioning augmentation and the two stages.

Text-to-image in two steps. Stage-I draws a coarse 64x64 image from noise and the caption;
Stage-II reads that image and the caption again and redraws it at 256x256 (or 128x128),
correcting defects and adding detail. The layers follow the authors' PyTorch release
(StackGAN-Pytorch, ``code/model.py``); where the paper's text and that code differ, the
choice is an attribute and the docstring says which is which.

* :class:`CondAugment` - conditioning augmentation (CA). One fully connected layer maps the
  text embedding t (1024-d char-CNN-RNN in the paper) to ``2 * c_dim`` numbers, split into a
  mean mu and a log-variance logvar (c_dim = 128). The condition is then *sampled*,
  c = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (the reparameterization trick, so
  gradients reach mu and logvar). Sampling gives many conditions per caption, which smooths
  the conditioning manifold from few captions; :func:`jaxgen.losses.stackgan.kl_loss`
  keeps q(c | t) close to N(0, I). The activation after the FC layer is ``'relu'`` by
  default, as in the authors' PyTorch code (note what this implies: mu >= 0 and
  logvar >= 0, i.e. sigma >= 1); ``'glu'`` (FC to ``4 * c_dim``, then a gated linear unit
  halving it, as in their StackGAN++ code) lets both take any sign.
* :class:`Generator1` ``(z, t) -> (images [B, 64, 64, C], mu, logvar)``: CA, [z, c] -> FC
  (no bias) -> BatchNorm + ReLU -> 4x4 x (8 * width) features, four up-sampling blocks
  (nearest-neighbour 2x, 3x3 convolution, BatchNorm, ReLU) halving the width each time,
  and a 3x3 convolution to the image with tanh. ``width`` is the code's ``GF_DIM``. (The
  FC's 4 * 4 * 8 * width outputs are reshaped channels-last, the code's channels-first: the
  same layer with its units in another order.)
* :class:`Generator2` ``(stage1_images, t) -> (images [B, r, r, C], mu, logvar)``: an encoder
  (3x3 conv + ReLU, then two stride-2 4x4 convs with BatchNorm + ReLU) takes the 64x64
  image to 16x16 x (4 * width); its own CA condition, replicated over the 16x16 grid, is
  concatenated and fused by a 3x3 conv + BatchNorm + ReLU; ``num_residual`` residual blocks
  (conv-BN-ReLU-conv-BN, add, ReLU); up-sampling blocks to r (4 for 256, 3 for 128);
  3x3 conv + tanh. Stage-II takes no noise: its randomness is the CA sample (and the
  Stage-I image). It holds no Stage-I parameters: only the image flows between the stages
  (the authors freeze Stage-I and detach its image; here the caller simply does not
  differentiate through it).
* :class:`Discriminator1` / :class:`Discriminator2` ``(images, cond) -> logits [B]``: DCGAN
  down-sampling (stride-2 4x4 convs, LeakyReLU(0.2), BatchNorm from the second on) to 4x4;
  for inputs above 64x64 the widths keep doubling (8 * width at 64 -> 32 * width at 256)
  and 3x3 convs (+ BN + LeakyReLU) bring them back to 8 * width. The condition is
  compressed to ``c_dim`` by FC + LeakyReLU(0.2) (the paper, ``cond_proj=True``; pass the
  text embedding) or used as given (``cond_proj=False``, the PyTorch code, which passes
  the generator's CA mean mu), replicated over the 4x4 grid and concatenated; a
  ``joint_kernel`` x ``joint_kernel`` conv (1 in the paper, 3 in the code) + BN +
  LeakyReLU, and a 4x4 valid conv (with bias: the paper's one-node FC layer) give the
  logit. With ``uncond_head=True`` (the code's Stage-II D) the call returns
  ``(conditional, unconditional)`` logits, the latter from a 4x4 conv of the image
  features alone.

Logits are returned raw (the code ends in a sigmoid and uses BCELoss; here the losses take
logits). Initialisation as the code's ``weights_init``: conv and FC weights N(0, 0.02), FC
biases 0, BatchNorm scale N(1, 0.02). BatchNorm momentum 0.9 here is PyTorch's 0.1.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import dcgan
from jaxgen.models import with_defaults

STAGE1_RESOLUTION = 64
STAGE2_RESOLUTIONS = (128, 256)
CA_ACTIVATIONS = ('relu', 'glu')
JOINT_KERNELS = (1, 3)
# Optional model.* fields and their defaults. Widths are the PyTorch code's config.py
# (GF_DIM 128, DF_DIM 64, R_NUM 4, CONDITION_DIM 128, Z_DIM 100); its COCO configs use
# GF_DIM 192, DF_DIM 96 and R_NUM 2.
DEFAULTS = dict(channels=3, latent_dim=100, c_dim=128, g1_width=128, d1_width=64,
                g2_width=128, d2_width=64, num_residual=4, stage2_resolution=256,
                ca_activation='relu', d_cond_proj=True, d_joint_kernel=1)

init_normal = dcgan.init_normal


def _bn(train: bool, name: str | None = None):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=dcgan.bn_scale_init, name=name)


def _conv3(features: int, name: str | None = None):
  """The code's ``conv3x3``: 3x3, stride 1, padding 1, no bias."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                 kernel_init=init_normal, name=name)


def _conv4_down(features: int):
  """Stride-2 4x4 convolution with padding 1, no bias: halves the spatial size."""
  return nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                 kernel_init=init_normal)


def _upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x up-sampling of NHWC features (each pixel becomes a 2x2 block)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _up_block(x, features: int, train: bool):
  """The code's ``upBlock``: nearest 2x, 3x3 conv, BatchNorm, ReLU."""
  return nn.relu(_bn(train)(_conv3(features)(_upsample_nearest(x))))


def _replicate(c: jax.Array, height: int, width: int) -> jax.Array:
  """``[B, D] -> [B, height, width, D]``: the same vector at every position."""
  return jnp.broadcast_to(c[:, None, None, :], (c.shape[0], height, width, c.shape[-1]))


def _to_image(x, channels: int):
  return jnp.tanh(_conv3(channels, name='to_image')(x))


class CondAugment(nn.Module):
  """Conditioning augmentation: ``t -> (c, mu, logvar)``, each ``[B, c_dim]``.

  eps is ``eps`` if given, else drawn from ``rng`` if given, else from the flax rng stream
  ``'ca'``; c = mu + exp(logvar / 2) * eps.
  """
  c_dim: int = 128
  activation: str = 'relu'

  @nn.compact
  def __call__(self, t, eps=None, rng=None):
    if self.activation not in CA_ACTIVATIONS:
      raise ValueError(f'Unknown CA activation {self.activation!r}; accepted: '
                       f'{", ".join(CA_ACTIVATIONS)}.')
    t = t.astype(jnp.float32)
    if self.activation == 'relu':
      h = nn.relu(nn.Dense(2 * self.c_dim, kernel_init=init_normal, name='fc')(t))
    else:
      h = nn.glu(nn.Dense(4 * self.c_dim, kernel_init=init_normal, name='fc')(t), axis=-1)
    mu, logvar = h[:, :self.c_dim], h[:, self.c_dim:]
    if eps is None:
      eps = jax.random.normal(self.make_rng('ca') if rng is None else rng, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * logvar) * eps, mu, logvar


class Generator1(nn.Module):
  """Stage-I: ``(z [B, latent], t [B, text_dim]) -> (images [B, 64, 64, C], mu, logvar)``."""
  width: int = 128
  c_dim: int = 128
  channels: int = 3
  ca_activation: str = 'relu'

  @nn.compact
  def __call__(self, z, t, train: bool = True, ca_eps=None):
    c, mu, logvar = CondAugment(self.c_dim, self.ca_activation, name='ca')(t, eps=ca_eps)
    feats = 8 * self.width
    h = jnp.concatenate([z.astype(jnp.float32), c], axis=-1)
    h = nn.Dense(4 * 4 * feats, use_bias=False, kernel_init=init_normal, name='fc')(h)
    h = nn.relu(_bn(train, 'fc_bn')(h)).reshape((h.shape[0], 4, 4, feats))
    for _ in range(4):  # 4 -> 64
      feats //= 2
      h = _up_block(h, feats, train)
    return _to_image(h, self.channels), mu, logvar


class _ResBlock(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    feats = x.shape[-1]
    h = nn.relu(_bn(train)(_conv3(feats)(x)))
    h = _bn(train)(_conv3(feats)(h))
    return nn.relu(h + x)


class Generator2(nn.Module):
  """Stage-II: ``(stage1 images [B, 64, 64, C], t) -> (images [B, r, r, C], mu, logvar)``."""
  resolution: int = 256
  width: int = 128
  c_dim: int = 128
  num_residual: int = 4
  channels: int = 3
  ca_activation: str = 'relu'

  @nn.compact
  def __call__(self, x, t, train: bool = True, ca_eps=None):
    if x.shape[1:3] != (STAGE1_RESOLUTION, STAGE1_RESOLUTION):
      raise ValueError(f'Generator2 reads {STAGE1_RESOLUTION}x{STAGE1_RESOLUTION} Stage-I '
                       f'images; got shape {x.shape}.')
    ngf = self.width
    h = nn.relu(_conv3(ngf)(x.astype(jnp.float32)))                   # 64x64, ngf
    h = nn.relu(_bn(train)(_conv4_down(2 * ngf)(h)))                   # 32x32, 2 ngf
    h = nn.relu(_bn(train)(_conv4_down(4 * ngf)(h)))                   # 16x16, 4 ngf
    c, mu, logvar = CondAugment(self.c_dim, self.ca_activation, name='ca')(t, eps=ca_eps)
    h = jnp.concatenate([h, _replicate(c, h.shape[1], h.shape[2])], axis=-1)
    h = nn.relu(_bn(train)(_conv3(4 * ngf, name='joint')(h)))
    for _ in range(self.num_residual):
      h = _ResBlock()(h, train)
    feats = 4 * ngf
    for _ in range(int(math.log2(self.resolution // 16))):  # 16 -> r
      feats //= 2
      h = _up_block(h, feats, train)
    return _to_image(h, self.channels), mu, logvar


class Discriminator(nn.Module):
  """``(images [B, r, r, C], cond [B, D]) -> logits [B]`` (or a pair with ``uncond_head``)."""
  resolution: int = 64
  width: int = 64
  c_dim: int = 128
  cond_proj: bool = True
  joint_kernel: int = 1
  uncond_head: bool = False

  @nn.compact
  def __call__(self, x, cond, train: bool = True):
    ndf = self.width
    h = x.astype(jnp.float32)
    n_down = int(math.log2(self.resolution)) - 2
    for i in range(n_down):  # r -> 4, widths ndf * 2^i
      h = _conv4_down(ndf * 2 ** i)(h)
      if i > 0:
        h = _bn(train)(h)
      h = nn.leaky_relu(h, 0.2)
    feats = ndf * 2 ** (n_down - 1)
    while feats > 8 * ndf:  # above 64x64: 3x3 convs back down to 8 ndf
      feats //= 2
      h = nn.leaky_relu(_bn(train)(_conv3(feats)(h)), 0.2)
    b, height, width_, _ = h.shape
    cond = cond.astype(jnp.float32)
    if self.cond_proj:
      cond = nn.leaky_relu(nn.Dense(self.c_dim, kernel_init=init_normal, name='cond_proj')(cond),
                           0.2)
    k = self.joint_kernel
    j = jnp.concatenate([h, _replicate(cond, height, width_)], axis=-1)
    j = nn.Conv(8 * ndf, (k, k), padding=((k // 2, k // 2),) * 2, use_bias=False,
                kernel_init=init_normal, name='joint')(j)
    j = nn.leaky_relu(_bn(train, 'joint_bn')(j), 0.2)
    logit = nn.Conv(1, (4, 4), padding='VALID', kernel_init=init_normal, name='out')(j)
    logit = logit.reshape((b,))
    if not self.uncond_head:
      return logit
    uncond = nn.Conv(1, (4, 4), padding='VALID', kernel_init=init_normal, name='uncond_out')(h)
    return logit, uncond.reshape((b,))


class Discriminator1(Discriminator):
  """Stage-I D: 64x64 images."""
  resolution: int = 64


class Discriminator2(Discriminator):
  """Stage-II D: 256x256 (or 128x128) images."""
  resolution: int = 256


def _positive_int(cfg, name):
  value = cfg[name]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f'model.{name} must be a positive integer; got {value!r}.')


def check(cfg) -> None:
  """Raises ValueError for a model config these networks cannot make (``cfg`` = model)."""
  cfg = with_defaults(cfg, DEFAULTS)
  for name in ('channels', 'latent_dim', 'c_dim', 'g1_width', 'd1_width', 'g2_width',
               'd2_width'):
    _positive_int(cfg, name)
  n = cfg.num_residual
  if not isinstance(n, int) or isinstance(n, bool) or n < 0:
    raise ValueError(f'model.num_residual must be a non-negative integer; got {n!r}.')
  if cfg.stage2_resolution not in STAGE2_RESOLUTIONS:
    raise ValueError(f'StackGAN Stage-II cannot make {cfg.stage2_resolution}x'
                     f'{cfg.stage2_resolution} images; accepted model.stage2_resolution: '
                     f'{", ".join(map(str, STAGE2_RESOLUTIONS))}.')
  if cfg.g1_width % 2:
    raise ValueError('model.g1_width must be even (Stage-I halves 8 * g1_width four times, '
                     f'ending at g1_width / 2 features); got {cfg.g1_width}.')
  g2_div = cfg.stage2_resolution // 64
  if cfg.g2_width % g2_div:
    raise ValueError(f'model.g2_width must be a multiple of {g2_div} at {cfg.stage2_resolution}'
                     f'x{cfg.stage2_resolution} (Stage-II ends at g2_width / {g2_div} '
                     f'features); got {cfg.g2_width}.')
  if cfg.ca_activation not in CA_ACTIVATIONS:
    raise ValueError(f'Unknown model.ca_activation {cfg.ca_activation!r}; accepted: '
                     f'{", ".join(CA_ACTIVATIONS)}.')
  if cfg.d_joint_kernel not in JOINT_KERNELS:
    raise ValueError(f'model.d_joint_kernel must be one of '
                     f'{", ".join(map(str, JOINT_KERNELS))}; got {cfg.d_joint_kernel!r}.')
  if not isinstance(cfg.d_cond_proj, bool):
    raise ValueError(f'model.d_cond_proj must be True or False; got {cfg.d_cond_proj!r}.')


def make_stage1(cfg):
  """``(Generator1, Discriminator1)`` for ``cfg`` (``config.model``, defaults filled in)."""
  check(cfg)
  cfg = with_defaults(cfg, DEFAULTS)
  g = Generator1(cfg.g1_width, cfg.c_dim, cfg.channels, cfg.ca_activation)
  d = Discriminator1(STAGE1_RESOLUTION, cfg.d1_width, cfg.c_dim, cfg.d_cond_proj,
                     cfg.d_joint_kernel, uncond_head=False)
  return g, d


def make_stage2(cfg):
  """``(Generator2, Discriminator2)`` for ``cfg``; D2 has the unconditional head."""
  check(cfg)
  cfg = with_defaults(cfg, DEFAULTS)
  g = Generator2(cfg.stage2_resolution, cfg.g2_width, cfg.c_dim, cfg.num_residual,
                 cfg.channels, cfg.ca_activation)
  d = Discriminator2(cfg.stage2_resolution, cfg.d2_width, cfg.c_dim, cfg.d_cond_proj,
                     cfg.d_joint_kernel, uncond_head=True)
  return g, d
