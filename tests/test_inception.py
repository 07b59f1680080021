"""The InceptionV3 port: shapes, determinism, batching, weight files, and the input protocol.

No real weights exist offline, so the network is checked on random weights, against an
independent functional torch rendering of pytorch-fid's FIDInceptionV3 (NCHW, torch padding
and pooling semantics) fed the same state dict; the resize and quantise steps are checked
against TF 1.x's and torch's own resize ops and hand-computed values.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.metrics import inception


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
  np.testing.assert_allclose(out['logits'] - out['logits_unbiased'],
                             np.broadcast_to(variables['params']['fc']['bias'], (2, 1008)),
                             atol=1e-4)


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
    np.testing.assert_allclose(np.concatenate([s[k] for s in singles]), a[k],
                               rtol=1e-5, atol=1e-5 * np.abs(a[k]).max())
  # Rows are independent: different images give different features.
  assert np.abs(a['pool'][0] - a['pool'][1]).max() > 1e-3 * np.abs(a['pool']).max()


# ---------------------------------------------------------------------------- torch reference


def torch_fid_inception(sd, x):
  """pytorch-fid's FIDInceptionV3 written with torch.nn.functional (NCHW)."""
  import torch
  import torch.nn.functional as F

  def conv(name, x, stride=1, padding=0):
    x = F.conv2d(x, sd[f'{name}.conv.weight'], stride=stride, padding=padding)
    x = F.batch_norm(x, sd[f'{name}.bn.running_mean'], sd[f'{name}.bn.running_var'],
                     sd[f'{name}.bn.weight'], sd[f'{name}.bn.bias'], False, 0.0, 1e-3)
    return F.relu(x)

  def avg(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

  def block_a(n, x):
    b1 = conv(f'{n}.branch1x1', x)
    b5 = conv(f'{n}.branch5x5_2', conv(f'{n}.branch5x5_1', x), padding=2)
    b3 = conv(f'{n}.branch3x3dbl_1', x)
    b3 = conv(f'{n}.branch3x3dbl_3', conv(f'{n}.branch3x3dbl_2', b3, padding=1), padding=1)
    return torch.cat([b1, b5, b3, conv(f'{n}.branch_pool', avg(x))], 1)

  def block_b(n, x):
    b3 = conv(f'{n}.branch3x3', x, stride=2)
    bd = conv(f'{n}.branch3x3dbl_2', conv(f'{n}.branch3x3dbl_1', x), padding=1)
    bd = conv(f'{n}.branch3x3dbl_3', bd, stride=2)
    return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)

  def block_c(n, x):
    b1 = conv(f'{n}.branch1x1', x)
    b7 = conv(f'{n}.branch7x7_1', x)
    b7 = conv(f'{n}.branch7x7_2', b7, padding=(0, 3))
    b7 = conv(f'{n}.branch7x7_3', b7, padding=(3, 0))
    bd = conv(f'{n}.branch7x7dbl_1', x)
    for i, pad in zip(range(2, 6), [(3, 0), (0, 3), (3, 0), (0, 3)]):
      bd = conv(f'{n}.branch7x7dbl_{i}', bd, padding=pad)
    return torch.cat([b1, b7, bd, conv(f'{n}.branch_pool', avg(x))], 1)

  def block_d(n, x):
    b3 = conv(f'{n}.branch3x3_2', conv(f'{n}.branch3x3_1', x), stride=2)
    b7 = conv(f'{n}.branch7x7x3_1', x)
    b7 = conv(f'{n}.branch7x7x3_2', b7, padding=(0, 3))
    b7 = conv(f'{n}.branch7x7x3_3', b7, padding=(3, 0))
    b7 = conv(f'{n}.branch7x7x3_4', b7, stride=2)
    return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)

  def block_e(n, x, pool):
    b1 = conv(f'{n}.branch1x1', x)
    b3 = conv(f'{n}.branch3x3_1', x)
    b3 = torch.cat([conv(f'{n}.branch3x3_2a', b3, padding=(0, 1)),
                    conv(f'{n}.branch3x3_2b', b3, padding=(1, 0))], 1)
    bd = conv(f'{n}.branch3x3dbl_2', conv(f'{n}.branch3x3dbl_1', x), padding=1)
    bd = torch.cat([conv(f'{n}.branch3x3dbl_3a', bd, padding=(0, 1)),
                    conv(f'{n}.branch3x3dbl_3b', bd, padding=(1, 0))], 1)
    p = avg(x) if pool == 'avg' else F.max_pool2d(x, 3, stride=1, padding=1)
    return torch.cat([b1, b3, bd, conv(f'{n}.branch_pool', p)], 1)

  x = conv('Conv2d_1a_3x3', x, stride=2)
  x = conv('Conv2d_2a_3x3', x)
  x = conv('Conv2d_2b_3x3', x, padding=1)
  x = F.max_pool2d(x, 3, stride=2)
  x = conv('Conv2d_4a_3x3', conv('Conv2d_3b_1x1', x))
  x = F.max_pool2d(x, 3, stride=2)
  for n in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d'):
    x = block_a(n, x)
  x = block_b('Mixed_6a', x)
  for n in ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
    x = block_c(n, x)
  x = block_d('Mixed_7a', x)
  x = block_e('Mixed_7b', x, 'avg')
  x = block_e('Mixed_7c', x, 'max')
  pool = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
  return pool, F.linear(pool, sd['fc.weight'], sd['fc.bias'])


def test_matches_torch_rendering_of_pytorch_fid(state_dict, extractor):
  torch = pytest.importorskip('torch')
  sd = {k: torch.from_numpy(v) for k, v in state_dict.items()}
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, size=(3, SIZE, SIZE, 3)).astype(np.float32)
  with torch.no_grad():
    pool_t, logits_t = torch_fid_inception(sd, torch.from_numpy(x.transpose(0, 3, 1, 2)))
  out = jax.jit(inception.InceptionV3().apply)(extractor.variables, x)
  scale = np.abs(pool_t.numpy()).max()
  np.testing.assert_allclose(np.asarray(out['pool']), pool_t.numpy(), atol=1e-4 * scale)
  np.testing.assert_allclose(np.asarray(out['logits']), logits_t.numpy(),
                             atol=1e-4 * np.abs(logits_t.numpy()).max())


def test_pytorch_fid_protocol_end_to_end_matches_torch(state_dict, variables):
  torch = pytest.importorskip('torch')
  import torch.nn.functional as F
  sd = {k: torch.from_numpy(v) for k, v in state_dict.items()}
  rng = np.random.default_rng(3)
  u8 = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
  ext = inception.InceptionExtractor(variables, weights_id='random-test', protocol='pytorch_fid',
                                     batch_size=2, image_size=SIZE)
  ours = ext(u8)
  with torch.no_grad():  # pytorch-fid: ToTensor (/255), bilinear resize, 2x - 1.
    x = torch.from_numpy(u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    x = 2 * F.interpolate(x, size=(SIZE, SIZE), mode='bilinear', align_corners=False) - 1
    pool_t, _ = torch_fid_inception(sd, x)
  np.testing.assert_allclose(ours['pool'], pool_t.numpy(), atol=1e-4 * np.abs(pool_t).max().item())


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
  torch = pytest.importorskip('torch')
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
  np.testing.assert_allclose(np.asarray(out)[0, :, :, 0], np.tile([0, 127.5, 255, 255], (4, 1)))
  # Half-pixel (pytorch-fid): coords -0.25->0, 0.25, 0.75, 1.25 -> 0, 63.75, 191.25, 255.
  out = inception.resize(jnp.asarray(img), 4, 'pytorch_fid')
  np.testing.assert_allclose(np.asarray(out)[0, 0, :, 0], [0, 63.75, 191.25, 255], atol=1e-4)
  const = jnp.full((1, 7, 9, 3), 42.0)
  np.testing.assert_allclose(np.asarray(inception.resize(const, 299, 'tf1')), 42.0, atol=1e-4)


@pytest.mark.parametrize('in_size', [8, 32, 400])
def test_tf1_resize_matches_tensorflow_resize_bilinear(in_size):
  import tensorflow as tf
  rng = np.random.default_rng(in_size)
  img = rng.integers(0, 256, size=(2, in_size, in_size + 3, 3)).astype(np.float32)
  ref = tf.compat.v1.image.resize_bilinear(img, (299, 299), align_corners=False,
                                           half_pixel_centers=False).numpy()
  ours = np.asarray(jax.jit(lambda x: inception.resize(x, 299, 'tf1'))(img))
  np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_pytorch_fid_resize_matches_torch_interpolate():
  torch = pytest.importorskip('torch')
  import torch.nn.functional as F
  rng = np.random.default_rng(4)
  img = rng.uniform(0, 1, size=(2, 13, 21, 3)).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(img.transpose(0, 3, 1, 2)), size=(299, 299),
                      mode='bilinear', align_corners=False).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(inception.resize(img, 299, 'pytorch_fid')), ref,
                             atol=1e-5)


def test_preprocess_grey_to_rgb_and_normalisation():
  grey = np.array([-1.0, 1.0], np.float32).reshape(1, 1, 2, 1)
  x = np.asarray(inception.preprocess(grey, 'tf1', size=2))
  assert x.shape == (1, 2, 2, 3)
  # uint8 0 and 255 -> (v - 128) / 128 = -1 and 0.9921875, the graph's Sub/Mul nodes.
  np.testing.assert_allclose(x[0, 0, :, 0], [-1.0, 127 / 128])
  np.testing.assert_array_equal(x[..., 0], x[..., 2])
  y = np.asarray(inception.preprocess(grey, 'pytorch_fid', size=2))
  np.testing.assert_allclose(y[0, 0, :, 1], [-1.0, 1.0])
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
