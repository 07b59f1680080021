"""Per-layer times of DCGAN-64's strided convolutions, under this process's XLA flags.

  python -m benchmarks.conv_layers                       # with jaxgen's XLA:CPU flags
  python -m benchmarks.conv_layers --no-jaxgen_flags     # XLA's defaults (YNNPACK convs)

For the three 4x4 stride-2 layers of DCGAN-64's discriminator (the generator's transposed
convolutions have the same shapes backwards) at ``--batch``: the forward convolution, its
kernel-gradient as XLA computes it (``jax.vjp`` of ``lax.conv_general_dilated``), and the
space-to-depth matrix-product kernel-gradient of :mod:`jaxgen.nn.fast_conv`, each the median
of ``--repeats`` jitted calls, with GFLOP/s. This is what decided
``fast_conv.KERNEL_GRAD_XLA_MAX_POSITIONS`` and :mod:`jaxgen.cpu_flags`. Not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

LAYERS = ((32, 64, 128), (16, 128, 256), (8, 256, 512))  # input size, in, out features


def _median_s(fn, args, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--jaxgen_flags', action=argparse.BooleanOptionalAction, default=True,
                 help='apply jaxgen.cpu_flags before JAX starts (default: yes)')
  p.add_argument('--results', default='', help='stamped results file (jaxgen.results)')
  args = p.parse_args(argv)
  if args.batch < 1 or args.repeats < 1:
    p.error('--batch and --repeats must be at least 1.')
  import os  # pylint: disable=g-import-not-at-top
  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  if args.jaxgen_flags:
    cpu_flags.configure()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  from jaxgen.nn import fast_conv  # pylint: disable=g-import-not-at-top

  dn = ('NHWC', 'HWIO', 'NHWC')
  pads = ((1, 1), (1, 1))

  def forward(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), pads, dimension_numbers=dn)

  def xla_kernel_grad(x, g):
    zeros = jnp.zeros((4, 4, x.shape[-1], g.shape[-1]), x.dtype)
    return jax.vjp(lambda w: forward(x, w), zeros)[1](g)[0]

  def s2d_kernel_grad(x, g):
    saved = fast_conv.KERNEL_GRAD_XLA_MAX_POSITIONS
    fast_conv.KERNEL_GRAD_XLA_MAX_POSITIONS = 0  # Read at trace time: forces the s2d path.
    try:
      return fast_conv._strided_kernel_grad(x, g, (4, 4), (2, 2), pads)  # pylint: disable=protected-access
    finally:
      fast_conv.KERNEL_GRAD_XLA_MAX_POSITIONS = saved

  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print('| layer | forward | kernel-grad (XLA) | kernel-grad (space-to-depth) |')
  print('|---|---|---|---|')
  rng = np.random.default_rng(0)
  rows = []
  for size, cin, cout in LAYERS:
    n = args.batch
    x = jnp.asarray(rng.normal(size=(n, size, size, cin)).astype(np.float32))
    w = jnp.asarray(0.02 * rng.normal(size=(4, 4, cin, cout)).astype(np.float32))
    g = jnp.asarray(rng.normal(size=(n, size // 2, size // 2, cout)).astype(np.float32))
    flops = 2 * n * (size // 2) ** 2 * 16 * cin * cout
    cells, ms = [], []
    for fn, inputs in ((forward, (x, w)), (xla_kernel_grad, (x, g)), (s2d_kernel_grad, (x, g))):
      s = _median_s(jax.jit(fn), inputs, args.repeats)
      cells.append(f'{s * 1e3:.1f} ms ({flops / s / 1e9:.0f} GFLOP/s)')
      ms.append(s * 1e3)
    layer = f'{size}x{size} -> {size // 2}x{size // 2}, {cin} -> {cout}'
    print(f'| {layer} | ' + ' | '.join(cells) + ' |')
    rows.append({'layer': layer, 'forward_ms': ms[0], 'kernel_grad_xla_ms': ms[1],
                 'kernel_grad_s2d_ms': ms[2], 'gflop': flops / 1e9})
  if args.results:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(args.results, {'batch': args.batch, 'repeats': args.repeats,
                                 'jaxgen_flags': args.jaxgen_flags, 'rows': rows},
                  results.command_line('python -m benchmarks.conv_layers', argv))
  return 0


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  raise SystemExit(main(sys.argv[1:]))
