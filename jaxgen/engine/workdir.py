"""A run's workdir: its saved config, the check that a resumed run is the same run, room to write."""
from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections

CONFIG_FILE = 'config.json'


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{workdir!r} holds no trained run ({CONFIG_FILE} is missing).')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def write_config(config, workdir: str) -> None:
  write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())


def _plain(obj):
  return json.loads(json.dumps(obj))


def check_same_run(config, workdir: str, structure) -> None:
  """Refuses a workdir whose saved run has other networks than ``config`` describes.

  ``structure(config) -> dict`` (the family's) names the entries that decide the shapes of
  the saved state; the family itself must match too.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  saved = load_config(workdir)
  if saved.get('family', config.family) != config.family:
    raise ValueError(f'{workdir!r} holds a {saved.family!r} run, not {config.family!r}. Use a '
                     'new --workdir.')
  try:
    old = _plain(structure(saved))
  except (KeyError, AttributeError):
    return  # A config from before these fields existed: let the checkpoint restore decide.
  new = _plain(structure(config))
  diffs = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if a == b:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += [f'{key}.{k}: saved {a.get(k)!r}, now {b.get(k)!r}'
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    else:
      diffs.append(f'{key}: saved {a!r}, now {b!r}')
  if diffs:
    raise ValueError(
        f'{workdir!r} holds a run with a different architecture, so its checkpoints cannot be '
        f'restored: ' + '; '.join(diffs) + '. Use a new --workdir, or the saved settings.')


def check_writable(workdir: str, state_bytes: int, keep: int) -> None:
  """Fails early on a workdir that cannot be written or lacks room for the checkpoints."""
  # One probe per process: processes sharing a workdir must not remove each other's.
  probe = os.path.join(workdir, f'.jaxgen_write_probe_{jax.process_index()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'workdir {workdir!r} is not writable ({e.strerror}); choose another '
                     '--workdir.') from None
  need = state_bytes * (keep + 1) + (64 << 20)
  free = shutil.disk_usage(workdir).free
  if free < need:
    raise ValueError(f'workdir {workdir!r} has {free / 2**20:.0f} MiB free; keeping {keep} '
                     f'checkpoints of {state_bytes / 2**20:.1f} MiB needs about '
                     f'{need / 2**20:.0f} MiB. Free space, lower --config.keep_checkpoints or '
                     'use another --workdir.')


def write_json(path: str, obj) -> None:
  """Atomically writes ``obj`` as JSON (process 0 only)."""
  if jax.process_index() != 0:
    return
  with open(path + '.tmp', 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(path + '.tmp', path)
