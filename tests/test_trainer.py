"""train_and_evaluate end to end on the embedded digits: files, finiteness, resume, bad input."""
import json
import os

import jax
import numpy as np
import pytest

from jaxgen.train import trainer
from jaxgen.train.writers import read_metrics


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.g_params, state.d_params, state.g_state, state.d_state, state.g_opt_state,
       state.d_opt_state))]


@pytest.mark.parametrize('model', ['dcgan', 'gan'])
def test_experiment_end_to_end(tiny_config, tmp_path, model):
  cfg = tiny_config(model, num_steps=10, checkpoint_every=5)
  workdir = str(tmp_path / model)
  state = trainer.train_and_evaluate(cfg, workdir)
  assert int(state.step) == 10
  for name in ('config.json', 'metrics.jsonl', 'progress.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '5']
  samples = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert samples[-1] == 'step_0000010.png' and len(samples) == 10
  assert any(f.startswith('events') for f in os.listdir(os.path.join(workdir, 'tensorboard')))
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == list(range(1, 11))
  for r in records:
    assert np.isfinite(r['d_loss']) and np.isfinite(r['g_loss']) and r['finite'] == 1.0
  # Parameters moved away from their initialisation.
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['name'] == cfg.model.name


def test_resume_equals_uninterrupted_run(tiny_config, tmp_path):
  n = 8
  full = trainer.train_and_evaluate(tiny_config(num_steps=n, checkpoint_every=n, ema_decay=0.9),
                                    str(tmp_path / 'full'))
  half_dir = str(tmp_path / 'half')
  trainer.train_and_evaluate(tiny_config(num_steps=n // 2, checkpoint_every=n, ema_decay=0.9),
                             half_dir)
  resumed = trainer.train_and_evaluate(
      tiny_config(num_steps=n, checkpoint_every=n, ema_decay=0.9), half_dir)
  assert int(resumed.step) == n
  for a, b in zip(leaves(full), leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(full.ema_params), jax.tree.leaves(resumed.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  steps = [r['step'] for r in read_metrics(half_dir)]
  assert steps == list(range(1, n + 1))


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_config, tmp_path):
  a = trainer.train_and_evaluate(tiny_config(num_steps=3), str(tmp_path / 'a'))
  b = trainer.train_and_evaluate(tiny_config(num_steps=3), str(tmp_path / 'b'))
  c = trainer.train_and_evaluate(tiny_config(num_steps=3, seed=1), str(tmp_path / 'c'))
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


def test_k_discriminator_steps_and_every_loss(tiny_config, tmp_path):
  for loss in ('minimax', 'hinge', 'wasserstein', 'least_squares'):
    state = trainer.train_and_evaluate(
        tiny_config(num_steps=2, n_dis=2, **{'loss.name': loss}), str(tmp_path / loss))
    assert int(state.step) == 2
    rec = read_metrics(str(tmp_path / loss))[-1]
    assert np.isfinite(rec['d_loss']) and np.isfinite(rec['g_loss'])


def test_steps_per_dispatch_matches_single_steps(tiny_config, tmp_path):
  a = trainer.train_and_evaluate(tiny_config(num_steps=4), str(tmp_path / 'a'))
  b = trainer.train_and_evaluate(tiny_config(num_steps=4, steps_per_dispatch=2),
                                 str(tmp_path / 'b'))
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('overrides,match', [
    ({'data.name': 'not_a_dataset'}, 'Unknown dataset'),
    ({'model.name': 'stylegan9'}, 'Unknown GAN model'),
    ({'model.resolution': 48, 'data.resolution': 48}, 'resolution'),
    ({'optimizer.g_lr': 0.0}, 'g_lr must be positive'),
    ({'optimizer.d_lr': -1e-4}, 'd_lr must be positive'),
    ({'batch_size': 0}, 'batch_size must be positive'),
    ({'loss.name': 'wgan'}, 'accepted: minimax'),
    ({'model.resolution': 32}, 'must equal data.resolution'),
    ({'divergence_policy': 'pray'}, 'divergence_policy'),
])
def test_bad_config_fails_before_anything_is_written(tiny_config, tmp_path, overrides, match):
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match=match):
    trainer.train_and_evaluate(tiny_config(**overrides), str(workdir))
  assert not workdir.exists()


def test_batch_must_divide_across_devices(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='divide evenly across the 3 devices'):
    trainer.train_and_evaluate(tiny_config(batch_size=16), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_incompatible_workdir_is_refused_and_left_alone(tiny_config, tmp_path):
  workdir = tmp_path / 'w'
  trainer.train_and_evaluate(tiny_config(num_steps=2), str(workdir))
  before = sorted(str(p.relative_to(workdir)) + str(p.stat().st_mtime_ns)
                  for p in workdir.rglob('*'))
  with pytest.raises(ValueError, match=r'model.g_width: saved 8, now 16'):
    trainer.train_and_evaluate(tiny_config(num_steps=4, **{'model.g_width': 16}), str(workdir))
  after = sorted(str(p.relative_to(workdir)) + str(p.stat().st_mtime_ns)
                 for p in workdir.rglob('*'))
  assert before == after
