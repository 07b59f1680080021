"""Weights between PyTorch's DCGAN (benchmarks.torch_dcgan) and jaxgen's flax DCGAN.

  from benchmarks import torch_bridge, torch_dcgan
  g = torch_dcgan.init_weights(torch_dcgan.make_generator(100, 8, 3, resolution=32))
  variables = torch_bridge.torch_to_flax(g)        # {'params': ..., 'batch_stats': ...}
  fake = jaxgen_g.apply(variables, z, train=False)
  torch_bridge.flax_to_torch(variables, g)        # back, in place

Benchmark/test-only (imports torch); jaxgen itself never needs torch. Works for any widths,
nc, nz and the resolutions both sides build (jaxgen: 16, 32, 64, 128), any conv_impl
(jaxgen's 'fast' layers keep flax's parameter names and layouts).

Layouts. Flax names layers by type and creation order (``ConvTranspose_0``, ``Conv_3``,
``BatchNorm_1``...), which is the order of the torch ``nn.Sequential``, so the mapping is
positional per layer type. Images are NCHW in torch and NHWC in flax (``nchw_to_nhwc``).

* ``nn.Conv2d`` weight (out, in, kh, kw) -> flax ``kernel`` (kh, kw, in, out). Both are
  cross-correlations with the same explicit padding: a transpose, no flip.
* ``nn.ConvTranspose2d`` weight (in, out, kh, kw) -> flax ``kernel`` (kh, kw, in, out)
  **spatially flipped**. torch's transposed convolution is the input-gradient of a
  convolution, i.e. a convolution of the stride-dilated input with the flipped kernel;
  ``flax.linen.ConvTranspose`` (``transpose_kernel=False``, what jaxgen uses) and
  ``jaxgen.nn.fast_conv.ConvTranspose`` convolve the dilated input with the kernel as
  stored. Paddings agree: torch's (k=4, s=2, p=1) pads the dilated input by k-1-p = 2 on
  each side, flax's 'SAME' for k=4, s=2 by (2, 2); torch's (4, 1, 0) and 'VALID' by 3.
* ``nn.BatchNorm2d`` weight/bias -> ``scale``/``bias``; running_mean/running_var ->
  ``batch_stats`` mean/var, copied as they are: both sides normalise by them in eval mode.
  The update rules agree in momentum (torch's 0.1 is flax's momentum=0.9, jaxgen's
  setting) and epsilon (1e-5 both) but not in the variance fed to the running average:
  torch averages the unbiased batch variance (n/(n-1) times the biased one), flax the
  biased one (``running_var_torch_equivalent`` converts). Training-mode forwards use the
  biased batch variance on both sides.

The conversion only moves and flips values (no arithmetic), so it is exact both ways. torch's
BatchNorm ``num_batches_tracked`` counter has no flax counterpart and is left as it is.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

# (kernel, stride, padding) of the layers jaxgen's DCGAN builds, and the flax padding each
# corresponds to; anything else is refused rather than converted to a different network.
_CONV_GEOMETRY = {(4, 2, 1), (4, 1, 0)}


def _layers(module: nn.Module):
  """(flax name, torch layer) for each parameterised layer, in flax's naming order."""
  counts = {}
  out = []
  for layer in module.modules():
    if isinstance(layer, nn.ConvTranspose2d):
      kind = 'ConvTranspose'
    elif isinstance(layer, nn.Conv2d):
      kind = 'Conv'
    elif isinstance(layer, nn.BatchNorm2d):
      kind = 'BatchNorm'
    else:
      if any(True for _ in layer.parameters(recurse=False)):
        raise ValueError(f'No flax counterpart for {type(layer).__name__} layers.')
      continue
    if kind != 'BatchNorm':
      geometry = (layer.kernel_size[0], layer.stride[0], layer.padding[0])
      if (len(set(layer.kernel_size)) != 1 or len(set(layer.stride)) != 1
          or len(set(layer.padding)) != 1 or geometry not in _CONV_GEOMETRY
          or layer.groups != 1 or any(d != 1 for d in layer.dilation)
          or (kind == 'ConvTranspose' and any(p != 0 for p in layer.output_padding))):
        raise ValueError(f'{layer} is not a DCGAN layer jaxgen builds (kernel 4, stride 2 '
                         'padding 1 or stride 1 padding 0, no groups/dilation).')
    i = counts.get(kind, 0)
    counts[kind] = i + 1
    out.append((f'{kind}_{i}', layer))
  return out


def _np(t: torch.Tensor) -> np.ndarray:
  return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


def torch_kernel_to_flax(weight, transposed: bool) -> np.ndarray:
  """A torch conv weight as a flax kernel (see the module docstring)."""
  w = weight.detach().cpu() if isinstance(weight, torch.Tensor) else torch.as_tensor(weight)
  if transposed:  # (in, out, kh, kw) -> flipped (kh, kw, in, out)
    return _np(w.flip(2, 3).permute(2, 3, 0, 1))
  return _np(w.permute(2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def flax_kernel_to_torch(kernel, transposed: bool) -> torch.Tensor:
  """The inverse of ``torch_kernel_to_flax``."""
  k = torch.as_tensor(np.asarray(kernel, dtype=np.float32))
  if transposed:  # (kh, kw, in, out) -> (in, out, kh, kw), unflipped
    return k.permute(2, 3, 0, 1).flip(2, 3).contiguous()
  return k.permute(3, 2, 0, 1).contiguous()


def torch_to_flax(module: nn.Module) -> dict:
  """``{'params': ..., 'batch_stats': ...}`` for jaxgen's DCGAN G or D, as numpy float32."""
  params, stats = {}, {}
  for name, layer in _layers(module):
    if isinstance(layer, nn.BatchNorm2d):
      params[name] = {'scale': _np(layer.weight), 'bias': _np(layer.bias)}
      stats[name] = {'mean': _np(layer.running_mean), 'var': _np(layer.running_var)}
    else:
      params[name] = {'kernel': torch_kernel_to_flax(
          layer.weight, isinstance(layer, nn.ConvTranspose2d))}
      if layer.bias is not None:
        params[name]['bias'] = _np(layer.bias)
  out = {'params': params}
  if stats:
    out['batch_stats'] = stats
  return out


def flax_to_torch(variables, module: nn.Module) -> nn.Module:
  """Copies flax ``variables`` into the matching torch ``module`` in place; returns it.

  Every layer of ``module`` must have its flax counterpart and every flax entry a torch
  layer, with equal shapes (a KeyError / ValueError otherwise).
  """
  params = variables['params']
  stats = variables.get('batch_stats', {})
  layers = _layers(module)
  extra = set(params) - {n for n, _ in layers}
  if extra:
    raise ValueError(f'Flax layers {sorted(extra)} have no counterpart in the torch module.')

  def put(dst, src):
    src = torch.as_tensor(np.asarray(src, dtype=np.float32))
    if tuple(dst.shape) != tuple(src.shape):
      raise ValueError(f'Shape mismatch: torch {tuple(dst.shape)}, flax gives '
                       f'{tuple(src.shape)}.')
    with torch.no_grad():
      dst.copy_(src.to(dst.device))

  for name, layer in layers:
    p = params[name]
    if isinstance(layer, nn.BatchNorm2d):
      put(layer.weight, p['scale'])
      put(layer.bias, p['bias'])
      put(layer.running_mean, stats[name]['mean'])
      put(layer.running_var, stats[name]['var'])
    else:
      put(layer.weight, flax_kernel_to_torch(p['kernel'],
                                             isinstance(layer, nn.ConvTranspose2d)))
      if layer.bias is not None:
        put(layer.bias, p['bias'])
  return module


def param_like_to_flax(module: nn.Module, values) -> dict:
  """Tensors shaped like ``module``'s parameters, laid out as flax params.

  ``values``: {torch parameter name (as ``named_parameters``): tensor} - e.g. gradients
  or Adam moments. Kernels go through the same transpose/flip as the weights.
  """
  names = {id(t): k for k, t in module.named_parameters()}
  out = {}
  for name, layer in _layers(module):
    if isinstance(layer, nn.BatchNorm2d):
      out[name] = {'scale': _np(values[names[id(layer.weight)]]),
                   'bias': _np(values[names[id(layer.bias)]])}
    else:
      out[name] = {'kernel': torch_kernel_to_flax(values[names[id(layer.weight)]],
                                                  isinstance(layer, nn.ConvTranspose2d))}
      if layer.bias is not None:
        out[name]['bias'] = _np(values[names[id(layer.bias)]])
  return out


def torch_adam_to_flax(optimizer: torch.optim.Optimizer, module: nn.Module) -> dict:
  """``{'count', 'mu', 'nu'}`` of a torch Adam over ``module``, laid out as flax params.

  ``mu``/``nu`` are torch's ``exp_avg``/``exp_avg_sq`` through the same mapping as the
  weights, so they compare with optax's ``ScaleByAdamState.mu``/``nu``; ``count`` is
  torch's step counter.
  """
  states = {}
  for k, t in module.named_parameters():
    st = optimizer.state.get(t, {})
    if 'exp_avg' not in st:
      raise ValueError(f'The optimizer has no Adam state for {k!r} (not stepped yet, or not '
                       'an Adam over this module).')
    states[k] = st
  return {'count': int(next(iter(states.values()))['step']),
          'mu': param_like_to_flax(module, {k: st['exp_avg'] for k, st in states.items()}),
          'nu': param_like_to_flax(module, {k: st['exp_avg_sq'] for k, st in states.items()})}


def nchw_to_nhwc(x) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 2, 3, 1)))


def nhwc_to_nchw(x) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 3, 1, 2)))


def running_var_torch_equivalent(var_new, var_old, var_torch_old, updates: int,
                                 batch_positions: int, momentum: float = 0.1):
  """torch's running_var after ``updates`` BatchNorm passes that took flax from var_old to
  var_new, starting from torch's var_torch_old.

  Each training pass sets v <- (1 - m) v + m s, with s the biased batch variance in flax and
  s * n / (n - 1) in torch (n = ``batch_positions``, batch x height x width). After k passes
  v_k = (1-m)^k v_0 + S with S = sum_j m (1-m)^(k-j) s_j, so flax's S is
  var_new - (1-m)^k var_old and torch's is n / (n - 1) times it.
  """
  decay = (1.0 - momentum) ** updates
  n = batch_positions
  return decay * np.asarray(var_torch_old) + n / (n - 1) * (np.asarray(var_new)
                                                            - decay * np.asarray(var_old))
