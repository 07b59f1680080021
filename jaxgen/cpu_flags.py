"""XLA:CPU flags that jaxgen's entry points set before JAX starts its CPU backend.

jaxlib 0.10 hands every convolution on CPU to YNNPACK (the ``individual_convolution``
entry of ``--xla_cpu_experimental_ynn_fusion_type``). For the convolutions of jaxgen's
GANs its kernels are slower than XLA's own (Eigen) ones. Measured with
``python -m benchmarks.conv_layers [--no-jaxgen_flags]`` on a 2-core AMD EPYC (AVX2),
batch 64, the 4x4 stride-2 layers of DCGAN-64:

=================================  =====================  =====================
layer: forward / kernel-gradient   YNNPACK (XLA default)  XLA's own (this flag)
=================================  =====================  =====================
32x32 -> 16x16, 64 -> 128          47.8 / 206.9 ms        43.9 / 68.1 ms
16x16 -> 8x8, 128 -> 256           49.7 / 72.5 ms         42.9 / 45.3 ms
8x8 -> 4x4, 256 -> 512             67.9 / 63.1 ms         41.3 / 42.9 ms
=================================  =====================  =====================

and the whole DCGAN-64 train step went from 3.07 s to 2.00 s
(``python -m benchmarks.step_throughput --models=dcgan64``, with ``JAXGEN_XLA_CPU_FLAGS=0``
and without). So :func:`configure` removes convolutions from YNNPACK's share (its dots and
elementwise fusions stay). It only edits ``XLA_FLAGS`` in this process's environment, only
if JAX has not started a backend yet (flags are read once, when the CPU client is created),
only on jaxlib versions where the flag exists, and never overrides a value the user set: an
``XLA_FLAGS`` that already names ``--xla_cpu_experimental_ynn_fusion_type`` is left as it
is, and ``JAXGEN_XLA_CPU_FLAGS=0`` turns the whole thing off. GPU and TPU backends ignore
the flag.

Nothing here runs at import time.
"""
from __future__ import annotations

import os

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
CPU_FLAGS = (f'{YNN_FLAG}=-individual_convolution',)
OPT_OUT_ENV = 'JAXGEN_XLA_CPU_FLAGS'
# The first jaxlib whose XLA has the flag as used here (measured with 0.10.2). An unknown
# flag in XLA_FLAGS aborts the process, so older versions are left alone.
MIN_JAXLIB = (0, 10)


def _jaxlib_version() -> tuple[int, ...] | None:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    text = metadata.version('jaxlib')
  except Exception:  # pylint: disable=broad-except
    return None
  parts = []
  for piece in text.split('.')[:3]:
    digits = ''.join(ch for ch in piece if ch.isdigit())
    if not digits:
      break
    parts.append(int(digits))
  return tuple(parts)


def _backend_started() -> bool:
  import sys  # pylint: disable=g-import-not-at-top
  bridge = sys.modules.get('jax._src.xla_bridge')
  if bridge is None:
    return False
  started = getattr(bridge, 'backends_are_initialized', None)
  return bool(started()) if callable(started) else False


def flags_to_add(environ=None, jaxlib_version=None) -> list[str]:
  """The flags :func:`configure` would append to ``XLA_FLAGS`` (pure; for tests)."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return []
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if version is None or tuple(version[:2]) < MIN_JAXLIB:
    return []
  current = environ.get('XLA_FLAGS', '')
  return [f for f in CPU_FLAGS if f.split('=', 1)[0] not in current]


def configure() -> list[str]:
  """Appends jaxgen's XLA:CPU flags to ``XLA_FLAGS``; returns the flags it added.

  Call it before anything touches a JAX device (jaxgen's launchers, the benchmark and the
  test suite do). After a backend has started it does nothing: the flags would be ignored.
  """
  if _backend_started():
    return []
  added = flags_to_add()
  if added:
    os.environ['XLA_FLAGS'] = ' '.join(filter(None, [os.environ.get('XLA_FLAGS', '')] + added))
  return added
