"""Each adversarial loss against its closed form, including |logit| = 100."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.losses import gan

REAL = np.array([-100.0, -3.0, -0.5, 0.0, 0.7, 2.0, 100.0])
FAKE = np.array([100.0, 4.0, 0.3, 0.0, -1.2, -2.5, -100.0])


EPS32 = float(np.finfo(np.float32).eps)
# XLA:CPU's float32 exp/log/log1p are polynomial approximations, not correctly rounded: we
# allow 4 ulp (4 eps32 relative) each. softplus = log1p(exp(-|l|)) + max(l, 0) chains two.
ULP_TRANSCENDENTAL = 4


def sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def log_sigmoid(x):  # Independent stable reference in float64: log(1/(1+e^-x)).
  return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def expected(name):
  lr = [log_sigmoid(r) for r in REAL]        # log D(x)
  l1f = [log_sigmoid(-f) for f in FAKE]      # log(1 - D(G(z)))
  lf = [log_sigmoid(f) for f in FAKE]        # log D(G(z))
  if name in ('minimax', 'non_saturating'):
    d = -np.mean(lr) - np.mean(l1f)
    g = np.mean(l1f) if name == 'minimax' else -np.mean(lf)
  elif name == 'hinge':
    d = np.mean([max(0, 1 - r) for r in REAL]) + np.mean([max(0, 1 + f) for f in FAKE])
    g = -np.mean(FAKE)
  elif name == 'wasserstein':
    d = np.mean(FAKE) - np.mean(REAL)
    g = -np.mean(FAKE)
  elif name == 'least_squares':
    d = 0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE ** 2)
    g = 0.5 * np.mean((FAKE - 1) ** 2)
  return d, g


@pytest.mark.parametrize('name', gan.LOSS_NAMES)
def test_closed_form(name):
  loss = gan.get_gan_loss(name)
  d_want, g_want = expected(name)
  d = loss.d_loss(jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32))
  g = loss.g_loss(jnp.asarray(FAKE, jnp.float32))
  # float32 rounding against the float64 closed form. Each term's magnitude, and its change
  # when its logit is rounded to float32 (relative eps32 / 2, slope <= 1, or 2 (|l| + 1) for
  # the squares), is at most S = |l|_max + 1 (softplus, hinge, linear) or S^2 (squares);
  # evaluating it costs <= (2 x 4 + 2) eps32 S (two transcendentals, two roundings), so
  # <= 11 eps32 S per term, and each mean of n terms adds <= n eps32 S (recursive
  # summation). Two means in the D loss: 2 (n + 11) eps32 S.
  s = np.abs(np.concatenate([REAL, FAKE])).max() + 1.0
  if name == 'least_squares':
    s = s ** 2
  tol = 2 * (len(REAL) + 11) * EPS32 * s
  np.testing.assert_allclose(float(d), d_want, rtol=0, atol=tol)
  np.testing.assert_allclose(float(g), g_want, rtol=0, atol=tol)


@pytest.mark.parametrize('name', gan.LOSS_NAMES)
def test_finite_values_and_gradients_at_large_logits(name):
  loss = gan.get_gan_loss(name)
  r = jnp.array([100.0, -100.0, 100.0])
  f = jnp.array([-100.0, 100.0, 100.0])
  d, (gr, gf) = jax.value_and_grad(loss.d_loss, argnums=(0, 1))(r, f)
  g, gg = jax.value_and_grad(loss.g_loss)(f)
  for x in (d, gr, gf, g, gg):
    assert np.all(np.isfinite(np.asarray(x)))


def test_bce_matches_probability_form_at_moderate_logits():
  # At moderate logits the naive probability formula is accurate: an independent check.
  r, f = 0.8, -0.4
  # float32 against float64 formulas: rounding the logit (eps32 / 2 of |l|, slope < 1) and
  # evaluating softplus (two transcendentals and two roundings: 10 eps32 of the value) per
  # term, one more rounding for the sum.
  tol = lambda value, logits: 11 * EPS32 * (abs(value) + sum(abs(l) for l in logits))
  d = gan.get_gan_loss('non_saturating').d_loss(jnp.array([r]), jnp.array([f]))
  want = -math.log(sigmoid(r)) - math.log(1 - sigmoid(f))
  np.testing.assert_allclose(float(d), want, rtol=0, atol=tol(want, [r, f]))
  g_ns = gan.get_gan_loss('non_saturating').g_loss(jnp.array([f]))
  want = -math.log(sigmoid(f))
  np.testing.assert_allclose(float(g_ns), want, rtol=0, atol=tol(want, [f]))
  g_mm = gan.get_gan_loss('minimax').g_loss(jnp.array([f]))
  want = math.log(1 - sigmoid(f))
  np.testing.assert_allclose(float(g_mm), want, rtol=0, atol=tol(want, [f]))


def test_saturating_gradient_vanishes_where_non_saturating_does_not():
  # Goodfellow et al.: early on D rejects fakes confidently (fake logit << 0); the minimax G
  # loss then has a vanishing gradient, the non-saturating one does not.
  f = jnp.array([-10.0])
  g_mm = jax.grad(gan.get_gan_loss('minimax').g_loss)(f)
  g_ns = jax.grad(gan.get_gan_loss('non_saturating').g_loss)(f)
  # d/df -softplus(f) = -sigmoid(f) = -4.5e-5 and d/df softplus(-f) = -sigmoid(-f) = -0.99995:
  # one exp (4 ulp), an add and a division (eps32 / 2 each), to 5 eps32 relative.
  rel = (ULP_TRANSCENDENTAL + 1) * EPS32
  assert float(g_mm[0]) == pytest.approx(-sigmoid(-10.0), rel=rel, abs=0)
  assert float(g_ns[0]) == pytest.approx(-sigmoid(10.0), rel=rel, abs=0)
  assert abs(float(g_mm[0])) < 1e-4 * abs(float(g_ns[0]))


def test_unknown_name_lists_accepted():
  with pytest.raises(ValueError, match='hinge'):
    gan.get_gan_loss('bogus')
