"""Multi-process (multi-host) start-up: one ``jax.distributed.initialize`` call, made right.

Every process of a multi-host run calls :func:`initialize` once, before anything touches a
JAX device. Where the settings come from, first match wins:

1. explicit arguments (the launchers' ``--coordinator_address``, ``--num_processes`` and
   ``--process_id`` flags, see :func:`define_flags`);
2. the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
3. a cluster JAX recognises by itself: a Cloud TPU VM (a pod slice has one process per host),
   a SLURM job step with several tasks, an Open MPI job. Then ``jax.distributed.initialize()``
   is called without arguments and JAX reads the cluster's own variables;
4. otherwise nothing is initialised: one process, every local device.

On CPU the cross-process collectives go through gloo (``jax_cpu_collectives_implementation``),
which is what the local two-process tests use (``127.0.0.1:<port>``).

Nothing here runs at import time.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
from typing import Sequence

import jax

ENV_ADDRESS = 'JAX_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'
CPU_COLLECTIVES = 'gloo'
_ADDRESS_RE = re.compile(r'^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$')


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """What :func:`initialize` did: ``source`` is 'flags', 'env', a cluster name or 'single'."""
  source: str
  process_index: int
  process_count: int
  local_devices: int
  global_devices: int


def _parse_int(name, value):
  if value is None or value == '':
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be an integer; got {value!r}.') from None


def check_settings(coordinator_address, num_processes, process_id):
  """Raises ValueError unless the three settings describe a valid process of a group."""
  missing = [n for n, v in (('coordinator_address', coordinator_address),
                            ('num_processes', num_processes), ('process_id', process_id))
             if v is None]
  if missing:
    raise ValueError(
        'A multi-process run needs coordinator_address, num_processes and process_id '
        f'together; missing: {", ".join(missing)}. Pass all three (e.g. '
        '--coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0), or none of '
        'them on a TPU VM, SLURM or Open MPI where they are found automatically.')
  if not isinstance(num_processes, int) or num_processes < 1:
    raise ValueError(f'num_processes must be an integer >= 1; got {num_processes!r}.')
  if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
    raise ValueError(f'process_id must be an integer in [0, num_processes={num_processes}); '
                     f'got {process_id!r}.')
  match = _ADDRESS_RE.match(str(coordinator_address))
  if not match or not 0 < int(match.group(2)) < 65536:
    raise ValueError(f'coordinator_address must be host:port (port 1-65535), e.g. '
                     f'10.0.0.1:1234 or [::1]:1234; got {coordinator_address!r}.')


def on_tpu_vm() -> bool:
  """A Cloud TPU VM: libtpu is installed and TPU chips are attached (/dev/accel* on v2-v4,
  /dev/vfio/<n> on v5 and later)."""
  return importlib.util.find_spec('libtpu') is not None and bool(
      glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))


def detect_cluster(environ=None, *, tpu_vm: bool | None = None) -> str | None:
  """Names the cluster this process runs in ('tpu', 'slurm', 'ompi'), or None.

  The checks mirror the environments ``jax.distributed.initialize()`` resolves by itself.
  Single-task SLURM/MPI jobs count as no cluster (one process needs no initialisation). On
  TPU, JAX finds the pod slice's hosts itself (metadata server, or TPU_WORKER_HOSTNAMES on
  GKE); a single-host slice goes the same way.
  """
  env = os.environ if environ is None else environ
  if 'SLURM_JOB_ID' in env and (_parse_int('SLURM_NTASKS', env.get('SLURM_NTASKS')) or 1) > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and (
      _parse_int('OMPI_COMM_WORLD_SIZE', env.get('OMPI_COMM_WORLD_SIZE')) or 1) > 1:
    return 'ompi'
  if env.get('TPU_WORKER_HOSTNAMES') or (on_tpu_vm() if tpu_vm is None else tpu_vm):
    return 'tpu'
  return None


def _set_cpu_collectives():
  # CPU devices in different processes only talk through a collectives backend; gloo is the
  # one that ships with jaxlib (default in recent jax, set here for older versions).
  try:
    jax.config.update('jax_cpu_collectives_implementation', CPU_COLLECTIVES)
  except (AttributeError, ValueError):  # An older/newer jax without this option.
    pass


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               local_device_ids: Sequence[int] | None = None,
               initialization_timeout: int = 300, environ=None) -> ProcessInfo:
  """Joins (or starts) the process group; call once per process before any device use.

  Returns a :class:`ProcessInfo`. Raises ValueError for incomplete or invalid settings, and
  RuntimeError when JAX devices were already used in this process (too late to initialise).
  """
  env = os.environ if environ is None else environ
  given = (coordinator_address, num_processes, process_id)
  source = 'flags'
  if all(v is None for v in given):
    coordinator_address = env.get(ENV_ADDRESS) or None
    num_processes = _parse_int(ENV_NUM_PROCESSES, env.get(ENV_NUM_PROCESSES))
    process_id = _parse_int(ENV_PROCESS_ID, env.get(ENV_PROCESS_ID))
    source = 'env'
    if num_processes is None and process_id is None:
      # JAX_COORDINATOR_ADDRESS alone is only a hint for a cluster's own settings.
      cluster = detect_cluster(environ)
      if cluster is None:
        return _info('single')
      if not jax.distributed.is_initialized():
        _set_cpu_collectives()
        jax.distributed.initialize(coordinator_address,
                                   initialization_timeout=initialization_timeout)
      return _info(cluster)
  check_settings(coordinator_address, num_processes, process_id)
  if num_processes == 1:
    return _info('single')
  if jax.distributed.is_initialized():
    if jax.process_count() != num_processes or jax.process_index() != process_id:
      raise RuntimeError(
          f'jax.distributed is already initialised as process {jax.process_index()} of '
          f'{jax.process_count()}, not {process_id} of {num_processes}.')
    return _info(source)
  _set_cpu_collectives()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout)
  except RuntimeError as e:
    if 'before' in str(e) and 'backend' in str(e).lower():
      raise RuntimeError(
          'jax.distributed.initialize must run before anything uses a JAX device (an array, '
          'jax.devices(), a jitted call); call jaxgen.distributed.initialize first.') from e
    raise
  return _info(source)


def _info(source) -> ProcessInfo:
  return ProcessInfo(source=source, process_index=jax.process_index(),
                     process_count=jax.process_count(),
                     local_devices=jax.local_device_count(), global_devices=jax.device_count())


# ---------------------------------------------------------------------------- absl flags


def define_flags(flags_module=None):
  """Defines --coordinator_address, --num_processes, --process_id (absl), once."""
  if flags_module is None:
    from absl import flags as flags_module  # pylint: disable=g-import-not-at-top
  if 'coordinator_address' in flags_module.FLAGS:
    return
  flags_module.DEFINE_string(
      'coordinator_address', None,
      'host:port of process 0 for a multi-process run (same on every process). Leave unset '
      'on a single host, and on TPU VMs, SLURM or Open MPI where it is found automatically.')
  flags_module.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
  flags_module.DEFINE_integer('process_id', None, 'This process\'s index in [0, num_processes).')


def initialize_from_flags(flag_values) -> ProcessInfo:
  """:func:`initialize` with the values of the flags from :func:`define_flags`."""
  return initialize(flag_values.coordinator_address, flag_values.num_processes,
                    flag_values.process_id)
