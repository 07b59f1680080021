"""Variational losses: Gaussian KL, likelihoods on logits, the ELBO and the IWAE bound.

Everything here is a pure function of arrays (or of the ``encode``/``decode`` callables the
caller closes over its parameters), so it can be jitted and differentiated.

Conventions
- Per-example quantities have shape ``[B]``: element-wise terms are summed over every axis
  after the batch axis (pixels, channels, latent dimensions).
- ``encode(x) -> (mu, logvar)`` returns the diagonal Gaussian q(z|x), both ``[B, D]``.
- ``decode(z) -> (loc, logvar)`` takes ``z`` of shape ``[S * B, D]`` in *sample-major*
  order (row ``s * B + b`` is sample ``s`` of example ``b``) and returns the parameters of
  p(x|z): for ``likelihood='bernoulli'`` ``loc`` holds logits and ``logvar`` is ignored; for
  ``'gaussian'`` ``loc`` is the mean and ``logvar`` the log-variance (anything that
  broadcasts against ``loc``, e.g. a learned scalar). A conditional model tiles its labels
  with ``jnp.tile(y, S)`` inside ``decode``.
- Targets ``x`` live where the likelihood is defined: [0, 1] for Bernoulli (binary, or grey
  levels used as soft targets), any real values for Gaussian.

Log-probabilities are natural logs (nats).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)
LIKELIHOODS = ('bernoulli', 'gaussian')

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Decode = Callable[[jax.Array], tuple[jax.Array, jax.Array | None]]


def sum_per_example(x: jax.Array) -> jax.Array:
  """Sums every axis after the first: ``[B, ...] -> [B]``."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def reparameterize(rng: jax.Array, mu: jax.Array, logvar: jax.Array,
                   num_samples: int | None = None) -> jax.Array:
  """z = mu + sigma * eps with eps ~ N(0, I): differentiable in ``mu`` and ``logvar``.

  With ``num_samples`` S the result has a leading sample axis: ``[S, *mu.shape]``.
  """
  shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
  eps = jax.random.normal(rng, shape, mu.dtype)
  return mu + jnp.exp(0.5 * logvar) * eps


def kl_diag_gaussians(mu_q, logvar_q, mu_p=0.0, logvar_p=0.0) -> jax.Array:
  """Element-wise KL( N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p) ), not summed."""
  return 0.5 * (logvar_p - logvar_q
                + (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p) - 1.0)


def kl_to_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL( q(z|x) || N(0, I) ) per example, analytically: ``[B, D] -> [B]``."""
  return sum_per_example(0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar))


def log_normal_diag(x, mu, logvar) -> jax.Array:
  """Element-wise log N(x; mu, e^logvar)."""
  return -0.5 * (LOG_2PI + logvar + jnp.square(x - mu) * jnp.exp(-logvar))


def bernoulli_log_prob(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Element-wise t * log sigmoid(l) + (1 - t) * log(1 - sigmoid(l)), computed on logits.

  Equal to ``t * l - softplus(l)``; ``jax.nn.softplus`` is ``logaddexp(l, 0)``, which neither
  overflows nor loses precision for large |logit| (e.g. 100 or more) and has an exact
  gradient everywhere (sigmoid(l), also at l = 0, unlike a hand-written max/abs form).
  Targets may be soft (grey levels in [0, 1]): then this is minus the cross-entropy.
  """
  return targets * logits - jax.nn.softplus(logits)


def gaussian_log_prob(x, mean, logvar) -> jax.Array:
  """Element-wise Gaussian log-density (alias of ``log_normal_diag`` for decoders)."""
  return log_normal_diag(x, mean, logvar)


def check_likelihood(likelihood: str):
  if likelihood not in LIKELIHOODS:
    raise ValueError(f'Unknown likelihood {likelihood!r}; accepted: {", ".join(LIKELIHOODS)}.')


def log_likelihood(likelihood: str, x: jax.Array, loc: jax.Array,
                   logvar: jax.Array | None = None) -> jax.Array:
  """log p(x | z) per example ``[B]`` for decoder outputs ``(loc, logvar)`` of batch B."""
  check_likelihood(likelihood)
  if likelihood == 'bernoulli':
    return sum_per_example(bernoulli_log_prob(loc, x))
  if logvar is None:
    raise ValueError('The Gaussian likelihood needs a log-variance from the decoder; got None.')
  return sum_per_example(gaussian_log_prob(x, loc, jnp.broadcast_to(logvar, loc.shape)))


def _sampled_log_likelihood(likelihood, x, decode, z):
  """log p(x | z_s) for sample-major z of shape [S, B, D] -> [S, B]."""
  s, b = z.shape[:2]
  loc, logvar = decode(z.reshape(s * b, *z.shape[2:]))
  xs = jnp.broadcast_to(x[None], (s, *x.shape)).reshape(loc.shape)
  if likelihood == 'bernoulli':
    terms = bernoulli_log_prob(loc, xs)
  else:
    if logvar is None:
      raise ValueError('The Gaussian likelihood needs a log-variance from the decoder; got None.')
    terms = gaussian_log_prob(xs, loc, jnp.broadcast_to(logvar, loc.shape))
  return jnp.sum(terms.reshape(s, b, -1), axis=2)


def elbo(encode: Encode, decode: Decode, x: jax.Array, rng: jax.Array, *,
         likelihood: str, num_samples: int = 1) -> dict:
  """The ELBO per example: E_q[log p(x|z)] (Monte Carlo, reparameterized) - KL (analytic).

  This is Kingma & Welling's second estimator (SGVB with analytic KL). Returns a dict of
  ``[B]`` arrays: ``elbo``, ``log_lik`` (the reconstruction term) and ``kl``, plus ``mu`` and
  ``logvar`` of q(z|x).
  """
  check_likelihood(likelihood)
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1; got {num_samples}.')
  mu, logvar = encode(x)
  z = reparameterize(rng, mu, logvar, num_samples)
  log_lik = jnp.mean(_sampled_log_likelihood(likelihood, x, decode, z), axis=0)
  kl = kl_to_standard_normal(mu, logvar)
  return {'elbo': log_lik - kl, 'log_lik': log_lik, 'kl': kl, 'mu': mu, 'logvar': logvar}


def iwae_bound(encode: Encode, decode: Decode, x: jax.Array, rng: jax.Array, *,
               likelihood: str, k: int, chunk_size: int = 100) -> jax.Array:
  """Importance-weighted bound (Burda et al. 2015) per example ``[B]``:

      log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x).

  It is a lower bound on log p(x) (tight as k grows), equal in expectation to the ELBO for
  k = 1. Samples are drawn ``chunk_size`` at a time inside a ``lax.scan`` that carries a
  running log-sum-exp, so memory is O(chunk_size * B) whatever k is (k = 5,000 is the usual
  evaluation). Chunk i uses ``fold_in(rng, i)``; a last partial chunk is masked out.
  """
  check_likelihood(likelihood)
  if k < 1 or chunk_size < 1:
    raise ValueError(f'k and chunk_size must be >= 1; got k={k}, chunk_size={chunk_size}.')
  chunk = min(chunk_size, k)
  num_chunks = -(-k // chunk)
  mu, logvar = encode(x)

  def body(running, i):
    z = reparameterize(jax.random.fold_in(rng, i), mu, logvar, chunk)  # [c, B, D]
    log_pxz = _sampled_log_likelihood(likelihood, x, decode, z)
    log_pz = jnp.sum(log_normal_diag(z, 0.0, 0.0).reshape(chunk, z.shape[1], -1), axis=2)
    log_qz = jnp.sum(log_normal_diag(z, mu, logvar).reshape(chunk, z.shape[1], -1), axis=2)
    log_w = log_pxz + log_pz - log_qz
    valid = (i * chunk + jnp.arange(chunk)) < k
    log_w = jnp.where(valid[:, None], log_w, -jnp.inf)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

  init = jnp.full(x.shape[:1], -jnp.inf, mu.dtype)
  total, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return total - math.log(k)
