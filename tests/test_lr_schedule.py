"""Learning-rate schedules of the GAN optimizers (jaxgen.optim.learning_rate)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgen import optim
from jaxgen.families import gan


EPS32 = float(np.finfo(np.float32).eps)
# optax evaluates the schedule in float32: u = (t - start) / (n - start) (one rounding, moving
# the shape by <= pi eps32 / 2), cos (XLA:CPU, not correctly rounded: 4 ulp), 0.5 (1 + cos)
# or 1 - u, and the products with final_frac and lr (a few roundings of <= eps32 / 2 each):
# <= 8 eps32 of lr in all, absolute.
SCHEDULE_ATOL = 8 * EPS32


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
                             rtol=0, atol=SCHEDULE_ATOL * 1e-3)
  # Held at lr until the decay starts (optax forms it as (lr - end) * 1 + end there, so the
  # same float32 bound), at final_frac * lr from update n on.
  assert got[int(start_frac * n)] == pytest.approx(1e-3, rel=0, abs=SCHEDULE_ATOL * 1e-3)
  assert got[n:] == pytest.approx(final_frac * 1e-3, rel=0, abs=SCHEDULE_ATOL * 1e-3)


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
    # Adam's m_hat / (sqrt(v_hat) + eps) is 1 / (1 + 1e-8) exactly for g = 1; in float32 the
    # moments are updated recursively (one rounding each per update, so <= k eps32 relative
    # after k updates, halved by the sqrt for v) and bias-corrected (a power and a division):
    # <= (2 k + 8) eps32 relative, plus Adam's eps (1e-8 relative); times lr_t, which is off
    # by SCHEDULE_ATOL * lr.
    k = len(t)
    want = reference(t, lr, updates, 'linear', 0.25, 0.0)
    tol = ((2 * k + 8) * EPS32 + 1e-8) * want + SCHEDULE_ATOL * lr
    assert np.all(np.abs(np.array(steps) - want) <= tol)


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
