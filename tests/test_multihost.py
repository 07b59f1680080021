"""jaxgen.distributed's pure parts: settings checks, cluster detection, the launcher's flags.

Training with two jax.distributed processes (each family, against one process, and the
checkpoint they write together) is tested in tests/test_engine.py.
"""
import pytest

from jaxgen import distributed


# ---------------------------------------------------------------------------- no processes


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_processes=2), 'missing: coordinator_address, process_id'),
    (dict(coordinator_address='127.0.0.1:1234', process_id=0), 'missing: num_processes'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=2, process_id=2),
     r'process_id must be an integer in \[0, num_processes=2\)'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=0, process_id=0),
     'num_processes must be an integer >= 1'),
    (dict(coordinator_address='127.0.0.1', num_processes=2, process_id=0),
     'coordinator_address must be host:port'),
    (dict(coordinator_address='127.0.0.1:70000', num_processes=2, process_id=0),
     'coordinator_address must be host:port'),
])
def test_bad_settings_are_refused_before_anything_starts(kwargs, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(**kwargs, environ={})


def test_settings_from_the_environment_are_checked_too():
  with pytest.raises(ValueError, match='missing: coordinator_address'):
    distributed.initialize(environ={'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'})
  with pytest.raises(ValueError, match='JAX_PROCESS_ID must be an integer'):
    distributed.initialize(environ={'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': 'one'})


def test_good_settings_pass_the_checks():
  for address in ('127.0.0.1:1234', 'node-0.cluster:8476', '[::1]:1234'):
    distributed.check_settings(address, 4, 3)


def test_single_process_needs_no_initialisation():
  # One process (by flags, or no settings and no cluster): nothing is started.
  info = distributed.initialize('127.0.0.1:1234', 1, 0, environ={})
  assert (info.source, info.process_count, info.process_index) == ('single', 1, 0)
  info = distributed.initialize(environ={'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'})
  assert info.source == 'single'


@pytest.mark.parametrize('env,tpu_vm,expected', [
    ({}, False, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, False, 'slurm'),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}, False, None),
    ({'OMPI_MCA_orte_hnp_uri': '1;tcp://10.0.0.1:1', 'OMPI_COMM_WORLD_SIZE': '2'}, False, 'ompi'),
    ({'TPU_WORKER_HOSTNAMES': 'h0,h1'}, False, 'tpu'),
    ({}, True, 'tpu'),
])
def test_cluster_detection(env, tpu_vm, expected):
  assert distributed.detect_cluster(env, tpu_vm=tpu_vm) == expected


def test_launcher_defines_the_distributed_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()

  class Module:  # absl's flags module bound to a private FlagValues.
    FLAGS = values
    DEFINE_string = staticmethod(lambda *a, **k: flags.DEFINE_string(*a, flag_values=values, **k))
    DEFINE_integer = staticmethod(lambda *a, **k: flags.DEFINE_integer(*a, flag_values=values,
                                                                       **k))
  distributed.define_flags(Module)
  distributed.define_flags(Module)  # Idempotent.
  values(['prog', '--coordinator_address=10.0.0.1:1234', '--num_processes=2',
          '--process_id=1'])
  assert (values.coordinator_address, values.num_processes, values.process_id) == (
      '10.0.0.1:1234', 2, 1)
