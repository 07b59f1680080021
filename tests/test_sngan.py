"""SN-DCGAN: Miyato et al.'s Table 3 shapes, one power-iteration step per D update, configs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import dcgan as dcgan_cfg, sngan as sngan_cfg
from jaxgen import models
from jaxgen.families import base, gan


def model_cfg(**kw):
  fields = dict(name='sngan', resolution=32, channels=3, latent_dim=128, g_width=64, d_width=64,
                spectral_norm=True)
  fields.update(kw)
  return ml_collections.ConfigDict(fields)


def shapes(params):
  return {'/'.join(str(getattr(p, 'key', p)) for p in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_paper_architecture_shapes():
  """The CIFAR-10 standard CNN of Table 3 (M = 32, z in R^128, 512 channels at the bottom)."""
  g, d = models.get_gan(model_cfg())
  z = jnp.zeros((2, 128))
  gv = g.init(jax.random.PRNGKey(0), z, train=False)
  x = g.apply(gv, z, train=False)
  assert x.shape == (2, 32, 32, 3)
  dv = d.init(jax.random.PRNGKey(1), x, train=False)
  assert d.apply(dv, x, train=False).shape == (2,)

  d_kernels = [s for k, s in sorted(shapes(dv['params']).items()) if k.endswith('kernel')]
  want_d = [(3, 3, 3, 64), (4, 4, 64, 64), (3, 3, 64, 128), (4, 4, 128, 128), (3, 3, 128, 256),
            (4, 4, 256, 256), (3, 3, 256, 512), (4 * 4 * 512, 1)]
  assert d_kernels == want_d
  # Every D layer is spectrally normalised: one (u, sigma) pair per kernel.
  assert len(jax.tree.leaves(dv['batch_stats'])) == 2 * len(want_d)

  g_shapes = shapes(gv['params'])
  g_kernels = [g_shapes[k] for k in ('Dense_0/kernel', 'ConvTranspose_0/kernel',
                                     'ConvTranspose_1/kernel', 'ConvTranspose_2/kernel',
                                     'Conv_0/kernel')]
  assert g_kernels == [(128, 4 * 4 * 512), (4, 4, 512, 256), (4, 4, 256, 128), (4, 4, 128, 64),
                       (3, 3, 64, 3)]
  assert np.all(np.abs(np.asarray(x)) <= 1.0)


def test_leaky_relu_slope_and_no_sn_option():
  _, d = models.get_gan(model_cfg(spectral_norm=False, g_width=4, d_width=4))
  x = jnp.zeros((1, 32, 32, 3))
  v = d.init(jax.random.PRNGKey(0), x, train=False)
  assert 'batch_stats' not in v
  assert d.leaky_slope == 0.1


@pytest.mark.parametrize('bad, match', [
    (dict(resolution=20), 'multiple of 8'),
    (dict(channels=2), 'channels'),
    (dict(g_width=0), 'g_width'),
])
def test_bad_model_config(bad, match):
  with pytest.raises(ValueError, match=match):
    models.get_gan(model_cfg(**bad))


def _power_step(u, kernel):
  """One step of power iteration as in Miyato et al. Algorithm 1, in numpy."""
  w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])  # (in*kh*kw, out)
  v = u @ w.T
  v /= np.linalg.norm(v)
  u = v @ w
  return u / np.linalg.norm(u)


def _power_step_error(u, kernel):
  """Bound on the float32 error of one flax power step (vs _power_step's float64), per entry.

  Each product is a float32 sum of K terms, off by <= K eps32 sum |u_i| |w_ij| (gamma_K),
  computed here with |u|, |W|; normalising a vector y off by e gives y / |y| off by at most
  2 |e| / |y| (plus a rounding of eps32 per entry). The error of v carries into v W.
  """
  eps = np.finfo(np.float32).eps
  w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
  a = np.abs(w)
  y = u @ w.T
  e_y = w.shape[1] * eps * (np.abs(u) @ a.T)
  v = y / np.linalg.norm(y)
  e_v = 2 * np.linalg.norm(e_y) / np.linalg.norm(y) + eps * np.abs(v)
  z = v @ w
  e_z = np.linalg.norm(e_v) * np.linalg.norm(w, 2) + w.shape[0] * eps * (np.abs(v) @ a)
  return 2 * np.linalg.norm(e_z) / np.linalg.norm(z) + eps


def _u_vectors(d_state):
  out = {}
  for path, value in jax.tree_util.tree_flatten_with_path(d_state['batch_stats'])[0]:
    key = str(getattr(path[-1], 'key', path[-1]))
    if key.endswith('/u'):
      out[key[:-2]] = np.asarray(value, np.float64)
  return out


def _kernels(params):
  return {k: np.asarray(v) for k, v in
          ((('/'.join(str(getattr(p, 'key', p)) for p in path)), v)
           for path, v in jax.tree_util.tree_flatten_with_path(params)[0]) if v.ndim > 1}


@pytest.mark.parametrize('joint, steps_per_update', [(True, 1), (False, 2)])
def test_power_iteration_advances_once_per_d_pass(joint, steps_per_update):
  """u moves by exactly one power-iteration step per D forward pass on the D update.

  With ``d_joint_batch`` (the sngan config) that is one step per D update, as in the paper;
  with separate real and fake passes, two. G's update and the penalty never move it.
  """
  cfg = sngan_cfg.get_config('tiny')
  cfg.d_joint_batch = joint
  cfg.penalty.name, cfg.penalty.weight = 'r1', 1.0
  family = gan.build(cfg)
  shape = (16, 16, 1)
  state = base.jit_init(family, cfg.seed)()
  step = jax.jit(family.train_step)
  rng = np.random.default_rng(0)
  for _ in range(2):
    d_net = state.nets['d']
    u_before, w_before = _u_vectors(d_net['vars']), _kernels(d_net['params'])
    batch = {'image': rng.uniform(-1, 1, (cfg.batch_size, *shape)).astype(np.float32)}
    state, _ = step(state, batch)
    u_after = _u_vectors(state.nets['d']['vars'])
    assert sorted(u_after) == sorted(w_before)
    for name, u in u_before.items():
      want, tol = u, 0.0
      for _ in range(steps_per_update):
        # A step is u -> g(u) / |g(u)| with g(u) = u W^T W up to the inner normalisation, so an
        # error e already in u leaves it off by <= 2 ||W^T W|| |e| / |u W^T W| (a normalised
        # linear map), on top of the step's own rounding.
        w = np.asarray(w_before[name], np.float64).reshape(-1, w_before[name].shape[-1])
        gain = np.linalg.norm(w, 2) ** 2 / (np.linalg.norm(want @ w.T @ w) + 1e-300)
        tol = 2 * gain * tol + _power_step_error(want, w_before[name])
        want = _power_step(want, w_before[name])
      np.testing.assert_allclose(u_after[name], want, rtol=0, atol=tol, err_msg=name)


def test_configs():
  c = sngan_cfg.get_config('digits')
  assert (c.model.name, c.loss.name, c.model.spectral_norm, c.d_joint_batch) == (
      'sngan', 'hinge', True, True)
  assert (c.optimizer.d_lr, c.optimizer.b1, c.optimizer.b2, c.n_dis) == (2e-4, 0.5, 0.999, 1)
  a = sngan_cfg.get_config('cifar10,A')
  assert (a.optimizer.d_lr, a.optimizer.b1, a.optimizer.b2, a.n_dis) == (1e-4, 0.5, 0.9, 5)
  assert a.data.name == 'cifar10' and a.model.channels == 3
  with pytest.raises(ValueError, match='setting in A, B, C, D, E, F'):
    sngan_cfg.get_config('digits,Z')
  with pytest.raises(ValueError, match='data in digits, tiny, cifar10'):
    sngan_cfg.get_config('imagenet')
  sn = dcgan_cfg.get_config('sn')
  assert sn.model.name == 'dcgan' and sn.model.spectral_norm


def test_dcgan_with_sn_discriminator_is_normalised():
  cfg = dcgan_cfg.get_config('sn')
  cfg.model.resolution = 16
  cfg.model.g_width = cfg.model.d_width = 4
  _, d = models.get_gan(cfg.model)
  v = d.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 1)), train=False)
  n_kernels = len(_kernels(v['params']))
  assert len(_u_vectors(v)) == n_kernels == 3
  assert not any('BatchNorm' in k for k in shapes(v['params']))


def test_sngan_end_to_end_tiny(tmp_path, tfds_dir):
  from jaxgen.engine import loop
  cfg = sngan_cfg.get_config('tiny')
  cfg.data.data_dir = tfds_dir
  cfg.num_steps = 4
  cfg.checkpoint_every = 4
  cfg.log_every = 2
  state = loop.train_and_evaluate(cfg, str(tmp_path))
  assert int(state.step) == 4
  assert (tmp_path / 'metrics.jsonl').exists()
