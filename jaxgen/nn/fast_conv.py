"""Strided convolutions that avoid XLA:CPU's slow input-dilated convolution.

``ConvTranspose`` and ``Conv`` are drop-in replacements for ``flax.linen.ConvTranspose`` and
``flax.linen.Conv``: same attributes, same parameter tree (``kernel``, ``bias``), same outputs
(up to float rounding). They differ only in how the arithmetic is laid out.

Why hand-written: a stride-s transposed convolution is a convolution of the input dilated by
s (``lhs_dilation``), and the input-gradient of a stride-s convolution is the same kind of
operation. XLA:CPU computes input-dilated convolutions with a generic loop that is 10-20x
slower than its ordinary convolutions (a 8->16, 512->256 ConvTranspose: 7.3 s forward+backward
vs 0.67 s decomposed, on 2 cores). cuDNN and oneDNN do not have this problem, but XLA:CPU has
no flag that routes these convolutions elsewhere, so the decomposition is done here, in jnp.

Phase decomposition: the output of an input-dilated convolution splits into s**n interleaved
"phases" (output index o = s*m + r for r in [0, s)); phase r only ever meets the kernel taps
t with (r + t - pad_lo) % s == 0, so it is an ordinary stride-1 convolution of the undilated
input with the sub-kernel ``w[taps_r]``. The phases are computed separately and interleaved.
No work is spent on the zeros of the dilated input, and the backward pass of the decomposed
form is made of stride-1 convolutions only.

``Conv`` keeps XLA's own (fast) strided forward convolution and installs a ``custom_vjp``
whose input-gradient is computed by the same phase decomposition. Its kernel-gradient is
computed as one matrix product per phase of the input (see ``_strided_conv_kernel_grad``).

Both are pure functions of their parameters; reverse-mode derivatives of any order work
(the backward pass is itself differentiable jnp code), forward-mode (``jax.jvp``) does not
go through ``Conv``'s ``custom_vjp``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
PaddingLike = Any

# Phase-decomposed transposed convolutions compute all phases with one stride-1 convolution
# (a kernel covering the union of the phases' windows, zero where a phase has no tap) when
# the layer has at most this many output features: with few output features a single
# convolution with s**n * features outputs is faster than s**n thin ones, although it
# multiplies by some zeros. Measured on XLA:CPU (see benchmarks/step_throughput.py).
MERGE_PHASES_MAX_FEATURES = 16

# Kernel-gradients of strided convolutions whose output grid has at most this many positions
# are left to XLA's own convolution; larger grids use the space-to-depth matrix product of
# ``_strided_kernel_grad``. Measured with ``python -m benchmarks.conv_layers`` (2 CPU cores,
# batch 64, jaxgen.cpu_flags applied): XLA's kernel-gradient is the faster one for DCGAN-64's
# 16x16 and smaller output grids (32x32 -> 16x16, 64 -> 128: 68 ms vs 100 ms; 8x8 -> 4x4,
# 256 -> 512: 43 ms vs 93 ms), and inside the whole train step a threshold of 256 measured
# 1.84 s/step against 1.86 s at 64, 2.17 s at 0 (always space-to-depth) and 1.95 s with no
# limit (XLA's also for the 64x64 -> 32x32 layer, where it is slow).
KERNEL_GRAD_XLA_MAX_POSITIONS = 256


def _as_tuple(x, n, name):
  if x is None:
    return (1,) * n
  if isinstance(x, int):
    return (x,) * n
  x = tuple(int(v) for v in x)
  if len(x) != n:
    raise ValueError(f'{name} must be an int or a sequence of {n} ints; got {x!r}.')
  return x


def _spatial_dimension_numbers(ndim):
  """Channels-last dimension numbers (NHWC / HWIO / NHWC) for ``ndim - 2`` spatial dims."""
  if not 1 <= ndim - 2 <= 6:
    raise ValueError(f'Expected 1 to 6 spatial dimensions; got an array of rank {ndim}.')
  spatial = 'HWDXYZ'[:ndim - 2]
  return (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')


# --------------------------------------------------------------------------- helpers


def _crop_negative(x, pads):
  """Applies the negative parts of (low, high) pads by cropping; returns (x, pads >= 0)."""
  index, out = [slice(None)], []
  for i, (lo, hi) in enumerate(pads):
    n = x.shape[1 + i]
    index.append(slice(max(0, -lo), n - max(0, -hi)))
    out.append((max(0, lo), max(0, hi)))
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    x = x[tuple(index)]
  return x, out


def _concat_features(parts):
  """``jnp.concatenate(parts, -1)`` as a sum of zero-padded parts.

  XLA:CPU's concatenate of overlapping windows of one array runs at under 1 GB/s here (it
  re-derives every element through a chain of selects); padding each part to its channel
  offset and adding compiles to one loop fusion that runs 2-3x faster (measured on
  (64, 33, 33, 4*64) patches: 92 ms vs 38 ms on one core).
  """
  if len(parts) == 1:
    return parts[0]
  total = sum(p.shape[-1] for p in parts)
  out, offset = None, 0
  for p in parts:
    cfg = [(0, 0, 0)] * (p.ndim - 1) + [(offset, total - offset - p.shape[-1], 0)]
    padded = lax.pad(p, jnp.zeros((), p.dtype), cfg)
    out = padded if out is None else out + padded
    offset += p.shape[-1]
  return out


def _space_to_depth(x, strides, grid):
  """(N, *(grid * s), C) -> (N, *grid, prod(s) * C), features ordered (p_1, ..., p_n, C)."""
  nd = len(strides)
  n, c = x.shape[0], x.shape[-1]
  shape = [n]
  for g, s in zip(grid, strides):
    shape += [g, s]
  x = x.reshape(shape + [c])
  perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1 + 2 * nd]
  return jnp.transpose(x, perm).reshape((n,) + tuple(grid) + (-1,))


def _strided_kernel_grad(a, b, kernel, strides, pads, precision=None):
  """dW[t] = sum_{n,o} a_pad[n, s*o + t] (x) b[n, o], shape (*kernel, Ca, Cb).

  This is the kernel-gradient of the strided conv ``conv(a, W, strides, pads)`` whose
  output cotangent is b; o runs over b's spatial grid. XLA:CPU computes it as a
  convolution with a huge window (b) and a tiny output; inside a train step its layout
  assignment can give that convolution a layout its fast convolution library does not take
  (seen: 1.8 s instead of ~10 ms for one DCGAN layer at batch 8). Here it is computed by
  space-to-depth (a_pad[s*j + p] -> a_s2d[j, p]), which turns it into the kernel-gradient
  of a stride-1 conv with ceil(k/s) taps, and that into one matrix product over shifted
  windows (taps past k are computed and dropped).
  """
  nd = a.ndim - 2
  grid = b.shape[1:-1]
  kernel = tuple(kernel)
  ca, cb = a.shape[-1], b.shape[-1]
  # High padding that gives exactly `grid` outputs (trailing inputs that no output sees
  # do not contribute).
  pads = [(lo, (g - 1) * s + k - n - lo)
          for (lo, _), g, s, k, n in zip(pads, grid, strides, kernel, a.shape[1:-1])]
  if math.prod(grid) <= KERNEL_GRAD_XLA_MAX_POSITIONS:
    return _xla_kernel_grad(a, b, kernel, strides, pads, precision)
  taps = tuple(-(-k // s) for k, s in zip(kernel, strides))
  span = tuple(g + t - 1 for g, t in zip(grid, taps))
  widths = [(lo, sp * s - n - lo) for (lo, _), sp, s, n in zip(pads, span, strides,
                                                               a.shape[1:-1])]
  a = lax.pad(a, jnp.zeros((), a.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in widths]
              + [(0, 0, 0)])
  a_s2d = _space_to_depth(a, strides, span)  # (N, *span, S*Ca)
  positions = list(np.ndindex(*taps))
  contract = (((0,), (0,)), ((), ()))
  cs = a_s2d.shape[-1]
  if cs <= cb:
    # Windows of a_s2d (K*S*Ca features) against b.
    cols = [a_s2d[(slice(None),) + tuple(slice(i, i + g) for i, g in zip(tap, grid))]
            for tap in positions]
    patches = _concat_features(cols)
    dw = lax.dot_general(patches.reshape(-1, patches.shape[-1]), b.reshape(-1, cb), contract,
                         precision=precision)
    dw = dw.reshape((len(positions), cs, cb))
  else:
    # dW[i] = sum_m a_s2d[m] b[m - i]: windows of zero-padded b (K*Cb features) against a.
    bp = jnp.pad(b, [(0, 0)] + [(t - 1, t - 1) for t in taps] + [(0, 0)])
    cols = [bp[(slice(None),) + tuple(slice(t - 1 - i, t - 1 - i + sp)
                                      for i, t, sp in zip(tap, taps, span))]
            for tap in positions]
    patches = _concat_features(cols)
    dw = lax.dot_general(a_s2d.reshape(-1, cs), patches.reshape(-1, patches.shape[-1]),
                         contract, precision=precision)  # (S*Ca, K*Cb)
    dw = jnp.transpose(dw.reshape((cs, len(positions), cb)), (1, 0, 2))
  # (K..., s..., Ca, Cb) -> (K_1 s_1, ..., Ca, Cb), cropped to the kernel.
  dw = dw.reshape(taps + tuple(strides) + (ca, cb))
  perm = []
  for i in range(nd):
    perm += [i, nd + i]
  dw = jnp.transpose(dw, perm + [2 * nd, 2 * nd + 1])
  dw = dw.reshape(tuple(t * s for t, s in zip(taps, strides)) + (ca, cb))
  return dw[tuple(slice(0, k) for k in kernel)]


def _xla_kernel_grad(a, b, kernel, strides, pads, precision=None):
  """The same kernel-gradient as XLA's own transpose of ``conv(a, W, strides, pads)``."""
  a, pads = _crop_negative(a, pads)

  def conv(w):
    return lax.conv_general_dilated(a, w, strides, pads,
                                    dimension_numbers=_spatial_dimension_numbers(a.ndim),
                                    precision=precision)
  zeros = jnp.zeros(tuple(kernel) + (a.shape[-1], b.shape[-1]), b.dtype)
  return jax.vjp(conv, zeros)[1](b)[0]  # conv is linear in w: the primal is never used.


def _transpose_kernel(w, nd):
  """Spatially flipped kernel with input and output features swapped."""
  return jnp.flip(w, axis=tuple(range(nd))).swapaxes(-1, -2)


# --------------------------------------------------------------------------- strided conv


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def strided_conv(x: Array, w: Array, strides: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], precision=None) -> Array:
  """``lax.conv_general_dilated(x, w, strides, padding)``, channels-last (NHWC, HWIO).

  The forward pass is XLA's own convolution. The input-gradient (an input-dilated
  convolution for strides > 1) is computed by ``input_dilated_conv``'s phase
  decomposition, the kernel-gradient by ``_strided_kernel_grad``.
  """
  x, pads = _crop_negative(x, padding)
  return lax.conv_general_dilated(x, w, strides, pads,
                                  dimension_numbers=_spatial_dimension_numbers(x.ndim),
                                  precision=precision)


def _strided_conv_fwd(x, w, strides, padding, precision):
  return strided_conv(x, w, strides, padding, precision), (x, w)


def _strided_conv_bwd(strides, padding, precision, res, g):
  x, w = res
  nd = x.ndim - 2
  kernel = w.shape[:nd]
  # The padding of jax's own transpose rule (_conv_general_vjp_lhs_padding).
  pads = []
  for i in range(nd):
    before = kernel[i] - padding[i][0] - 1
    dilated_out = (g.shape[1 + i] - 1) * strides[i] + 1
    pads.append((before, x.shape[1 + i] + kernel[i] - 1 - dilated_out - before))
  dx = input_dilated_conv(g, _transpose_kernel(w, nd).astype(g.dtype), strides, tuple(pads),
                          precision)
  dw = _strided_kernel_grad(x.astype(g.dtype), g, kernel, strides, padding, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


# --------------------------------------------------------------------------- input-dilated conv


def _phase_plan(n, k, s, pad_lo, pad_hi):
  """For one spatial dim of an input-dilated conv: (out_len, grid, [(taps, first_offset)])."""
  out_len = (n - 1) * s + 1 + pad_lo + pad_hi - k + 1
  if out_len <= 0:
    raise ValueError(f'Convolution output would be empty: input size {n}, kernel {k}, '
                     f'dilation {s}, padding ({pad_lo}, {pad_hi}).')
  grid = -(-out_len // s)
  phases = []
  for r in range(s):
    taps = [t for t in range(k) if (r + t - pad_lo) % s == 0]
    offset = (r + taps[0] - pad_lo) // s if taps else 0
    phases.append((taps, offset))
  return out_len, grid, phases


def _window_conv(x, w, offsets, grid, precision, preferred_element_type):
  """Stride-1 conv: y[m] = sum_i x[m + offset + i] w[i] for m in [0, grid), x zero outside."""
  pads = [(-off, (g - 1 + off + k - 1) - (n - 1))
          for off, g, k, n in zip(offsets, grid, w.shape[:-2], x.shape[1:-1])]
  x, pads = _crop_negative(x, pads)
  return lax.conv_general_dilated(x, w, (1,) * len(grid), pads,
                                  dimension_numbers=_spatial_dimension_numbers(x.ndim),
                                  precision=precision,
                                  preferred_element_type=preferred_element_type)


def _interleave(y, grid, strides, out_len):
  """(N, *grid, *strides, F) -> (N, *(grid*strides), F) cropped to out_len."""
  nd = len(grid)
  perm = [0]
  for i in range(nd):
    perm += [1 + i, 1 + nd + i]
  perm.append(1 + 2 * nd)
  y = jnp.transpose(y, perm)
  full = tuple(g * s for g, s in zip(grid, strides))
  y = y.reshape((y.shape[0],) + full + (y.shape[-1],))
  if full != tuple(out_len):
    y = y[(slice(None),) + tuple(slice(0, l) for l in out_len)]
  return y


def _phase_conv(x, w, strides, padding, precision, preferred_element_type, merge_phases):
  nd = x.ndim - 2
  plans = [_phase_plan(x.shape[1 + i], w.shape[i], strides[i], *padding[i]) for i in range(nd)]
  out_len = tuple(p[0] for p in plans)
  grid = tuple(p[1] for p in plans)
  features = w.shape[-1]
  if merge_phases is None:
    merge_phases = features <= MERGE_PHASES_MAX_FEATURES
  out_dtype = preferred_element_type or jnp.result_type(x.dtype, w.dtype)
  phase_ids = list(np.ndindex(*strides))

  def sub_kernel(r):
    taps = [plans[i][2][r[i]][0] for i in range(nd)]
    if not all(taps):
      return None, None
    sub = w[np.ix_(*taps)] if nd > 1 else w[np.asarray(taps[0])]
    return sub, [plans[i][2][r[i]][1] for i in range(nd)]

  if merge_phases:
    # One conv over the union window; phase r's taps sit at window index offset_r - lo.
    lo = [min(off for taps, off in p[2] if taps) for p in plans]
    hi = [max(off + len(taps) - 1 for taps, off in p[2] if taps) for p in plans]
    size = tuple(h - l + 1 for l, h in zip(lo, hi))
    big = jnp.zeros(size + (w.shape[-2],) + tuple(strides) + (features,), w.dtype)
    for r in phase_ids:
      sub, offsets = sub_kernel(r)
      if sub is None:
        continue
      index = tuple(slice(o - l, o - l + n) for o, l, n in zip(offsets, lo, sub.shape[:nd]))
      big = big.at[index + (slice(None),) + tuple(r) + (slice(None),)].set(sub)
    big = big.reshape(size + (w.shape[-2], -1))
    y = _window_conv(x, big, lo, grid, precision, preferred_element_type)
    y = y.reshape(y.shape[:-1] + tuple(strides) + (features,))
    return _interleave(y, grid, strides, out_len)

  outs = []
  for r in phase_ids:
    sub, offsets = sub_kernel(r)
    if sub is None:
      outs.append(jnp.zeros((x.shape[0],) + grid + (features,), out_dtype))
    else:
      outs.append(_window_conv(x, sub, offsets, grid, precision, preferred_element_type))
  y = jnp.stack(outs, axis=-2)  # (N, *grid, prod(strides), F)
  y = y.reshape(y.shape[:-2] + tuple(strides) + (features,))
  return _interleave(y, grid, strides, out_len)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _input_dilated_conv(x, w, strides, padding, precision, preferred_element_type,
                        merge_phases):
  return _phase_conv(x, w, strides, padding, precision, preferred_element_type, merge_phases)


def _input_dilated_conv_fwd(x, w, strides, padding, precision, preferred_element_type,
                            merge_phases):
  y = _phase_conv(x, w, strides, padding, precision, preferred_element_type, merge_phases)
  return y, (x, w)


def _input_dilated_conv_bwd(strides, padding, precision, preferred_element_type,
                            merge_phases, res, g):
  del preferred_element_type, merge_phases
  x, w = res
  nd = x.ndim - 2
  kernel = w.shape[:nd]
  # Both gradients are strided convolutions of g (padding from jax's transpose rule):
  #   dx = conv(g, flip(w)^T, strides, pads), dW[t] = sum_i x[i] (x) g_pad[s*i + k-1-t].
  pads = []
  for i in range(nd):
    before = kernel[i] - 1 - padding[i][0]
    after = (x.shape[1 + i] - 1) * strides[i] + kernel[i] - g.shape[1 + i] - before
    pads.append((before, after))
  pads = tuple(pads)
  dx = strided_conv(g, _transpose_kernel(w, nd).astype(g.dtype), strides, pads, precision)
  r = _strided_kernel_grad(g, x.astype(g.dtype), kernel, strides, pads, precision)
  dw = _transpose_kernel(r, nd)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_input_dilated_conv.defvjp(_input_dilated_conv_fwd, _input_dilated_conv_bwd)


def input_dilated_conv(x: Array, w: Array, lhs_dilation: Sequence[int],
                       padding: Sequence[tuple[int, int]], precision=None, *,
                       preferred_element_type=None, merge_phases: bool | None = None) -> Array:
  """``lax.conv_general_dilated(x, w, 1, padding, lhs_dilation=...)`` by phase decomposition.

  x: (N, *spatial, C) channels-last; w: (*kernel, C, F). ``padding`` is explicit
  (low, high) pairs of the dilated input, as in ``lax.conv_general_dilated`` (may be
  negative). ``merge_phases``: None picks by ``MERGE_PHASES_MAX_FEATURES``. Its gradients
  are strided convolutions (``strided_conv`` and ``_strided_kernel_grad``).
  """
  nd = x.ndim - 2
  strides = _as_tuple(lhs_dilation, nd, 'lhs_dilation')
  if w.ndim != x.ndim:
    raise ValueError(f'Kernel rank {w.ndim} does not match input rank {x.ndim} '
                     '(expected input (N, *spatial, C) and kernel (*spatial, C, F)).')
  if w.shape[-2] != x.shape[-1]:
    raise ValueError(f'Kernel has {w.shape[-2]} input features, input has {x.shape[-1]}.')
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(padding) != nd:
    raise ValueError(f'padding must be {nd} (low, high) pairs; got {padding!r}.')
  if all(s == 1 for s in strides):
    x, pads = _crop_negative(x, padding)
    return lax.conv_general_dilated(x, w, strides, pads,
                                    dimension_numbers=_spatial_dimension_numbers(x.ndim),
                                    precision=precision,
                                    preferred_element_type=preferred_element_type)
  return _input_dilated_conv(x, w, strides, padding, precision, preferred_element_type,
                             merge_phases)


def _conv_transpose_padding(k, s, padding):
  """(low, high) padding of the dilated input for 'SAME'/'VALID', as lax.conv_transpose.

  A copy of jax's private ``_conv_transpose_padding`` (not exported), so that the padding
  is the one ``nn.ConvTranspose`` uses; the tests compare against ``lax.conv_transpose``.
  """
  if padding == 'SAME':
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else int(math.ceil(pad_len / 2))
  else:  # 'VALID'
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  return pad_a, pad_len - pad_a


def conv_transpose(x: Array, w: Array, strides: Sequence[int], padding, *,
                   transpose_kernel: bool = False, precision=None,
                   preferred_element_type=None) -> Array:
  """``lax.conv_transpose`` (channels-last, no kernel dilation) by phase decomposition."""
  nd = x.ndim - 2
  strides = _as_tuple(strides, nd, 'strides')
  if transpose_kernel:
    w = _transpose_kernel(w, nd)
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(f"Unknown padding {padding!r}; accepted: 'SAME', 'VALID' or explicit "
                       '(low, high) pairs.')
    pads = [_conv_transpose_padding(k, s, padding) for k, s in zip(w.shape[:nd], strides)]
  else:
    pads = [tuple(p) for p in padding]
    if len(pads) != nd or any(len(p) != 2 for p in pads):
      raise ValueError(f'Explicit padding must be {nd} (low, high) pairs; got {padding!r}.')
  return input_dilated_conv(x, w, strides, pads, precision,
                            preferred_element_type=preferred_element_type)


# --------------------------------------------------------------------------- modules


def _flatten_batch(inputs, n_spatial):
  batch_dims = inputs.ndim - (n_spatial + 1)
  if batch_dims == 1:
    return inputs, None
  if batch_dims == 0:
    return inputs[None], ()
  return inputs.reshape((-1,) + inputs.shape[batch_dims:]), inputs.shape[:batch_dims]


def _restore_batch(y, batch_shape):
  if batch_shape is None:
    return y
  return y.reshape(batch_shape + y.shape[1:])


def _kernel_and_strides(layer):
  """(kernel_size, strides) of a flax conv layer as tuples of one int per spatial dim."""
  kernel_size = ((layer.kernel_size,) if isinstance(layer.kernel_size, int)
                 else tuple(layer.kernel_size))
  return kernel_size, _as_tuple(layer.strides, len(kernel_size), 'strides')


def _finish(y, bias, batch_shape):
  """Adds the bias (if any) and restores the caller's batch dimensions."""
  if bias is not None:
    y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
  return _restore_batch(y, batch_shape)


def single_position_conv_transpose(x: Array, w: Array, precision=None, *,
                                   preferred_element_type=None) -> Array:
  """``lax.conv_transpose(x, w, 1, 'VALID')`` of an input with one spatial position.

  x: (N, 1, ..., 1, C), w: (*kernel, C, F) -> (N, *kernel, F). Each output position o only
  meets kernel tap k - 1 - o, so the layer is one matrix product with the flipped kernel
  (DCGAN's first generator layer, z -> 4x4). XLA computes it as a convolution of the input
  padded to 2k - 1 positions per dimension: k**n times the arithmetic (in a profile of the
  DCGAN-64 step on one CPU core, batch 64, 100 -> 4x4x512: 33 ms per pass as a convolution).
  """
  nd = x.ndim - 2
  if any(n != 1 for n in x.shape[1:-1]):
    raise ValueError(f'Expected one spatial position; got input shape {x.shape}.')
  flipped = jnp.flip(w, axis=tuple(range(nd)))
  y = lax.dot_general(x.reshape(x.shape[0], x.shape[-1]), flipped, (((1,), (nd,)), ((), ())),
                      precision=precision, preferred_element_type=preferred_element_type)
  return y  # (N, *kernel, F): dot_general puts x's free axis first, then w's in order.


class ConvTranspose(nn.ConvTranspose):
  """``flax.linen.ConvTranspose`` computed by phase decomposition when strided.

  Same attributes and parameters as the flax layer. A stride-1 'VALID' layer on an input
  with a single spatial position is one matrix product
  (:func:`single_position_conv_transpose`). Falls back to the flax computation (exactly)
  where neither applies: other stride-1 layers, kernel dilation, 'CIRCULAR' padding or a
  mask.
  """

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel_size, strides = _kernel_and_strides(self)
    nd = len(kernel_size)
    dilation = _as_tuple(self.kernel_dilation, nd, 'kernel_dilation')
    padding = self.padding
    strided = any(s != 1 for s in strides)
    single = (not strided and padding == 'VALID' and inputs.ndim >= nd + 1
              and all(n == 1 for n in inputs.shape[-nd - 1:-1]))
    if (not (strided or single) or any(d != 1 for d in dilation)
        or padding == 'CIRCULAR' or self.mask is not None):
      return super().__call__(inputs)
    padding = nn.linear.canonicalize_padding(padding, nd)

    inputs, batch_shape = _flatten_batch(inputs, nd)
    in_features = inputs.shape[-1]
    kernel_shape = kernel_size + ((self.features, in_features) if self.transpose_kernel
                                  else (in_features, self.features))
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if single:
      w = _transpose_kernel(kernel, nd) if self.transpose_kernel else kernel
      y = single_position_conv_transpose(inputs, w, self.precision,
                                         preferred_element_type=self.preferred_element_type)
    else:
      y = conv_transpose(inputs, kernel, strides, padding,
                         transpose_kernel=self.transpose_kernel, precision=self.precision,
                         preferred_element_type=self.preferred_element_type)
    return _finish(y, bias, batch_shape)


class Conv(nn.Conv):
  """``flax.linen.Conv`` whose strided form has a phase-decomposed input-gradient.

  Same attributes and parameters as the flax layer; the forward pass is the same XLA
  convolution. Falls back to the flax computation where the custom gradient does not
  apply: stride 1, input or kernel dilation, feature groups, masks, 'CIRCULAR'/'REFLECT'/
  'CAUSAL' padding.
  """

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel_size, strides = _kernel_and_strides(self)
    nd = len(kernel_size)
    plain = (all(s == 1 for s in strides)
             or any(d != 1 for d in _as_tuple(self.input_dilation, nd, 'input_dilation'))
             or any(d != 1 for d in _as_tuple(self.kernel_dilation, nd, 'kernel_dilation'))
             or self.feature_group_count != 1 or self.mask is not None
             or (isinstance(self.padding, str) and self.padding not in ('SAME', 'VALID')))
    if plain:
      return super().__call__(inputs)

    inputs, batch_shape = _flatten_batch(inputs, nd)
    in_features = inputs.shape[-1]
    kernel = self.param('kernel', self.kernel_init, kernel_size + (in_features, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    padding = nn.linear.canonicalize_padding(self.padding, nd)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(inputs.shape[1:-1], kernel_size, strides, padding)
    padding = tuple((int(a), int(b)) for a, b in padding)
    y = strided_conv(inputs, kernel, strides, padding, self.precision)
    return _finish(y, bias, batch_shape)
