"""Stop requests by signal: SIGTERM (preemption) and SIGINT (Ctrl-C) end the current step.

A second SIGINT restores Python's default and interrupts at once. With several processes the
request is agreed on with an all-gather at check points, so every process stops (and writes
its part of the checkpoint) at the same step.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Installs handlers on enter, restores the previous ones on exit."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ''

  def requested(self, sync: bool) -> bool:
    """Whether to stop now; ``sync`` all-gathers the flag (multi-process, at check points)."""
    local = self.signum is not None
    if jax.process_count() == 1 or not sync:
      return local if jax.process_count() == 1 else False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(local))
    if np.any(flags) and self.signum is None:
      self.signum = int(signal.SIGTERM)
    return bool(np.any(flags))
