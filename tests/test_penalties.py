"""Gradient penalties against central finite differences of D (float64), and weight clipping."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.losses import penalties

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
EPS = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


class SmoothMLP(nn.Module):
  """A small smooth D (tanh/softplus) so finite differences are accurate."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    x = jnp.tanh(nn.Dense(16, **F64)(x))
    x = nn.softplus(nn.Dense(8, **F64)(x))
    return nn.Dense(1, **F64)(x)[:, 0]


class SmoothConv(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(4, (3, 3), strides=(2, 2), **F64)(x))
    return nn.Dense(1, **F64)(x.reshape((x.shape[0], -1)))[:, 0]


def fd_input_grads(d_fn, x, h=1e-5):
  """Per-example gradients of D by central differences, one input coordinate at a time, and
  a bound on their error: central differences D(h) = f' + c h^2 + O(h^4), so the truncation
  error of D(h) is (D(2h) - D(h)) / 3 to leading order (Richardson; doubled here for the
  higher-order terms), plus the rounding of the two float64 evaluations divided by 2h,
  <= 2 eps |f| / (2 h) with |f| taken as the largest |D| seen (and a few eps per layer of
  D's own evaluation, covered by the factor 2 as well)."""
  x = np.asarray(x, np.float64)
  flat = x.reshape(x.shape[0], -1)
  grads, errors = np.zeros_like(flat), np.zeros_like(flat)
  for j in range(flat.shape[1]):
    diffs = []
    for step in (h, 2 * h):
      e = np.zeros_like(flat)
      e[:, j] = step
      up = np.asarray(d_fn(jnp.asarray((flat + e).reshape(x.shape))))
      down = np.asarray(d_fn(jnp.asarray((flat - e).reshape(x.shape))))
      diffs.append((up - down) / (2 * step))
      fmax = np.maximum(np.abs(up), np.abs(down))
    grads[:, j] = diffs[0]
    errors[:, j] = 2 * (np.abs(diffs[1] - diffs[0]) / 3 + 2 * EPS * fmax / (2 * h))
  return grads, errors


def make_d(module, x, seed=0):
  params = module.init(jax.random.PRNGKey(seed), x)
  return params, (lambda p: (lambda inp: module.apply(p, inp)))


@pytest.fixture(scope='module', params=['mlp_2d', 'conv_image'])
def setup(request):
  rng = np.random.default_rng(1)
  if request.param == 'mlp_2d':
    module, shape = SmoothMLP(), (6, 2)
  else:
    module, shape = SmoothConv(), (3, 4, 4, 1)
  real = jnp.asarray(rng.normal(size=shape))
  fake = jnp.asarray(rng.normal(size=shape) + 0.5)
  with jax.enable_x64(True):
    real, fake = real.astype(jnp.float64), fake.astype(jnp.float64)
    params, bind = make_d(module, real)
  return module, params, bind, real, fake


def test_r1_matches_finite_differences(setup):
  _, params, bind, real, fake = setup
  with jax.enable_x64(True):
    d_fn = bind(params)
    got = float(penalties.r1(d_fn, real, fake, jax.random.PRNGKey(0)))
    g, e = fd_input_grads(d_fn, real)
  want = 0.5 * np.mean(np.sum(g ** 2, axis=1))
  # 0.5 |g + e|^2 - 0.5 |g|^2 <= |g| |e| + 0.5 |e|^2 per example; plus float64 rounding of
  # the autodiff value (a few eps per layer: 16 eps of it).
  tol = np.mean(np.sum(np.abs(g) * e + 0.5 * e ** 2, axis=1)) + 16 * EPS * abs(want)
  assert abs(got - want) <= tol, (got, want, tol)


def test_wgan_gp_matches_finite_differences_on_interpolates(setup):
  _, params, bind, real, fake = setup
  key = jax.random.PRNGKey(3)
  with jax.enable_x64(True):
    d_fn = bind(params)
    got = float(penalties.wgan_gp(d_fn, real, fake, key))
    x_hat = np.asarray(penalties.interpolates(real, fake, key))
    g, e = fd_input_grads(d_fn, x_hat)
  norms = np.linalg.norm(g, axis=1)
  want = np.mean((norms - 1.0) ** 2)
  # |g| moves by <= |e| (plus 1e-12 / 2 from the sqrt floor wgan_gp adds), so (|g| - 1)^2 by
  # <= 2 ||g| - 1| d + d^2; plus float64 rounding of the autodiff value.
  d = np.linalg.norm(e, axis=1) + 1e-12
  tol = np.mean(2 * np.abs(norms - 1.0) * d + d ** 2) + 16 * EPS * abs(want)
  assert abs(got - want) <= tol, (got, want, tol)


def test_interpolates_lie_on_the_segments():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(64, 3)), rng.normal(size=(64, 3))
  x = np.asarray(penalties.interpolates(jnp.asarray(real, jnp.float32),
                                        jnp.asarray(fake, jnp.float32), jax.random.PRNGKey(0)))
  # x = fake + t (real - fake) with one t per example, in [0, 1]. float32: the inputs are
  # rounded (eps32 / 2 of each) and fake + t (real - fake) costs three roundings, so each x
  # is off the exact segment by <= dx = 2 eps32 (|fake| + |real - fake| + |real|). The
  # least-squares t leaves a residual <= |dx| (a projection) and is off by
  # <= |dx| / |real - fake|.
  t = np.sum((x - fake) * (real - fake), axis=1) / np.sum((real - fake) ** 2, axis=1)
  dx = 2 * EPS32 * (np.abs(fake) + np.abs(real - fake) + np.abs(real))
  resid = np.linalg.norm(x - (fake + t[:, None] * (real - fake)), axis=1)
  assert np.all(resid <= np.linalg.norm(dx, axis=1))
  dt = np.linalg.norm(dx, axis=1) / np.linalg.norm(real - fake, axis=1)
  assert np.all(t >= -dt) and np.all(t <= 1 + dt)
  assert t.std() > 0.2  # a fresh eps per example, not one for the batch (U[0,1] std 0.29)


@pytest.mark.parametrize('name', ['r1', 'wgan_gp'])
def test_penalty_parameter_gradient_matches_finite_differences(setup, name):
  """The train step differentiates the penalty w.r.t. D's params (double backprop)."""
  _, params, bind, real, fake = setup
  pen = penalties.get_penalty(name)
  key = jax.random.PRNGKey(5)
  with jax.enable_x64(True):
    f = lambda p: pen(bind(p), real, fake, key)
    grads = jax.grad(f)(params)
    direction = jax.tree.map(
        lambda p: jnp.asarray(np.random.default_rng(p.size).normal(size=p.shape)), params)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in
                   zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    h = 1e-5
    shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)
    central = lambda h: (float(f(shift(h))) - float(f(shift(-h)))) / (2 * h)
    numeric, numeric_2h = central(h), central(2 * h)
    fmax = max(abs(float(f(shift(s)))) for s in (h, -h))
  # Richardson estimate of the truncation error (doubled), rounding of the difference
  # quotient (2 eps |f| / 2h, f itself computed by double backprop: x 16), and the
  # analytic side's own float64 rounding.
  tol = (2 * abs(numeric_2h - numeric) / 3 + 16 * 2 * EPS * fmax / (2 * h)
         + 16 * EPS * abs(analytic))
  assert abs(analytic - numeric) <= tol, (analytic, numeric, tol)


def linear_d(w):
  w = jnp.asarray(w)
  return lambda x: x.reshape((x.shape[0], -1)) @ w


def test_zero_where_it_must_be():
  rng = np.random.default_rng(0)
  real = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
  fake = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
  key = jax.random.PRNGKey(0)
  unit = np.array([0.6, 0.8], np.float32)
  # A 1-Lipschitz linear critic has unit gradient norm everywhere: WGAN-GP is 0. The input
  # gradient of x @ w is w exactly; float32(0.6), float32(0.8) and the norm's sum and sqrt
  # leave |w| within 2 eps32 of 1, so the penalty is <= (2 eps32)^2.
  assert float(penalties.wgan_gp(linear_d(unit), real, fake, key)) <= (2 * EPS32) ** 2
  # ... and (||w|| - 1)^2 for any other slope, whatever the interpolates: |3 w| = 3 within
  # 3 x 3 eps32, so (|3w| - 1)^2 = 4 within 2 x 2 x 9 eps32 (+ the square's rounding).
  assert float(penalties.wgan_gp(linear_d(3 * unit), real, fake, key)) == pytest.approx(
      4.0, rel=0, abs=40 * EPS32)
  # R1 is 0 for a constant D and for a D whose real points sit at its maximum.
  assert float(penalties.r1(lambda x: jnp.zeros(x.shape[0]) + 2.0, real, fake, key)) == 0.0
  peak = lambda x: -jnp.sum(jnp.square(x - real), axis=1)
  # The gradient -2 (x - real) is exactly 0 at x = real.
  assert float(penalties.r1(peak, real, fake, key)) == 0.0
  # ... and 0.5 ||w||^2 for a linear D: |3w|^2 = 9 within 2 x 9 eps32 (w's rounding) plus
  # the sum's and the mean's roundings.
  assert float(penalties.r1(linear_d(3 * unit), real, fake, key)) == pytest.approx(
      4.5, rel=4 * EPS32, abs=0)
  # R1 ignores the fake batch entirely.
  assert float(penalties.r1(peak, real, fake + 100, key)) == 0.0


def test_wgan_gp_is_finite_where_the_gradient_vanishes():
  real = jnp.zeros((4, 2))
  g = jax.grad(lambda s: penalties.wgan_gp(lambda x: s * jnp.sum(jnp.square(x), 1) * 0.0,
                                           real, real, jax.random.PRNGKey(0)))(1.0)
  assert np.isfinite(float(g))


def test_zero_gp_is_r1_and_unknown_names_are_rejected():
  assert penalties.get_penalty('zero_gp') is penalties.get_penalty('r1')
  with pytest.raises(ValueError, match='wgan_gp, r1, zero_gp'):
    penalties.get_penalty('r2d2')


def test_clip_weights():
  params = {'Dense_0': {'kernel': jnp.array([[-0.5, 0.005], [0.02, 0.3]]),
                        'bias': jnp.array([-0.02, 0.001])}}
  out = penalties.clip_weights(params, 0.01)
  # float32 copies of the float64 literals: eps32 / 2 relative.
  np.testing.assert_allclose(out['Dense_0']['kernel'], [[-0.01, 0.005], [0.01, 0.01]],
                             rtol=EPS32 / 2, atol=0)
  np.testing.assert_allclose(out['Dense_0']['bias'], [-0.01, 0.001], rtol=EPS32 / 2, atol=0)
  with pytest.raises(ValueError, match='> 0'):
    penalties.clip_weights(params, 0.0)
