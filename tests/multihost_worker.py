"""Training processes for the multi-device / multi-process tests, and the helpers that run them.

Every model family runs through it (``FAMILY_CONFIGS``). As a script it is the real launcher (``experiments.launch``: --config, --workdir, --config.*,
and the distributed flags --coordinator_address/--num_processes/--process_id) with a train
function that, after ``train_and_evaluate``, saves what the tests compare:

  <workdir>/final_p<process>.npz   every leaf of the final state (host copies), named by its
                                   path in the state ('nets/g/params/Conv_0/kernel', ...)
  <workdir>/init_p<process>.npz    the same for the initial state (to see training moved it)
  <workdir>/final_p<process>.json  process/device counts, the final step, and (with
                                   JAXGEN_TEST_STEP_FLOPS=1) the per-device flops of the
                                   compiled, partitioned train step

One test-only switch (a test helper, not a feature):
  JAXGEN_TEST_EMULATE_PROCESSES=n  one process reads the global batches that n processes
                                   read together (process p's share of each batch comes from
                                   tfds.even_splits(split, n)[p], placed p-th), so a
                                   one-process run sees the same data as an n-process run.

  python -m tests.multihost_worker --config=experiments/configs/vae.py:tiny --workdir=W \
      --config.data.data_dir=D [--coordinator_address=127.0.0.1:P --num_processes=2 --process_id=i]
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from unittest import mock

import numpy as np

EMULATE_ENV = 'JAXGEN_TEST_EMULATE_PROCESSES'
FLOPS_ENV = 'JAXGEN_TEST_STEP_FLOPS'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny config of each family the engine tests run.
FAMILY_CONFIGS = {'gan': 'experiments/configs/dcgan.py:tiny',
                  'vae': 'experiments/configs/vae.py:tiny',
                  'cvae': 'experiments/configs/cvae.py:tiny'}
# Tiny and short: 4 steps, logs every step, one sample grid, one checkpoint at the end,
# the family's own evaluation at the end only, no figures.
BASE_ARGS = ('--config.num_steps=4', '--config.log_every=1', '--config.num_sample_snapshots=1',
             '--config.checkpoint_every=4', '--config.eval_every=0',
             '--config.write_figures=False')


def base_overrides() -> dict:
  """BASE_ARGS as config overrides ``{'num_steps': 4, ...}`` (for a run in a test's process)."""
  out = {}
  for arg in BASE_ARGS:
    key, value = arg[len('--config.'):].split('=', 1)
    out[key] = ast.literal_eval(value)
  return out


def flags(overrides: dict) -> list:
  """Config overrides as launcher flags: ``{'n_dis': 2}`` -> ``['--config.n_dis=2']``."""
  return [f'--config.{k}={v}' for k, v in overrides.items()]


# ---------------------------------------------------------------------------- in the worker


def emulated_make_dataset(make_dataset, num_processes):
  """Wraps ``pipeline.make_dataset`` to yield what ``num_processes`` processes read together."""
  import jax  # pylint: disable=g-import-not-at-top

  def make(data_config, split, batch_size, **kwargs):
    if not kwargs.get('repeat', True):  # Whole-split reads (evaluation) are the same anyway.
      return make_dataset(data_config, split, batch_size, **kwargs)
    if batch_size % num_processes:
      raise ValueError(f'batch {batch_size} does not split over {num_processes} processes')
    streams = []
    for p in range(num_processes):
      # make_dataset picks this process's split eagerly (tfds.even_splits by process index),
      # so patching the two process queries during the call is enough.
      with mock.patch.object(jax, 'process_count', lambda: num_processes), \
           mock.patch.object(jax, 'process_index', lambda p=p: p):
        streams.append(make_dataset(data_config, split, batch_size // num_processes, **kwargs))

    def joined():
      while True:
        parts = [next(s) for s in streams]
        yield {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
    return joined()
  return make


def step_flops(config):
  """Per-device flops of the compiled (partitioned) train step, by XLA's cost analysis."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top
  config, module = loop.prepare(config)
  family = module.build(config, with_data=False)
  mesh = loop.make_mesh()
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, 'data'))
  # Abstract arguments must carry their shardings (jit's in_shardings do not type them).
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                       jax.eval_shape(lambda: family.init(jax.random.PRNGKey(config.seed))))
  n = family.examples_per_step
  specs = {'image': ((1, n, *base.data_shape(config)), np.float32), 'label': ((1, n), np.int32)}
  batch = {k: jax.ShapeDtypeStruct(*specs[k], sharding=data) for k in family.batch_keys}
  fn = jax.jit(loop.make_multi_step(family.train_step, 1), in_shardings=(replicated, data),
               out_shardings=(replicated, replicated))
  with jax.set_mesh(mesh):
    cost = fn.lower(state, batch).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)['flops'])


def named_leaves(state):
  """{'nets/g/params/Conv_0/kernel': host array, ...}; replicated arrays give a full local copy."""
  import flax  # pylint: disable=g-import-not-at-top
  flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(state), sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


def train_and_dump(config, workdir):
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top

  with contextlib.ExitStack() as stack:
    n = int(os.environ.get(EMULATE_ENV, '0'))
    if n:
      stack.enter_context(mock.patch.object(
          pipeline, 'make_dataset', emulated_make_dataset(pipeline.make_dataset, n)))
    state = loop.train_and_evaluate(config, workdir)

  p = jax.process_index()
  resolved, module = loop.prepare(config)
  family = module.build(resolved, with_data=False)
  # Process-local: no cross-process program.
  init = base.jit_init(family, resolved.seed)()
  np.savez(os.path.join(workdir, f'init_p{p}.npz'), **named_leaves(init))
  np.savez(os.path.join(workdir, f'final_p{p}.npz'), **named_leaves(state))
  info = {'process_index': p, 'process_count': jax.process_count(),
          'device_count': jax.device_count(), 'local_device_count': jax.local_device_count(),
          'step': int(state.step)}
  if os.environ.get(FLOPS_ENV):
    info['step_flops'] = step_flops(config)
  with open(os.path.join(workdir, f'final_p{p}.json'), 'w') as f:
    json.dump(info, f)


# ---------------------------------------------------------------------------- in the test


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def worker_env(devices: int, **extra) -> dict:
  """Environment of a worker: CPU only, ``devices`` CPU devices.

  ``--xla_backend_optimization_level=0`` halves the compile time that dominates these
  few-step runs; every run of a comparison is compiled the same way.
  """
  env = {k: v for k, v in os.environ.items() if k not in (EMULATE_ENV, FLOPS_ENV)}
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
                       '--xla_backend_optimization_level=0')
  env.update({k: str(v) for k, v in extra.items()})
  return env


def command(workdir, data_dir, *args, family='gan'):
  return [sys.executable, '-m', 'tests.multihost_worker', f'--config={FAMILY_CONFIGS[family]}',
          *BASE_ARGS, f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *args]


class WorkerError(AssertionError):
  pass


def run_group(jobs, timeout: float, log_dir: str) -> None:
  """Runs ``jobs`` ([(name, argv, env)]) at once; all must exit 0 within ``timeout`` s.

  When one fails the others are stopped at once (a peer of a dead process would otherwise
  wait for its collectives until the coordinator's own timeout). Raises WorkerError with the
  tail of every log.
  """
  procs = []
  for name, argv, env in jobs:
    log = open(os.path.join(log_dir, f'{name}.log'), 'w')
    procs.append((name, subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT), log))
  deadline = time.monotonic() + timeout
  failed = None
  try:
    while True:
      codes = [p.poll() for _, p, _ in procs]
      if any(c not in (None, 0) for c in codes):
        failed = 'a process failed'
        break
      if all(c == 0 for c in codes):
        return
      if time.monotonic() > deadline:
        failed = f'timed out after {timeout:.0f} s'
        break
      time.sleep(0.5)
  finally:
    for _, p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()
  report = []
  for name, p, _ in procs:
    with open(os.path.join(log_dir, f'{name}.log'), errors='replace') as f:
      tail = f.read()[-3000:]
    report.append(f'--- {name} (exit code {p.returncode}) ---\n{tail}')
  raise WorkerError(f'{failed}:\n' + '\n'.join(report))


def load_leaves(path) -> dict:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


if __name__ == '__main__':
  from experiments import launch  # pylint: disable=g-import-not-at-top
  launch.run('experiments/configs/dcgan.py:tiny', 'tests.multihost_worker:train_and_dump')
