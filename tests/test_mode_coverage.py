"""The PacGAN mode-coverage metric on hand-made sample sets with known answers."""
import math

import ml_collections
import numpy as np
import pytest

from jaxgen.data import toy2d
from jaxgen.metrics import mode_coverage as mc

EPS = float(np.finfo(np.float64).eps)
# reverse_kl = sum_k p_k log(K p_k) over K <= 25 modes in float64: each term costs a product,
# a log (1 ulp) and a product, the sum K - 1 adds: <= (K + 4) eps of sum |terms|, and each
# |term| <= p_k log K, so <= (K + 4) eps log K in all.
KL_ATOL = lambda k: (k + 4) * EPS * math.log(k)

RING = toy2d.ring_modes(8, 1.0)
GRID = toy2d.grid_modes(5, 2.0)


def test_mode_geometry_matches_the_protocol():
  # (cos, sin) of float64 angles: each coordinate within 1 ulp, the norm within 4 eps of 1;
  # a difference of two such points and its norm within 8 eps of 2 sin(pi / 8).
  np.testing.assert_allclose(np.linalg.norm(RING, axis=1), 1.0, rtol=4 * EPS, atol=0)
  # Neighbouring ring modes are 2 sin(pi/8) apart, evenly.
  gaps = np.linalg.norm(RING - np.roll(RING, 1, axis=0), axis=1)
  np.testing.assert_allclose(gaps, 2 * math.sin(math.pi / 8), rtol=0, atol=8 * EPS)
  assert {tuple(p) for p in GRID} == {(x, y) for x in (-4., -2., 0., 2., 4.)
                                      for y in (-4., -2., 0., 2., 4.)}


@pytest.mark.parametrize('modes', [RING, GRID], ids=['ring', 'grid'])
def test_samples_on_every_mode_evenly(modes):
  samples = np.repeat(modes, 7, axis=0)
  r = mc.mode_coverage(samples, modes, std=0.01)
  assert r.modes_covered == len(modes)
  assert r.hq_fraction == 1.0
  assert abs(r.reverse_kl) <= KL_ATOL(len(modes))
  np.testing.assert_array_equal(r.counts, 7)
  np.testing.assert_array_equal(r.hq_counts, 7)


@pytest.mark.parametrize('modes', [RING, GRID], ids=['ring', 'grid'])
def test_total_collapse_onto_one_mode(modes):
  samples = np.repeat(modes[3:4], 50, axis=0) + 0.001
  r = mc.mode_coverage(samples, modes, std=0.01)
  assert r.modes_covered == 1
  assert r.hq_fraction == 1.0
  assert r.reverse_kl == pytest.approx(math.log(len(modes)), rel=0, abs=KL_ATOL(len(modes)))


def test_low_quality_samples_cover_nothing():
  # Half-way to each ring mode: nearest to it, 0.5 away, far beyond 3 std = 0.03.
  samples = 0.5 * RING
  r = mc.mode_coverage(samples, RING, std=0.01)
  assert r.modes_covered == 0
  assert r.hq_fraction == 0.0
  np.testing.assert_array_equal(r.counts, 1)  # still spread evenly over nearest modes
  assert abs(r.reverse_kl) <= KL_ATOL(8)


def test_three_std_threshold_is_inclusive_and_sharp():
  std = 0.05
  direction = np.array([0.6, 0.8])
  inside = GRID[12] + 2.999 * std * direction
  outside = GRID[12] + 3.001 * std * direction
  assert mc.mode_coverage(inside[None], GRID, std).hq_fraction == 1.0
  assert mc.mode_coverage(outside[None], GRID, std).hq_fraction == 0.0
  # num_std changes the radius.
  assert mc.mode_coverage(outside[None], GRID, std, num_std=4.0).hq_fraction == 1.0


def test_mixed_set_matches_hand_computation():
  # 10 HQ samples on each of modes 0, 1, 2; 5 low-quality samples nearest modes 3 and 4.
  hq = np.concatenate([np.repeat(RING[k:k + 1], 10, axis=0) for k in range(3)])
  lq = np.concatenate([np.repeat(0.8 * RING[k:k + 1], 5, axis=0) for k in (3, 4)])
  r = mc.mode_coverage(np.concatenate([hq, lq]), RING, std=0.01)
  assert r.modes_covered == 3
  assert r.hq_fraction == 30 / 40  # 0.75: exact in binary
  p = np.array([10, 10, 10, 5, 5]) / 40
  assert r.reverse_kl == pytest.approx(float(np.sum(p * np.log(8 * p))), rel=0,
                                       abs=2 * KL_ATOL(8))  # two float64 evaluations
  np.testing.assert_array_equal(r.counts, [10, 10, 10, 5, 5, 0, 0, 0])
  np.testing.assert_array_equal(r.hq_counts, [10, 10, 10, 0, 0, 0, 0, 0])


@pytest.mark.parametrize('name', ['toy2d_ring', 'toy2d_grid'])
def test_true_samples_score_as_the_closed_form_says(name):
  cfg = ml_collections.ConfigDict({'name': name})
  modes, std = toy2d.mixture(cfg)
  n = 20_000
  x = toy2d.sample(modes, std, n, np.random.default_rng(0))
  r = mc.evaluate(x, cfg)
  assert r.modes_covered == len(modes)
  # The distance to a 2-D isotropic Gaussian's mean is Rayleigh: P(R <= 3 std) = 1 - e^-4.5.
  p = 1 - math.exp(-4.5)
  assert abs(r.hq_fraction - p) < 4 * math.sqrt(p * (1 - p) / n)
  # A multinomial histogram's KL to uniform is about (K - 1) / (2 n).
  assert r.reverse_kl < 5 * (len(modes) - 1) / (2 * n)


def test_mean_and_stderr():
  m, se = mc.mean_and_stderr([1.0, 2.0, 3.0, 6.0])
  assert m == 3.0  # 12 / 4, exact
  # The same quantity, sqrt(14 / 3) / 2, computed by numpy: a few roundings (4 eps).
  assert se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2, rel=4 * EPS, abs=0)
  assert mc.mean_and_stderr([4.0]) == (4.0, 0.0)
  with pytest.raises(ValueError, match='at least one'):
    mc.mean_and_stderr([])


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match='same D'):
    mc.mode_coverage(np.zeros((4, 3)), RING, 0.01)
  with pytest.raises(ValueError, match='at least one sample'):
    mc.mode_coverage(np.zeros((0, 2)), RING, 0.01)
  with pytest.raises(ValueError, match='non-finite'):
    mc.mode_coverage(np.array([[np.nan, 0.0]]), RING, 0.01)
  with pytest.raises(ValueError, match='std'):
    mc.mode_coverage(np.zeros((4, 2)), RING, 0.0)
