"""The GAN family through the engine on the embedded digits: files, losses, n_dis, bad input.

Resume, signals, divergence, devices and processes are checked for every family in
tests/test_engine.py."""
import json
import os

import jax
import numpy as np
import pytest

from jaxgen.engine import loop
from jaxgen.engine.writers import read_metrics


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.nets)]


@pytest.mark.parametrize('model', ['dcgan', 'gan'])
def test_experiment_end_to_end(tiny_config, tmp_path, model):
  cfg = tiny_config(model, num_steps=10, checkpoint_every=5)
  workdir = str(tmp_path / model)
  state = loop.train_and_evaluate(cfg, workdir)
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


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_config, tmp_path):
  a = loop.train_and_evaluate(tiny_config(num_steps=3), str(tmp_path / 'a'))
  b = loop.train_and_evaluate(tiny_config(num_steps=3), str(tmp_path / 'b'))
  c = loop.train_and_evaluate(tiny_config(num_steps=3, seed=1), str(tmp_path / 'c'))
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


def test_k_discriminator_steps_and_every_loss(tiny_config, tmp_path):
  for loss in ('minimax', 'hinge', 'wasserstein', 'least_squares'):
    state = loop.train_and_evaluate(
        tiny_config(num_steps=2, n_dis=2, **{'loss.name': loss}), str(tmp_path / loss))
    assert int(state.step) == 2
    rec = read_metrics(str(tmp_path / loss))[-1]
    assert np.isfinite(rec['d_loss']) and np.isfinite(rec['g_loss'])


def test_steps_per_dispatch_matches_single_steps(tiny_config, tmp_path):
  a = loop.train_and_evaluate(tiny_config(num_steps=4), str(tmp_path / 'a'))
  b = loop.train_and_evaluate(tiny_config(num_steps=4, steps_per_dispatch=2),
                                 str(tmp_path / 'b'))
  # The scanned block is compiled as a loop body, the single step as straight code: XLA may
  # order reductions differently, a few float32 ulps (~1e-7 relative) per reduction. Over 4
  # Adam steps (each moves a weight by at most lr = 2e-4 along sign-like directions) such
  # differences stay below 1e-6 absolute on weights of size <= 1; computing anything else
  # (other noise, other batches) would move weights by ~lr per step.
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('overrides,match', [
    ({'data.name': 'not_a_dataset'}, 'Unknown dataset'),
    ({'model.name': 'stylegan9'}, 'Unknown GAN model'),
    ({'model.resolution': 48, 'data.resolution': 48}, 'resolution'),
    ({'optimizer.g_lr': 0.0}, 'g_lr must be positive'),
    ({'optimizer.d_lr': -1e-4}, 'd_lr must be positive'),
    ({'batch_size': 0}, 'batch_size must be a positive integer'),
    ({'family': 'diffusion'}, 'Unknown family'),
    ({'penalty.name': 'wgan_gp', 'penalty.weight': 10.0}, 'BatchNorm discriminator'),
    ({'loss.name': 'wgan'}, 'accepted: minimax'),
    ({'model.resolution': 32}, 'must equal data.resolution'),
    ({'divergence_policy': 'pray'}, 'divergence_policy'),
])
def test_bad_config_fails_before_anything_is_written(tiny_config, tmp_path, overrides, match):
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match=match):
    loop.train_and_evaluate(tiny_config(**overrides), str(workdir))
  assert not workdir.exists()


def test_batch_must_divide_across_devices(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='divide evenly across the 3 devices'):
    loop.train_and_evaluate(tiny_config(batch_size=16), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_incompatible_workdir_is_refused_and_left_alone(tiny_config, tmp_path):
  workdir = tmp_path / 'w'
  loop.train_and_evaluate(tiny_config(num_steps=2), str(workdir))
  before = sorted(str(p.relative_to(workdir)) + str(p.stat().st_mtime_ns)
                  for p in workdir.rglob('*'))
  with pytest.raises(ValueError, match=r'model.g_width: saved 8, now 16'):
    loop.train_and_evaluate(tiny_config(num_steps=4, **{'model.g_width': 16}), str(workdir))
  after = sorted(str(p.relative_to(workdir)) + str(p.stat().st_mtime_ns)
                 for p in workdir.rglob('*'))
  assert before == after
