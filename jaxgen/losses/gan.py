"""Adversarial losses on discriminator logits, selectable by name.

Every loss takes raw discriminator outputs ("logits"); probabilities are never formed, so
log D(x) = -softplus(-l) and log(1 - D(x)) = -softplus(l) stay finite at |l| = 100.
Each loss is a pair of pure functions returning the batch mean:

* ``d_loss(real_logits, fake_logits)`` - minimised by the discriminator,
* ``g_loss(fake_logits)`` - minimised by the generator.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxgen import registry

Array = jax.Array


class GANLoss(NamedTuple):
  d_loss: Callable[[Array, Array], Array]
  g_loss: Callable[[Array], Array]


def _bce_d_loss(real_logits: Array, fake_logits: Array) -> Array:
  # -[log D(x) + log(1 - D(G(z)))] = softplus(-real) + softplus(fake)
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def minimax_g_loss(fake_logits: Array) -> Array:
  """Goodfellow's saturating objective: minimise log(1 - D(G(z))) = -softplus(fake)."""
  return -jnp.mean(jax.nn.softplus(fake_logits))


def non_saturating_g_loss(fake_logits: Array) -> Array:
  """The practical generator loss -log D(G(z)) = softplus(-fake)."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def hinge_d_loss(real_logits: Array, fake_logits: Array) -> Array:
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits: Array) -> Array:
  return -jnp.mean(fake_logits)


def wasserstein_d_loss(real_logits: Array, fake_logits: Array) -> Array:
  return jnp.mean(fake_logits) - jnp.mean(real_logits)


def wasserstein_g_loss(fake_logits: Array) -> Array:
  return -jnp.mean(fake_logits)


def least_squares_d_loss(real_logits: Array, fake_logits: Array) -> Array:
  """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real)."""
  return 0.5 * jnp.mean(jnp.square(real_logits - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_logits))


def least_squares_g_loss(fake_logits: Array) -> Array:
  """LSGAN generator target c=1."""
  return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


_LOSSES = {
    'minimax': GANLoss(_bce_d_loss, minimax_g_loss),
    'non_saturating': GANLoss(_bce_d_loss, non_saturating_g_loss),
    'hinge': GANLoss(hinge_d_loss, hinge_g_loss),
    'wasserstein': GANLoss(wasserstein_d_loss, wasserstein_g_loss),
    'least_squares': GANLoss(least_squares_d_loss, least_squares_g_loss),
}
LOSS_NAMES = tuple(_LOSSES)




def get_gan_loss(name: str) -> GANLoss:
  """Returns the (d_loss, g_loss) pair called ``name``."""
  return registry.lookup(_LOSSES, name, 'GAN loss')
