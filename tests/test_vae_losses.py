"""Variational losses against independent references (quadrature, scipy, closed forms)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxgen.losses import vae as vl

EPS32 = float(np.finfo(np.float32).eps)
# XLA:CPU's float32 exp/log/log1p are not correctly rounded; we allow 4 ulp each.
ULP = 4


def kl_f32_bound(mu_q, lv_q, mu_p=0.0, lv_p=0.0):
  """|float32 KL - exact| for KL = 0.5 (lv_p - lv_q + (e^lv_q + (mu_q - mu_p)^2) e^-lv_p - 1).

  Rounding the inputs to float32 (eps32 / 2 relative each) moves lv_p - lv_q by
  eps32 / 2 (|lv_p| + |lv_q|), B = (e^lv_q + dmu^2) e^-lv_p by B times that plus
  2 |dmu| eps32 / 2 (|mu_q| + |mu_p|) e^-lv_p; the evaluation (two exps at ULP ulp, a square,
  four adds, a product, the halving) costs <= (2 ULP + 6) eps32 of |lv_p - lv_q| + B + 1.
  """
  dmu = abs(mu_q - mu_p)
  b = (np.exp(lv_q) + dmu ** 2) * np.exp(-lv_p)
  inputs = (EPS32 / 2) * (abs(lv_p) + abs(lv_q)) * (1 + b) + EPS32 * dmu * (
      abs(mu_q) + abs(mu_p)) * np.exp(-lv_p)
  return 0.5 * (inputs + (2 * ULP + 6) * EPS32 * (abs(lv_p - lv_q) + b + 1))


def gaussian_f32_bound(x, m, lv):
  """|float32 log N(x; m, e^lv) - exact| per element, inputs rounded to float32 (see above):
  C = 0.5 (log 2 pi + |lv| + q), q = (x - m)^2 e^-lv; inputs move q by |x - m| eps32
  (|x| + |m|) e^-lv + q eps32 / 2 |lv| and lv by eps32 / 2 |lv|; evaluation (one exp,
  a subtraction, a square, a product, two adds, the halving) <= (ULP + 6) eps32 C."""
  x, m, lv = (np.asarray(a, np.float64) for a in (x, m, lv))
  q = (x - m) ** 2 * np.exp(-lv)
  c = 0.5 * (np.log(2 * np.pi) + np.abs(lv) + q)
  inputs = 0.5 * (np.abs(x - m) * EPS32 * (np.abs(x) + np.abs(m)) * np.exp(-lv)
                  + (EPS32 / 2) * np.abs(lv) * (1 + q))
  return inputs + (ULP + 6) * EPS32 * c


def bernoulli_f32_bound(logits, t):
  """|float32 log Bernoulli(t; sigmoid(l)) - exact| per element for float32 logits: the
  value t l - softplus(l) has terms <= |l| + log 2 each; softplus costs two transcendentals
  and two roundings, the product and difference one each, and t rounded to float32 moves
  the value by eps32 / 2 |t| (|l| + 1): <= (2 ULP + 4) eps32 (|l| + 1)."""
  return (2 * ULP + 4) * EPS32 * (np.abs(np.asarray(logits, np.float64)) + 1.0)


@pytest.mark.parametrize('mu_q,s_q,mu_p,s_p', [
    (0.0, 1.0, 0.0, 1.0), (1.3, 0.4, 0.0, 1.0), (-2.0, 2.5, 0.0, 1.0),
    (0.7, 0.3, -0.5, 1.7), (3.0, 1.1, 2.0, 0.6)])
def test_kl_matches_numerical_integration(mu_q, s_q, mu_p, s_p):
  q, p = stats.norm(mu_q, s_q), stats.norm(mu_p, s_p)
  ref, err = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)),
                            mu_q - 15 * s_q, mu_q + 15 * s_q, epsabs=1e-12, epsrel=1e-10)
  assert err < 1e-8
  got = vl.kl_diag_gaussians(jnp.float32(mu_q), jnp.float32(2 * np.log(s_q)),
                             jnp.float32(mu_p), jnp.float32(2 * np.log(s_p)))
  # float32 rounding of the closed form + quad's own error estimate.
  tol = kl_f32_bound(mu_q, 2 * np.log(s_q), mu_p, 2 * np.log(s_p)) + err
  np.testing.assert_allclose(float(got), ref, rtol=0, atol=tol)
  if mu_p == 0.0 and s_p == 1.0:
    per_example = vl.kl_to_standard_normal(jnp.full((1, 1), mu_q, jnp.float32),
                                           jnp.full((1, 1), 2 * np.log(s_q), jnp.float32))
    np.testing.assert_allclose(float(per_example[0]), ref, rtol=0, atol=tol)


def test_kl_to_standard_normal_sums_dimensions():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
  got = vl.kl_to_standard_normal(jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32))

  def kl_1d(m, lv):  # Quadrature with plain numpy densities (fast), independent of the closed form.
    s = np.exp(lv / 2)
    log_q = lambda z: -0.5 * np.log(2 * np.pi) - np.log(s) - 0.5 * ((z - m) / s) ** 2
    log_p = lambda z: -0.5 * np.log(2 * np.pi) - 0.5 * z ** 2
    return integrate.quad(lambda z: np.exp(log_q(z)) * (log_q(z) - log_p(z)),
                          m - 15 * s, m + 15 * s)

  parts = [[kl_1d(m, lv) for m, lv in zip(mu[i], logvar[i])] for i in range(4)]
  ref = [sum(v for v, _ in row) for row in parts]
  # Per element: float32 rounding (kl_f32_bound) + quad's error estimate; the float32 sum of
  # 7 terms adds <= 7 eps32 of the sum of their magnitudes.
  tol = [sum(kl_f32_bound(m, lv) + e for m, lv, (_, e) in zip(mu[i], logvar[i], parts[i]))
         + 7 * EPS32 * sum(abs(v) for v, _ in parts[i]) for i in range(4)]
  assert np.all(np.abs(np.asarray(got) - ref) <= tol)
  assert float(vl.kl_to_standard_normal(jnp.zeros((1, 5)), jnp.zeros((1, 5)))[0]) == 0.0


def _bernoulli_ref(logits, t):
  logits = np.asarray(logits, np.float64)
  # log sigmoid(l) = -log(1 + e^-l); log(1 - sigmoid(l)) = -log(1 + e^l), both exact in float64.
  return -t * np.logaddexp(0.0, -logits) - (1 - t) * np.logaddexp(0.0, logits)


@pytest.mark.parametrize('t', [0.0, 1.0, 0.3])
def test_bernoulli_log_prob_is_stable_at_large_logits(t):
  logits = np.array([-100.0, -30.0, -1.5, 0.0, 2.0, 30.0, 100.0], np.float32)
  got = vl.bernoulli_log_prob(jnp.asarray(logits), jnp.full(logits.shape, t, jnp.float32))
  assert np.all(np.isfinite(np.asarray(got)))
  err = np.abs(np.asarray(got, np.float64) - _bernoulli_ref(logits, t))
  assert np.all(err <= bernoulli_f32_bound(logits, t)), err
  # d/dl [t l - softplus(l)] = t - sigmoid(l): finite and exact at |l| = 100. sigmoid costs
  # an exp (ULP ulp), an add and a division; t - sigmoid one more rounding, t's own float32
  # rounding eps32 / 2: <= (ULP + 3) eps32 (1 + |t|).
  grad = jax.grad(lambda l: jnp.sum(vl.bernoulli_log_prob(l, t)))(jnp.asarray(logits))
  np.testing.assert_allclose(np.asarray(grad), t - 1 / (1 + np.exp(-logits.astype(np.float64))),
                             rtol=0, atol=(ULP + 3) * EPS32 * (1 + abs(t)))


def test_bernoulli_confident_correct_prediction_costs_almost_nothing():
  got = vl.bernoulli_log_prob(jnp.float32(100.0), jnp.float32(1.0))
  assert float(got) <= 0.0 and float(got) > -1e-30  # exp(-100) ~ 3.7e-44, below float32.
  assert float(vl.bernoulli_log_prob(jnp.float32(100.0), jnp.float32(0.0))) == -100.0


def test_gaussian_log_prob_matches_scipy():
  rng = np.random.default_rng(1)
  x, m, lv = rng.normal(size=(3, 50))
  got = vl.gaussian_log_prob(jnp.asarray(x), jnp.asarray(m), jnp.asarray(lv))
  err = np.abs(np.asarray(got, np.float64) - stats.norm.logpdf(x, m, np.exp(lv / 2)))
  assert np.all(err <= gaussian_f32_bound(x, m, lv)), err.max()


def test_log_likelihood_sums_per_example_and_rejects_bad_names():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
  x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
  got = vl.log_likelihood('bernoulli', jnp.asarray(x), jnp.asarray(logits))
  ref_terms = _bernoulli_ref(logits, x).reshape(3, -1)
  # Per-element bounds summed, plus the float32 sum of 16 terms (16 eps32 of their |sum|).
  tol = (bernoulli_f32_bound(logits, x).reshape(3, -1).sum(1)
         + 16 * EPS32 * np.abs(ref_terms).sum(1))
  assert np.all(np.abs(np.asarray(got, np.float64) - ref_terms.sum(1)) <= tol)
  got = vl.log_likelihood('gaussian', jnp.asarray(x), jnp.asarray(logits), jnp.float32(-1.0))
  ref_terms = stats.norm.logpdf(x, logits, np.exp(-0.5)).reshape(3, -1)
  tol = (gaussian_f32_bound(x, logits, np.full(x.shape, -1.0)).reshape(3, -1).sum(1)
         + 16 * EPS32 * np.abs(ref_terms).sum(1))
  assert np.all(np.abs(np.asarray(got, np.float64) - ref_terms.sum(1)) <= tol)
  with pytest.raises(ValueError, match='accepted: bernoulli, gaussian'):
    vl.log_likelihood('poisson', jnp.asarray(x), jnp.asarray(logits))
  with pytest.raises(ValueError, match='log-variance'):
    vl.log_likelihood('gaussian', jnp.asarray(x), jnp.asarray(logits))


def test_reparameterized_gradient_of_quadratic_matches_analytic():
  """E[f(z)] for f(z) = z'Az + b'z, z ~ N(mu, diag(e^logvar)) is mu'Amu + b'mu + sum A_ii s_i^2.

  So d/dmu = (A + A')mu + b and d/dlogvar_i = A_ii s_i^2. The Monte Carlo gradient through
  z = mu + sigma * eps must agree within a few standard errors (fixed seed).
  """
  d, n = 4, 200_000
  rng = np.random.default_rng(3)
  a = jnp.asarray(rng.normal(size=(d, d)), jnp.float32)
  b = jnp.asarray(rng.normal(size=d), jnp.float32)
  mu = jnp.asarray(rng.normal(size=d), jnp.float32)
  logvar = jnp.asarray(rng.normal(size=d) * 0.5, jnp.float32)
  f = lambda z: z @ a @ z + b @ z

  def one_sample(key, mu, logvar):
    return f(vl.reparameterize(key, mu, logvar))

  keys = jax.random.split(jax.random.PRNGKey(0), n)
  g_mu, g_lv = jax.vmap(jax.grad(one_sample, argnums=(1, 2)), in_axes=(0, None, None))(
      keys, mu, logvar)
  want_mu = np.asarray((a + a.T) @ mu + b)
  want_lv = np.asarray(jnp.diag(a) * jnp.exp(logvar))
  for g, want in ((np.asarray(g_mu, np.float64), want_mu), (np.asarray(g_lv, np.float64), want_lv)):
    mean, se = g.mean(0), g.std(0) / np.sqrt(n)
    # 4 standard errors of the Monte Carlo mean, plus each float32 sample's rounding: the
    # gradient of z A z + b z through z = mu + sigma eps is a few products and d-term sums,
    # (2 d + 4) eps32 of its magnitude (the float64 mean adds nothing of that order).
    assert np.all(np.abs(mean - want) <= 4 * se + (2 * d + 4) * EPS32 * np.abs(g).mean(0)), (
        mean, want, se)
  # The same gradient through the batched estimator (one call, S samples) is consistent:
  # within 4 standard errors of an S-sample mean (per-sample spread from the run above),
  # plus float32 rounding of the S-term sums in the backward pass (S eps32 mean |g|).
  s_batch = 50_000
  mean_f = lambda mu, lv: jnp.mean(jax.vmap(f)(vl.reparameterize(keys[0], mu, lv, s_batch)))
  g_mu2, _ = jax.grad(mean_f, argnums=(0, 1))(mu, logvar)
  g = np.asarray(g_mu, np.float64)
  tol = 4 * g.std(0) / np.sqrt(s_batch) + s_batch * EPS32 * np.abs(g).mean(0)
  assert np.all(np.abs(np.asarray(g_mu2, np.float64) - want_mu) <= tol)


def _exact_posterior_linear_model(seed=0, d=6, q=2, batch=5):
  """A linear-Gaussian model x = Wz + b + noise whose posterior is diagonal (W'W diagonal).

  Returns (encode, decode, x, exact log p(x)) with the encoder set to the exact posterior:
  q(z|x) = N(M^-1 W'(x - b), s2 M^-1), M = W'W + s2 I.
  """
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(d, q)))
  w = u * np.array([2.0, 0.7])[:q]
  bias, s2 = rng.normal(size=d), 0.3
  m = w.T @ w + s2 * np.eye(q)
  v = np.linalg.solve(m, w.T)
  post_logvar = np.log(s2 * np.diag(np.linalg.inv(m)))
  x = rng.multivariate_normal(bias, w @ w.T + s2 * np.eye(d), size=batch)
  log_px = stats.multivariate_normal(bias, w @ w.T + s2 * np.eye(d)).logpdf(x)
  f32 = lambda a: jnp.asarray(a, jnp.float32)

  def encode(xx):
    mu = (xx - f32(bias)) @ f32(v).T
    return mu, jnp.broadcast_to(f32(post_logvar), mu.shape)

  def decode(z):
    return z @ f32(w).T + f32(bias), jnp.float32(np.log(s2))

  return encode, decode, f32(x), log_px, (w, bias, s2)


def test_elbo_and_iwae_are_exact_with_the_exact_posterior():
  # With q = p(z|x), every importance weight equals p(x): ELBO = IWAE = log p(x) for any k,
  # including a k that leaves a partial last chunk (37 = 3 * 10 + 7).
  # The ELBO with analytic KL is exact only in expectation (its reconstruction term is a
  # Monte Carlo average), so it is checked with many samples.
  encode, decode, x, log_px, (w, bias, s2) = _exact_posterior_linear_model()
  num_samples = 20_000
  out = vl.elbo(encode, decode, x, jax.random.PRNGKey(1), likelihood='gaussian',
                num_samples=num_samples)
  # Tolerance: 4 standard errors of the num_samples-sample mean of log p(x|z), z ~ q, with the
  # per-sample spread estimated independently in float64 numpy, plus the float32 rounding
  # of that mean (num_samples eps32 of mean |log p(x|z)|, recursive summation) and of each
  # sample's D-term sum.
  mu, logvar = (np.asarray(a, np.float64) for a in encode(x))
  zs = mu + np.exp(logvar / 2) * np.random.default_rng(0).normal(size=(2000, *mu.shape))
  rec = stats.norm.logpdf(np.asarray(x, np.float64), zs @ w.T + bias, np.sqrt(s2)).sum(-1)
  se = rec.std(0) / np.sqrt(num_samples)
  mag = np.abs(rec).mean(0)
  tol = 4 * se + (num_samples + 16) * EPS32 * mag
  assert np.all(np.abs(np.asarray(out['elbo'], np.float64) - log_px) <= tol)
  for k, chunk in ((1, 1), (37, 10), (40, 10), (5, 100)):
    got = vl.iwae_bound(encode, decode, x, jax.random.PRNGKey(2), likelihood='gaussian',
                        k=k, chunk_size=chunk)
    np.testing.assert_allclose(np.asarray(got), log_px, atol=2e-4, err_msg=f'k={k}')


def test_iwae_tightens_with_k_for_a_poor_proposal():
  encode, decode, x, log_px, _ = _exact_posterior_linear_model(seed=4, batch=200)

  def poor_encode(xx):  # Shifted and over-dispersed: the ELBO is far from log p(x).
    mu, logvar = encode(xx)
    return mu + 0.2, logvar + 0.7

  key = jax.random.PRNGKey(3)
  elbo = vl.elbo(poor_encode, decode, x, key, likelihood='gaussian', num_samples=2000)['elbo']
  gap_elbo = np.mean(log_px - np.asarray(elbo))
  assert gap_elbo > 0.3
  ks = (1, 10, 100, 5000)
  per_example = [log_px - np.asarray(vl.iwae_bound(
      poor_encode, decode, x, jax.random.fold_in(key, k), likelihood='gaussian', k=k,
      chunk_size=512)) for k in ks]
  gaps = [np.mean(g) for g in per_example]
  se1 = np.std(per_example[0]) / np.sqrt(len(log_px))
  # The gap shrinks with k (down to Monte Carlo noise of ~0.005 nats once it is ~0).
  assert gaps[0] > gaps[1] > 0.01 and all(g2 < g1 + 0.005 for g1, g2 in zip(gaps, gaps[1:])), gaps
  assert abs(gaps[0] - gap_elbo) < 4 * se1, (gaps[0], gap_elbo, se1)  # k=1: ELBO in expectation.
  assert abs(gaps[-1]) < 0.01, gaps  # Nearly exact at k = 5000.


def test_iwae_k1_is_unbiased_for_the_elbo():
  encode, decode, x, _, _ = _exact_posterior_linear_model(seed=5, batch=3)
  poor = lambda xx: (encode(xx)[0] - 0.3, encode(xx)[1] + 0.8)
  keys = jax.random.split(jax.random.PRNGKey(5), 4000)
  k1 = jax.vmap(lambda kk: vl.iwae_bound(poor, decode, x, kk, likelihood='gaussian', k=1))(keys)
  k1 = np.asarray(k1, np.float64)
  ref = np.asarray(vl.elbo(poor, decode, x, keys[0], likelihood='gaussian',
                           num_samples=100_000)['elbo'])
  se = k1.std(0) / np.sqrt(len(keys))
  assert np.all(np.abs(k1.mean(0) - ref) < 4 * se + 1e-3), (k1.mean(0), ref, se)


def test_bad_arguments_are_rejected():
  encode, decode, x, _, _ = _exact_posterior_linear_model()
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='k and chunk_size'):
    vl.iwae_bound(encode, decode, x, key, likelihood='gaussian', k=0)
  with pytest.raises(ValueError, match='num_samples'):
    vl.elbo(encode, decode, x, key, likelihood='gaussian', num_samples=0)
  with pytest.raises(ValueError, match='Unknown likelihood'):
    vl.elbo(encode, decode, x, key, likelihood='laplace')
