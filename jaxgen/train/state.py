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


def make_optimizers(opt_config):
  """Adam for G and D (learning rate, beta1, beta2 from the config)."""
  g = optax.adam(opt_config.g_lr, b1=opt_config.b1, b2=opt_config.b2)
  d = optax.adam(opt_config.d_lr, b1=opt_config.b1, b2=opt_config.b2)
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
