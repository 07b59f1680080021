"""A linear-Gaussian VAE fitted to probabilistic-PCA data, checked against closed forms.

Tipping & Bishop (1999): for x = Wz + mu + eps, z ~ N(0, I_q), eps ~ N(0, s2 I_d), the
maximum-likelihood fit has mu = sample mean, s2 = mean of the d - q smallest eigenvalues
of the sample covariance S, W = U_q (L_q - s2 I)^1/2 R, and log-likelihood
-N/2 (d log 2pi + log|C| + tr(C^-1 S)), C = WW' + s2 I. The variational family of
``LinearGaussianVAE`` contains the exact posterior at that optimum, so the trained ELBO must
come within 1 % of it; the IWAE bound with k = 5,000 must match the exact marginal
likelihood of the fitted model, N(x; b, WW' + s2 I), within 0.1 nats per example.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from jaxgen import optim
from jaxgen.families import base, vae
from jaxgen.models import vae as vae_models

D, Q, N = 8, 3, 1000
STEPS = 3000


def ppca_data(seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D, Q)) * np.array([2.0, 1.5, 1.0])
  x = rng.normal(size=(N, Q)) @ w.T + rng.normal(size=D) + 0.7 * rng.normal(size=(N, D))
  return x.astype(np.float32)


def ppca_max_likelihood(x):
  """(mean, W_ML, s2_ML, mean log-likelihood per example) in closed form."""
  x = np.asarray(x, np.float64)
  xbar = x.mean(0)
  s = np.cov(x.T, bias=True)
  lam, u = np.linalg.eigh(s)
  lam, u = lam[::-1], u[:, ::-1]
  s2 = lam[Q:].mean()
  w = u[:, :Q] * np.sqrt(lam[:Q] - s2)
  c = w @ w.T + s2 * np.eye(D)
  _, logdet = np.linalg.slogdet(c)
  ll = -0.5 * (D * np.log(2 * np.pi) + logdet + np.trace(np.linalg.solve(c, s)))
  return xbar, w, s2, ll


def config():
  # linear_vae is trained on in-memory vectors, not through the engine (the VAE family refuses
  # it), so this config holds just the fields the family's step and evaluation read.
  return ml_collections.ConfigDict(dict(
      seed=0, model=dict(name='linear_vae', latent_dim=Q, data_dim=D, num_classes=0),
      optimizer=dict(lr=0.1, b1=0.9, b2=0.999, eps=1e-8, schedule='cosine',
                     decay_start_frac=0.0, final_lr_frac=0.01),
      train_samples=2, batch_size=N, num_steps=STEPS, steps_per_epoch=0, kl_warmup_steps=0,
      binarize='none', dequantize=False,
      eval=dict(elbo_samples=1000, iwae_k=5000, final_iwae_k=5000, iwae_chunk=1000,
                batch_size=500, binarize_seed=0)))


def fitted(params):
  w = np.asarray(params['decoder']['kernel'], np.float64).T
  b = np.asarray(params['decoder']['bias'], np.float64)
  s2 = float(np.exp(params['decoder_logvar']))
  return w, b, s2


def analytic_elbo(params, x):
  """E_q[log N(x; Wz + b, s2 I)] - KL(q || N(0, I)) in closed form for the linear model."""
  w, b, s2 = fitted(params)
  v = np.asarray(params['encoder']['kernel'], np.float64)
  c = np.asarray(params['encoder']['bias'], np.float64)
  var = np.exp(np.asarray(params['encoder_logvar'], np.float64))
  mu = np.asarray(x, np.float64) @ v + c
  resid = x - mu @ w.T - b
  rec = -0.5 * D * np.log(2 * np.pi * s2) - (np.sum(resid ** 2, 1) + np.sum(w ** 2 * var)) / (2 * s2)
  kl = 0.5 * np.sum(var + mu ** 2 - 1 - np.log(var), 1)
  return rec - kl


@pytest.fixture(scope='module')
def trained():
  x = ppca_data()
  cfg = config()
  vae_models.validate(cfg.model)
  optim.validate(cfg.optimizer)
  model, tx = vae_models.make_vae(cfg.model), vae.make_optimizer(cfg)
  # As the VAE family's init: the first half of PRNGKey(seed) for the weights.
  init_key, train_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
  state = base.new_state(train_key, {'vae': base.make_net(
      {'params': vae.init_params(cfg, model, init_key)}, tx)})
  step = jax.jit(vae.make_train_step(cfg, model, tx))
  batch = {'image': jnp.asarray(x)}
  for _ in range(STEPS):
    state, metrics = step(state, batch)
  assert float(metrics['finite']) == 1.0
  return cfg, model, x, state.nets['vae']['params']


def test_closed_form_ppca_is_the_maximum():
  x = ppca_data()
  xbar, w, s2, ll = ppca_max_likelihood(x)
  ref = lambda w, s2: stats.multivariate_normal(xbar, w @ w.T + s2 * np.eye(D)).logpdf(x).mean()
  # Two float64 evaluations of the same log-likelihood: log-determinants and solves with C
  # are backward stable (relative error D eps cond(C)), the per-example quadratic forms cost
  # D^2 roundings and the mean over N examples N more; each relative to |ll|-sized sums.
  c = w @ w.T + s2 * np.eye(D)
  rtol = 4 * (D * D + N) * np.finfo(np.float64).eps * np.linalg.cond(c)
  np.testing.assert_allclose(ll, ref(w, s2), rtol=rtol)
  rot, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(Q, Q)))
  np.testing.assert_allclose(ref(w @ rot, s2), ll, rtol=rtol)  # Rotation invariance.
  for w2, s22 in ((w * 1.05, s2), (w, s2 * 1.1), (w * 0.95, s2 * 0.9)):
    assert ref(w2, s22) < ll


def test_trained_elbo_reaches_ppca_max_likelihood(trained):
  cfg, model, x, params = trained
  _, _, s2_ml, ll_ml = ppca_max_likelihood(x)
  res = vae.evaluate_params(cfg, model, params, x, iwae_k=None)
  # The library's Monte Carlo ELBO agrees with the closed form for this model.
  np.testing.assert_allclose(res['elbo'], analytic_elbo(params, x).mean(), atol=0.01)
  gap = ll_ml - res['elbo']
  assert gap > -0.01  # A lower bound on the log-likelihood (up to Monte Carlo error) ...
  assert gap / abs(ll_ml) < 0.01, (res['elbo'], ll_ml)  # ... within 1 % of the maximum.
  # The fitted linear model itself is (nearly) the ML solution. Its largest directions are
  # weakly determined (the likelihood is flat in them), so compare likelihoods, not W.
  w, b, s2 = fitted(params)
  np.testing.assert_allclose(s2, s2_ml, rtol=0.03)
  ll_fit = stats.multivariate_normal(b, w @ w.T + s2 * np.eye(D)).logpdf(x).mean()
  assert ll_ml - 0.05 < ll_fit <= ll_ml + 1e-9, (ll_fit, ll_ml)
  assert ll_fit - res["elbo"] < 0.01  # Nearly tight: q matches the exact posterior.


@pytest.mark.parametrize('encoder', ['trained', 'degraded'])
def test_iwae_matches_exact_marginal_of_fitted_model(trained, encoder):
  cfg, model, x, params = trained
  if encoder == 'degraded':  # A worse proposal for the same fitted model: shifted, too wide.
    params = jax.tree.map(np.asarray, params)
    params['encoder_logvar'] = params['encoder_logvar'] + 1.0
    params['encoder']['bias'] = params['encoder']['bias'] + 0.3
  w, b, s2 = fitted(params)
  exact = stats.multivariate_normal(b, w @ w.T + s2 * np.eye(D)).logpdf(x)
  sub = slice(0, 300)
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.eval.elbo_samples = 100
  res = vae.evaluate_params(cfg, model, params, x[sub], iwae_k=5000)
  assert abs(res['iwae'] - exact[sub].mean()) < 0.1, (res['iwae'], exact[sub].mean())
  assert res['iwae'] >= res['elbo'] - 1e-3
  if encoder == 'degraded':  # The ELBO alone is far off here, so the check is not trivial.
    assert exact[sub].mean() - res['elbo'] > 1.0, (res['elbo'], exact[sub].mean())
