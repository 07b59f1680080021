"""Inception Score, Frechet distance (FID) and kernel distance (KID), in float64 numpy.

These are the sample-quality numbers of the GAN literature, computed from an extractor's
outputs: class logits for IS, features for FID and KID. They work in any feature space (the
InceptionV3 port in :mod:`jaxgen.metrics.inception`, or a classifier trained in the project,
:mod:`jaxgen.metrics.classifier`). Everything here runs on the host in float64: the scores are
differences of large, nearly equal sums (FID) or exponentials of small averages (IS), and
float32 loses digits that papers report.

* :func:`inception_score` - Salimans et al. 2016: ``exp(E_x KL(p(y|x) || p(y)))`` over
  ``num_splits`` consecutive splits; mean and (population) standard deviation over splits,
  exactly as the reference code (improved-gan ``inception_score.py``) splits and averages.
* :func:`gaussian_stats` and :func:`frechet_distance` - Heusel et al. 2017:
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the matrix square root is
  taken as the sum of the square roots of the eigenvalues of the symmetric PSD matrix
  ``S1^(1/2) S2 S1^(1/2)`` (it has the eigenvalues of ``S1 S2``). That needs only symmetric
  eigendecompositions: no complex parts to discard and no ``eps * I`` retry as in the
  reference's ``scipy.linalg.sqrtm(S1 @ S2)``, which is unstable for (nearly) singular
  covariances, e.g. fewer samples than feature dimensions.
* :func:`kernel_distance` - Binkowski et al. 2018: the unbiased estimator of the squared MMD
  with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.

Agreement with the reference packages (``tests/test_scores.py``, on the same features):
torch-fidelity's ``isc_features_to_metric``/``fid_statistics_to_metric``/``kid_features_to_metric``
and clean-fid's ``frechet_distance``/``kernel_distance`` give the same IS, FID and KID to
float64 rounding (14-16 digits measured) when the covariances are full rank. Known
differences, all on the references' side: with rank-deficient covariances their
non-symmetric ``eigvals``/``sqrtm`` of ``S1 S2`` turn zero eigenvalues into noise whose square
roots add up (7-8 digits of agreement; FID of a set with itself -8e-5 instead of 0 at
D = 128, N = 60); torch-fidelity averages float32 features in float32 (FID moves by ~1e-9
relative); torch-fidelity shuffles rows before the IS splits (jaxgen splits in order, as the
improved-gan code); KID subsets come from other random generators (same statistic with
full-size subsets, same distribution otherwise).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special


def _as_2d_float64(name: str, x) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f'{name} must be a 2-d array [num_examples, dim]; got shape {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} contains NaN or infinite values; scores need finite inputs.')
  return x


# ---------------------------------------------------------------------------- Inception Score


@dataclasses.dataclass(frozen=True)
class InceptionScore:
  mean: float
  std: float
  num_splits: int


def _log_probs(logits=None, probs=None) -> np.ndarray:
  if (logits is None) == (probs is None):
    raise ValueError('Pass exactly one of logits= or probs= to inception_score.')
  if logits is not None:
    return special.log_softmax(_as_2d_float64('logits', logits), axis=1)
  p = _as_2d_float64('probs', probs)
  if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
    raise ValueError('probs must be non-negative rows summing to 1 (use logits= for raw '
                     'classifier outputs).')
  with np.errstate(divide='ignore'):
    return np.log(p / p.sum(axis=1, keepdims=True))


def inception_score(logits=None, *, probs=None, num_splits: int = 10) -> InceptionScore:
  """IS = exp(mean_x KL(p(y|x) || p(y))), per split, then mean and std over splits.

  Args:
    logits: [N, C] unnormalised class scores (softmax is taken in float64), or
    probs: [N, C] class probabilities (zeros allowed: 0 log 0 = 0).
    num_splits: S; the N examples are cut into S consecutive parts of N//S (+1) examples and
      p(y) is the marginal of each part, as in the reference code. Paper numbers use
      N = 50,000 and S = 10.

  Returns:
    InceptionScore(mean, std over splits (ddof=0), num_splits). Between 1 and C.
  """
  log_p = _log_probs(logits, probs)
  n = log_p.shape[0]
  if not isinstance(num_splits, int) or num_splits < 1 or num_splits > n:
    raise ValueError(f'num_splits must be an integer in [1, num_examples={n}]; '
                     f'got {num_splits!r}.')
  scores = []
  for i in range(num_splits):
    part = log_p[i * n // num_splits:(i + 1) * n // num_splits]
    log_marginal = special.logsumexp(part, axis=0) - np.log(len(part))
    p = np.exp(part)
    # p * (log p - log p(y)) with 0 * (-inf) := 0 for classes an image never predicts.
    with np.errstate(invalid='ignore'):
      terms = np.where(p > 0, p * (part - log_marginal), 0.0)
    scores.append(np.exp(np.mean(np.sum(terms, axis=1))))
  return InceptionScore(float(np.mean(scores)), float(np.std(scores)), num_splits)


# ---------------------------------------------------------------------------- FID


@dataclasses.dataclass(frozen=True)
class GaussianStats:
  """Mean and covariance (ddof=1) of a feature set, float64, with its sample count."""
  mu: np.ndarray
  sigma: np.ndarray
  num_examples: int

  def save(self, path: str) -> None:
    np.savez(path, mu=self.mu, sigma=self.sigma, num_examples=self.num_examples)

  @classmethod
  def load(cls, path: str) -> 'GaussianStats':
    with np.load(path) as f:
      return cls(f['mu'], f['sigma'], int(f['num_examples']))


def gaussian_stats(features) -> GaussianStats:
  """Fits a Gaussian to [N, D] features in float64 (unbiased covariance, as the reference)."""
  x = _as_2d_float64('features', features)
  if x.shape[0] < 2:
    raise ValueError(f'gaussian_stats needs at least 2 examples; got {x.shape[0]}.')
  return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]),
                       x.shape[0])


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
  """Eigenvalues of a PSD matrix with rounding noise removed.

  Eigenvalues below ``D * eps * max|w|`` are below what eigh resolves; they are set to 0
  (the numerical-rank threshold of ``np.linalg.matrix_rank``). Without this, the square
  roots of the noise (about 1e-8 relative each) add up in rank-deficient covariances.
  """
  tol = w.shape[0] * np.finfo(np.float64).eps * np.max(np.abs(w), initial=0.0)
  return np.where(w > tol, w, 0.0)


def _sym_sqrt_psd(a: np.ndarray) -> np.ndarray:
  """Square root of a symmetric PSD matrix through its eigendecomposition."""
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(_psd_eigvals(w))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
  """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, via eigh of S1^(1/2) S2 S1^(1/2)."""
  s1 = _sym_sqrt_psd(np.asarray(sigma1, np.float64))
  m = s1 @ np.asarray(sigma2, np.float64) @ s1
  w = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sum(np.sqrt(_psd_eigvals(w))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'Shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 '
                     f'{mu2.shape}, sigma2 {sigma2.shape}; need mu [D] and sigma [D, D].')
  for name, a in (('mu1', mu1), ('mu2', mu2), ('sigma1', sigma1), ('sigma2', sigma2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f'{name} contains NaN or infinite values.')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt_product(sigma1, sigma2))


def fid_from_stats(a: GaussianStats, b: GaussianStats) -> float:
  return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def fid_from_features(features1, features2) -> float:
  return fid_from_stats(gaussian_stats(features1), gaussian_stats(features2))


# ---------------------------------------------------------------------------- KID


@dataclasses.dataclass(frozen=True)
class KernelDistance:
  mean: float
  std: float
  num_subsets: int
  subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0):
  """k(x, y) = (x.y / d + coef0)^degree, the kernel of Binkowski et al. (gamma = 1/d)."""
  return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
  """Unbiased MMD^2 from kernel matrices (diagonals of Kxx, Kyy excluded)."""
  m, n = kxx.shape[0], kyy.shape[0]
  if m < 2 or n < 2:
    raise ValueError('The unbiased MMD needs at least 2 examples per set.')
  sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
  syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
  return float(sxx + syy - 2.0 * kxy.mean())


def kernel_distance(features1, features2, *, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> KernelDistance:
  """KID: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets.

  Each subset draws ``m = min(subset_size, N1, N2)`` examples without replacement from each
  set (the reference implementation's scheme); ``seed`` makes the draws reproducible.
  """
  x = _as_2d_float64('features1', features1)
  y = _as_2d_float64('features2', features2)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f'Feature dimensions differ: {x.shape[1]} vs {y.shape[1]}.')
  if not isinstance(num_subsets, int) or num_subsets < 1:
    raise ValueError(f'num_subsets must be a positive integer; got {num_subsets!r}.')
  m = min(subset_size, x.shape[0], y.shape[0])
  if m < 2:
    raise ValueError(f'KID needs at least 2 examples per set; got {x.shape[0]} and '
                     f'{y.shape[0]} (subset_size={subset_size}).')
  rng = np.random.default_rng(seed)
  values = np.empty(num_subsets)
  for i in range(num_subsets):
    a = x[rng.choice(x.shape[0], m, replace=False)]
    b = y[rng.choice(y.shape[0], m, replace=False)]
    values[i] = mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b),
                              polynomial_kernel(a, b))
  return KernelDistance(float(values.mean()), float(values.std()), num_subsets, m)
