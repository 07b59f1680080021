"""2-D Gaussian mixtures for the mode-coverage benchmark (PacGAN, Lin et al. 2018).

* ``toy2d_ring``: 8 equal-weight Gaussians with means on a circle of radius 1, std 0.01.
* ``toy2d_grid``: 25 equal-weight Gaussians with means at {-4, -2, 0, 2, 4}^2, std 0.05.

The stream is infinite and *positioned*: batch number ``step`` is a pure function of
(seed, split, process, step), drawn from its own ``numpy.random.Generator``. A run resumed
at ``start_step`` therefore sees exactly the batches an uninterrupted run would have seen,
at O(1) cost (nothing is skipped). Batches are ``{'image': float32 [batch_size, 2]}`` in raw
coordinates (the grid spans [-4, 4]): the generator's output layer must be linear.

Optional data-config fields override the geometry: ``num_modes`` and ``radius`` (ring),
``grid_size`` and ``spacing`` (grid), ``std`` (both).
"""
from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np

NAMES = ('toy2d_ring', 'toy2d_grid')
SPLITS = ('train', 'test')
DEFAULTS = {
    'toy2d_ring': dict(num_modes=8, radius=1.0, std=0.01),
    'toy2d_grid': dict(grid_size=5, spacing=2.0, std=0.05),
}


def _get(data_config, key, default):
  try:
    value = data_config.get(key, None)
  except AttributeError:
    value = None
  return default if value is None else value


def _param(data_config, key):
  return _get(data_config, key, DEFAULTS[data_config.name][key])


def ring_modes(num_modes: int = 8, radius: float = 1.0) -> np.ndarray:
  """[num_modes, 2] means evenly spaced on a circle, the first at angle 0."""
  angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_modes(grid_size: int = 5, spacing: float = 2.0) -> np.ndarray:
  """[grid_size**2, 2] means on a square grid centred at 0 (defaults: {-4,-2,0,2,4}^2)."""
  ticks = spacing * (np.arange(grid_size) - (grid_size - 1) / 2.0)
  xx, yy = np.meshgrid(ticks, ticks, indexing='ij')
  return np.stack([xx.ravel(), yy.ravel()], axis=1)


def mixture(data_config) -> tuple[np.ndarray, float]:
  """Returns ``(modes [K, 2] float64, std)`` of the mixture ``data_config`` names.

  Raises ValueError for unknown names or out-of-range geometry.
  """
  name = data_config.name
  if name not in NAMES:
    raise ValueError(f'Unknown 2-D mixture {name!r}; accepted: {", ".join(NAMES)}.')
  std = float(_param(data_config, 'std'))
  if not std > 0:
    raise ValueError(f'data.std must be > 0; got {std!r}.')
  if name == 'toy2d_ring':
    k, radius = _param(data_config, 'num_modes'), float(_param(data_config, 'radius'))
    if not isinstance(k, int) or k < 1:
      raise ValueError(f'data.num_modes must be a positive integer; got {k!r}.')
    if not radius > 0:
      raise ValueError(f'data.radius must be > 0; got {radius!r}.')
    return ring_modes(k, radius), std
  size, spacing = _param(data_config, 'grid_size'), float(_param(data_config, 'spacing'))
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'data.grid_size must be a positive integer; got {size!r}.')
  if not spacing > 0:
    raise ValueError(f'data.spacing must be > 0; got {spacing!r}.')
  return grid_modes(size, spacing), std


def sample(modes: np.ndarray, std: float, num: int, rng: np.random.Generator) -> np.ndarray:
  """``num`` float32 points: a uniformly chosen mode plus isotropic N(0, std^2) noise."""
  idx = rng.integers(0, len(modes), size=num)
  return (modes[idx] + std * rng.standard_normal((num, 2))).astype(np.float32)


def batch_at(data_config, split: str, batch_size: int, *, seed: int, step: int,
             process_index: int = 0) -> dict:
  """Batch number ``step`` of the stream (a pure function of its arguments)."""
  if split not in SPLITS:
    raise ValueError(f'2-D mixtures have splits {", ".join(SPLITS)}; got {split!r}.')
  modes, std = mixture(data_config)
  # A stable (not per-process-salted like hash()) integer for the split name.
  split_id = zlib.crc32(split.encode())
  rng = np.random.default_rng([int(seed), split_id, int(process_index), int(step)])
  return {'image': sample(modes, std, batch_size, rng)}


def make_dataset(data_config, split: str, batch_size: int, *, seed: int = 0,
                 start_step: int = 0) -> Iterator[dict]:
  """Infinite iterator of ``{'image': float32 [batch_size, 2]}`` starting at ``start_step``.

  Each JAX process draws its own independent stream (its index is part of the seed).
  """
  mixture(data_config)  # Validate before returning a lazy iterator.
  if split not in SPLITS:
    raise ValueError(f'2-D mixtures have splits {", ".join(SPLITS)}; got {split!r}.')
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer; got {batch_size!r}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0; got {start_step!r}.')
  import jax  # pylint: disable=g-import-not-at-top
  process = jax.process_index()

  def gen():
    step = int(start_step)
    while True:
      yield batch_at(data_config, split, batch_size, seed=seed, step=step,
                     process_index=process)
      step += 1
  return gen()
