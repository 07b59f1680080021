"""Multi-process training: two local JAX processes (jax.distributed over 127.0.0.1, gloo CPU
collectives), each with 2 CPU devices, train the tiny DCGAN through the real launcher.

Checked: both processes end with bitwise-identical replicated states; the 2-process run
agrees with a 1-process, 1-device run that reads the same global batches (process p's share
of every batch comes from its own ``tfds.even_splits`` part, see ``multihost_worker``) to
float tolerance (rtol = atol = 1e-5, see test_multidevice: reduction order only); logs,
metrics and sample grids come from process 0 only; and the checkpoint the two processes
wrote together restores bit for bit in a 1-process run.

The pure parts of ``jaxgen.distributed`` (settings checks, cluster detection) are tested
in-process without starting anything.
"""
import json
import os
import shutil

import numpy as np
import pytest

from jaxgen import distributed
from tests import multihost_worker as mw
from tests.test_multidevice import ATOL, RTOL, assert_trained_far, compare_states, prepare_digits

TIMEOUT_S = 540


def _two_process_jobs(workdir, data_dir, port):
  return [(f'proc{i}', mw.command(workdir, data_dir, f'--coordinator_address=127.0.0.1:{port}',
                                  '--num_processes=2', f'--process_id={i}'),
           mw.worker_env(2)) for i in range(2)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tfds_dir):
  """The 2-process run and its 1-process reference, trained once for the module."""
  root = tmp_path_factory.mktemp('multihost')
  prepare_digits(tfds_dir)
  two, ref = str(root / 'two_process'), str(root / 'reference')
  reference = ('reference', mw.command(ref, tfds_dir),
               mw.worker_env(1, **{mw.EMULATE_ENV: 2}))
  for attempt in range(2):
    try:
      mw.run_group(_two_process_jobs(two, tfds_dir, mw.free_port()) + [reference],
                   TIMEOUT_S, str(root))
      break
    except mw.WorkerError as e:
      # A port taken between free_port() and the coordinator's bind: once more, new port.
      if attempt or 'address already in use' not in str(e).lower():
        raise
      shutil.rmtree(two, ignore_errors=True)
      shutil.rmtree(ref, ignore_errors=True)
  return {'two': two, 'ref': ref, 'root': str(root), 'data_dir': tfds_dir}


@pytest.mark.multiprocess
def test_two_processes_agree_with_each_other_and_with_one_process(runs):
  infos = []
  for p in range(2):
    with open(os.path.join(runs['two'], f'final_p{p}.json')) as f:
      infos.append(json.load(f))
  assert [i['process_index'] for i in infos] == [0, 1]
  for info in infos:
    assert info['process_count'] == 2 and info['device_count'] == 4
    assert info['local_device_count'] == 2 and info['step'] == 4
  p0, p1 = (mw.load_leaves(os.path.join(runs['two'], f'final_p{p}.npz')) for p in range(2))
  assert sorted(p0) == sorted(p1)
  for name in p0:  # One replicated state: every process holds the same bits.
    np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
  ref = mw.load_leaves(os.path.join(runs['ref'], 'final_p0.npz'))
  compare_states(ref, p0, '2 processes x 2 devices vs 1 process x 1 device')
  assert_trained_far(mw.load_leaves(os.path.join(runs['ref'], 'init_p0.npz')), ref, 10 * ATOL)
  from jaxgen.train.writers import read_metrics  # pylint: disable=g-import-not-at-top
  m2, m1 = read_metrics(runs['two']), read_metrics(runs['ref'])
  # Written by process 0 alone: each step exactly once.
  assert [r['step'] for r in m2] == [r['step'] for r in m1] == [1, 2, 3, 4]
  for r2, r1 in zip(m2, m1):
    for key in ('d_loss', 'g_loss', 'd_real_logit', 'd_fake_logit'):
      np.testing.assert_allclose(r2[key], r1[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.multiprocess
def test_outputs_come_from_process_0_only(runs):
  two = runs['two']
  assert os.listdir(os.path.join(two, 'samples')) == ['step_0000004.png']
  assert os.path.exists(os.path.join(two, 'progress.png'))
  events = [f for f in os.listdir(os.path.join(two, 'tensorboard')) if 'tfevents' in f]
  assert len(events) == 1, events
  with open(os.path.join(two, 'config.json')) as f:
    assert json.load(f)['num_steps'] == 4


@pytest.mark.multiprocess
def test_two_process_checkpoint_restores_in_one_process(runs, tmp_path):
  # A copy of the run's directory (its checkpoint, written collectively by both processes),
  # opened by one process with one device: it restores step 4 (nothing is left to train)
  # and must hold exactly what the processes had in memory.
  workdir = str(tmp_path / 'restored')
  shutil.copytree(runs['two'], workdir,
                  ignore=shutil.ignore_patterns('final_p*', 'init_p*'))
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['4']
  mw.run_group([('restore', mw.command(workdir, runs['data_dir']), mw.worker_env(1))],
               TIMEOUT_S, str(tmp_path))
  with open(os.path.join(workdir, 'final_p0.json')) as f:
    info = json.load(f)
  assert info['process_count'] == 1 and info['device_count'] == 1 and info['step'] == 4
  restored = mw.load_leaves(os.path.join(workdir, 'final_p0.npz'))
  written = mw.load_leaves(os.path.join(runs['two'], 'final_p0.npz'))
  assert sorted(restored) == sorted(written)
  for name in written:
    np.testing.assert_array_equal(restored[name], written[name], err_msg=name)


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
