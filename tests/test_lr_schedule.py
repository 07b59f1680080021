"""Learning-rate schedules of the GAN optimizers (jaxgen.optim.learning_rate)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgen import optim
from jaxgen.families import gan


def opt(**kw):
  base = dict(g_lr=2e-4, d_lr=1e-3, b1=0.5, b2=0.999, eps=1e-8, schedule='constant',
              decay_start_frac=0.0, final_lr_frac=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def reference(t, lr, n, kind, start_frac, final_frac):
  """The schedule written out in numpy: hold lr, then decay to final_frac * lr at update n."""
  start = int(start_frac * n)
  u = np.clip((t - start) / max(n - start, 1), 0.0, 1.0)
  if kind == 'linear':
    shape = 1.0 - u
  else:
    shape = 0.5 * (1.0 + np.cos(np.pi * u))
  return lr * (final_frac + (1.0 - final_frac) * shape)


@pytest.mark.parametrize('kind', ['linear', 'cosine'])
@pytest.mark.parametrize('start_frac, final_frac', [(0.0, 0.0), (0.5, 0.0), (0.3, 0.1)])
def test_schedule_matches_its_closed_form(kind, start_frac, final_frac):
  n = 200
  sched = optim.learning_rate(1e-3, opt(schedule=kind, decay_start_frac=start_frac,
                                        final_lr_frac=final_frac), n)
  t = np.arange(0, n + 50)
  got = np.array([float(sched(i)) for i in t])
  np.testing.assert_allclose(got, reference(t, 1e-3, n, kind, start_frac, final_frac),
                             rtol=1e-5, atol=1e-9)
  # Held at lr until the decay starts, at final_frac * lr from update n on.
  assert got[int(start_frac * n)] == pytest.approx(1e-3)
  assert got[n:] == pytest.approx(final_frac * 1e-3, rel=1e-6, abs=1e-9)


def test_constant_is_a_plain_float():
  assert optim.learning_rate(3e-4, opt(), 100) == 3e-4


def test_adam_steps_follow_the_schedule():
  """With a constant gradient, Adam's bias-corrected step is lr_t * g / (|g| + eps) = lr_t."""
  n = 40
  cfg = opt(schedule='linear', decay_start_frac=0.25, final_lr_frac=0.0)
  g_tx, d_tx = gan.optimizers(ml_collections.ConfigDict(dict(optimizer=cfg, num_steps=n,
                                                            n_dis=2)))
  for tx, lr, updates in ((g_tx, cfg.g_lr, n), (d_tx, cfg.d_lr, 2 * n)):
    params = {'w': jnp.zeros(())}
    s = tx.init(params)
    grads = {'w': jnp.ones(())}
    steps = []
    for _ in range(updates + 3):
      u, s = tx.update(grads, s, params)
      steps.append(-float(u['w']))
    t = np.arange(updates + 3)
    np.testing.assert_allclose(steps, reference(t, lr, updates, 'linear', 0.25, 0.0),
                               rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize('overrides, match', [
    (dict(schedule='step'), 'optimizer.schedule'),
    (dict(schedule='linear', decay_start_frac=1.0), 'decay_start_frac'),
    (dict(schedule='cosine', final_lr_frac=-0.5), 'final_lr_frac'),
])
def test_bad_schedules_are_refused(overrides, match):
  with pytest.raises(ValueError, match=match):
    optim.learning_rate(1e-3, opt(**overrides), 100)


def test_decaying_schedule_needs_the_step_count():
  with pytest.raises(ValueError, match='number of train steps'):
    gan.optimizers(ml_collections.ConfigDict(dict(optimizer=opt(schedule='linear'),
                                                  num_steps=0, n_dis=1)))


def test_schedule_is_a_structural_field():
  """Switching a run between constant and decaying schedules changes the optimizer state."""
  from experiments.configs import gan_2d
  cfg = gan_2d.get_config('grid,r1_ema_long')
  decay = gan_2d.get_config('grid,r1_ema_decay')
  assert decay.optimizer.schedule == 'linear'
  assert gan.structure(cfg) != gan.structure(decay)
  g_tx, _ = gan.optimizers(decay)
  params = {'w': jnp.zeros(3)}
  leaves = jax.tree.leaves(g_tx.init(params))
  plain = jax.tree.leaves(optax.adam(1e-3).init(params))
  assert len(leaves) == len(plain) + 1  # The schedule's update count.
