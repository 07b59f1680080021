"""IS, FID and KID against closed forms, numpy/scipy, and the reference packages' own functions.

The reference packages are torch-fidelity (``isc_features_to_metric``,
``fid_features_to_statistics``/``fid_statistics_to_metric``, ``kid_features_to_metric``) and
clean-fid (``frechet_distance``, ``kernel_distance``), fed the same features. Every tolerance
is a float64 rounding bound of the computation (helpers below), not a measured difference.
"""

import cleanfid.fid
import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity import metric_fid, metric_isc, metric_kid

from jaxgen.metrics import scores

EPS = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------- rounding bounds


def is_rel_bound(logits, num_splits=1):
  """Relative float64 error bound of one IS computation (and of the improved-gan reference).

  Per example, KL = sum_c p_c (log p_c - log q_c): log-softmax and the log of the split
  marginal each carry an absolute error of a few eps times B = (logit range) + log C, and the
  C-term sum adds at most C eps B (sum_c p_c = 1 keeps the weighted errors at that size). The
  mean over n = N / S examples adds n eps of the mean (all KL >= 0, mean KL <= B), and
  IS = exp(mean KL) turns an absolute error e of the exponent into a relative error e (plus
  one rounding). Hence (C + n + 6) eps B.
  """
  logits = np.asarray(logits, np.float64)
  n, c = logits.shape
  spread = np.max(logits.max(axis=1) - logits.min(axis=1))
  return (c + -(-n // num_splits) + 6) * EPS * (spread + np.log(c))


def _sqrt_sum_error(mu, delta):
  """max |sum_i sqrt(mu_i + e_i) - sum_i sqrt(mu_i)| over |e_i| <= delta: each term moves by at
  most min(delta / sqrt(mu_i), sqrt(delta)) (the second for eigenvalues at the noise floor)."""
  mu = np.maximum(np.asarray(mu, np.float64), 0.0)
  with np.errstate(divide='ignore'):
    return float(np.sum(np.minimum(delta / np.sqrt(mu), np.sqrt(delta))))


def fid_bound(sigma1, sigma2, dmu2, *, symmetric=True):
  """Absolute float64 error bound of tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2) + |dmu|^2.

  The eigenvalues mu_i of S1 S2 (those of S1^1/2 S2 S1^1/2) come out of a backward-stable
  eigensolver, after forming the product(s), with absolute errors up to
  delta = 3 D eps ||S1|| ||S2|| (a backward error of D eps ||.|| for each of: S1^1/2, the
  product, the final eigendecomposition). jaxgen's route is symmetric, so by Weyl that is the
  eigenvalue error. The references' route (``eigvals`` / ``sqrtm`` of the non-symmetric
  S1 S2 = V diag(mu) V^-1, V = S1^1/2 U) multiplies it by kappa(V) = sqrt(kappa(S1)) (Bauer-Fike;
  likewise with S2, so the smaller of the two); ``symmetric=False`` gives that bound. Then
  the square roots (see _sqrt_sum_error), twice, plus D eps of each trace and of |dmu|^2.
  """
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = s1.shape[0]
  l1, l2 = np.linalg.eigvalsh(s1), np.linalg.eigvalsh(s2)
  delta = 3 * d * EPS * l1[-1] * l2[-1]
  if not symmetric:
    kappa = min(l1[-1] / l1[0], l2[-1] / l2[0]) if min(l1[0], l2[0]) > 0 else np.inf
    delta *= np.sqrt(kappa)
  w, v = np.linalg.eigh(s1)
  r1 = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
  mu = np.linalg.eigvalsh(r1 @ s2 @ r1)  # the mu_i, to first order
  return 2 * _sqrt_sum_error(mu, delta) + d * EPS * (dmu2 + np.trace(s1) + np.trace(s2))


def kid_bound(x, y):
  """Absolute float64 error bound of one unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.

  Each kernel value: the length-d dot product is off by at most d eps |a||b| / d and the cube
  triples the relative error of g = a.b / d + 1, so with G = max (|a||b| / d + 1) each k is
  off by (3 d + 8) eps G^3 at most. The three means (Kxx, Kyy off-diagonal, Kxy) add m^2 eps
  G^3 each (worst-case summation of m^2 terms), with weights 1, 1, 2.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  d, m = x.shape[1], max(len(x), len(y))
  norms = np.concatenate([np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)])
  g = norms.max() ** 2 / d + 1.0
  return 4 * (3 * d + 8 + m * m) * EPS * g ** 3


# ---------------------------------------------------------------------------- IS


def reference_inception_score(logits, splits):
  """The improved-gan reference code, verbatim in spirit: softmax, then np.log, float64."""
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  preds = e / e.sum(axis=1, keepdims=True)
  out = []
  for i in range(splits):
    part = preds[(i * preds.shape[0] // splits):((i + 1) * preds.shape[0] // splits), :]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    out.append(np.exp(np.mean(np.sum(kl, 1))))
  return np.mean(out), np.std(out)


@pytest.mark.parametrize('num_classes', [2, 10, 1008])
def test_is_balanced_one_hot_gives_num_classes(num_classes):
  labels = np.tile(np.arange(num_classes), 3)
  probs = np.eye(num_classes)[labels]
  res = scores.inception_score(probs=probs, num_splits=3)  # each split holds every class once
  # log p = 0, log q = -log C, IS = exp(log C): the roundings of the log, the C-term sum, the
  # mean and the exp, (log C + C + n + 4) eps relative (C = n here); std over equal values.
  rel = (np.log(num_classes) + 2 * num_classes + 4) * EPS
  assert res.mean == pytest.approx(num_classes, rel=rel, abs=0)
  assert res.std <= rel * num_classes


def test_is_one_hot_from_large_logits_is_stable():
  labels = np.arange(100) % 10
  logits = 1e4 * np.eye(10)[labels] - 5e3  # softmax saturates to exact one-hot in float64
  res = scores.inception_score(logits, num_splits=1)
  assert np.isfinite(res.mean)
  assert res.mean == pytest.approx(10.0, rel=is_rel_bound(logits), abs=0)


def test_is_identical_predictions_give_one():
  rng = np.random.default_rng(0)
  row = rng.normal(size=(1, 37)) * 3
  logits = np.repeat(row, 50, axis=0)
  res = scores.inception_score(logits, num_splits=5)
  assert res.mean == pytest.approx(1.0, rel=is_rel_bound(logits, 5), abs=0)


def test_is_unbalanced_one_hot_is_exp_entropy_of_label_frequencies():
  labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
  freq = np.array([0.6, 0.3, 0.1])
  res = scores.inception_score(probs=np.eye(3)[labels], num_splits=1)
  # 0/1 probabilities: only the marginal's logs, the 3-term sum, the mean of 10 and the exp
  # round: (3 + 10 + 6) eps relative times the largest |log| (log 10).
  assert res.mean == pytest.approx(np.exp(-(freq * np.log(freq)).sum()),
                                   rel=(3 + 10 + 6) * EPS * np.log(10), abs=0)


@pytest.mark.parametrize('splits', [1, 3, 10])
def test_is_matches_reference_on_random_logits(splits):
  rng = np.random.default_rng(splits)
  logits = rng.normal(size=(503, 20)) * 4
  res = scores.inception_score(logits.astype(np.float32), num_splits=splits)
  # float32 input is promoted, so compare to the reference on the same float32 values.
  mean, std = reference_inception_score(logits.astype(np.float32), splits)
  rel = 2 * is_rel_bound(logits, splits)  # two float64 implementations
  assert res.mean == pytest.approx(mean, rel=rel, abs=0)
  # std over splits is 1-Lipschitz in the split scores, each off by at most rel * IS_max.
  assert abs(res.std - std) <= rel * 20.0
  assert 1.0 <= res.mean <= 20.0


def test_is_rejects_bad_input():
  with pytest.raises(ValueError, match='exactly one'):
    scores.inception_score()
  with pytest.raises(ValueError, match='2-d'):
    scores.inception_score(np.zeros(10))
  with pytest.raises(ValueError, match='num_splits'):
    scores.inception_score(np.zeros((5, 3)), num_splits=6)
  with pytest.raises(ValueError, match='summing to 1'):
    scores.inception_score(probs=np.full((4, 3), 0.5))
  with pytest.raises(ValueError, match='NaN'):
    scores.inception_score(np.full((4, 3), np.nan))


# ---------------------------------------------------------------------------- FID


def reference_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """The TTUR / pytorch-fid formula with scipy.linalg.sqrtm of the product."""
  diff = mu1 - mu2
  covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  covmean = covmean.real
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_features(rng, n, d, shift=0.0):
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mix + shift


def test_gaussian_stats_match_numpy():
  x = random_features(np.random.default_rng(0), 300, 12)
  st = scores.gaussian_stats(x.astype(np.float32))
  # The same numpy calls on the same float64 values: the same bits.
  np.testing.assert_array_equal(st.mu, x.astype(np.float32).astype(np.float64).mean(0))
  np.testing.assert_array_equal(st.sigma, np.cov(x.astype(np.float32).astype(np.float64).T))
  assert st.mu.dtype == np.float64 and st.num_examples == 300


def test_gaussian_stats_save_load_roundtrip(tmp_path):
  st = scores.gaussian_stats(random_features(np.random.default_rng(1), 50, 5))
  path = str(tmp_path / 'stats.npz')
  st.save(path)
  back = scores.GaussianStats.load(path)
  np.testing.assert_array_equal(back.mu, st.mu)
  np.testing.assert_array_equal(back.sigma, st.sigma)
  assert back.num_examples == 50


def test_fid_zero_for_identical_stats():
  x = random_features(np.random.default_rng(2), 400, 32)
  st = scores.gaussian_stats(x)
  fid = scores.fid_from_stats(st, st)
  assert abs(fid) <= fid_bound(st.sigma, st.sigma, 0.0)


def test_fid_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(3)
  d = 50
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  v1, v2 = rng.uniform(0.01, 4.0, size=d), rng.uniform(0.01, 4.0, size=d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  got = scores.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  # Diagonal matrices: eigh is exact, so only the sums, products and square roots round -
  # a few D eps of the magnitudes summed (|dmu|^2, tr S1, tr S2, 2 sum sqrt(v1 v2)).
  scale = np.sum((mu1 - mu2) ** 2) + v1.sum() + v2.sum() + 2 * np.sqrt(v1 * v2).sum()
  assert abs(got - expected) <= 4 * d * EPS * scale


def test_fid_one_dimensional_closed_form():
  # Frechet distance of 1-d Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
  # sqrt(4) = 2, 2 * 9 * 2 = 36, sqrt(36) = 6: every step is exact in float64.
  assert scores.frechet_distance(1.0, 4.0, -2.0, 9.0) == 9.0 + 1.0


@pytest.mark.parametrize('d', [8, 64, 256])
def test_fid_matches_scipy_sqrtm_reference(d):
  rng = np.random.default_rng(d)
  a = scores.gaussian_stats(random_features(rng, 4 * d, d))
  b = scores.gaussian_stats(random_features(rng, 4 * d, d, shift=0.3))
  ours = scores.fid_from_stats(a, b)
  ref = reference_fid(a.mu, a.sigma, b.mu, b.sigma)
  dmu2 = np.sum((a.mu - b.mu) ** 2)
  tol = (fid_bound(a.sigma, b.sigma, dmu2)
         + fid_bound(a.sigma, b.sigma, dmu2, symmetric=False))  # ours + sqrtm's
  assert abs(ours - ref) <= tol, (ours, ref, tol)


def test_fid_is_symmetric():
  rng = np.random.default_rng(5)
  a = scores.gaussian_stats(random_features(rng, 200, 40))
  b = scores.gaussian_stats(random_features(rng, 150, 40, shift=1.0))
  ab, ba = scores.fid_from_stats(a, b), scores.fid_from_stats(b, a)
  assert ab > 0
  # Two symmetric routes (S1^1/2 S2 S1^1/2 and S2^1/2 S1 S2^1/2), each within fid_bound.
  assert abs(ab - ba) <= 2 * fid_bound(a.sigma, b.sigma, np.sum((a.mu - b.mu) ** 2))


def test_fid_invariant_to_shared_rotation_and_translation():
  rng = np.random.default_rng(6)
  x, y = random_features(rng, 300, 16), random_features(rng, 300, 16, shift=0.5)
  q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  t = rng.normal(size=16) * 10
  a, b = scores.gaussian_stats(x), scores.gaussian_stats(y)
  moved = scores.fid_from_features(x @ q + t, y @ q + t)
  # Exact arithmetic gives the same FID. Forming x q + t rounds each coordinate by
  # eta <= 16 eps |x|_2 (length-16 dot products with a unit column) + eps (|x q| + |t|), with
  # |x|_2 <= 4 |x|_max. Centred features move by <= 2 eta, so each covariance entry by
  # <= 4 eta (dev + eta) n / (n - 1), the nuclear norm of the change by D^2 times that, and
  # FID's derivative in S1 is I - (S1^-1/2 ...) of norm <= 1 + sqrt(||S2|| / lmin(S1)) (likewise
  # S2); the mean term moves by <= 2 |dmu| |dmu change| + |dmu change|^2, |change| <= 2 sqrt(D)
  # eta. Plus both FIDs' own rounding (fid_bound).
  d, n = 16, len(x)
  xmax, tmax = max(np.abs(x).max(), np.abs(y).max()), np.abs(t).max()
  eta = EPS * (16 * 4 * xmax + 4 * xmax + tmax)
  dev = max(np.abs(x - a.mu).max(), np.abs(y - b.mu).max())
  ls = np.concatenate([np.linalg.eigvalsh(a.sigma), np.linalg.eigvalsh(b.sigma)])
  lip = 1 + np.sqrt(ls.max() / ls.min())
  dmu, dmu_change = np.linalg.norm(a.mu - b.mu), 2 * np.sqrt(d) * eta
  tol = (2 * lip * d ** 2 * 4 * eta * (dev + eta) * n / (n - 1)
         + 2 * dmu * dmu_change + dmu_change ** 2 + 2 * fid_bound(a.sigma, b.sigma, dmu ** 2))
  assert abs(moved - scores.fid_from_stats(a, b)) <= tol


def test_fid_robust_to_nearly_singular_covariances():
  # Commuting covariances Q diag(a) Q^T and Q diag(b) Q^T with eigenvalues down to 1e-14:
  # tr sqrt(S1 S2) = sum sqrt(a b), so FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
  rng = np.random.default_rng(7)
  d = 128
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = np.logspace(-14, 0, d)
  b = rng.permutation(np.logspace(-14, 1, d))
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  # The eigenvalues of S1 S2 are a_i b_i exactly, so the bound uses the true ones: terms with
  # a_i b_i below delta = 3 D eps ||S1|| ||S2|| are only known to sqrt(delta).
  delta = 3 * d * EPS * a.max() * b.max()
  tol = 2 * _sqrt_sum_error(a * b, delta) + d * EPS * (
      np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum())
  assert abs(scores.frechet_distance(mu1, s1, mu2, s2) - expected) <= tol


def test_fid_rank_deficient_features_fewer_samples_than_dims():
  rng = np.random.default_rng(8)
  x, y = random_features(rng, 20, 100), random_features(rng, 20, 100, shift=0.2)
  sx = scores.gaussian_stats(x)
  assert np.linalg.matrix_rank(sx.sigma) < 100
  assert abs(scores.fid_from_stats(sx, sx)) <= fid_bound(sx.sigma, sx.sigma, 0.0)
  sy = scores.gaussian_stats(y)
  fid = scores.fid_from_stats(sx, sy)
  assert np.isfinite(fid) and fid > 0
  assert abs(fid - scores.fid_from_stats(sy, sx)) <= 2 * fid_bound(
      sx.sigma, sy.sigma, np.sum((sx.mu - sy.mu) ** 2))


def test_fid_rejects_bad_shapes_and_values():
  with pytest.raises(ValueError, match='Shapes'):
    scores.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match='NaN'):
    scores.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match='at least 2'):
    scores.gaussian_stats(np.zeros((1, 3)))


# ---------------------------------------------------------------------------- KID


def loop_mmd2_unbiased(x, y):
  """Direct double sums of the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
  d = x.shape[1]
  k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3
  m, n = len(x), len(y)
  sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return sxx + syy - 2 * sxy


def test_kid_matches_direct_double_sum_on_full_sets():
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.4
  # subset_size >= N: each "subset" is a permutation of the whole set, so every subset gives
  # the full-sample statistic.
  res = scores.kernel_distance(x, y, num_subsets=3, subset_size=100)
  assert res.subset_size == 12
  tol = kid_bound(x, y)  # covers both computations (factor 4 = 2 x 2 implementations)
  assert abs(res.mean - loop_mmd2_unbiased(x, y)) <= tol
  assert res.std <= tol  # three permutations of the same sets: equal up to rounding


def test_kid_is_unbiased_for_one_distribution():
  rng = np.random.default_rng(10)
  draws, biased = [], []
  for _ in range(400):
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    draws.append(scores.kernel_distance(x, y, num_subsets=1, subset_size=20).mean)
    kxx, kyy = scores.polynomial_kernel(x, x), scores.polynomial_kernel(y, y)
    biased.append(kxx.mean() + kyy.mean() - 2 * scores.polynomial_kernel(x, y).mean())
  draws, biased = np.array(draws), np.array(biased)
  se = draws.std() / np.sqrt(len(draws))
  assert abs(draws.mean()) < 4 * se
  # The biased V-statistic on the same draws is clearly positive: the test has power.
  assert biased.mean() > 10 * biased.std() / np.sqrt(len(biased))


def test_kid_positive_for_different_distributions():
  rng = np.random.default_rng(11)
  x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) * 1.5 + 0.3
  res = scores.kernel_distance(x, y, num_subsets=20, subset_size=100, seed=1)
  assert res.mean > 5 * res.std / np.sqrt(20) and res.mean > 0


def test_kid_reproducible_with_seed_and_validates():
  rng = np.random.default_rng(12)
  x, y = rng.normal(size=(50, 3)), rng.normal(size=(60, 3))
  a = scores.kernel_distance(x, y, num_subsets=5, subset_size=10, seed=3)
  b = scores.kernel_distance(x, y, num_subsets=5, subset_size=10, seed=3)
  assert a == b
  with pytest.raises(ValueError, match='dimensions'):
    scores.kernel_distance(x, rng.normal(size=(5, 4)))
  with pytest.raises(ValueError, match='at least 2'):
    scores.kernel_distance(x[:1], y)
  with pytest.raises(ValueError, match='num_subsets'):
    scores.kernel_distance(x, y, num_subsets=0)


# ---------------------------------------------------------------------------- reference packages


def conditioned_features(rng, n, d, shift=0.0, cond=100.0):
  """n samples of a d-dim Gaussian whose covariance has condition number ``cond``, rotated."""
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return (rng.normal(size=(n, d)) * np.logspace(0, np.log10(np.sqrt(cond)), d)) @ q.T + shift


@pytest.mark.parametrize('num_classes,splits', [(10, 1), (10, 10), (1008, 3)])
def test_is_matches_torch_fidelity(num_classes, splits):
  rng = np.random.default_rng(num_classes + splits)
  logits = rng.normal(size=(300, num_classes)) * 3
  rel = 2 * is_rel_bound(logits, splits)  # two float64 implementations
  ours = scores.inception_score(logits, num_splits=splits)
  ref = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=False)
  assert ours.mean == pytest.approx(ref[metric_isc.KEY_METRIC_ISC_MEAN], rel=rel, abs=0)
  # std over splits is 1-Lipschitz in the split scores, each <= C and off by <= rel of it.
  assert abs(ours.std - ref[metric_isc.KEY_METRIC_ISC_STD]) <= rel * num_classes
  # torch-fidelity shuffles the rows before splitting by default (RandomState(2020)); jaxgen,
  # like the improved-gan reference, splits in order. On the shuffled rows they agree again.
  shuffled = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=splits)
  perm = np.random.RandomState(2020).permutation(len(logits))
  ours = scores.inception_score(logits[perm], num_splits=splits)
  assert ours.mean == pytest.approx(shuffled[metric_isc.KEY_METRIC_ISC_MEAN], rel=rel, abs=0)
  assert abs(ours.std - shuffled[metric_isc.KEY_METRIC_ISC_STD]) <= rel * num_classes


@pytest.mark.parametrize('d', [16, 64, 128])
def test_fid_matches_torch_fidelity_and_clean_fid(d):
  rng = np.random.default_rng(100 + d)
  x, y = conditioned_features(rng, 4 * d, d), conditioned_features(rng, 4 * d, d, shift=0.3)
  a, b = scores.gaussian_stats(x), scores.gaussian_stats(y)
  ta = metric_fid.fid_features_to_statistics(torch.from_numpy(x))
  tb = metric_fid.fid_features_to_statistics(torch.from_numpy(y))
  # torch-fidelity's statistics are the same numpy calls on the same float64 values.
  np.testing.assert_array_equal(ta['mu'], a.mu)
  np.testing.assert_array_equal(ta['sigma'], a.sigma)
  ours = scores.fid_from_stats(a, b)
  tfid = metric_fid.fid_statistics_to_metric(ta, tb, False)[metric_fid.KEY_METRIC_FID]
  cfid = float(cleanfid.fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
  dmu2 = np.sum((a.mu - b.mu) ** 2)
  # Ours (symmetric eigh) + theirs (eigvals / sqrtm of the non-symmetric product).
  tol = fid_bound(a.sigma, b.sigma, dmu2) + fid_bound(a.sigma, b.sigma, dmu2, symmetric=False)
  assert abs(ours - tfid) <= tol, (ours, tfid, tol)
  assert abs(ours - cfid) <= tol, (ours, cfid, tol)


def test_torch_fidelity_means_float32_features_in_float32():
  """A documented difference of torch-fidelity, not an error of jaxgen.

  torch-fidelity's ``fid_features_to_statistics`` takes ``np.mean`` of the (float32) features
  its extractor returns in float32, and ``fid_statistics_to_metric`` forms ``|dmu|^2`` in
  float32; jaxgen promotes features to float64 first. The difference is bounded by that
  float32 rounding: each mean off by <= n eps32 max|x_j| (row-wise accumulation), moving
  |dmu|^2 by <= 2 |dmu| |delta| + |delta|^2 with |delta| <= 2 sqrt(D) of that, plus D eps32
  |dmu|^2 for the float32 dot product.
  """
  rng = np.random.default_rng(7)
  d, n = 64, 256
  x = conditioned_features(rng, n, d, shift=5.0).astype(np.float32)
  y = conditioned_features(rng, n, d, shift=5.3).astype(np.float32)
  ta = metric_fid.fid_features_to_statistics(torch.from_numpy(x))
  tb = metric_fid.fid_features_to_statistics(torch.from_numpy(y))
  assert ta['mu'].dtype == np.float32 and ta['sigma'].dtype == np.float64
  tfid = metric_fid.fid_statistics_to_metric(ta, tb, False)[metric_fid.KEY_METRIC_FID]
  a, b = scores.gaussian_stats(x), scores.gaussian_stats(y)
  ours = scores.fid_from_stats(a, b)
  delta = 2 * np.sqrt(d) * n * EPS32 * max(np.abs(x).max(), np.abs(y).max())
  dmu = np.linalg.norm(a.mu - b.mu)
  dmu2 = dmu ** 2
  tol = (2 * dmu * delta + delta ** 2 + d * EPS32 * (dmu + delta) ** 2
         + fid_bound(a.sigma, b.sigma, dmu2) + fid_bound(a.sigma, b.sigma, dmu2, symmetric=False))
  assert abs(ours - tfid) <= tol, (ours, tfid, tol)


@pytest.mark.parametrize('n,d', [(20, 8), (100, 64)])
def test_kid_matches_torch_fidelity_and_clean_fid_on_full_sets(n, d):
  rng = np.random.default_rng(n + d)
  x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.2 + 0.2
  # Subsets of the full size are permutations of the sets, and the unbiased MMD^2 does not
  # depend on the order: every subset gives the full-sample statistic, whatever random draws
  # each package makes (torch-fidelity: RandomState(seed); clean-fid: the global np.random).
  ours = scores.kernel_distance(x, y, num_subsets=3, subset_size=n)
  tf = metric_kid.kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y),
                                         kid_subsets=3, kid_subset_size=n, verbose=False)
  cf = cleanfid.fid.kernel_distance(x, y, num_subsets=3, max_subset_size=n)
  tol = kid_bound(x, y)  # covers two implementations
  assert abs(ours.mean - tf[metric_kid.KEY_METRIC_KID_MEAN]) <= tol
  assert abs(ours.mean - cf) <= tol
  assert abs(ours.std - tf[metric_kid.KEY_METRIC_KID_STD]) <= tol
  assert ours.mean > 100 * tol  # the sets differ: the comparison is not of two roundings of 0


def test_kid_subset_scheme_matches_torch_fidelity_in_distribution():
  """With subsets smaller than the sets the draws differ (default_rng vs RandomState), so the
  two KIDs are different averages of unbiased subset estimates of the same MMD^2: they agree
  within the standard errors of the two means (4 sigma each, combined)."""
  rng = np.random.default_rng(21)
  x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16)) * 1.1 + 0.1
  subsets = 50
  ours = scores.kernel_distance(x, y, num_subsets=subsets, subset_size=100, seed=0)
  tf = metric_kid.kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y),
                                         kid_subsets=subsets, kid_subset_size=100, verbose=False)
  se = np.hypot(ours.std, tf[metric_kid.KEY_METRIC_KID_STD]) / np.sqrt(subsets)
  assert abs(ours.mean - tf[metric_kid.KEY_METRIC_KID_MEAN]) <= 4 * se
  assert ours.mean > 4 * ours.std / np.sqrt(subsets)  # a clearly non-zero MMD^2
