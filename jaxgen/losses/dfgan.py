"""DF-GAN losses (Tao et al., CVPR 2022): hinge terms over matching and mismatched pairs, and
the matching-aware zero-centred gradient penalty (MA-GP).

* :func:`discriminator_loss` - D's hinge loss on three kinds of pairs: real image with its
  own sentence (pushed above +1), generated image with the sentence it was made from and real
  image with another example's sentence (both pushed below -1). As in the official step the
  two negative terms share one weight: ``real + (fake + mismatch) / 2``.
* :func:`generator_loss` - ``-mean D(G(z, s), s)``, the hinge GAN's generator loss.
* :func:`ma_gp` - ``k * mean_i ||(grad_x D(x_i, s_i), grad_s D(x_i, s_i))||^p`` on real
  images with their matching sentences (k = 2, p = 6 in the paper): D is made flat around
  the real, matching data in both its inputs, so its loss surface is smooth where G must
  converge. The paper writes (||grad_x D|| + ||grad_s D||)^p; the official code (and so its
  results) takes the norm of the two gradients flattened and concatenated per example,
  sqrt(||grad_x||^2 + ||grad_s||^2), and that is what is computed here.
* :func:`mismatch` - the mismatched pairs: D's real features rolled by one along the batch
  (row i holds image i+1's features and is scored against sentence i), as in the official
  step, which rolls features rather than sentences.

The three D logits and the G logits are raw outputs of the head (no sigmoid).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
LogitFn = Callable[[Array, Array], Array]


def hinge_real(logits: Array) -> Array:
  """mean(max(0, 1 - l)): zero once a positive pair scores at least +1."""
  return jnp.mean(jax.nn.relu(1.0 - logits))


def hinge_fake(logits: Array) -> Array:
  """mean(max(0, 1 + l)): zero once a negative pair scores at most -1."""
  return jnp.mean(jax.nn.relu(1.0 + logits))


def mismatch(features: Array) -> Array:
  """Each row gets the next row's features (``cat(f[1:], f[:1])``, a roll by -1)."""
  if features.shape[0] < 2:
    raise ValueError(f'Mismatched pairs need a batch of at least 2; got {features.shape[0]}.')
  return jnp.roll(features, -1, axis=0)


def discriminator_loss(real_match: Array, fake_match: Array, real_mismatch: Array) -> dict:
  """D's hinge loss ``real + (fake + mismatch) / 2`` and its terms.

  Returns ``{'loss', 'real', 'fake', 'mismatch'}``; the train step adds :func:`ma_gp`.
  """
  real = hinge_real(real_match)
  fake = hinge_fake(fake_match)
  mis = hinge_fake(real_mismatch)
  return {'loss': real + 0.5 * (fake + mis), 'real': real, 'fake': fake, 'mismatch': mis}


def generator_loss(fake_match: Array) -> Array:
  """``-mean D(G(z, s), s)``."""
  return -jnp.mean(fake_match)


def ma_gp_with_logits(logit_fn: Callable, x: Array, s: Array, k: float = 2.0, p: float = 6.0,
                      *, has_aux: bool = False) -> tuple:
  """``(MA-GP, logit_fn(x, s))`` from one forward pass (the logits feed the real hinge term).

  ``logit_fn(x, s)`` returns D's logits [B] for images x [B, ...] and sentences s [B, D].
  With ``has_aux`` it returns ``(logits, aux)`` and the result is ``(MA-GP, logits, aux)``:
  the train step passes D's features of x as ``aux``, so the real term, the penalty and the
  mismatched pairs share one feature pass, as in the official step (the penalty
  differentiates the logits only).
  Per-example gradients are taken as the gradient of sum_i D(x_i, s_i), exact because DF-GAN's
  D has no batch-coupled layers (no BatchNorm). ``||g||^p`` is computed as
  ``(||g||^2)^(p/2)``, the same number, which for p >= 2 has a finite derivative at g = 0
  (no square root), so the penalty can be differentiated again w.r.t. D's parameters.
  """
  if not p > 0:
    raise ValueError(f'MA-GP exponent p must be > 0; got {p!r}.')
  if has_aux:
    logits, vjp, aux = jax.vjp(logit_fn, x, s, has_aux=True)
  else:
    logits, vjp = jax.vjp(logit_fn, x, s)
  gx, gs = vjp(jnp.ones_like(logits))
  b = x.shape[0]
  sq = (jnp.sum(jnp.square(gx.reshape((b, -1))), axis=1)
        + jnp.sum(jnp.square(gs.reshape((b, -1))), axis=1))
  penalty = k * jnp.mean(sq ** (0.5 * p))
  return (penalty, logits, aux) if has_aux else (penalty, logits)


def ma_gp(logit_fn: LogitFn, x: Array, s: Array, k: float = 2.0, p: float = 6.0) -> Array:
  """``k * mean_i ||(grad_x D, grad_s D)_i||^p`` (see :func:`ma_gp_with_logits`)."""
  return ma_gp_with_logits(logit_fn, x, s, k, p)[0]
