"""Latent-space tools: interpolation maths, expression parsing, and PNGs from a trained run."""

import numpy as np
import pytest

from jaxgen import latent
from jaxgen.engine import loop


def test_slerp_endpoints_norm_and_angle():
  rng = np.random.default_rng(0)
  z0, z1 = rng.standard_normal(50), rng.standard_normal(50)
  z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
  np.testing.assert_allclose(latent.slerp(z0, z1, 0.0), z0, atol=1e-12)
  np.testing.assert_allclose(latent.slerp(z0, z1, 1.0), z1, atol=1e-12)
  angle = np.arccos(np.dot(z0, z1) / np.dot(z0, z0))
  for t in (0.25, 0.5, 0.8):
    zt = latent.slerp(z0, z1, t)
    # Equal-norm endpoints: the path stays on the sphere and moves at constant angle.
    np.testing.assert_allclose(np.linalg.norm(zt), np.linalg.norm(z0), rtol=1e-10)
    np.testing.assert_allclose(np.arccos(np.dot(z0, zt) / np.dot(z0, z0)), t * angle, rtol=1e-8)
  np.testing.assert_allclose(latent.lerp(z0, z1, 0.5), (z0 + z1) / 2)
  np.testing.assert_allclose(latent.slerp(z0, 2 * z0, 0.5), 1.5 * z0)  # parallel: lerp


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
  # Interpolation endpoints decode to the pool's own images.
  np.testing.assert_allclose(rows['lerp'][0], dec(z[:1])[0], atol=1e-5)
  np.testing.assert_allclose(rows['slerp'][4], dec(z[1:2])[0], atol=1e-5)
  imgs, width = latent.arithmetic(dec, z, [[0, 1, 2], [3, 4], [5]], [1, -1, 1])
  assert width == 8 and imgs.shape == (4 * 8, 16, 16, 1)
  expect = z[[0, 1, 2]].mean(0) - z[[3, 4]].mean(0) + z[5]
  np.testing.assert_allclose(imgs[3 * 8], dec(expect[None])[0], atol=1e-5)
  with pytest.raises(ValueError, match='no trained run'):
    latent.Decoder(str(tmp_path / 'empty'))
