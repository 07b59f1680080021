"""Networks imported from other runs (``config.init_from``), at a run's first start only.

``init_from = {'g': 'runs/stage1'}`` takes network ``g`` of the newest checkpoint in
``runs/stage1``; ``{'text': 'runs/enc:encoder'}`` takes the other run's network ``encoder`` as
this run's ``text``. The imported ``params``, ``vars`` and ``ema`` (when both runs keep one)
replace the freshly initialised ones after their shapes and dtypes are checked; the
optimizer state stays fresh (a frozen network has none). A resumed run restores its own
checkpoint and never imports again, so later changes to the other run do not leak in.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgen.engine import checkpoint

IMPORTED_PARTS = ('params', 'vars', 'ema')


def parse_source(source: str):
  """'workdir[:net]' -> (workdir, net or ''); a ':' inside a path (gs://...) is kept."""
  path, sep, net = source.rpartition(':')
  if not sep or not path or '/' in net:
    return source, ''
  return path, net


def load_net(source: str, default_name: str) -> tuple[dict, str]:
  """The network named in ``source`` ('workdir[:net]') as numpy arrays, and a description."""
  path, net = parse_source(source)
  net = net or default_name
  ckpt_dir = os.path.join(path, checkpoint.LATEST_DIR)
  step = checkpoint.latest_listed_step(path)
  if not step:
    raise ValueError(f'init_from: {path!r} has no finished checkpoint in {ckpt_dir!r}; train '
                     'that run first (or fix the path).')
  with ocp.CheckpointManager(os.path.abspath(ckpt_dir),
                             options=ocp.CheckpointManagerOptions(create=False)) as manager:
    tree = manager.restore(step, args=ocp.args.StandardRestore())
  nets = tree.get('nets', {})
  if net not in nets:
    have = ', '.join(sorted(nets)) or "none (a checkpoint from before the engine's layout)"
    raise ValueError(f'init_from: the run in {path!r} (step {step}) has no network {net!r}; '
                     f'it has: {have}.')
  return jax.tree.map(np.asarray, nets[net]), f'{path}:{net} at step {step}'


def import_nets(state, init_from, sharding):
  """``state`` with the networks of ``init_from`` replaced by the imported ones."""
  nets = dict(state.nets)
  for name, source in init_from.items():
    if name not in nets:
      raise ValueError(f'init_from names network {name!r}, which this run does not have; it '
                       f'has: {", ".join(sorted(nets))}.')
    loaded, where = load_net(source, name)
    target = dict(nets[name])
    for part in IMPORTED_PARTS:
      if part not in target:
        continue
      if part not in loaded:
        if part == 'ema':  # The other run kept no EMA: start this run's EMA at the weights.
          target['ema'] = target['params']
          continue
        raise ValueError(f'init_from {name}: {where} has no {part!r}.')
      target[part] = _check_and_place(loaded[part], target[part], f'{name}.{part}', where,
                                      sharding)
    nets[name] = target
    print(f'Imported network {name!r} from {where}.', flush=True)
  return state.replace(nets=nets)


def _check_and_place(loaded, target, what, where, sharding):
  names = lambda tree: {jax.tree_util.keystr(k): v
                        for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  t, l = names(target), names(loaded)  # t in the order of target's leaves
  if set(t) != set(l):
    missing, extra = sorted(set(t) - set(l)), sorted(set(l) - set(t))
    raise ValueError(f'init_from {what}: {where} has other arrays (missing {missing[:5]}, '
                     f'unexpected {extra[:5]}); the two runs must build the same network.')
  for k in t:
    if t[k].shape != l[k].shape or t[k].dtype != l[k].dtype:
      raise ValueError(f'init_from {what}{k}: {where} holds {l[k].dtype}{list(l[k].shape)}, '
                       f'this run needs {t[k].dtype}{list(t[k].shape)}.')
  return jax.tree_util.tree_unflatten(jax.tree.structure(target),
                                      [jax.device_put(l[k], sharding) for k in t])
