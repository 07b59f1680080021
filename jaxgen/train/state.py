"""The GAN training state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class GANState:
  step: jax.Array            # int32 scalar: number of completed train steps.
  rng: jax.Array             # base key; per-step keys are fold_in(rng, step).
  g_params: PyTree
  g_state: PyTree            # G's mutable collections (batch_stats, ...), dict.
  g_opt_state: PyTree
  d_params: PyTree
  d_state: PyTree            # D's mutable collections (batch_stats, spectral-norm vectors).
  d_opt_state: PyTree
  ema_params: PyTree         # EMA of g_params ({} when EMA is off).
  # Batches skipped by divergence rollbacks: the input pipeline is at step + data_offset.
  data_offset: jax.Array


LR_SCHEDULES = ('constant', 'linear', 'cosine')


def learning_rate(base_lr: float, opt_config, num_updates: int):
  """``base_lr`` or a decaying optax schedule over ``num_updates`` optimizer updates.

  ``opt_config.schedule``: 'constant' (default), or 'linear' / 'cosine' decay that holds
  ``base_lr`` for the first ``decay_start_frac`` of the updates and then decays to
  ``final_lr_frac * base_lr`` at update ``num_updates`` (and stays there).
  """
  schedule = opt_config.get('schedule', 'constant')
  if schedule not in LR_SCHEDULES:
    raise ValueError(f'Unknown optimizer.schedule {schedule!r}; accepted: '
                     f'{", ".join(LR_SCHEDULES)}.')
  if schedule == 'constant':
    return base_lr
  start_frac = opt_config.get('decay_start_frac', 0.0)
  final_frac = opt_config.get('final_lr_frac', 0.0)
  if not 0.0 <= start_frac < 1.0:
    raise ValueError(f'optimizer.decay_start_frac must be in [0, 1); got {start_frac!r}.')
  if not 0.0 <= final_frac <= 1.0:
    raise ValueError(f'optimizer.final_lr_frac must be in [0, 1]; got {final_frac!r}.')
  start = int(start_frac * num_updates)
  length = max(num_updates - start, 1)
  if schedule == 'linear':
    return optax.linear_schedule(base_lr, base_lr * final_frac, length, transition_begin=start)
  decay = optax.cosine_decay_schedule(base_lr, length, alpha=final_frac)
  return optax.join_schedules([optax.constant_schedule(base_lr), decay], [start])


def make_optimizers(opt_config, num_steps: int = 0, n_dis: int = 1):
  """Adam for G and D (learning rate, beta1, beta2 from the config).

  With a decaying ``opt_config.schedule`` the learning rates follow it over ``num_steps``
  generator updates and ``num_steps * n_dis`` discriminator updates.
  """
  schedule = opt_config.get('schedule', 'constant')
  if schedule != 'constant' and num_steps <= 0:
    raise ValueError(f'optimizer.schedule={schedule!r} needs the number of train steps.')
  g_lr = learning_rate(opt_config.g_lr, opt_config, num_steps)
  d_lr = learning_rate(opt_config.d_lr, opt_config, num_steps * n_dis)
  g = optax.adam(g_lr, b1=opt_config.b1, b2=opt_config.b2)
  d = optax.adam(d_lr, b1=opt_config.b1, b2=opt_config.b2)
  return g, d


def sample_latent(rng, num: int, latent_dim: int, prior: str = 'normal'):
  if prior == 'normal':
    return jax.random.normal(rng, (num, latent_dim))
  if prior == 'uniform':
    return jax.random.uniform(rng, (num, latent_dim), minval=-1.0, maxval=1.0)
  raise ValueError(f'Unknown latent prior {prior!r}; accepted: normal, uniform.')


def _split_vars(variables):
  variables = dict(variables)
  params = variables.pop('params')
  return params, variables


def init_state(config, generator, discriminator, g_tx, d_tx, data_shape) -> GANState:
  """Initialises both networks from ``config.seed`` (data_shape excludes the batch)."""
  rng = jax.random.PRNGKey(config.seed)
  g_key, d_key, train_key = jax.random.split(rng, 3)
  z = jnp.zeros((2, config.model.latent_dim), jnp.float32)
  g_params, g_state = _split_vars(generator.init(g_key, z, train=False))
  x = jnp.zeros((2, *data_shape), jnp.float32)
  d_params, d_state = _split_vars(discriminator.init(d_key, x, train=False))
  ema = jax.tree.map(jnp.copy, g_params) if config.ema_decay > 0 else {}
  return GANState(step=jnp.zeros((), jnp.int32), rng=train_key,
                  g_params=g_params, g_state=g_state, g_opt_state=g_tx.init(g_params),
                  d_params=d_params, d_state=d_state, d_opt_state=d_tx.init(d_params),
                  ema_params=ema, data_offset=jnp.zeros((), jnp.int32))


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
