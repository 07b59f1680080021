"""Training that survives: signals, SIGKILL at random moments, divergence, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from jaxgen.data import pipeline
from jaxgen.train import checkpoint, trainer
from jaxgen.train.writers import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(workdir, tfds_dir, num_steps, extra=()):
  cmd = [sys.executable, '-m', 'experiments.dcgan',
         '--config=experiments/configs/dcgan.py:tiny', f'--workdir={workdir}',
         f'--config.num_steps={num_steps}', '--config.checkpoint_every=3',
         '--config.log_every=1', f'--config.data.data_dir={tfds_dir}', *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def logged_steps(workdir):
  try:
    return [r['step'] for r in read_metrics(workdir)]
  except (OSError, ValueError):
    return []


def wait_for_step(proc, workdir, step, timeout=240):
  t = time.time()
  while time.time() - t < timeout:
    if proc.poll() is not None:
      return False
    if any(s >= step for s in logged_steps(workdir)):
      return True
    time.sleep(0.05)
  raise TimeoutError(f'no step {step} after {timeout}s')


def final_params(workdir, tfds_dir):
  config, _, _, state = trainer.restore_run(workdir)
  return [np.asarray(x) for x in jax.tree.leaves((state.g_params, state.d_params, state.g_state,
                                                  state.d_state, state.g_opt_state,
                                                  state.d_opt_state, state.step))]


def run_with_kills(tmp_path, tfds_dir, num_steps, kill_steps, seed):
  workdir = str(tmp_path / f'killed{seed}')
  rng = np.random.default_rng(seed)
  for kill_at in kill_steps:
    proc = launch(workdir, tfds_dir, num_steps)
    try:
      if wait_for_step(proc, workdir, kill_at):
        time.sleep(rng.uniform(0.0, 0.3))  # Any moment: mid-step or mid-checkpoint-write.
        proc.send_signal(signal.SIGKILL)
      proc.wait(60)
    finally:
      proc.kill()
  proc = launch(workdir, tfds_dir, num_steps)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return workdir


def reference_run(tmp_path, tfds_dir, num_steps):
  workdir = str(tmp_path / 'reference')
  proc = launch(workdir, tfds_dir, num_steps)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return workdir


def _prepare_digits(tfds_dir):
  pipeline.load_split_arrays(ml_collections.ConfigDict(dict(
      name='jaxgen_digits', resolution=16, channels=1, data_dir=tfds_dir)), 'test', 1)


@pytest.mark.multiprocess
def test_sigkill_at_random_steps_then_resume_is_bitwise_exact(tmp_path, tfds_dir):
  _prepare_digits(tfds_dir)
  ref = reference_run(tmp_path, tfds_dir, 12)
  killed = run_with_kills(tmp_path, tfds_dir, 12, kill_steps=[4, 9], seed=0)
  for a, b in zip(final_params(ref, tfds_dir), final_params(killed, tfds_dir)):
    np.testing.assert_array_equal(a, b)
  assert logged_steps(killed) == list(range(1, 13))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_soak_many_sigkills(tmp_path, tfds_dir):
  _prepare_digits(tfds_dir)
  ref = reference_run(tmp_path, tfds_dir, 40)
  kills = sorted(np.random.default_rng(1).choice(np.arange(2, 39), size=8, replace=False))
  killed = run_with_kills(tmp_path, tfds_dir, 40, kill_steps=kills, seed=1)
  for a, b in zip(final_params(ref, tfds_dir), final_params(killed, tfds_dir)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.multiprocess
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_current_step_and_exits_cleanly(tmp_path, tfds_dir, sig):
  _prepare_digits(tfds_dir)
  workdir = str(tmp_path / 'w')
  proc = launch(workdir, tfds_dir, 100_000, extra=['--config.checkpoint_every=1000'])
  try:
    assert wait_for_step(proc, workdir, 4)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, out
  line = [l for l in out.splitlines() if l.startswith('Stopped by')]
  assert line, out
  stopped_at = int(line[0].split(' at step ')[1].split('/')[0])
  assert f'Stopped by {signal.Signals(sig).name}' in line[0]
  assert stopped_at >= 4
  mngr = checkpoint.make_manager(workdir, 3, create=False)
  assert mngr.latest_step() == stopped_at  # checkpoint_every=1000: written by the signal.
  mngr.close()
  assert max(logged_steps(workdir)) == stopped_at


def nan_data(monkeypatch, nan_steps):
  """Wraps the pipeline so the batches at the given (0-based) positions contain a NaN."""
  real = pipeline.make_dataset

  def fake(data_config, split, batch_size, *, seed=0, start_step=0, repeat=True):
    for i, batch in enumerate(real(data_config, split, batch_size, seed=seed,
                                   start_step=start_step, repeat=repeat), start=start_step):
      if i in nan_steps:
        batch = dict(batch)
        batch['image'] = batch['image'].copy()
        batch['image'][0, 0, 0, 0] = np.nan
      yield batch
  monkeypatch.setattr(pipeline, 'make_dataset', fake)


def test_nan_policy_stop(tiny_config, tmp_path, monkeypatch):
  nan_data(monkeypatch, {6})
  workdir = str(tmp_path / 'stop')
  with pytest.raises(trainer.DivergenceError, match=r'step 7 .*non-finite: d_loss'):
    trainer.train_and_evaluate(tiny_config(num_steps=12, checkpoint_every=4), workdir)
  mngr = checkpoint.make_manager(workdir, 3, create=False)
  assert mngr.all_steps() == [4]  # The diverged state at step 8 was never written.
  good = checkpoint.restore(mngr, trainer.restore_run(workdir)[3])
  mngr.close()
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(good.d_params))


def test_nan_policy_skip(tiny_config, tmp_path, monkeypatch):
  nan_data(monkeypatch, {2, 5})
  workdir = str(tmp_path / 'skip')
  state = trainer.train_and_evaluate(
      tiny_config(num_steps=8, divergence_policy='skip'), workdir)
  assert int(state.step) == 8
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  finite = {r['step']: r['finite'] for r in read_metrics(workdir)}
  assert [s for s, f in finite.items() if f < 1] == [3, 6]


def test_nan_policy_rollback(tiny_config, tmp_path, monkeypatch, capsys):
  nan_data(monkeypatch, {6})
  workdir = str(tmp_path / 'rollback')
  state = trainer.train_and_evaluate(
      tiny_config(num_steps=10, checkpoint_every=4, divergence_policy='rollback'), workdir)
  assert int(state.step) == 10
  # Found at step 7 (log_every=1): steps 5..7 are redone on the batches after the bad one.
  assert int(state.data_offset) == 3
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  err = capsys.readouterr()
  assert 'rollback 1: back to step 4' in err.out + err.err
  assert logged_steps(workdir) == list(range(1, 11))


def test_rollback_gives_up_after_max_rollbacks(tiny_config, tmp_path, monkeypatch):
  nan_data(monkeypatch, set(range(2, 1000)))
  with pytest.raises(trainer.DivergenceError, match='after 2 rollbacks'):
    trainer.train_and_evaluate(tiny_config(num_steps=10, checkpoint_every=2, max_rollbacks=2,
                                           divergence_policy='rollback'), str(tmp_path / 'w'))


def make_folder(root, n=12, size=(20, 20), mode='L'):
  from PIL import Image
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    arr = rng.integers(0, 255, (*size, 3) if mode == 'RGB' else size, dtype=np.uint8)
    Image.fromarray(arr, mode).save(os.path.join(root, f'{i:03d}.png'))


def folder_config(tiny_config, root, **kw):
  return tiny_config(**{'data.name': 'folder', 'data.path': str(root), 'batch_size': 4,
                        'num_steps': 2, **kw})


def test_corrupt_images_error_or_skip(tiny_config, tmp_path, capsys):
  root = tmp_path / 'imgs'
  make_folder(root)
  (root / 'truncated.png').write_bytes((root / '000.png').read_bytes()[:40])
  (root / 'garbage.jpg').write_bytes(b'not a jpeg at all')
  with pytest.raises(pipeline.BadImagesError, match=r'2 of 14 files .*skip_bad_images'):
    trainer.train_and_evaluate(folder_config(tiny_config, root), str(tmp_path / 'a'))
  assert not (tmp_path / 'a').exists()
  state = trainer.train_and_evaluate(
      folder_config(tiny_config, root, **{'data.skip_bad_images': True}), str(tmp_path / 'b'))
  assert int(state.step) == 2
  assert 'skipped 2 unreadable' in capsys.readouterr().out


def test_wrong_channel_count_is_converted_and_counted(tiny_config, tmp_path, capsys):
  root = tmp_path / 'rgb'
  make_folder(root, mode='RGB')  # RGB files for a 1-channel model.
  x, _ = pipeline.load_split_arrays(ml_collections.ConfigDict(dict(
      name='folder', path=str(root), resolution=16, channels=1)), 'train')
  assert x.shape == (12, 16, 16, 1)
  assert 'converted 12 to 1 channel(s)' in capsys.readouterr().out


def test_read_only_workdir(tiny_config):
  with pytest.raises(ValueError, match='is not writable'):
    trainer.train_and_evaluate(tiny_config(), '/proc/jaxgen_run')


def test_full_workdir(tiny_config, tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage._replace(free=10 << 20))
  with pytest.raises(ValueError, match='MiB free'):
    trainer.train_and_evaluate(tiny_config(), str(tmp_path / 'w'))
  assert not os.listdir(tmp_path / 'w')


def test_damaged_newest_checkpoint_falls_back_to_older(tiny_config, tmp_path):
  workdir = tmp_path / 'w'
  trainer.train_and_evaluate(tiny_config(num_steps=6, checkpoint_every=3), str(workdir))
  for f in (workdir / 'checkpoints' / '6').rglob('*'):
    if f.is_file() and 'ocdbt' in str(f.parent) or f.name == 'manifest.ocdbt':
      f.write_bytes(b'\0' * 16)
  _, _, _, state = trainer.restore_run(str(workdir))
  assert int(state.step) == 3
