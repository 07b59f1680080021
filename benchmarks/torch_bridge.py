"""Weights between PyTorch's DCGAN (benchmarks.torch_dcgan) and jaxgen's flax DCGAN, and
between PyTorch's DF-GAN (benchmarks.torch_dfgan) and jaxgen's flax DF-GAN.

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

DF-GAN (``dfgan_to_flax`` / ``flax_to_dfgan`` / ``dfgan_like_to_flax``), one torch module
and its flax subtree at a time: ``NetG`` <-> ``Generator``'s params, ``NetD`` <->
``MatchingDiscriminator``'s ``params['features']``, ``NetC`` <-> its ``params['head']``
(``torch_dfgan.networks_from_flax`` builds all three from a flax G and D). Both sides name
their layers, so the mapping is by name: ``GBlocks.i`` / ``DBlocks.i`` -> ``block{i}``,
``fc_gamma.linear{l}`` / ``fc_beta.linear{l}`` -> ``gamma_{l}`` / ``beta_{l}``,
``conv_r.0`` / ``conv_r.2`` -> ``conv_r0`` / ``conv_r1``, ``joint_conv.0`` / ``.2`` ->
``joint_conv0`` / ``1``, ``to_rgb.1`` -> ``to_rgb``, other names as they are; ``weight`` ->
``kernel``. ``nn.Linear`` weight (out, in) -> kernel (in, out); ``nn.Conv2d`` as above; biases
and the blocks' scalar ``gamma`` as they are. A ``D_Block`` whose channels do not change
holds a 1x1 ``conv_s`` it never uses; jaxgen has no such parameters, so it is skipped both
ways (left as it is in torch). Again only moves: exact both ways, and exact into float64
modules (float32 values widen exactly).
"""
from __future__ import annotations

from collections.abc import Mapping

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


def torch_adam_to_flax(optimizer: torch.optim.Optimizer, module: nn.Module,
                       like_to_flax=None) -> dict:
  """``{'count', 'mu', 'nu'}`` of a torch Adam over ``module``, laid out as flax params.

  ``mu``/``nu`` are torch's ``exp_avg``/``exp_avg_sq`` through the same mapping as the
  weights, so they compare with optax's ``ScaleByAdamState.mu``/``nu``; ``count`` is
  torch's step counter. ``like_to_flax(module, values)`` lays the moments out
  (``param_like_to_flax``, the default, for the DCGAN; ``dfgan_like_to_flax`` for DF-GAN);
  every parameter it reads must have Adam state (DF-GAN's unused shortcuts are not read and
  never get any).
  """
  like_to_flax = like_to_flax or param_like_to_flax
  states = {k: optimizer.state.get(t, {}) for k, t in module.named_parameters()}

  class _Moments(dict):

    def __missing__(self, key):
      raise ValueError(f'The optimizer has no Adam state for {key!r} (not stepped yet, or '
                       'not an Adam over this module).')

  counts = [int(st['step']) for st in states.values() if 'exp_avg' in st]
  if not counts:
    raise ValueError('The optimizer has no Adam state for this module (not stepped yet, or '
                     'not an Adam over it).')
  moments = {w: _Moments({k: st[w] for k, st in states.items() if w in st})
             for w in ('exp_avg', 'exp_avg_sq')}
  return {'count': counts[0], 'mu': like_to_flax(module, moments['exp_avg']),
          'nu': like_to_flax(module, moments['exp_avg_sq'])}


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


# ----------------------------------------------------------------------------------- DF-GAN

# Pairs of torch module-path tokens that are one flax module.
_DFGAN_PAIRS = {('conv_r', '0'): 'conv_r0', ('conv_r', '2'): 'conv_r1',
                ('joint_conv', '0'): 'joint_conv0', ('joint_conv', '2'): 'joint_conv1',
                ('to_rgb', '1'): 'to_rgb'}
_DFGAN_LEAVES = {'weight': 'kernel', 'bias': 'bias', 'gamma': 'gamma'}
_DFGAN_KINDS = {4: 'conv', 2: 'linear', 1: 'vector'}


def _dfgan_path(name: str) -> tuple[str, ...]:
  """The flax path of a torch DF-GAN parameter name (see the module docstring)."""
  parts, path, i = name.split('.'), [], 0
  *mods, leaf = parts
  while i < len(mods):
    a, b = mods[i], mods[i + 1] if i + 1 < len(mods) else None
    if a in ('GBlocks', 'DBlocks'):
      path.append(f'block{b}')
    elif a in ('fc_gamma', 'fc_beta') and b is not None and b.startswith('linear'):
      path.append(f'{a[3:]}_{b[len("linear"):]}')
    elif (a, b) in _DFGAN_PAIRS:
      path.append(_DFGAN_PAIRS[(a, b)])
    else:
      path.append(a)
      i += 1
      continue
    i += 2
  if leaf not in _DFGAN_LEAVES:
    raise ValueError(f'No flax counterpart for the torch parameter {name!r}.')
  return tuple(path) + (_DFGAN_LEAVES[leaf],)


def dfgan_layout(module: nn.Module) -> list[tuple[str, tuple[str, ...], str]]:
  """(torch parameter name, flax path, kind) for each parameter of a torch_dfgan ``NetG``,
  ``NetD`` or ``NetC`` that jaxgen has; kind is 'conv', 'linear' or 'vector'."""
  out = []
  for name, param in module.named_parameters():
    parts = name.split('.')
    if len(parts) >= 2 and parts[-2] == 'conv_s':
      block = module.get_submodule('.'.join(parts[:-2]))
      if not getattr(block, 'learned_shortcut', True):
        continue  # Created by the released D_Block but never used: no jaxgen counterpart.
    if param.dim() not in _DFGAN_KINDS:
      raise ValueError(f'No flax counterpart for {name!r} of shape {tuple(param.shape)}.')
    out.append((name, _dfgan_path(name), _DFGAN_KINDS[param.dim()]))
  return out


def _dfgan_value_to_flax(value, kind: str) -> np.ndarray:
  if kind == 'conv':
    return torch_kernel_to_flax(value, transposed=False)
  value = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
  return _np(value.t()) if kind == 'linear' else _np(value)


def _leaves(tree, path=()):
  """(path tuple, leaf) of a nested mapping (dict or flax FrozenDict)."""
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, path + (k,))
    else:
      yield path + (k,), v


def _set(tree: dict, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def dfgan_like_to_flax(module: nn.Module, values) -> dict:
  """Tensors shaped like a torch DF-GAN module's parameters ({torch name: tensor}, e.g.
  gradients or Adam moments), laid out as that module's flax params (numpy float32)."""
  out = {}
  for name, path, kind in dfgan_layout(module):
    _set(out, path, _dfgan_value_to_flax(values[name], kind))
  return out


def dfgan_to_flax(module: nn.Module) -> dict:
  """A torch DF-GAN module's weights as its flax params (numpy float32; see the module
  docstring for which flax subtree each module is)."""
  return dfgan_like_to_flax(module, dict(module.named_parameters()))


def flax_to_dfgan(params, module: nn.Module) -> nn.Module:
  """Copies flax ``params`` (the subtree of the module's counterpart, no 'params' key) into
  the torch DF-GAN ``module`` in place; returns it. Every flax leaf must have its torch
  parameter and every mapped torch parameter a flax leaf, with equal shapes."""
  leaves = dict(_leaves(params))
  layout = dfgan_layout(module)
  extra = set(leaves) - {path for _, path, _ in layout}
  if extra:
    raise ValueError(f'Flax parameters {sorted(extra)} have no counterpart in the torch module.')
  torch_params = dict(module.named_parameters())
  for name, path, kind in layout:
    if path not in leaves:
      raise ValueError(f'The torch parameter {name!r} has no flax counterpart {path} in the '
                       'given params.')
    value = np.array(leaves[path], dtype=np.float32)  # A writable copy for torch.
    if kind == 'conv':
      src = flax_kernel_to_torch(value, transposed=False)
    else:
      src = torch.from_numpy(np.ascontiguousarray(value.T) if kind == 'linear' else value)
    dst = torch_params[name]
    if tuple(dst.shape) != tuple(src.shape):
      raise ValueError(f'Shape mismatch for {name!r}: torch {tuple(dst.shape)}, flax gives '
                       f'{tuple(src.shape)}.')
    with torch.no_grad():
      dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
  return module
