"""DF-GAN networks (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image
Synthesis", CVPR 2022), laid out as the authors' released code (tobran/DF-GAN,
code/models/GAN.py) builds them, in NHWC.

Building blocks, each a pure flax module:

* :class:`Affine` ``(x [B, H, W, C], cond [B, D]) -> gamma(cond) * x + beta(cond)``: a
  channel-wise scale and shift, each predicted from the condition by its own two-layer MLP
  (Linear D -> C, ReLU, Linear C -> C). The last layer of the gamma MLP starts at weight 0,
  bias 1 and that of the beta MLP at weight 0, bias 0, so at initialisation every affine is
  the identity and the generator ignores the text until training moves those weights.
* :class:`DFBlock` (the official ``DFBLK``, a G_Block's ``fuse``): affine, LeakyReLU(0.2),
  affine, LeakyReLU(0.2) - two text-conditioned modulations stacked, the "deep fusion".
* :class:`UpBlock` (``G_Block``): nearest-neighbour 2x upsampling, then
  ``shortcut(x) + residual(x)`` with shortcut a 1x1 convolution when the channel count
  changes (identity otherwise) and residual = DFBlock, 3x3 conv, DFBlock, 3x3 conv. The
  released CVPR code adds the residual unweighted; the 2020 preprint's code multiplied it by
  a learnable scalar gamma starting at 0. ``residual_gamma=True`` gives that variant; the
  default follows the CVPR code.
* :class:`Generator` ``(z [B, nz], s [B, cond_dim]) -> images [B, r, r, C]`` in [-1, 1]:
  a linear layer maps z to a 4x4 map of 8 * width channels, UpBlocks double the size up to
  r with channels ``width * min(2**i, 8)`` read from the image end (r = 256: 8, 8, 8, 8, 4,
  2, 1 times width, six blocks), and LeakyReLU + 3x3 conv + tanh make the image. As in the
  official code, the condition every affine sees is ``concat(z, s)``, not s alone, so the
  noise also modulates every block.
* :class:`Discriminator` ``images -> features [B, 4, 4, 8 * width]``: a 3x3 conv to
  ``width`` channels and residual :class:`DownBlock` s (``D_Block``) halving the size to 4x4
  with channels ``width * min(2**i, 8)``. ``conv_impl='fast'`` computes the blocks' stride-2
  convolutions with :class:`jaxgen.nn.fast_conv.Conv` (same parameters, same numbers up to
  float rounding): MA-GP differentiates D's input-gradient, and XLA:CPU computes the
  input-gradient of a strided convolution, and its derivative, with a slow generic loop.
* :class:`DiscriminatorHead` (``NetC``) ``(features, s) -> logits [B]``: the sentence vector
  is replicated over the 4x4 grid and concatenated to the features; 3x3 conv to
  ``2 * width``, LeakyReLU(0.2), 4x4 valid conv to one logit. Split from the feature
  extractor because the official step computes real features once and reuses them for the
  matching and the mismatched pairs.
* :class:`MatchingDiscriminator`: both, with ``__call__(x, s)`` and the two halves as the
  methods ``features`` and ``head`` (``apply(..., method='features')``).

Initialisation is PyTorch's default, which the official code keeps: every weight and bias
uniform in +-1/sqrt(fan_in) (fan_in = in_channels * kh * kw), except the affine layers'
last layers above. Biases: the convolutions of G and D's first conv and 1x1 shortcut have
them; D's residual convolutions and the head's two convolutions have none, as in the code.

The generator's 4x4 map is the linear layer's output read as (C, 4, 4) and moved to
channels-last, so its units are in PyTorch's order (a ported checkpoint needs only the usual
kernel transposes). PyTorch's ``D_Block`` always creates its 1x1 shortcut conv but uses it
only when the channels change; here a block without a learned shortcut has no such
parameters, so a PyTorch parameter count of D is larger by those unused weights.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models import dcgan, with_defaults

RESOLUTIONS = (32, 64, 128, 256)
# Optional model.* fields and their defaults (required: resolution, channels, latent_dim,
# cond_dim, g_width, d_width). The paper's networks: latent_dim 100, cond_dim 256 (the DAMSM
# sentence vector), g_width = d_width = 32, resolution 256.
DEFAULTS = dict(residual_gamma=False, conv_impl='plain')
CONV_IMPLS = dcgan.CONV_IMPLS
LEAK = 0.2

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv2d weights
# (kaiming_uniform with a = sqrt(5)); variance scaling 1/3 uniform has bound sqrt(3 / 3 / fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init for a layer with ``fan_in`` inputs: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _dense(features: int, fan_in: int, name: str, kernel_init=None, bias_init=None):
  return nn.Dense(features, kernel_init=kernel_init or torch_kernel_init,
                  bias_init=bias_init or torch_bias_init(fan_in), name=name)


def _conv(x, features: int, kernel: int, name: str, stride: int = 1, padding=None,
          use_bias: bool = True, conv_impl: str = 'plain'):
  """A PyTorch-initialised convolution; ``padding`` defaults to (kernel - 1) // 2 a side.
  ``conv_impl='fast'``: :class:`jaxgen.nn.fast_conv.Conv` (only differs for stride > 1)."""
  pad = (kernel - 1) // 2 if padding is None else padding
  fan_in = x.shape[-1] * kernel * kernel
  conv, _ = dcgan.conv_layers(conv_impl)
  return conv(features, (kernel, kernel), strides=(stride, stride),
              padding=((pad, pad), (pad, pad)), use_bias=use_bias,
              kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), name=name)(x)


def channel_multipliers(resolution: int) -> tuple[int, ...]:
  """Width multipliers from 4x4 up to ``resolution`` (one per size): G's channels are
  ``width`` times these; D's the same list reversed. 256 -> (8, 8, 8, 8, 4, 2, 1)."""
  n = int(math.log2(resolution)) - 1
  return tuple(min(2 ** i, 8) for i in range(n))[::-1]


class Affine(nn.Module):
  """``gamma(cond) * x + beta(cond)``, gamma and beta [B, C] broadcast over H and W.

  gamma(cond) = W2 relu(W1 cond + b1) + b2 (and beta likewise, with its own weights); the
  hidden width is C, the number of channels of x.
  """

  @nn.compact
  def __call__(self, x, cond):
    c, d = x.shape[-1], cond.shape[-1]

    def mlp(name, last_bias_init):
      h = nn.relu(_dense(c, d, f'{name}_1')(cond))
      return _dense(c, c, f'{name}_2', kernel_init=nn.initializers.zeros,
                    bias_init=last_bias_init)(h)

    gamma = mlp('gamma', nn.initializers.ones)
    beta = mlp('beta', nn.initializers.zeros)
    return gamma[:, None, None, :] * x + beta[:, None, None, :]


class DFBlock(nn.Module):
  """Deep fusion: affine, LeakyReLU(0.2), affine, LeakyReLU(0.2)."""

  @nn.compact
  def __call__(self, x, cond):
    h = nn.leaky_relu(Affine(name='affine0')(x, cond), LEAK)
    return nn.leaky_relu(Affine(name='affine1')(h, cond), LEAK)


def upsample_nearest(x, factor: int = 2):
  """Nearest-neighbour upsampling of an NHWC map (``F.interpolate(scale_factor=2)``)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class UpBlock(nn.Module):
  """Upsample 2x, then shortcut + residual [DFBlock, conv3x3, DFBlock, conv3x3]."""
  features: int
  residual_gamma: bool = False

  @nn.compact
  def __call__(self, x, cond):
    x = upsample_nearest(x)
    h = DFBlock(name='fuse1')(x, cond)
    h = _conv(h, self.features, 3, 'c1')
    h = DFBlock(name='fuse2')(h, cond)
    h = _conv(h, self.features, 3, 'c2')
    if self.residual_gamma:
      h = self.param('gamma', nn.initializers.zeros, (1,)) * h
    if x.shape[-1] != self.features:
      x = _conv(x, self.features, 1, 'c_sc')
    return x + h


class Generator(nn.Module):
  resolution: int = 256
  channels: int = 3
  width: int = 32
  residual_gamma: bool = False

  @nn.compact
  def __call__(self, z, s):
    _check_resolution(self.resolution)
    z, s = z.astype(jnp.float32), s.astype(jnp.float32)
    mults = channel_multipliers(self.resolution)
    feats0 = self.width * mults[0]
    h = _dense(feats0 * 16, z.shape[-1], 'fc')(z)
    h = h.reshape((z.shape[0], feats0, 4, 4)).transpose((0, 2, 3, 1))
    cond = jnp.concatenate([z, s], axis=-1)
    for i, m in enumerate(mults[1:]):
      h = UpBlock(self.width * m, self.residual_gamma, name=f'block{i}')(h, cond)
    h = _conv(nn.leaky_relu(h, LEAK), self.channels, 3, 'to_rgb')
    return jnp.tanh(h)


class DownBlock(nn.Module):
  """avgpool2(shortcut(x)) + gamma * [conv4x4/2, LReLU, conv3x3, LReLU](x), gamma from 0."""
  features: int
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, x):
    r = nn.leaky_relu(_conv(x, self.features, 4, 'conv_r0', stride=2, padding=1,
                            use_bias=False, conv_impl=self.conv_impl), LEAK)
    r = nn.leaky_relu(_conv(r, self.features, 3, 'conv_r1', use_bias=False), LEAK)
    if x.shape[-1] != self.features:
      x = _conv(x, self.features, 1, 'conv_s')
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    return x + self.param('gamma', nn.initializers.zeros, (1,)) * r


class Discriminator(nn.Module):
  """Images [B, r, r, C] -> features [B, 4, 4, 8 * width]."""
  resolution: int = 256
  width: int = 32
  conv_impl: str = 'plain'

  @nn.compact
  def __call__(self, x):
    _check_resolution(self.resolution)
    if x.shape[1:3] != (self.resolution, self.resolution):
      raise ValueError(f'This discriminator takes {self.resolution}x{self.resolution} '
                       f'images; got shape {x.shape}.')
    mults = channel_multipliers(self.resolution)[::-1]
    h = _conv(x.astype(jnp.float32), self.width * mults[0], 3, 'conv_img')
    for i, m in enumerate(mults[1:]):
      h = DownBlock(self.width * m, self.conv_impl, name=f'block{i}')(h)
    return h


class DiscriminatorHead(nn.Module):
  """(features [B, 4, 4, F], s [B, cond_dim]) -> logits [B]."""
  width: int = 32

  @nn.compact
  def __call__(self, features, s):
    b = features.shape[0]
    if features.shape[1:3] != (4, 4):
      raise ValueError(f'The DF-GAN head takes 4x4 features; got shape {features.shape}.')
    s = jnp.broadcast_to(s.astype(jnp.float32)[:, None, None, :], (b, 4, 4, s.shape[-1]))
    h = jnp.concatenate([features, s], axis=-1)
    h = nn.leaky_relu(_conv(h, 2 * self.width, 3, 'joint_conv0', use_bias=False), LEAK)
    h = _conv(h, 1, 4, 'joint_conv1', padding=0, use_bias=False)
    return h.reshape((b,))


class MatchingDiscriminator(nn.Module):
  """The feature extractor and the head; ``__call__(x, s)`` is ``head(features(x), s)``.

  Parameters live under ``features`` and ``head``. To reuse one feature pass for the matching
  and the mismatched pairs: ``f = d.apply(p, x, method='features')``, then
  ``d.apply(p, f, s, method='head')`` and ``d.apply(p, jnp.roll(f, -1, 0), s, method='head')``.
  """
  resolution: int = 256
  width: int = 32
  conv_impl: str = 'plain'
  num_attributes: int = 0  # > 0 (not the paper): an attribute head on the features

  def setup(self):
    self.feature_net = Discriminator(self.resolution, self.width, self.conv_impl,
                                     name='features')
    self.head_net = DiscriminatorHead(self.width, name='head')
    if self.num_attributes:
      self.attribute_net = nn.Dense(self.num_attributes, name='attributes')

  def features(self, x):
    return self.feature_net(x)

  def attributes(self, features):
    """Attribute logits [B, num_attributes] from the features [B, 4, 4, F] (one linear layer
    on the flattened map, so where a feature sits stays readable)."""
    if not self.num_attributes:
      raise ValueError('This discriminator has no attribute head (num_attributes=0).')
    return self.attribute_net(features.reshape((features.shape[0], -1)))

  def init_all(self, x, s):
    """Every parameter, the attribute head's included (``init(..., method='init_all')``)."""
    features = self.feature_net(x)
    out = self.head_net(features, s)
    return (out, self.attributes(features)) if self.num_attributes else out

  def head(self, features, s):
    return self.head_net(features, s)

  def __call__(self, x, s):
    return self.head_net(self.feature_net(x), s)


def _check_resolution(resolution) -> None:
  if resolution not in RESOLUTIONS:
    raise ValueError(f'dfgan cannot make {resolution}x{resolution} images; accepted '
                     f'resolutions: {", ".join(map(str, RESOLUTIONS))}.')


def check(cfg) -> None:
  """Raises ValueError for a model config these networks cannot make."""
  cfg = with_defaults(cfg, DEFAULTS)
  for name in ('resolution', 'channels', 'latent_dim', 'cond_dim', 'g_width', 'd_width'):
    if name not in cfg:
      raise ValueError(f'model.{name} is required for dfgan.')
    value = cfg[name]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f'model.{name} must be a positive integer; got {value!r}.')
  _check_resolution(cfg.resolution)
  if not isinstance(cfg.residual_gamma, bool):
    raise ValueError(f'model.residual_gamma must be True or False; got '
                     f'{cfg.residual_gamma!r}.')
  if cfg.conv_impl not in CONV_IMPLS:
    raise ValueError(f'Unknown model.conv_impl {cfg.conv_impl!r}; accepted: '
                     f'{", ".join(CONV_IMPLS)}.')


def make_networks(cfg, num_attributes: int = 0):
  """``(Generator, MatchingDiscriminator)`` for ``cfg`` (``config.model``); D with an attribute
  head of ``num_attributes`` logits when it is > 0."""
  check(cfg)
  cfg = with_defaults(cfg, DEFAULTS)
  g = Generator(cfg.resolution, cfg.channels, cfg.g_width, cfg.residual_gamma)
  d = MatchingDiscriminator(cfg.resolution, cfg.d_width, cfg.conv_impl, num_attributes)
  return g, d
