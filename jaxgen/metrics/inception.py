"""InceptionV3 of the TF 2015-12-05 graph (the FID/IS network) in Flax, and its input protocol.

The network
-----------
The Inception Score (Salimans et al. 2016) and FID (Heusel et al. 2017) reference code use the
graph ``classify_image_graph_def.pb`` from ``inception-2015-12-05.tgz``. It differs from
torchvision's / Keras' InceptionV3: 1008 classes, the average pools of the mixed blocks do not
count padding, and the last block (``Mixed_7c``) pools with max instead of average. This port
follows pytorch-fid's ``FIDInceptionV3`` (itself ported from that graph) module for module, with
the same parameter names, so its weight file loads one to one:

* ``pool``: the 2048-d ``pool_3`` features (used for FID and KID);
* ``logits``: the 1008-way ``softmax/logits`` (``pool @ W + b``);
* ``logits_unbiased``: ``pool @ W`` without the bias. The reference IS code takes the softmax
  of exactly this (it multiplies ``pool_3`` by the MatMul weights and ignores the bias), so
  the Inception Score uses it.

Convolutions run in float32 at full precision (``Precision.HIGHEST``: no TF32/bf16 passes on
GPUs/TPUs), BatchNorm with the stored statistics and epsilon 1e-3.

The input protocol (``protocol='tf1'``, the default)
----------------------------------------------------
1. Quantise: generated images in [-1, 1] become integers 0..255 exactly as a PNG writer
   would store them, ``round((x + 1) * 127.5)`` clipped to [0, 255] (the same rounding as
   :func:`jaxgen.images.to_uint8`); uint8 input is taken as is.
2. Grey images are repeated to 3 channels.
3. Resize to 299x299 with TF 1.x ``ResizeBilinear`` (``align_corners=False``,
   ``half_pixel_centers=False``: source coordinate ``i * in / out``), the op inside the
   reference graph (also reproduced by torch-fidelity), in float32 on the 0..255 values.
4. Normalise ``(x - 128) / 128``, the graph's ``Sub``/``Mul`` nodes.

``protocol='pytorch_fid'`` reproduces pytorch-fid instead: ``x / 255``, bilinear with half-pixel
centres (``F.interpolate(..., align_corners=False)``), then ``2 x - 1``. Numbers from the two
protocols differ slightly and must not be compared with each other. The half-pixel source
coordinates are computed exactly here and rounded once into the weights; torch rounds them in
float32 (fused or not, by CPU), so resized values differ from torch's by up to about
``1.5 (H + W) eps32`` of the value range - far below the network's own float32 error.

Parity with the reference packages (``tests/test_inception.py``): on the same (random) weights,
``tf1`` matches torch-fidelity's ``inception-v3-compat`` extractor (its own TF1 resize) and
``pytorch_fid`` matches pytorch-fid's ``InceptionV3`` to float32 rounding - pool features and
logits within the error bound derived there from the depth and accumulation lengths, against
each package's module run in float64.

Weights
-------
No weights ship with jaxgen, and the extractor never falls back to random weights. Accepted
files (see :func:`find_weights` for where they are looked for):

* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torch state dict; torch must be
  installed to read it), published at
  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  and cached by pytorch-fid under ``~/.cache/torch/hub/checkpoints/``;
* torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (same module names);
* an ``.npz`` holding that state dict's arrays under their torch names, written by
  ``python -m jaxgen.metrics.inception convert IN.pth OUT.npz`` (needs torch once; the .npz then
  loads without torch).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
from typing import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 299
NUM_CLASSES = 1008
POOL_DIM = 2048
PROTOCOLS = ('tf1', 'pytorch_fid')
WEIGHT_FILE_NAMES = (
    'pt_inception-2015-12-05-6726825d.pth',      # pytorch-fid
    'weights-inception-2015-12-05-6726825d.pth',  # torch-fidelity
    'pt_inception-2015-12-05-6726825d.npz',      # `python -m jaxgen.metrics.inception convert`
)
WEIGHTS_ENV = 'JAXGEN_INCEPTION_WEIGHTS'
PYTORCH_FID_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
HIGHEST = jax.lax.Precision.HIGHEST


class InceptionWeightsNotFoundError(FileNotFoundError):
  """No InceptionV3 weight file: Inception-based scores are refused rather than made up."""


# ---------------------------------------------------------------------------- the network


def _pads(padding):
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return ((ph, ph), (pw, pw))


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm(eps 1e-3, stored statistics) -> ReLU."""
  features: int
  kernel: tuple
  strides: int = 1
  padding: int | tuple = 0  # symmetric (ph, pw), torchvision's convention.

  @nn.compact
  def __call__(self, x):
    k = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
    x = nn.Conv(self.features, k, (self.strides, self.strides), padding=_pads(self.padding),
                use_bias=False, precision=HIGHEST, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TF's SAME average pool divides by the number of non-padding inputs.
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding='VALID')


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, 1, name='branch1x1')(x)
    b5 = BasicConv(48, 1, name='branch5x5_1')(x)
    b5 = BasicConv(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = BasicConv(64, 1, name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, 3, strides=2, name='branch3x3')(x)
    bd = BasicConv(64, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, 3, strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv(192, 1, name='branch1x1')(x)
    b7 = BasicConv(c7, 1, name='branch7x7_1')(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv(c7, 1, name='branch7x7dbl_1')(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, 1, name='branch3x3_1')(x)
    b3 = BasicConv(320, 3, strides=2, name='branch3x3_2')(b3)
    b7 = BasicConv(192, 1, name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, 3, strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  pool: str  # 'avg' (Mixed_7b) or 'max' (Mixed_7c, a quirk of the 2015 graph).

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, 1, name='branch1x1')(x)
    b3 = BasicConv(384, 1, name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], -1)
    bd = BasicConv(448, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], -1)
    if self.pool == 'avg':
      p = _avg_pool_3x3(x)
    else:
      p = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    bp = BasicConv(192, 1, name='branch_pool')(p)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Logits(nn.Module):
  """The 2048 -> 1008 ``softmax/logits`` layer; returns (x W, x W + b)."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (POOL_DIM, NUM_CLASSES))
    bias = self.param('bias', nn.initializers.zeros, (NUM_CLASSES,))
    unbiased = jnp.dot(x, kernel, precision=HIGHEST)
    return unbiased, unbiased + bias


class InceptionV3(nn.Module):
  """Normalised NHWC RGB input (299x299 for the reference) -> dict(pool, logits, logits_unbiased).

  The final average pool is global, which at 299x299 is the graph's 8x8 ``pool_3``.
  """

  @nn.compact
  def __call__(self, x):
    x = BasicConv(32, 3, strides=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, 3, name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, 1, name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, 3, name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    unbiased, logits = Logits(name='fc')(pool)
    return {'pool': pool, 'logits': logits, 'logits_unbiased': unbiased}


# ---------------------------------------------------------------------------- input protocol


def quantize(images) -> jax.Array:
  """[-1, 1] floats -> float32 integers 0..255 (round to nearest, clip); uint8 kept as is."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32)
  x = (images.astype(jnp.float32) + 1.0) * 127.5
  return jnp.clip(jnp.round(x), 0.0, 255.0)


@functools.lru_cache(maxsize=None)
def resize_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
  """[out, in] linear-interpolation weights along one axis.

  ``tf1``: TF 1.x ResizeBilinear, align_corners=False, half_pixel_centers=False: source
  coordinate ``i * (in / out)`` (float32, as the op), neighbours floor and floor + 1 clamped.
  ``pytorch_fid``: half-pixel centres, ``(i + 0.5) * in / out - 0.5`` clamped at 0, as
  ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``.
  Neither antialiases when shrinking, as the references do not.
  """
  if method == 'tf1':
    coord = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
  elif method == 'pytorch_fid':
    coord = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    coord = np.maximum(coord, 0.0).astype(np.float32)
  else:
    raise ValueError(f'Unknown resize method {method!r}; accepted: {", ".join(PROTOCOLS)}.')
  lo = np.floor(coord).astype(np.int64)
  lo = np.minimum(lo, in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (coord - lo).astype(np.float64)
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(m, (rows, lo), 1.0 - frac)
  np.add.at(m, (rows, hi), frac)
  return m.astype(np.float32)


def resize(x, size: int, method: str) -> jax.Array:
  """Bilinear resize of NHWC float images to size x size (separable matrix products)."""
  _, h, w, _ = x.shape
  mh = jnp.asarray(resize_matrix(h, size, method))
  mw = jnp.asarray(resize_matrix(w, size, method))
  x = jnp.einsum('oh,bhwc->bowc', mh, x, precision=HIGHEST)
  return jnp.einsum('pw,bowc->bopc', mw, x, precision=HIGHEST)


def preprocess(images, protocol: str = 'tf1', size: int = IMAGE_SIZE) -> jax.Array:
  """Images ([-1, 1] float or uint8, NHWC, 1 or 3 channels, any size) -> network input."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'Unknown protocol {protocol!r}; accepted: {", ".join(PROTOCOLS)}.')
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Images must be NHWC with 1 or 3 channels; got shape {images.shape}.')
  x = quantize(images)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if protocol == 'tf1':
    return (resize(x, size, 'tf1') - 128.0) / 128.0
  return 2.0 * resize(x / 255.0, size, 'pytorch_fid') - 1.0


# ---------------------------------------------------------------------------- weights


def _join(path) -> str:
  return '.'.join(str(getattr(k, 'key', k)) for k in path)


def _torch_key(collection: str, path: str) -> str:
  """Flax leaf ('params', 'Mixed_5b.branch1x1.conv.kernel') -> torch state-dict key."""
  module, leaf = path.rsplit('.', 1)
  if collection == 'batch_stats':
    return f'{module}.running_{leaf}'  # mean / var
  return f'{module}.' + {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf]


def _to_flax_layout(path: str, array: np.ndarray) -> np.ndarray:
  if path.endswith('conv.kernel'):
    return np.transpose(array, (2, 3, 1, 0))  # OIHW -> HWIO
  if path == 'fc.kernel':
    return array.T  # (out, in) -> (in, out)
  return array


def _to_torch_layout(path: str, array: np.ndarray) -> np.ndarray:
  if path.endswith('conv.kernel'):
    return np.transpose(array, (3, 2, 0, 1))
  if path == 'fc.kernel':
    return array.T
  return array


@functools.cache
def variable_shapes() -> dict:
  """{collection: {dotted path: shape}} of the network's variables."""
  abstract = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 75, 75, 3), jnp.float32))
  out = {}
  for coll, tree in abstract.items():
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out[coll] = {_join(p): tuple(v.shape) for p, v in leaves}
  return out


def state_dict_to_variables(state_dict) -> dict:
  """A pytorch-fid / torch-fidelity state dict (name -> array) -> flax variables.

  Every tensor the network needs must be present with its exact shape; unrelated entries
  (``AuxLogits.*``, ``num_batches_tracked``) are ignored.
  """
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  fc = sd.get('fc.weight')
  if fc is not None and fc.shape[0] == 1000:
    raise ValueError('This state dict has a 1000-way fc layer: it is torchvision/Keras '
                     'ImageNet InceptionV3, not the 2015-12-05 FID graph (1008 classes). Use '
                     f'pytorch-fid\'s weights ({WEIGHT_FILE_NAMES[0]}).')
  missing, wrong = [], []
  variables: dict = {}
  for coll, shapes in variable_shapes().items():
    for path, shape in shapes.items():
      key = _torch_key(coll, path)
      if key not in sd:
        missing.append(key)
        continue
      value = _to_flax_layout(path, sd[key]).astype(np.float32)
      if value.shape != shape:
        wrong.append(f'{key}: {sd[key].shape}')
        continue
      node = variables.setdefault(coll, {})
      *parents, leaf = path.split('.')
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = value
  if missing or wrong:
    raise ValueError(
        'Not the InceptionV3 FID weights expected (pytorch-fid module names): '
        + (f'{len(missing)} missing tensors, e.g. {missing[:4]}; ' if missing else '')
        + (f'wrong shapes: {wrong[:4]}; ' if wrong else '')
        + f'accepted files: {", ".join(WEIGHT_FILE_NAMES)}.')
  return jax.tree.map(jnp.asarray, variables)


def variables_to_state_dict(variables) -> dict:
  """Inverse of :func:`state_dict_to_variables` (torch names and layouts, numpy arrays)."""
  out = {}
  for coll, tree in variables.items():
    for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
      path = _join(p)
      out[_torch_key(coll, path)] = _to_torch_layout(path, np.asarray(v))
  return out


def read_state_dict(path: str) -> dict:
  """Reads a .pth (torch) or .npz weight file into {torch name: numpy array}."""
  if path.endswith('.npz'):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  if path.endswith(('.pth', '.pt')):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f'Reading {path} needs torch (pip install torch, CPU build is enough). Or convert it '
          'once where torch exists: python -m jaxgen.metrics.inception convert '
          f'{os.path.basename(path)} {os.path.splitext(os.path.basename(path))[0]}.npz') from e
    sd = torch.load(path, map_location='cpu', weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
  raise ValueError(f'Unknown weight file type {path!r}; accepted: .pth/.pt (torch state dict) '
                   'or .npz.')


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      h.update(chunk)
  return h.hexdigest()


def candidate_paths() -> list[str]:
  """Where weights are looked for, in order (after an explicit path and $JAXGEN_INCEPTION_WEIGHTS)."""
  dirs = [os.path.join(os.path.expanduser(os.environ.get('XDG_CACHE_HOME', '~/.cache')), 'jaxgen'),
          os.path.join(os.path.expanduser(os.environ.get('TORCH_HOME', '~/.cache/torch')),
                       'hub', 'checkpoints')]
  return [os.path.join(d, n) for d in dirs for n in WEIGHT_FILE_NAMES]


def _not_found_message(looked: Iterable[str]) -> str:
  return (
      'InceptionV3 FID weights not found, so Inception-based scores (IS/FID/KID) are refused '
      '(jaxgen never scores with random weights). Looked at: ' + ', '.join(looked) + '. Get '
      f'pytorch-fid\'s {WEIGHT_FILE_NAMES[0]} from {PYTORCH_FID_URL} (or let pytorch-fid '
      'download it, it lands in ~/.cache/torch/hub/checkpoints/), then either put it in '
      f'~/.cache/jaxgen/, set ${WEIGHTS_ENV}=/path/to/file, or pass the path '
      '(--inception_weights / config.inception_weights). Without torch, convert it once: '
      'python -m jaxgen.metrics.inception convert IN.pth OUT.npz.')


def find_weights(path: str | None = None) -> str:
  """Returns an existing weight file path or raises InceptionWeightsNotFoundError."""
  if path:
    if not os.path.isfile(path):
      raise InceptionWeightsNotFoundError(_not_found_message([path]))
    return path
  env = os.environ.get(WEIGHTS_ENV)
  if env:
    if not os.path.isfile(env):
      raise InceptionWeightsNotFoundError(_not_found_message([f'${WEIGHTS_ENV}={env}']))
    return env
  looked = candidate_paths()
  for p in looked:
    if os.path.isfile(p):
      return p
  raise InceptionWeightsNotFoundError(_not_found_message(looked))


# ---------------------------------------------------------------------------- extractor


class InceptionExtractor:
  """Jitted, batched feature extractor: images -> {'pool', 'logits', 'logits_unbiased'}.

  Build it from a weight file with :meth:`from_file` for any reported number. The plain
  constructor takes variables directly (tests use random ones) and records ``weights_id``
  so that cached statistics never mix weights.
  """

  def __init__(self, variables, *, weights_id: str, protocol: str = 'tf1',
               batch_size: int = 50, image_size: int = IMAGE_SIZE):
    if protocol not in PROTOCOLS:
      raise ValueError(f'Unknown protocol {protocol!r}; accepted: {", ".join(PROTOCOLS)}.')
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer; got {batch_size!r}.')
    self.variables = variables
    self.weights_id = weights_id
    self.protocol = protocol
    self.batch_size = batch_size
    self.image_size = image_size
    model = InceptionV3()

    @jax.jit
    def forward(variables, images):
      return model.apply(variables, preprocess(images, protocol, image_size))
    self._forward = forward

  @classmethod
  def from_file(cls, path: str | None = None, **kwargs) -> 'InceptionExtractor':
    path = find_weights(path)
    variables = state_dict_to_variables(read_state_dict(path))
    return cls(variables, weights_id=f'inception-2015-12-05:sha256={sha256(path)}', **kwargs)

  @property
  def cache_id(self) -> str:
    """Identifies the feature space (weights + protocol) for cached statistics."""
    return f'{self.weights_id}:{self.protocol}:{self.image_size}'

  def __call__(self, images, progress: bool = False, desc: str = 'inception') -> dict:
    """NHWC images ([-1, 1] float or uint8) -> dict of float32 numpy arrays."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
      raise ValueError(f'Images must be a non-empty NHWC array with 1 or 3 channels; got '
                       f'shape {images.shape}.')
    n, bs = len(images), self.batch_size
    outs = []
    starts = range(0, n, bs)
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      starts = tqdm(starts, desc=desc, unit='batch', leave=False)
    for i in starts:
      batch = images[i:i + bs]
      k = len(batch)
      if k < bs:  # Pad to one compiled shape; padded rows are dropped.
        batch = np.concatenate([batch, np.repeat(batch[-1:], bs - k, axis=0)])
      out = self._forward(self.variables, batch)
      outs.append({key: np.asarray(v)[:k] for key, v in out.items()})
    return {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}


# ---------------------------------------------------------------------------- CLI


def _main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m jaxgen.metrics.inception',
      description='InceptionV3 FID weights: convert a torch state dict to .npz, or check a file.')
  sub = parser.add_subparsers(dest='cmd', required=True)
  conv = sub.add_parser('convert', help='pytorch-fid/torch-fidelity .pth -> .npz (needs torch).')
  conv.add_argument('input')
  conv.add_argument('output')
  info = sub.add_parser('check', help='Validate a weight file and print its SHA-256.')
  info.add_argument('path', nargs='?', default=None)
  args = parser.parse_args(argv)
  if args.cmd == 'convert':
    sd = read_state_dict(args.input)
    state_dict_to_variables(sd)  # Refuse to write a file that would not load.
    needed = {_torch_key(c, p) for c, shapes in variable_shapes().items() for p in shapes}
    np.savez(args.output, **{k: v.astype(np.float32) for k, v in sd.items() if k in needed})
    out = args.output if args.output.endswith('.npz') else args.output + '.npz'
    print(f'wrote {out} ({len(needed)} tensors), sha256 {sha256(out)}')
  else:
    try:
      path = find_weights(args.path)
      state_dict_to_variables(read_state_dict(path))
    except (InceptionWeightsNotFoundError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print(f'{path}: valid InceptionV3 FID weights, sha256 {sha256(path)}')
  return 0


if __name__ == '__main__':
  sys.exit(_main())
