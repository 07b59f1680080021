"""Scalar and image summaries: TensorBoard (via clu) plus a JSON-lines file.

``metrics.jsonl`` has one object per logged step: ``{"step": int, name: float, ...}``.
Only process 0 writes.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

METRICS_FILE = 'metrics.jsonl'


class Writer:
  """Writes scalars to TensorBoard and metrics.jsonl, images to TensorBoard."""

  def __init__(self, workdir: str):
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    self._active = jax.process_index() == 0
    self._tb = metric_writers.create_default_writer(
        os.path.join(workdir, 'tensorboard'), just_logging=not self._active, asynchronous=False)
    self._path = os.path.join(workdir, METRICS_FILE)

  def scalars(self, step: int, scalars: dict):
    scalars = {k: float(v) for k, v in scalars.items()}
    self._tb.write_scalars(int(step), scalars)
    if self._active:
      with open(self._path, 'a') as f:
        f.write(json.dumps({'step': int(step), **scalars}) + '\n')

  def images(self, step: int, images: dict):
    if self._active:
      self._tb.write_images(int(step), {k: np.asarray(v) for k, v in images.items()})

  def close(self):
    self._tb.close()


def truncate_after(workdir: str, step: int):
  """Drops metrics.jsonl records logged after ``step`` (used when resuming from ``step``)."""
  path = os.path.join(workdir, METRICS_FILE)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  def logged_by_then(line):
    try:
      return json.loads(line)['step'] <= step
    except (ValueError, KeyError):
      return False  # A line cut short by a crash.
  with open(path) as f:
    kept = [l for l in f if l.strip() and logged_by_then(l)]
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.writelines(kept)
  os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]
