"""IS, FID and KID against closed forms and independent numpy/scipy implementations."""
import numpy as np
import pytest
import scipy.linalg

from jaxgen.metrics import scores


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
  assert res.mean == pytest.approx(num_classes, rel=1e-12)
  assert res.std == pytest.approx(0.0, abs=1e-9)


def test_is_one_hot_from_large_logits_is_stable():
  labels = np.arange(100) % 10
  logits = 1e4 * np.eye(10)[labels] - 5e3  # softmax saturates to exact one-hot in float64
  res = scores.inception_score(logits, num_splits=1)
  assert np.isfinite(res.mean) and res.mean == pytest.approx(10.0, rel=1e-12)


def test_is_identical_predictions_give_one():
  rng = np.random.default_rng(0)
  row = rng.normal(size=(1, 37)) * 3
  res = scores.inception_score(np.repeat(row, 50, axis=0), num_splits=5)
  assert res.mean == pytest.approx(1.0, abs=1e-12)


def test_is_unbalanced_one_hot_is_exp_entropy_of_label_frequencies():
  labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
  freq = np.array([0.6, 0.3, 0.1])
  res = scores.inception_score(probs=np.eye(3)[labels], num_splits=1)
  assert res.mean == pytest.approx(np.exp(-(freq * np.log(freq)).sum()), rel=1e-12)


@pytest.mark.parametrize('splits', [1, 3, 10])
def test_is_matches_reference_on_random_logits(splits):
  rng = np.random.default_rng(splits)
  logits = rng.normal(size=(503, 20)) * 4
  mean, std = reference_inception_score(logits, splits)
  res = scores.inception_score(logits.astype(np.float32), num_splits=splits)
  # float32 input is promoted, so compare to the reference on the same float32 values.
  mean, std = reference_inception_score(logits.astype(np.float32), splits)
  assert res.mean == pytest.approx(mean, rel=1e-10)
  assert res.std == pytest.approx(std, rel=1e-7, abs=1e-12)
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
  np.testing.assert_allclose(st.mu, x.astype(np.float32).astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(st.sigma, np.cov(x.astype(np.float32).astype(np.float64).T),
                             rtol=1e-12)
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
  assert abs(fid) < 1e-10 * np.trace(st.sigma)


def test_fid_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(3)
  d = 50
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  v1, v2 = rng.uniform(0.01, 4.0, size=d), rng.uniform(0.01, 4.0, size=d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  assert scores.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(
      expected, rel=1e-12)


def test_fid_one_dimensional_closed_form():
  # Frechet distance of 1-d Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
  assert scores.frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0, rel=1e-14)


@pytest.mark.parametrize('d', [8, 64, 256])
def test_fid_matches_scipy_sqrtm_reference(d):
  rng = np.random.default_rng(d)
  a = scores.gaussian_stats(random_features(rng, 4 * d, d))
  b = scores.gaussian_stats(random_features(rng, 4 * d, d, shift=0.3))
  ours = scores.fid_from_stats(a, b)
  ref = reference_fid(a.mu, a.sigma, b.mu, b.sigma)
  assert ours == pytest.approx(ref, rel=1e-6)


def test_fid_is_symmetric():
  rng = np.random.default_rng(5)
  a = scores.gaussian_stats(random_features(rng, 200, 40))
  b = scores.gaussian_stats(random_features(rng, 150, 40, shift=1.0))
  ab, ba = scores.fid_from_stats(a, b), scores.fid_from_stats(b, a)
  assert ab > 0
  assert ab == pytest.approx(ba, rel=1e-10)


def test_fid_invariant_to_shared_rotation_and_translation():
  rng = np.random.default_rng(6)
  x, y = random_features(rng, 300, 16), random_features(rng, 300, 16, shift=0.5)
  q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  t = rng.normal(size=16) * 10
  assert scores.fid_from_features(x @ q + t, y @ q + t) == pytest.approx(
      scores.fid_from_features(x, y), rel=1e-9)


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
  assert scores.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_rank_deficient_features_fewer_samples_than_dims():
  rng = np.random.default_rng(8)
  x, y = random_features(rng, 20, 100), random_features(rng, 20, 100, shift=0.2)
  sx = scores.gaussian_stats(x)
  assert np.linalg.matrix_rank(sx.sigma) < 100
  assert abs(scores.fid_from_stats(sx, sx)) < 1e-8 * np.trace(sx.sigma)
  fid = scores.fid_from_features(x, y)
  assert np.isfinite(fid) and fid > 0
  assert fid == pytest.approx(scores.fid_from_features(y, x), rel=1e-8)


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
  assert res.mean == pytest.approx(loop_mmd2_unbiased(x, y), rel=1e-10)
  assert res.std == pytest.approx(0.0, abs=1e-12)


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
