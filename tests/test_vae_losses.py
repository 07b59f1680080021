"""Variational losses against independent references (quadrature, scipy, closed forms)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxgen.losses import vae as vl

EPS32 = float(np.finfo(np.float32).eps)
U64 = float(np.finfo(np.float64).eps) / 2
# False-failure probability of each Monte Carlo check (seeds are fixed), and the matching
# two-sided number of standard errors (4.9).
P_FALSE = 1e-6
K_SE = float(stats.norm.isf(P_FALSE / 2))
# No standard normal draw in these tests exceeds E in magnitude: P(|N(0,1)| > 8) = 1.2e-15
# per draw, < 1e-8 over the ~1e7 draws here.
E = 8.0
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
    # 4 standard errors of the Monte Carlo mean (two-sided false-failure probability 6e-5 per
    # coordinate, seed fixed), plus each float32 sample's rounding: the
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


def gamma64(k):
  """gamma_k = k u / (1 - k u): relative error bound of k float64 roundings (Higham)."""
  return k * U64 / (1 - k * U64)


def _exact_posterior_linear_model(seed=0, d=6, q=2, batch=5, dtype=jnp.float32):
  """A linear-Gaussian model x = Wz + b + noise whose posterior is diagonal (W'W diagonal).

  Returns (encode, decode, x, exact log p(x)) with the encoder set to the exact posterior:
  q(z|x) = N(M^-1 W'(x - b), s2 M^-1), M = W'W + s2 I. ``dtype`` float64 needs
  ``jax.enable_x64`` around the calls.
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
  f32 = lambda a: jnp.asarray(a, dtype)

  def encode(xx):
    mu = (xx - f32(bias)) @ f32(v).T
    return mu, jnp.broadcast_to(f32(post_logvar), mu.shape)

  def decode(z):
    return z @ f32(w).T + f32(bias), f32(np.log(s2))

  return encode, decode, f32(x), log_px, (w, bias, s2)


def _posterior(x, w, bias, s2):
  """Exact posterior means [B, q] and log-variances [q] of the linear model, float64."""
  m = w.T @ w + s2 * np.eye(w.shape[1])
  return (np.asarray(x, np.float64) - bias) @ np.linalg.solve(m, w.T).T, np.log(
      s2 * np.diag(np.linalg.inv(m)))


def _log_weight_bound64(x, w, bias, s2, mu_shift=0.0, lv_shift=0.0):
  """Per example, |float64 log w(z) - exact| for w = p(x|z) p(z) / q(z|x), z = mu + s eps.

  q is the posterior shifted by (mu_shift, lv_shift); |eps| <= E. Each of the three log
  densities is 0.5 sum (log 2 pi + lv + r^2) over its dimensions: <= 10 roundings per term
  and a D-term sum, gamma(D + 10) of the sum of the terms' magnitudes, where r^2 = (a - m)^2 /
  s^2 also carries the cancellation in a - m: <= gamma(2) (|a| + |m|) |a - m| / s^2. The
  encoder mean (a D-term dot and the shift) is off by gamma(D + 3) of its magnitude, which
  moves log q by |z - mu| / s^2 per unit, i.e. E / s; the decoder mean m = W z + b by
  gamma(q + 2) of its magnitude, moving log p(x|z) by |x - m| / s2 per unit.
  """
  x = np.asarray(x, np.float64)
  d, q = w.shape
  mu0, lv0 = _posterior(x, w, bias, s2)
  v = np.linalg.solve(w.T @ w + s2 * np.eye(q), w.T)
  mu, lv = mu0 + mu_shift, lv0 + lv_shift
  sd = np.exp(lv / 2)
  z_mag = np.abs(mu) + E * sd  # [B, q]
  m_mag = z_mag @ np.abs(w).T + np.abs(bias)  # |W z + b| <= [B, d]
  resid = np.abs(x - mu @ w.T - bias) + (E * sd) @ np.abs(w).T  # |x - W z - b| <= [B, d]
  log_q = np.sum(np.log(2 * np.pi) + np.abs(lv) + E ** 2 + 2 * E * z_mag / sd, 1)
  log_pz = np.sum(np.log(2 * np.pi) + z_mag ** 2, 1)
  log_px_z = np.sum(np.log(2 * np.pi) + abs(np.log(s2)) + (resid + 2 * (np.abs(x) + m_mag))
                    * resid / s2, 1)
  terms = gamma64(d + 10) * 0.5 * (log_q + log_pz + log_px_z)
  mu_err = gamma64(d + 3) * ((np.abs(x) + np.abs(bias)) @ np.abs(v).T + abs(mu_shift))
  m_err = gamma64(q + 2) * m_mag
  return terms + np.sum(E / sd * mu_err, 1) + np.sum(resid / s2 * m_err, 1)


def _logpdf_bound64(x, w, bias, s2):
  """|scipy's float64 log N(x; b, C) - exact|, C = WW' + s2 I: the log-determinant and the
  Mahalanobis term from a backward-stable factorization, gamma(D) cond(C) relative each."""
  x = np.asarray(x, np.float64)
  c = w @ w.T + s2 * np.eye(len(bias))
  maha = np.einsum('bi,ij,bj->b', x - bias, np.linalg.inv(c), x - bias)
  return gamma64(len(bias)) * np.linalg.cond(c) * (len(bias) + maha) + gamma64(4) * (
      len(bias) * np.log(2 * np.pi) + abs(np.linalg.slogdet(c)[1]) + maha)


def _iwae_lse_bound64(k, chunk, value):
  """float64 rounding of the chunked log-mean-exp of k log weights equal up to delta:
  per chunk a max, c exps and a c-term sum (gamma(c + 3) in the log) and a logaddexp onto the
  running total (2 roundings of |value|); the final - log k one more."""
  chunks = -(-k // chunk)
  return chunks * (gamma64(min(k, chunk) + 3) + 2 * U64 * np.abs(value)) + 2 * U64 * (
      np.abs(value) + np.log(k))


def test_elbo_and_iwae_are_exact_with_the_exact_posterior():
  # With q = p(z|x), every importance weight equals p(x): ELBO = IWAE = log p(x) for any k,
  # including a k that leaves a partial last chunk (37 = 3 * 10 + 7).
  # The ELBO with analytic KL is exact only in expectation (its reconstruction term is a
  # Monte Carlo average), so it is checked with many samples.
  encode, decode, x, log_px, (w, bias, s2) = _exact_posterior_linear_model()
  num_samples = 20_000
  out = vl.elbo(encode, decode, x, jax.random.PRNGKey(1), likelihood='gaussian',
                num_samples=num_samples)
  # Tolerance: 4 standard errors (two-sided false-failure probability 6e-5 per example, seed
  # fixed) of the num_samples-sample mean of log p(x|z), z ~ q, with the
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
  # The IWAE identity is checked in float64, where every weight equals p(x) up to the float64
  # rounding of the three log densities (_log_weight_bound64) and of the log-mean-exp.
  with jax.enable_x64(True):
    encode, decode, x, log_px, (w, bias, s2) = _exact_posterior_linear_model(dtype=jnp.float64)
    delta = _log_weight_bound64(x, w, bias, s2)
    for k, chunk in ((1, 1), (37, 10), (40, 10), (5, 100)):
      got = vl.iwae_bound(encode, decode, x, jax.random.PRNGKey(2), likelihood='gaussian',
                          k=k, chunk_size=chunk)
      assert got.dtype == jnp.float64
      tol = delta + _iwae_lse_bound64(k, chunk, log_px) + _logpdf_bound64(x, w, bias, s2)
      assert np.all(np.abs(np.asarray(got) - log_px) <= tol), (k, np.asarray(got) - log_px, tol)
    # A proposal off the posterior by 1e-6 of its sd makes the single weight vary with z by
    # ~1e-6: far outside the bound (~1e-12), so the bound can fail.
    sd = np.exp(_posterior(x, w, bias, s2)[1] / 2)
    off = lambda xx: (encode(xx)[0] + jnp.asarray(1e-6 * sd), encode(xx)[1])
    got = vl.iwae_bound(off, decode, x, jax.random.PRNGKey(2), likelihood='gaussian', k=1)
    assert np.max(np.abs(np.asarray(got) - log_px) / tol) > 100


def _proposal_moments(post_logvar, mu_shift, lv_shift):
  """KL(q || p(z|x)) and E_q[w^n] (n = 2, 3), w = p(z|x) / q(z|x), for the shifted proposal.

  Both are the same for every x here (q is the posterior moved by a fixed shift and widened
  by a fixed factor). KL in closed form; the moments by quadrature per dimension (the
  dimensions are independent), an independent check of nothing but the integrals.
  """
  kl, m2, m3 = 0.0, 1.0, 1.0
  for lv in post_logvar:
    s_p, s_q = np.exp(lv / 2), np.exp((lv + lv_shift) / 2)
    kl += 0.5 * (-lv_shift + np.exp(lv_shift) + mu_shift ** 2 / s_p ** 2 - 1)
    p, q = stats.norm(0.0, s_p), stats.norm(mu_shift, s_q)
    for n in (2, 3):
      val, err = integrate.quad(lambda z: np.exp(n * p.logpdf(z) + (1 - n) * q.logpdf(z)),
                                -30 * s_q, 30 * s_q, epsabs=0, epsrel=1e-10)
      assert err < 1e-8 * val
      m2, m3 = (m2 * val, m3) if n == 2 else (m2, m3 * val)
  return kl, m2, m3


def test_iwae_tightens_with_k_for_a_poor_proposal():
  # float64 (jax.enable_x64): rounding (<= 1e-10 here by _log_weight_bound64 and
  # _iwae_lse_bound64) is negligible next to the Monte Carlo errors the checks are built on.
  mu_shift, lv_shift = 0.2, 0.7  # Shifted and over-dispersed: the ELBO is far from log p(x).
  with jax.enable_x64(True):
    encode, decode, x, log_px, (w, bias, s2) = _exact_posterior_linear_model(
        seed=4, batch=1000, dtype=jnp.float64)

    def poor_encode(xx):
      mu, logvar = encode(xx)
      return mu + mu_shift, logvar + lv_shift

    key = jax.random.PRNGKey(3)
    elbo = vl.elbo(poor_encode, decode, x, key, likelihood='gaussian', num_samples=2000)['elbo']
    ks = (1, 10, 100, 5000)
    per_example = [log_px - np.asarray(vl.iwae_bound(
        poor_encode, decode, x, jax.random.fold_in(key, k), likelihood='gaussian', k=k,
        chunk_size=512)) for k in ks]
    rounding = max(np.max(_log_weight_bound64(x, w, bias, s2, mu_shift, lv_shift)
                          + _iwae_lse_bound64(5000, 512, log_px)), 1e-300)
  assert rounding < 1e-9
  kl, m2, m3 = _proposal_moments(_posterior(x, w, bias, s2)[1], mu_shift, lv_shift)
  chi2 = m2 - 1  # Var_q(w) / E_q(w)^2
  assert kl > 0.3  # The proposal is far from the posterior: the checks below are not trivial.
  # Every example's gap has the same expectation (see _proposal_moments), so the spread over
  # the examples is Monte Carlo noise alone: se = sd / sqrt(n), and K_SE se bounds each mean.
  n = len(log_px)
  gap_elbo = log_px - np.asarray(elbo)
  se = lambda g: np.std(g) / np.sqrt(n)
  gaps = [np.mean(g) for g in per_example]
  # ELBO and the k = 1 IWAE: both log p(x) - KL(q || p(z|x)) in expectation.
  assert abs(np.mean(gap_elbo) - kl) <= K_SE * se(gap_elbo) + rounding, (gap_elbo.mean(), kl)
  assert abs(gaps[0] - kl) <= K_SE * se(per_example[0]) + rounding, (gaps[0], kl)
  # k = 10 is significantly tighter than k = 1, and no larger k is significantly looser.
  sd_diff = lambda i, j: np.sqrt(se(per_example[i]) ** 2 + se(per_example[j]) ** 2)
  assert gaps[0] - gaps[1] > K_SE * sd_diff(0, 1), gaps
  for i in range(len(ks) - 1):
    assert gaps[i + 1] < gaps[i] + K_SE * sd_diff(i, i + 1) + 2 * rounding, gaps
  # Large k: E[gap_k] = chi2 / (2k) + c / k^2 + O(k^-3) (delta method on log of the mean of k
  # weights), |c| = |mu_3 / 3 - 3 sigma^4 / 4| <= E w^3 + 3 E w^2 + 2 + chi2^2.
  for i, k in enumerate(ks):
    if k >= 100:
      remainder = (m3 + 3 * m2 + 2 + chi2 ** 2) / k ** 2
      assert abs(gaps[i] - chi2 / (2 * k)) <= K_SE * se(per_example[i]) + remainder + rounding, (
          k, gaps[i], chi2 / (2 * k))


def test_iwae_k1_is_unbiased_for_the_elbo():
  mu_shift, lv_shift = -0.3, 0.8
  with jax.enable_x64(True):  # float64: rounding (< 1e-9) is negligible, as above.
    encode, decode, x, _, (w, bias, s2) = _exact_posterior_linear_model(
        seed=5, batch=3, dtype=jnp.float64)
    poor = lambda xx: (encode(xx)[0] + mu_shift, encode(xx)[1] + lv_shift)
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    k1 = jax.vmap(lambda kk: vl.iwae_bound(poor, decode, x, kk, likelihood='gaussian', k=1))(keys)
    k1 = np.asarray(k1, np.float64)
    ref_samples = 100_000
    ref = np.asarray(vl.elbo(poor, decode, x, keys[0], likelihood='gaussian',
                             num_samples=ref_samples)['elbo'])
  assert np.max(_log_weight_bound64(x, w, bias, s2, mu_shift, lv_shift)) < 1e-9
  # Both estimate the ELBO: k1 over 4000 keys (its own spread), ref over 100,000 samples of
  # log p(x|z), z ~ q, whose spread is measured independently in numpy (2,000 draws).
  mu, lv = _posterior(x, w, bias, s2)
  zs = mu + mu_shift + np.exp((lv + lv_shift) / 2) * np.random.default_rng(0).normal(
      size=(2000, *mu.shape))
  rec = stats.norm.logpdf(np.asarray(x), zs @ w.T + bias, np.sqrt(s2)).sum(-1)
  se = np.sqrt(k1.var(0) / len(keys) + rec.var(0) / ref_samples)
  assert np.all(np.abs(k1.mean(0) - ref) < K_SE * se + 2e-9), (k1.mean(0), ref, se)
  # A bias of a quarter of the ELBO's gap to log p(x) (KL(q || p(z|x)), ~1.2 nats) would be
  # caught: the bound is ~0.18.
  assert np.all(K_SE * se < 0.25 * _proposal_moments(lv, mu_shift, lv_shift)[0])


def test_bad_arguments_are_rejected():
  encode, decode, x, _, _ = _exact_posterior_linear_model()
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='k and chunk_size'):
    vl.iwae_bound(encode, decode, x, key, likelihood='gaussian', k=0)
  with pytest.raises(ValueError, match='num_samples'):
    vl.elbo(encode, decode, x, key, likelihood='gaussian', num_samples=0)
  with pytest.raises(ValueError, match='Unknown likelihood'):
    vl.elbo(encode, decode, x, key, likelihood='laplace')
