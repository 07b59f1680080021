"""Mode coverage of a 2-D Gaussian mixture, as in PacGAN (Lin et al. 2018, Section 5.1).

For generated samples and a mixture with K modes of isotropic std sigma:

* every sample is assigned to its nearest mode (Euclidean distance);
* a sample is *high quality* when that distance is within ``num_std * sigma`` (3 sigma);
* a mode is *covered* when it is the nearest mode of at least one high-quality sample;
* the *reverse KL* is KL(p || uniform) = sum_k p_k log(K p_k), where p is the histogram of
  the nearest-mode assignments of all samples (empty bins contribute 0). It is 0 when the
  samples spread evenly over the modes and log K when they all fall to one mode.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class ModeCoverage(NamedTuple):
  modes_covered: int          # modes with >= 1 high-quality sample nearest to them.
  hq_fraction: float          # share of samples within num_std * std of their nearest mode.
  reverse_kl: float           # KL(nearest-mode histogram || uniform over modes), nats.
  num_modes: int
  hq_counts: np.ndarray       # [K] high-quality samples per mode.
  counts: np.ndarray          # [K] all samples per nearest mode.


def nearest_modes(samples, modes):
  """Returns ``(index [N] of the nearest mode, distance [N] to it)``."""
  samples = np.asarray(samples, np.float64)
  modes = np.asarray(modes, np.float64)
  d2 = np.sum((samples[:, None, :] - modes[None, :, :]) ** 2, axis=-1)
  idx = np.argmin(d2, axis=1)
  return idx, np.sqrt(d2[np.arange(len(samples)), idx])


def mode_coverage(samples, modes, std: float, num_std: float = 3.0) -> ModeCoverage:
  """Scores ``samples`` [N, D] against mixture ``modes`` [K, D] of isotropic ``std``.

  Raises ValueError on empty or non-finite samples, mismatched dimensions or std <= 0.
  """
  samples = np.asarray(samples, np.float64)
  modes = np.asarray(modes, np.float64)
  if samples.ndim != 2 or modes.ndim != 2 or samples.shape[1] != modes.shape[1]:
    raise ValueError(f'samples must be [N, D] and modes [K, D] with the same D; got shapes '
                     f'{samples.shape} and {modes.shape}.')
  if len(samples) == 0 or len(modes) == 0:
    raise ValueError(f'Need at least one sample and one mode; got {len(samples)} samples and '
                     f'{len(modes)} modes.')
  if not np.all(np.isfinite(samples)):
    raise ValueError(f'samples hold {int(np.sum(~np.isfinite(samples)))} non-finite values '
                     '(the generator diverged?).')
  if not std > 0 or not num_std > 0:
    raise ValueError(f'std and num_std must be > 0; got std={std!r}, num_std={num_std!r}.')
  k = len(modes)
  idx, dist = nearest_modes(samples, modes)
  hq = dist <= num_std * std
  counts = np.bincount(idx, minlength=k)
  hq_counts = np.bincount(idx[hq], minlength=k)
  p = counts / counts.sum()
  nz = p > 0
  reverse_kl = float(np.sum(p[nz] * np.log(k * p[nz])))
  return ModeCoverage(modes_covered=int(np.sum(hq_counts > 0)), hq_fraction=float(hq.mean()),
                      reverse_kl=reverse_kl, num_modes=k, hq_counts=hq_counts, counts=counts)


def evaluate(samples, data_config, num_std: float = 3.0) -> ModeCoverage:
  """:func:`mode_coverage` against the mixture a toy2d ``data_config`` describes."""
  from jaxgen.data import toy2d  # pylint: disable=g-import-not-at-top
  modes, std = toy2d.mixture(data_config)
  return mode_coverage(samples, modes, std, num_std)


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
  """Mean and standard error (sample std with ddof=1 over sqrt(n); 0 for one value)."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    raise ValueError('mean_and_stderr needs at least one value.')
  if v.size == 1:
    return float(v[0]), 0.0
  return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))
