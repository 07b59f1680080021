"""Model shapes and the reference DCGAN-64 parameter counts."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen import models
from jaxgen.families.base import count_params


def dcgan_cfg(**kw):
  base = dict(name='dcgan', resolution=64, channels=3, latent_dim=100, g_width=64, d_width=64,
              conv_impl='plain', spectral_norm=False)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def shapes(cfg):
  g, d = models.get_gan(cfg)
  z = jnp.zeros((2, cfg.latent_dim))
  gv = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, train=False))
  x = jax.eval_shape(lambda: g.apply(g.init(jax.random.PRNGKey(0), z, train=False), z,
                                     train=False))
  dv = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), train=False))
  return gv, dv, x


def test_reference_dcgan64_parameter_counts():
  gv, dv, x = shapes(dcgan_cfg())
  assert x.shape == (2, 64, 64, 3)
  assert count_params(gv['params']) == 3_576_704
  assert count_params(dv['params']) == 2_765_568
  # No biases anywhere in the reference architecture.
  assert not any('bias' in '/'.join(map(str, path)) and 'BatchNorm' not in
                 '/'.join(map(str, path)) for path, _ in
                 jax.tree_util.tree_flatten_with_path(gv['params'])[0])


@pytest.mark.parametrize('res', [16, 32, 64])
def test_dcgan_resolutions(res):
  _, _, x = shapes(dcgan_cfg(resolution=res, channels=1, g_width=8, d_width=8))
  assert x.shape == (2, res, res, 1)


def test_dcgan_rejects_resolution_it_cannot_make():
  with pytest.raises(ValueError, match='accepted resolutions: 16, 32, 64'):
    models.get_gan(dcgan_cfg(resolution=48))


def test_dcgan_init_statistics():
  g, _ = models.get_gan(dcgan_cfg(resolution=32, g_width=64))
  v = g.init(jax.random.PRNGKey(0), jnp.zeros((2, 100)), train=False)
  kernels = [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(v['params'])[0]
             if 'kernel' in str(p[-1])]
  allk = np.concatenate([k.ravel() for k in kernels])
  # N(0, 0.02^2) draws: the sample mean has standard error s / sqrt(n), the sample std
  # s / sqrt(2 n) (Gaussian); allow 5 standard errors (a 6e-7 chance of a false alarm per
  # check for a correct initialiser; the seed is fixed, so the outcome is too).
  n = allk.size
  assert abs(allk.mean()) <= 5 * 0.02 / np.sqrt(n)
  assert abs(allk.std() - 0.02) <= 5 * 0.02 / np.sqrt(2 * n)
  scales = np.concatenate([np.asarray(x).ravel() for p, x in
                           jax.tree_util.tree_flatten_with_path(v['params'])[0]
                           if 'scale' in str(p[-1])])
  n = scales.size  # BatchNorm scales ~ N(1, 0.02^2)
  assert abs(scales.mean() - 1.0) <= 5 * 0.02 / np.sqrt(n)
  assert abs(scales.std() - 0.02) <= 5 * 0.02 / np.sqrt(2 * n)


def test_mlp_gan_shapes_and_maxout():
  cfg = ml_collections.ConfigDict(dict(name='mlp_gan', resolution=16, channels=1, latent_dim=10,
                                       g_width=32, d_width=24, maxout_pieces=3))
  g, d = models.get_gan(cfg)
  gv = g.init(jax.random.PRNGKey(0), jnp.zeros((4, 10)), train=False)
  x = g.apply(gv, jax.random.normal(jax.random.PRNGKey(1), (4, 10)), train=False)
  assert x.shape == (4, 16, 16, 1) and float(jnp.abs(x).max()) <= 1.0
  dv = d.init(jax.random.PRNGKey(0), x, train=False)
  assert d.apply(dv, x, train=False).shape == (4,)
  # Maxout: first hidden layer is a Dense of width 24 * 3 reduced by max over 3 pieces.
  assert dv['params']['Maxout_0']['Dense_0']['kernel'].shape == (256, 72)


def test_unknown_model_name():
  with pytest.raises(ValueError, match='accepted: .*dcgan'):
    models.get_gan(ml_collections.ConfigDict(dict(name='nope')))
