"""Latent-space tools: interpolation maths, expression parsing, and PNGs from a trained run."""

import numpy as np
import pytest

from jaxgen import latent
from jaxgen.engine import loop


U64 = np.finfo(np.float64).eps / 2  # Unit roundoff of float64 (2^-53).


def gamma(k):
  """Higham's gamma_k = k u / (1 - k u): the relative error bound of k float64 roundings."""
  return k * U64 / (1 - k * U64)


def test_slerp_endpoints_norm_and_angle():
  rng = np.random.default_rng(0)
  n = 50
  z0, z1 = rng.standard_normal(n), rng.standard_normal(n)
  z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
  # At t = 0 the formula is (sin(w) z0 + sin(0) z1) / sin(w) with sin(0) = 0 exactly: a
  # product and a division, two roundings of z0 (and symmetrically at t = 1).
  np.testing.assert_allclose(latent.slerp(z0, z1, 0.0), z0, rtol=gamma(2), atol=0)
  np.testing.assert_allclose(latent.slerp(z0, z1, 1.0), z1, rtol=gamma(2), atol=0)
  cos = np.dot(z0, z1) / np.dot(z0, z0)
  angle = np.arccos(cos)
  sin = np.sin(angle)
  # The angle w slerp computes: two n-term norms and an n-term dot of unit vectors
  # (Cauchy-Schwarz: the dot's |terms| sum to <= 1) put <= (2 n + 4) u into cos w, and
  # arccos is 1 / sin w sensitive: dw <= gamma(2 n + 6) / sin w.
  dw = gamma(2 * n + 6) / sin
  for t in (0.25, 0.5, 0.8):
    zt = latent.slerp(z0, z1, t)
    # Equal-norm endpoints: the path stays on the sphere and moves at constant angle.
    # |zt| / |z0| = 1 for the exact w; the coefficients sin(c w) / sin w (c <= 1) move by
    # <= 2 / sin^2 w per unit of w, so by 4 dw / sin^2 w together; the few roundings of
    # a z0 + b z1 (two sines, two products, a sum, a division) cost gamma(6) of
    # |a| + |b| <= 2 / sin w; each norm is an n-term dot and a square root.
    rt_norm = 4 / sin ** 2 * dw + 2 / sin * gamma(6) + gamma(n + 2)
    np.testing.assert_allclose(np.linalg.norm(zt), np.linalg.norm(z0), rtol=rt_norm, atol=0)
    # got = arccos(dot(z0, zt) / dot(z0, z0)): two n-term dots and a division (relative to
    # |z0| |zt| / |z0|^2 <= 1 + rt_norm) plus zt's own error, over sin(t w) (arccos'
    # sensitivity), and arccos' own few ulp. zt's exact angle is t w' with slerp's w' within
    # dw of w; the reference t * angle carries t times the same dw.
    got = np.arccos(np.dot(z0, zt) / np.dot(z0, z0))
    tol = ((gamma(2 * n + 1) * (1 + rt_norm) + rt_norm) / np.sin(t * angle) + 2 * t * dw
           + gamma(4) * t * angle)
    np.testing.assert_allclose(got, t * angle, rtol=0, atol=tol)
    if t != 0.5:  # A wrong path (lerp: not at angle t w off the midpoint) is far outside.
      wrong = latent.lerp(z0, z1, t)
      wrong_angle = np.arccos(np.dot(z0, wrong) / (np.linalg.norm(wrong) * np.linalg.norm(z0)))
      assert abs(wrong_angle - t * angle) > 1e6 * tol
  # lerp(z0, z1, 1/2) = 0.5 z0 + 0.5 z1: halving is exact, so this is the rounded z0 + z1
  # halved, i.e. bitwise (z0 + z1) / 2.
  np.testing.assert_array_equal(latent.lerp(z0, z1, 0.5), (z0 + z1) / 2)
  # Parallel: lerp, 0.5 z0 + 0.5 (2 z0) = 0.5 z0 + z0, one rounding of 1.5 z0 as 1.5 * z0.
  np.testing.assert_array_equal(latent.slerp(z0, 2 * z0, 0.5), 1.5 * z0)


def test_parsers():
  assert latent.parse_expression('A-B+C', 3) == [1.0, -1.0, 1.0]
  assert latent.parse_expression('-A + A + B', 2) == [0.0, 1.0]
  assert latent.parse_groups('3,17,22:5') == [[3, 17, 22], [5]]
  assert latent.parse_pairs('0:1,2:3') == [(0, 1), (2, 3)]
  with pytest.raises(ValueError, match='only 2 groups'):
    latent.parse_expression('A+C', 2)
  with pytest.raises(ValueError, match='letters joined'):
    latent.parse_expression('A*B', 2)


def test_tools_on_trained_run(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(tiny_config(num_steps=2, num_sample_snapshots=1), workdir)
  dec = latent.Decoder(workdir)
  z = dec.pool(12, seed=0)
  assert z.shape == (12, 100)
  np.testing.assert_array_equal(z, dec.pool(12, seed=0))
  rows = latent.interpolation_rows(dec, z, [(0, 1), (2, 3)], steps=5)
  assert rows['lerp'].shape == (10, 16, 16, 1) and rows['slerp'].shape == (10, 16, 16, 1)
  # Interpolation endpoints decode to the pool's own images. The endpoint latents are the
  # pool's float32 z exactly (lerp: 1 z0 + 0 z1; slerp: within 2 float64 roundings, which
  # round back to the float32 value), and in eval mode G decodes each row independently,
  # so the same program (a batch of 10) on the pool's z in that row gives the same bits.
  same_shape = lambda rows_z, i: dec(np.repeat(rows_z[None], len(rows['lerp']), 0))[i]
  np.testing.assert_array_equal(rows['lerp'][0], same_shape(z[0], 0))
  np.testing.assert_array_equal(rows['slerp'][4], same_shape(z[1], 4))
  assert not np.array_equal(rows['lerp'][0], rows['lerp'][4])  # The rows really differ.
  imgs, width = latent.arithmetic(dec, z, [[0, 1, 2], [3, 4], [5]], [1, -1, 1])
  assert width == 8 and imgs.shape == (4 * 8, 16, 16, 1)
  # A - B + C of the float32 group means, summed exactly in float64 (three float32 terms of
  # similar size) and rounded once to float32, as the decoder receives it; decoded in the
  # same 8-row program as the results row, so compared bitwise.
  means = [z[g].mean(0).astype(np.float64) for g in ([0, 1, 2], [3, 4], [5])]
  expect = (means[0] - means[1] + means[2]).astype(np.float32)
  np.testing.assert_array_equal(imgs[3 * 8], dec(np.repeat(expect[None], 8, 0))[0])
  with pytest.raises(ValueError, match='no trained run'):
    latent.Decoder(str(tmp_path / 'empty'))
