"""GAN-INT-CLS losses (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016).

* :func:`matching_aware_d_loss` - the discriminator's loss, from logits. Plain (GAN): real
  images with their captions are real, generated ones fake. Matching-aware (CLS): a third kind
  of pair, a real image with a *wrong* caption, is also fake, and the two fake terms share
  one weight, as in Reed's Algorithm 1: L_D = log s_r + (log(1 - s_w) + log(1 - s_f)) / 2.
* :func:`generator_loss` - the non-saturating G loss -log D(G(z, t), t), plus (GAN-INT) the
  same term on images generated from interpolated captions.
* :func:`interpolate` - GAN-INT's beta * t1 + (1 - beta) * t2, t2 the batch rolled by one.
* :func:`mismatched` - the wrong captions of the CLS term: the batch rolled by one.
* :func:`nearest_mismatched` - harder wrong captions: for each row, the most similar other
  caption of the batch that is not a near-copy of its own (an option, not Reed's sampling).

Every loss is a sigmoid cross-entropy on raw logits (``optax.sigmoid_binary_cross_entropy``,
a log-sigmoid, never a sigmoid followed by a log), averaged over the batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def sigmoid_ce(logits: Array, target: float) -> Array:
  """Batch mean of the sigmoid cross-entropy of ``logits`` against a constant ``target``."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def mismatched(embeddings: Array, shift: int = 1) -> Array:
  """Each row gets another row's caption embedding (a roll of the batch by ``shift``)."""
  if embeddings.shape[0] < 2:
    raise ValueError(f'Mismatched captions need a batch of at least 2; got {embeddings.shape[0]}.')
  return jnp.roll(embeddings, shift, axis=0)


def nearest_mismatched(embeddings: Array, max_similarity: float = 0.8) -> Array:
  """Each row gets the batch's most similar *other* caption embedding (cosine similarity),
  among those with similarity at most ``max_similarity``.

  Reed et al. pair a real image with a random other caption. When one attribute of the
  captions (here: where the objects are) already tells almost every random pair apart, a
  matching-aware D learns that attribute alone and gives G no signal for the others; the
  nearest other caption usually agrees on the easy attributes and differs in a harder one.
  Candidates above ``max_similarity`` are skipped because a caption that close most likely
  describes the same content (on ``jaxgen_shapes`` with the CPU char-CNN-RNN: captions of
  identical attributes have median similarity 0.95, captions differing in one colour 0.59).
  A row with no candidate left falls back to the roll of :func:`mismatched`. The choice is
  made on stopped embeddings (no gradient flows through the selection).
  """
  n = embeddings.shape[0]
  if n < 2:
    raise ValueError(f'Mismatched captions need a batch of at least 2; got {n}.')
  check_wrong_captions('nearest', max_similarity)
  t = jax.lax.stop_gradient(embeddings).astype(jnp.float32)
  t = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
  sim = t @ t.T
  allowed = (sim <= max_similarity) & ~jnp.eye(n, dtype=bool)
  pick = jnp.argmax(jnp.where(allowed, sim, -jnp.inf), axis=-1)
  pick = jnp.where(allowed.any(axis=-1), pick, (jnp.arange(n) - 1) % n)  # the roll by one
  return embeddings[pick]


WRONG_CAPTIONS = ('roll', 'nearest')


def check_wrong_captions(how: str, max_similarity: float) -> None:
  """Raises ValueError unless ``how`` is one of :data:`WRONG_CAPTIONS` and
  ``max_similarity`` a cosine similarity."""
  if how not in WRONG_CAPTIONS:
    raise ValueError(f'Unknown wrong_captions {how!r}; accepted: {", ".join(WRONG_CAPTIONS)}.')
  if not -1.0 <= max_similarity <= 1.0:
    raise ValueError(f'wrong_max_similarity is a cosine similarity, in [-1, 1]; got '
                     f'{max_similarity!r}.')


def wrong_captions(embeddings: Array, how: str = 'roll', max_similarity: float = 0.8) -> Array:
  """The CLS term's wrong captions: ``'roll'`` (:func:`mismatched`, Reed's random other
  caption) or ``'nearest'`` (:func:`nearest_mismatched`)."""
  check_wrong_captions(how, max_similarity)
  if how == 'roll':
    return mismatched(embeddings)
  return nearest_mismatched(embeddings, max_similarity)


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
  real = sigmoid_ce(real_right, 1.0)
  fake = sigmoid_ce(fake_right, 0.0)
  if real_wrong is None:
    return {'loss': real + fake, 'real': real, 'fake': fake, 'wrong': jnp.zeros_like(real)}
  wrong = sigmoid_ce(real_wrong, 0.0)
  return {'loss': real + 0.5 * (fake + wrong), 'real': real, 'fake': fake, 'wrong': wrong}


def generator_loss(fake_right: Array, fake_interp: Array | None = None,
                   interp_weight: float = 1.0) -> dict:
  """G's non-saturating loss ``-log D(G(z, t), t)`` and, with GAN-INT, ``interp_weight`` times
  the same on interpolated captions. Returns ``{'loss', 'right', 'interp'}``."""
  right = sigmoid_ce(fake_right, 1.0)
  if fake_interp is None:
    return {'loss': right, 'right': right, 'interp': jnp.zeros_like(right)}
  interp = sigmoid_ce(fake_interp, 1.0)
  return {'loss': right + interp_weight * interp, 'right': right, 'interp': interp}
