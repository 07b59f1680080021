"""StackGAN building blocks: CA's sample and KL by hand, the two stages' shapes at tiny widths,
what each network reads (text, condition, only the Stage-I image), the losses, config errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen.losses import stackgan as losses
from jaxgen.models import stackgan as models

B, LATENT, TEXT = 2, 6, 10
TINY = dict(latent_dim=LATENT, c_dim=8, g1_width=4, d1_width=4, g2_width=4, d2_width=2,
            num_residual=1)


def tiny(**overrides):
  return ml_collections.ConfigDict({**TINY, **overrides})


def _inputs(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(k1, (B, LATENT)), jax.random.normal(k2, (B, TEXT)),
          jax.random.uniform(k3, (B, 64, 64, 3), minval=-1.0, maxval=1.0))


def _init(module, *args):
  key = jax.random.PRNGKey(1)
  return module.init({'params': key, 'ca': key}, *args, train=False)


def _apply(module, variables, *args, seed=2):
  """A training-mode pass (BatchNorm on batch statistics, so activations are O(1) even at
  these widths, where N(0, 0.02) weights and unit running variances shrink them to ~1e-7)."""
  out, _ = module.apply(variables, *args, train=True, rngs={'ca': jax.random.PRNGKey(seed)},
                        mutable=['batch_stats'])
  return out


# ---------------------------------------------------------------------------- CA and KL


def test_kl_loss_against_closed_form_in_float64():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(5, 7)), rng.normal(scale=0.7, size=(5, 7))
  ref = np.mean(0.5 * (np.exp(logvar) + mu ** 2 - 1.0 - logvar))  # mean over batch and dims
  out = losses.kl_loss(jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32))
  # float32 inputs rounded (~6e-8 relative) and a float32 mean of 35 O(1) terms.
  np.testing.assert_allclose(float(out), ref, rtol=2e-6)
  assert float(losses.kl_loss(jnp.zeros((3, 4)), jnp.zeros((3, 4)))) == 0.0


@pytest.mark.parametrize('activation', models.CA_ACTIVATIONS)
def test_ca_sample_is_mu_plus_sigma_eps(activation):
  ca = models.CondAugment(c_dim=5, activation=activation)
  _, t, _ = _inputs()
  params = ca.init(jax.random.PRNGKey(0), t, eps=jnp.zeros((B, 5)))
  eps = jax.random.normal(jax.random.PRNGKey(3), (B, 5))
  c, mu, logvar = ca.apply(params, t, eps=eps)
  assert c.shape == mu.shape == logvar.shape == (B, 5)
  np.testing.assert_array_equal(c, mu + jnp.exp(logvar / 2) * eps)  # same ops: bitwise
  # eps from an explicit key is the N(0, I) draw of that key; from the 'ca' stream, a draw
  # that flax derives from the stream's key (reproducible, different for another key).
  key = jax.random.PRNGKey(7)
  by_rng, _, _ = ca.apply(params, t, rng=key)
  np.testing.assert_array_equal(by_rng, mu + jnp.exp(logvar / 2) * jax.random.normal(key, (B, 5)))
  by_stream, _, _ = ca.apply(params, t, rngs={'ca': key})
  np.testing.assert_array_equal(by_stream, ca.apply(params, t, rngs={'ca': key})[0])
  assert not np.allclose(by_stream, ca.apply(params, t, rngs={'ca': jax.random.PRNGKey(8)})[0])
  if activation == 'relu':  # the PyTorch code's ReLU: mu >= 0 and sigma >= 1
    assert float(jnp.min(mu)) >= 0.0 and float(jnp.min(logvar)) >= 0.0
  assert params['params']['fc']['kernel'].shape == (TEXT, (2 if activation == 'relu' else 4) * 5)


# ---------------------------------------------------------------------------- networks


def test_stage1_shapes_and_dependence():
  g, d = models.make_stage1(tiny())
  z, t, _ = _inputs()
  g_vars = _init(g, z, t)
  x, mu, logvar = _apply(g, g_vars, z, t)
  assert x.shape == (B, 64, 64, 3) and mu.shape == logvar.shape == (B, 8)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert not np.allclose(x, _apply(g, g_vars, z, t[::-1])[0])   # G reads the text
  assert not np.allclose(x, _apply(g, g_vars, z[::-1], t)[0])   # ... and the noise
  d_vars = _init(d, x, t)
  logits = _apply(d, d_vars, x, t)
  assert logits.shape == (B,)
  assert not np.allclose(logits, _apply(d, d_vars, x, t[::-1]))  # D reads t
  assert d_vars['params']['cond_proj']['kernel'].shape == (TEXT, 8)
  assert d_vars['params']['joint']['kernel'].shape == (1, 1, 8 * 4 + 8, 8 * 4)
  # The PyTorch code's D: the condition (G's mu) as given, a 3x3 joint convolution.
  _, d_code = models.make_stage1(tiny(d_cond_proj=False, d_joint_kernel=3))
  code_vars = _init(d_code, x, mu)
  assert 'cond_proj' not in code_vars['params']
  assert code_vars['params']['joint']['kernel'].shape == (3, 3, 8 * 4 + 8, 8 * 4)
  out = _apply(d_code, code_vars, x, mu)
  assert out.shape == (B,) and not np.allclose(out, _apply(d_code, code_vars, x, mu[::-1]))


@pytest.mark.parametrize('resolution', models.STAGE2_RESOLUTIONS)
def test_stage2_shapes_and_dependence(resolution):
  g, d = models.make_stage2(tiny(stage2_resolution=resolution))
  _, t, x1 = _inputs()
  g_vars = _init(g, x1, t)
  x, mu, _ = _apply(g, g_vars, x1, t)
  assert x.shape == (B, resolution, resolution, 3) and mu.shape == (B, 8)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert not np.allclose(x, _apply(g, g_vars, x1, t[::-1])[0])   # G reads the text
  assert not np.allclose(x, _apply(g, g_vars, x1[::-1], t)[0])   # ... and the Stage-I image
  d_vars = _init(d, x, t)
  cond, uncond = _apply(d, d_vars, x, t)
  assert cond.shape == uncond.shape == (B,)
  cond_swapped, uncond_swapped = _apply(d, d_vars, x, t[::-1])
  assert not np.allclose(cond, cond_swapped)          # the conditional logit reads t
  np.testing.assert_array_equal(uncond, uncond_swapped)  # the unconditional one does not
  # Residual blocks, up-sampling blocks (4 for 256, 3 for 128), D's 3x3 narrowing convs.
  names = set(g_vars['params'])
  assert sum(n.startswith('_ResBlock') for n in names) == 1
  n_convs = sum(n.startswith('Conv_') for n in names)
  assert n_convs == 3 + {128: 3, 256: 4}[resolution]  # encoder + one per up-sampling block
  top = d_vars['params']['joint']['kernel'].shape
  assert top == (1, 1, 8 * 2 + 8, 8 * 2)  # back to 8 * d2_width features at 4x4


def test_stage2_holds_no_stage1_parameters():
  """Only the image flows: G2's variables are its own, whatever Stage-I is."""
  g1, _ = models.make_stage1(tiny())
  g2, _ = models.make_stage2(tiny(stage2_resolution=128, num_residual=0))
  g2_wide, _ = models.make_stage2(tiny(stage2_resolution=128, num_residual=0, g1_width=16))
  z, t, _ = _inputs()
  g1_vars = _init(g1, z, t)
  x1 = _apply(g1, g1_vars, z, t)[0]
  g2_vars = _init(g2, x1, t)
  shapes = jax.tree_util.tree_map(jnp.shape, g2_vars)
  assert shapes == jax.tree_util.tree_map(jnp.shape, _init(g2_wide, x1, t))
  assert 'fc' not in g2_vars['params'] and 'fc_bn' not in g2_vars['params']  # G1's FC layer
  with pytest.raises(ValueError, match='reads 64x64 Stage-I images'):
    _init(g2, jnp.zeros((B, 32, 32, 3)), t)


# ---------------------------------------------------------------------------- losses


def _softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def test_adversarial_losses_against_hand_computation():
  r, f, w = np.array([1.5, -0.5]), np.array([-2.0, 0.3]), np.array([0.1, 2.0])
  ur, uf = np.array([0.7, -1.0]), np.array([0.4, -0.2])
  real, fake, wrong = (np.mean(_softplus(-r)), np.mean(_softplus(f)), np.mean(_softplus(w)))
  u_real, u_fake = np.mean(_softplus(-ur)), np.mean(_softplus(uf))
  j = jnp.asarray
  out = losses.d_loss(j(r), j(f), j(w))
  np.testing.assert_allclose(out['loss'], real + 0.5 * (fake + wrong), rtol=1e-6)
  out2 = losses.d_loss(j(r), j(f), j(w), j(ur), j(uf))
  np.testing.assert_allclose(out2['loss'], (real + u_real) / 2 + (fake + wrong + u_fake) / 3,
                             rtol=1e-6)
  g = losses.g_loss(j(f), j(uf))
  np.testing.assert_allclose(g['loss'], np.mean(_softplus(-f)) + np.mean(_softplus(-uf)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match='both unconditional logits'):
    losses.d_loss(j(r), j(f), j(w), uncond_real=j(ur))


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize('field, value, match', [
    ('stage2_resolution', 512, r'cannot make 512x512 .* accepted model.stage2_resolution: '
                               r'128, 256'),
    ('g1_width', 3, 'g1_width must be even'),
    ('g2_width', 6, 'g2_width must be a multiple of 4 at 256x256'),
    ('c_dim', 0, 'model.c_dim must be a positive integer; got 0'),
    ('d2_width', 2.0, 'model.d2_width must be a positive integer; got 2.0'),
    ('num_residual', -1, 'num_residual must be a non-negative integer'),
    ('ca_activation', 'tanh', "Unknown model.ca_activation 'tanh'; accepted: relu, glu"),
    ('d_joint_kernel', 2, 'd_joint_kernel must be one of 1, 3; got 2'),
    ('d_cond_proj', 1, 'd_cond_proj must be True or False'),
])
def test_config_errors(field, value, match):
  with pytest.raises(ValueError, match=match):
    models.check(tiny(**{field: value}))
  with pytest.raises(ValueError, match=match):
    (models.make_stage2 if field.startswith(('g2', 'd2', 'stage2')) else
     models.make_stage1)(tiny(**{field: value}))


def test_defaults_are_the_code_widths():
  g1, d1 = models.make_stage1(ml_collections.ConfigDict())
  g2, d2 = models.make_stage2(ml_collections.ConfigDict())
  assert (g1.width, d1.width, g2.width, d2.width, g2.num_residual, g1.c_dim) == (
      128, 64, 128, 64, 4, 128)
  assert (d1.resolution, g2.resolution, d2.resolution) == (64, 256, 256)
  g2_128, _ = models.make_stage2(tiny(stage2_resolution=128, g2_width=6))  # 6/2 at 128 is fine
  assert g2_128.resolution == 128


def _num_params(module, *args):
  shapes = jax.eval_shape(lambda: module.init({'params': jax.random.PRNGKey(0),
                                               'ca': jax.random.PRNGKey(0)}, *args, train=False))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes['params']))


def test_stage1_parameter_counts_at_code_width():
  """Layer-by-layer arithmetic of the PyTorch code's STAGE1_G / STAGE1_D (GF_DIM 128,
  DF_DIM 64, t 1024-d, z 100-d, c 128-d; BatchNorm counts scale and bias)."""
  ngf, ndf, c, t_dim, z_dim = 8 * 128, 64, 128, 1024, 100
  ca = t_dim * 2 * c + 2 * c
  fc = (z_dim + c) * ngf * 16 + 2 * ngf * 16
  ups = sum(9 * ngf // 2 ** i * ngf // 2 ** (i + 1) + 2 * ngf // 2 ** (i + 1) for i in range(4))
  g1 = ca + fc + ups + 9 * ngf // 16 * 3
  down = 3 * ndf * 16 + sum(16 * ndf * 2 ** i * ndf * 2 ** (i + 1) + 2 * ndf * 2 ** (i + 1)
                            for i in range(3))
  d1 = down + 9 * (8 * ndf + c) * 8 * ndf + 2 * 8 * ndf + 16 * 8 * ndf + 1
  g, _ = models.make_stage1(ml_collections.ConfigDict())
  _, d = models.make_stage1(ml_collections.ConfigDict(dict(d_cond_proj=False, d_joint_kernel=3)))
  assert _num_params(g, jnp.zeros((1, z_dim)), jnp.zeros((1, t_dim))) == g1 == 10_301_248
  assert _num_params(d, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, c))) == d1 == 5_715_713
