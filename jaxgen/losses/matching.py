"""GAN-INT-CLS losses (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016).

* :func:`matching_aware_d_loss` - the discriminator's loss, from logits. Plain (GAN): real
  images with their captions are real, generated ones fake. Matching-aware (CLS): a third kind
  of pair, a real image with a *wrong* caption, is also fake, and the two fake terms share
  one weight, as in Reed's Algorithm 1: L_D = log s_r + (log(1 - s_w) + log(1 - s_f)) / 2.
* :func:`generator_loss` - the non-saturating G loss -log D(G(z, t), t), plus (GAN-INT) the
  same term on images generated from interpolated captions.
* :func:`interpolate` - GAN-INT's beta * t1 + (1 - beta) * t2, t2 the batch rolled by one.
* :func:`mismatched` - the wrong captions of the CLS term: the batch rolled by one.

Every loss is a sigmoid cross-entropy on raw logits (``optax.sigmoid_binary_cross_entropy``,
a log-sigmoid, never a sigmoid followed by a log), averaged over the batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def _bce(logits: Array, target: float) -> Array:
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def mismatched(embeddings: Array, shift: int = 1) -> Array:
  """Each row gets another row's caption embedding (a roll of the batch by ``shift``)."""
  if embeddings.shape[0] < 2:
    raise ValueError(f'Mismatched captions need a batch of at least 2; got {embeddings.shape[0]}.')
  return jnp.roll(embeddings, shift, axis=0)


def interpolate(embeddings: Array, beta: float = 0.5, shift: int = 1) -> Array:
  """GAN-INT: ``beta * t_i + (1 - beta) * t_{i - shift}`` for every row ``i`` of the batch."""
  return beta * embeddings + (1.0 - beta) * mismatched(embeddings, shift)


def matching_aware_d_loss(real_right: Array, fake_right: Array,
                          real_wrong: Array | None = None) -> dict:
  """D's loss and its terms (batch means of sigmoid cross-entropies on logits).

  ``real_wrong=None``: the plain conditional GAN, ``real + fake``. Otherwise the matching-aware
  loss ``real + (fake + wrong) / 2``. Returns ``{'loss', 'real', 'fake', 'wrong'}`` (``wrong``
  is 0 without the CLS term).
  """
  real = _bce(real_right, 1.0)
  fake = _bce(fake_right, 0.0)
  if real_wrong is None:
    return {'loss': real + fake, 'real': real, 'fake': fake, 'wrong': jnp.zeros_like(real)}
  wrong = _bce(real_wrong, 0.0)
  return {'loss': real + 0.5 * (fake + wrong), 'real': real, 'fake': fake, 'wrong': wrong}


def generator_loss(fake_right: Array, fake_interp: Array | None = None,
                   interp_weight: float = 1.0) -> dict:
  """G's non-saturating loss ``-log D(G(z, t), t)`` and, with GAN-INT, ``interp_weight`` times
  the same on interpolated captions. Returns ``{'loss', 'right', 'interp'}``."""
  right = _bce(fake_right, 1.0)
  if fake_interp is None:
    return {'loss': right, 'right': right, 'interp': jnp.zeros_like(right)}
  interp = _bce(fake_interp, 1.0)
  return {'loss': right + interp_weight * interp, 'right': right, 'interp': interp}
