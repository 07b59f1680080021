"""The InceptionV3 port against the reference packages' own modules, weight files and protocol.

No real weights exist offline, so the network is checked on random weights loaded into the
packages that define the FID/IS feature extractors: pytorch-fid's ``FIDInceptionV3`` (built by
``pytorch_fid.inception.InceptionV3`` with its weight download replaced by the random state
dict) for ``protocol='pytorch_fid'``, and torch-fidelity's ``inception-v3-compat`` extractor
(loading the random weights from a .pth file, with its own TF1 bilinear resize) for
``protocol='tf1'``. Each package's module is also run in float64 as the exact reference, so the
float32 error of jaxgen and of the package are each held to a bound derived from the network's
depth and accumulation lengths (see :data:`NET_REL_BOUND`). The resize and quantise steps are
also checked on their own against TF 1.x's and torch's resize ops and hand-computed values.
"""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_fid.inception
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from jaxgen.metrics import inception

EPS32 = float(np.finfo(np.float32).eps)


def _max_fan_in():
  shapes = inception.variable_shapes()['params']
  convs = [int(np.prod(s[:3])) for p, s in shapes.items() if p.endswith('conv.kernel')]
  return max(convs + [shapes['fc.kernel'][0]])


# Float32 error bound of one forward pass, relative to the largest output magnitude.
# Each layer is a length-K accumulation (conv fan-in k_h k_w C_in, up to K = 4032 in
# Mixed_7b/7c's 3x3 convs over 448 channels; 2048 for the logits); with rounding errors of
# random sign it is off by about sqrt(K) eps32 relative to its output (the blocked/pairwise
# orders of oneDNN and XLA only lower this). Every other op is 1-Lipschitz (ReLU, max pool,
# average pool, concatenation) or a per-channel affine map (BatchNorm) that scales signal and
# error alike, so the relative errors of successive layers add up, at worst in phase, along
# the longest chain: 47 convolutions (5 stem + 3 x 3 Mixed_5 + 3 Mixed_6a + 4 x 5 Mixed_6b-e
# + 4 Mixed_7a + 3 Mixed_7b + 3 Mixed_7c) plus the 2048 -> 1008 logits layer, and the resize
# (one more accumulation). Hence (47 + 2) sqrt(K_max) eps32 = 3.7e-4. A float32 evaluation is
# held to this against float64, two float32 evaluations to twice it.
DEPTH = 47 + 2
NET_REL_BOUND = DEPTH * np.sqrt(_max_fan_in()) * EPS32


def random_state_dict(seed=0):
  """Random weights in pytorch-fid's layout: He-scaled convs, non-trivial BN statistics."""
  rng = np.random.default_rng(seed)
  sd = {}
  for coll, shapes in inception.variable_shapes().items():
    for path, shape in shapes.items():
      key = inception._torch_key(coll, path)  # pylint: disable=protected-access
      if path.endswith('conv.kernel'):
        fan_in = shape[0] * shape[1] * shape[2]
        w = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        sd[key] = np.transpose(w, (3, 2, 0, 1))
      elif path == 'fc.kernel':
        sd[key] = (rng.normal(size=shape) / np.sqrt(shape[0])).T
      elif path.endswith('bn.scale'):
        sd[key] = rng.uniform(0.5, 1.5, size=shape)
      elif path.endswith('var'):
        sd[key] = rng.uniform(0.5, 1.5, size=shape)
      else:  # bn.bias, bn.mean, fc.bias
        sd[key] = rng.normal(size=shape) * 0.1
  return {k: v.astype(np.float32) for k, v in sd.items()}


SIZE = 107


@pytest.fixture(scope='module')
def state_dict():
  return random_state_dict()


@pytest.fixture(scope='module')
def variables(state_dict):
  return inception.state_dict_to_variables(state_dict)


@pytest.fixture(scope='module')
def extractor(variables):
  # Tests run the network at 107x107 to stay fast on CPU: the smallest input whose last
  # feature map is 2x2, so that Mixed_7c's max pool (vs average) is visible.
  return inception.InceptionExtractor(variables, weights_id='random-test', batch_size=4,
                                      image_size=SIZE)


def test_parameter_count_and_output_shapes_at_299(variables):
  shapes = inception.variable_shapes()
  # torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and
  # with 1008 instead of 1000 classes (+16,392) that is the FID network's 23,850,960.
  assert sum(int(np.prod(s)) for s in shapes['params'].values()) == 23_850_960
  assert len(shapes['batch_stats']) == 2 * 94  # 94 conv+BN units
  out = jax.jit(inception.InceptionV3().apply)(variables, jnp.zeros((2, 299, 299, 3)))
  assert out['pool'].shape == (2, 2048)
  assert out['logits'].shape == out['logits_unbiased'].shape == (2, 1008)
  # logits = fl(u + b) and fl(fl(u + b) - u): two float32 roundings, each at most eps32/2 of
  # a magnitude <= max|logits| + max|b|.
  bias = np.asarray(variables['params']['fc']['bias'])
  tol = EPS32 * (np.abs(np.asarray(out['logits'])).max() + np.abs(bias).max())
  np.testing.assert_allclose(out['logits'] - out['logits_unbiased'],
                             np.broadcast_to(bias, (2, 1008)), rtol=0, atol=tol)


def test_deterministic_and_batched_equals_unbatched(extractor):
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, size=(5, 20, 20, 3)).astype(np.float32)
  a = extractor(images)
  b = extractor(images)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a['pool'].shape == (5, 2048)
  one = inception.InceptionExtractor(extractor.variables, weights_id='random-test',
                                     batch_size=1, image_size=SIZE)
  singles = [one(images[i:i + 1]) for i in range(5)]
  for k in a:
    # Batch 1 and batch 4 are separately compiled programs whose kernels may accumulate in
    # other orders: two float32 evaluations, each within NET_REL_BOUND of the exact output.
    np.testing.assert_allclose(np.concatenate([s[k] for s in singles]), a[k], rtol=0,
                               atol=2 * NET_REL_BOUND * np.abs(a[k]).max())
  # Rows are independent: different images give different features.
  assert np.abs(a['pool'][0] - a['pool'][1]).max() > 1e-3 * np.abs(a['pool']).max()


# ---------------------------------------------------------------------------- reference packages


def _as_torch_state_dict(state_dict):
  return {k: torch.from_numpy(v) for k, v in state_dict.items()}


@pytest.fixture(scope='module')
def pytorch_fid_nets(state_dict):
  """pytorch-fid's own InceptionV3 (FIDInceptionV3 blocks, its resize and 2x - 1) on the random
  weights, with its fc layer (pytorch-fid computes no logits itself); float32 and float64."""
  built = []
  make = pytorch_fid.inception.fid_inception_v3

  def capture():  # the module pytorch_fid.inception.InceptionV3 takes its blocks from
    built.append(make())
    return built[-1]

  def no_download(url, *args, **kwargs):
    assert url == pytorch_fid.inception.FID_WEIGHTS_URL
    return _as_torch_state_dict(state_dict)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(pytorch_fid.inception, 'load_state_dict_from_url', no_download)
    mp.setattr(pytorch_fid.inception, 'fid_inception_v3', capture)
    net = pytorch_fid.inception.InceptionV3([3]).eval()
  fc = built[0].fc.eval()
  return {'float32': (net, fc), 'float64': (copy.deepcopy(net).double(), copy.deepcopy(fc).double())}


@pytest.fixture(scope='module')
def torch_fidelity_nets(state_dict, tmp_path_factory):
  """torch-fidelity's inception-v3-compat extractor on the random weights (a .pth it loads),
  float32 and float64 (its feature_extractor_internal_dtype='float64' is mapped to float32 in
  torch-fidelity 0.4.0's text_to_dtype, so the float64 copy is made by hand)."""
  path = str(tmp_path_factory.mktemp('tfid') / 'weights-inception-2015-12-05-6726825d.pth')
  torch.save(_as_torch_state_dict(state_dict), path)
  net = FeatureExtractorInceptionV3('inception-v3-compat', ['2048', 'logits_unbiased', 'logits'],
                                    feature_extractor_weights_path=path)
  net64 = copy.deepcopy(net).double()
  net64.feature_extractor_internal_dtype = torch.float64
  return {'float32': net, 'float64': net64}


_REFERENCE_MEMO = {}  # the power check reuses the other protocol's float64 run of its own case


def reference_outputs(protocol, u8, pytorch_fid_nets, torch_fidelity_nets, dtype, size=299):
  """The packages' outputs on uint8 NHWC images (grey repeated to RGB, as their loaders do).

  At ``size`` 299 the packages run unmodified. At a smaller network input size (fast tests)
  torch-fidelity's own TF1 resize targets ``size`` (its ``INPUT_IMAGE_SIZE``), and pytorch-fid's
  resize step - ``F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)`` in
  ``InceptionV3.forward`` - is made here with the same call to ``size``, its own resize off.
  """
  memo_key = (protocol, u8.tobytes(), u8.shape, dtype, size)
  if memo_key in _REFERENCE_MEMO:
    return _REFERENCE_MEMO[memo_key]
  rgb = torch.from_numpy(np.repeat(u8, 3 // u8.shape[-1], axis=-1).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    if protocol == 'tf1':
      net = torch_fidelity_nets[dtype]
      net.INPUT_IMAGE_SIZE = size
      pool, unbiased, logits = net(rgb)
    else:
      net, fc = pytorch_fid_nets[dtype]
      x = rgb.to(torch.float64 if dtype == 'float64' else torch.float32) / 255  # ToTensor()
      net.resize_input = size == 299
      if size != 299:
        x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
      pool = net(x)[0].flatten(1)
      unbiased, logits = pool @ fc.weight.T, fc(pool)
  out = {'pool': pool.double().numpy(), 'logits_unbiased': unbiased.double().numpy(),
         'logits': logits.double().numpy()}
  if dtype == 'float64':
    _REFERENCE_MEMO[memo_key] = out
  return out


def check_against_references(ours, protocol, u8, pytorch_fid_nets, torch_fidelity_nets, size):
  ref32 = reference_outputs(protocol, u8, pytorch_fid_nets, torch_fidelity_nets, 'float32', size)
  exact = reference_outputs(protocol, u8, pytorch_fid_nets, torch_fidelity_nets, 'float64', size)
  other = [p for p in inception.PROTOCOLS if p != protocol][0]
  wrong = reference_outputs(other, u8, pytorch_fid_nets, torch_fidelity_nets, 'float64', size)
  for key in ('pool', 'logits_unbiased', 'logits'):
    scale = np.abs(exact[key]).max()
    # Non-degenerate outputs: the random network does not map the two images alike.
    assert scale > 0 and np.abs(exact[key][0] - exact[key][1]).max() > 0.01 * scale
    tol = NET_REL_BOUND * scale
    err_ours = np.abs(np.asarray(ours[key], np.float64) - exact[key]).max()
    err_ref = np.abs(ref32[key] - exact[key]).max()
    assert err_ours <= tol, (key, err_ours / scale, NET_REL_BOUND)
    assert err_ref <= tol, (key, err_ref / scale, NET_REL_BOUND)  # the bound holds for torch too
    assert np.abs(np.asarray(ours[key], np.float64) - ref32[key]).max() <= 2 * tol
    # Power: the other protocol (other resize and normalisation) is far outside the bound.
    assert np.abs(np.asarray(ours[key], np.float64) - wrong[key]).max() > 10 * tol, key


@pytest.fixture(scope='module')
def network(variables):
  """The jitted network alone: one compilation serves every input size of the fast tests."""
  apply = jax.jit(inception.InceptionV3().apply)
  return lambda x: apply(variables, x)


@pytest.mark.parametrize('protocol', inception.PROTOCOLS)
@pytest.mark.parametrize('size,channels', [(32, 1), (64, 3)])
def test_matches_reference_packages(protocol, size, channels, network, pytorch_fid_nets,
                                    torch_fidelity_nets):
  """jaxgen's preprocess + network = torch-fidelity (tf1) / pytorch-fid (pytorch_fid), at the
  fast network input size SIZE (the packages' resize code aimed at SIZE instead of 299)."""
  rng = np.random.default_rng(size + channels)
  u8 = rng.integers(0, 256, size=(2, size, size, channels), dtype=np.uint8)
  images = u8.astype(np.float32) / 127.5 - 1.0  # generated-image format, quantised back
  ours = network(inception.preprocess(images, protocol, size=SIZE))
  check_against_references(ours, protocol, u8, pytorch_fid_nets, torch_fidelity_nets, SIZE)


@pytest.mark.parametrize('protocol', inception.PROTOCOLS)
def test_extractor_at_299_matches_reference_packages(protocol, variables, pytorch_fid_nets,
                                                     torch_fidelity_nets):
  """The whole extractor at the reference size, packages unmodified: 299x299 colour input."""
  u8 = np.random.default_rng(299).integers(0, 256, size=(2, 299, 299, 3), dtype=np.uint8)
  ext = inception.InceptionExtractor(variables, weights_id='random-test', protocol=protocol,
                                     batch_size=2)
  ours = ext(u8.astype(np.float32) / 127.5 - 1.0)
  check_against_references(ours, protocol, u8, pytorch_fid_nets, torch_fidelity_nets, 299)


@pytest.mark.slow
@pytest.mark.parametrize('protocol', inception.PROTOCOLS)
@pytest.mark.parametrize('size,channels', [(32, 1), (64, 3)])
def test_extractor_upsampling_to_299_matches_reference_packages(
    protocol, size, channels, variables, pytorch_fid_nets, torch_fidelity_nets):
  """Small images upsampled to 299 by each package's own, unmodified resize."""
  rng = np.random.default_rng(size + channels)
  u8 = rng.integers(0, 256, size=(2, size, size, channels), dtype=np.uint8)
  ext = inception.InceptionExtractor(variables, weights_id='random-test', protocol=protocol,
                                     batch_size=2)
  ours = ext(u8.astype(np.float32) / 127.5 - 1.0)
  check_against_references(ours, protocol, u8, pytorch_fid_nets, torch_fidelity_nets, 299)


# ---------------------------------------------------------------------------- weight files


def test_state_dict_roundtrip_and_npz(tmp_path, state_dict, variables):
  back = inception.variables_to_state_dict(variables)
  assert set(back) == set(state_dict)
  for k in state_dict:
    np.testing.assert_array_equal(back[k], state_dict[k])
  extra = dict(state_dict, **{'AuxLogits.fc.weight': np.zeros((1008, 768), np.float32),
                              'Mixed_5b.branch1x1.bn.num_batches_tracked': np.array(0)})
  path = str(tmp_path / 'w.npz')
  np.savez(path, **extra)
  loaded = inception.state_dict_to_variables(inception.read_state_dict(path))
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_pth_file_and_convert_cli(tmp_path, state_dict, variables):
  pth = str(tmp_path / inception.WEIGHT_FILE_NAMES[0])
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, pth)
  ext = inception.InceptionExtractor.from_file(pth, batch_size=2, image_size=SIZE)
  assert ext.weights_id.endswith(inception.sha256(pth))
  jax.tree.map(np.testing.assert_array_equal, ext.variables, variables)
  out = str(tmp_path / 'converted.npz')
  inception._main(['convert', pth, out])  # pylint: disable=protected-access
  jax.tree.map(np.testing.assert_array_equal,
               inception.state_dict_to_variables(inception.read_state_dict(out)), variables)


def test_wrong_weights_are_refused(state_dict):
  partial = {k: v for k, v in state_dict.items() if not k.startswith('Mixed_7c')}
  with pytest.raises(ValueError, match='missing tensors.*Mixed_7c'):
    inception.state_dict_to_variables(partial)
  imagenet = dict(state_dict, **{'fc.weight': np.zeros((1000, 2048), np.float32)})
  with pytest.raises(ValueError, match='1000-way'):
    inception.state_dict_to_variables(imagenet)
  bad = dict(state_dict, **{'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 5, 5), np.float32)})
  with pytest.raises(ValueError, match='wrong shapes'):
    inception.state_dict_to_variables(bad)


def test_missing_weights_refused_with_instructions(tmp_path, monkeypatch):
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  with pytest.raises(inception.InceptionWeightsNotFoundError) as e:
    inception.InceptionExtractor.from_file()
  msg = str(e.value)
  assert 'pt_inception-2015-12-05-6726825d.pth' in msg and 'never scores with random' in msg
  assert str(tmp_path / 'torch') in msg
  with pytest.raises(inception.InceptionWeightsNotFoundError):
    inception.find_weights(str(tmp_path / 'nope.pth'))
  monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / 'nope.npz'))
  with pytest.raises(inception.InceptionWeightsNotFoundError, match='JAXGEN_INCEPTION_WEIGHTS'):
    inception.find_weights()


def test_weights_found_in_torch_hub_cache(tmp_path, monkeypatch, state_dict):
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
  hub.mkdir(parents=True)
  target = str(hub / inception.WEIGHT_FILE_NAMES[2])
  np.savez(target, **state_dict)
  assert inception.find_weights() == target


# ---------------------------------------------------------------------------- protocol


def test_quantize_known_values():
  x = np.array([-1.5, -1.0, -1.0 + 1 / 127.5, 0.0, 0.5, 1.0, 2.0], np.float32)
  # 0.0 -> 127.5 -> 128 (round half to even); 0.5 -> 191.25 -> 191.
  np.testing.assert_array_equal(np.asarray(inception.quantize(x)),
                                [0, 0, 1, 128, 191, 255, 255])
  levels = np.arange(256)
  from_uint8 = (levels / 127.5 - 1.0).astype(np.float32)  # how the data pipeline maps uint8
  np.testing.assert_array_equal(np.asarray(inception.quantize(from_uint8)), levels)
  u8 = np.array([0, 7, 255], np.uint8)
  np.testing.assert_array_equal(np.asarray(inception.quantize(u8)), [0, 7, 255])


def test_tf1_resize_known_image():
  # Two pixels [0, 255] -> 4 with source coordinates 0, 0.5, 1, 1.5 (clamped to pixel 1).
  img = np.array([0.0, 255.0], np.float32).reshape(1, 1, 2, 1)
  out = inception.resize(jnp.asarray(img), 4, 'tf1')  # rows: 1 -> 4 copies
  # Weights 0, 1/2 and 1 and these products are exact in float32.
  np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], np.tile([0, 127.5, 255, 255], (4, 1)))
  # Half-pixel (pytorch-fid): coords -0.25->0, 0.25, 0.75, 1.25 -> 0, 63.75, 191.25, 255.
  out = inception.resize(jnp.asarray(img), 4, 'pytorch_fid')
  np.testing.assert_array_equal(np.asarray(out)[0, 0, :, 0], [0, 63.75, 191.25, 255])  # exact
  const = jnp.full((1, 7, 9, 3), 42.0)
  # Per pass the two float32 weights (one rounded) sum to 1 within eps32/2, and the product
  # and sum round twice more: <= 2 eps32 of the value per pass, two passes.
  np.testing.assert_allclose(np.asarray(inception.resize(const, 299, 'tf1')), 42.0, rtol=0,
                             atol=4 * EPS32 * 42.0)


@pytest.mark.parametrize('in_size', [8, 32, 400])
def test_tf1_resize_matches_tensorflow_resize_bilinear(in_size):
  import tensorflow as tf
  rng = np.random.default_rng(in_size)
  img = rng.integers(0, 256, size=(2, in_size, in_size + 3, 3)).astype(np.float32)
  ref = tf.compat.v1.image.resize_bilinear(img, (299, 299), align_corners=False,
                                           half_pixel_centers=False).numpy()
  ours = np.asarray(jax.jit(lambda x: inception.resize(x, 299, 'tf1'))(img))
  # Same float32 source coordinates as the op (i * float32(in / out)), so only the rounding
  # of the interpolation differs: per pass and implementation at most 4 roundings (a weight,
  # two products, a sum) of eps32/2 of max|x|; 2 passes, 2 implementations: 8 eps32 max|x|.
  np.testing.assert_allclose(ours, ref, rtol=0, atol=8 * EPS32 * 255)


def test_pytorch_fid_resize_matches_torch_interpolate():
  rng = np.random.default_rng(4)
  img = rng.uniform(0, 1, size=(2, 13, 21, 3)).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(img.transpose(0, 3, 1, 2)), size=(299, 299),
                      mode='bilinear', align_corners=False).numpy().transpose(0, 2, 3, 1)
  # torch computes the source coordinate (i + 0.5) * float32(in / out) - 0.5 in float32 (with
  # or without a fused multiply-add, by CPU), jaxgen exactly before rounding the weights: up
  # to 3 roundings of eps32/2 of a coordinate <= in, each moving the value by that much times
  # max|x| - 1.5 eps32 in max|x| per pass - on top of the 8 eps32 max|x| of the
  # interpolation itself (see the TF1 test). Measured: 18 eps32 for 13x21 inputs.
  h, w = img.shape[1:3]
  np.testing.assert_allclose(np.asarray(inception.resize(img, 299, 'pytorch_fid')), ref, rtol=0,
                             atol=(1.5 * (h + w) + 8) * EPS32 * np.abs(img).max())


def test_preprocess_grey_to_rgb_and_normalisation():
  grey = np.array([-1.0, 1.0], np.float32).reshape(1, 1, 2, 1)
  x = np.asarray(inception.preprocess(grey, 'tf1', size=2))
  assert x.shape == (1, 2, 2, 3)
  # uint8 0 and 255 -> (v - 128) / 128 = -1 and 0.9921875, the graph's Sub/Mul nodes.
  np.testing.assert_array_equal(x[0, 0, :, 0], [-1.0, 127 / 128])  # exact in float32
  np.testing.assert_array_equal(x[..., 0], x[..., 2])
  y = np.asarray(inception.preprocess(grey, 'pytorch_fid', size=2))
  np.testing.assert_array_equal(y[0, 0, :, 1], [-1.0, 1.0])  # 2 * (0 or 255 / 255) - 1, exact
  with pytest.raises(ValueError, match='protocol'):
    inception.preprocess(grey, 'keras')
  with pytest.raises(ValueError, match='NHWC'):
    inception.preprocess(np.zeros((2, 8, 8, 2)))


def test_extractor_quantises_generated_images(extractor):
  # Images that differ by less than half a grey level are the same PNG, hence the same score.
  rng = np.random.default_rng(5)
  u8 = rng.integers(0, 256, size=(3, 20, 20, 1)).astype(np.float32)
  a = u8 / 127.5 - 1.0
  b = a + rng.uniform(-0.45, 0.45, size=a.shape).astype(np.float32) / 127.5
  fa, fb = extractor(a), extractor(b)
  np.testing.assert_array_equal(fa['pool'], fb['pool'])
  fu = extractor(u8.astype(np.uint8))
  np.testing.assert_array_equal(fa['pool'], fu['pool'])
