"""Image-text matching losses for learning joint embeddings (caption encoders for T2I GANs).

Both losses score every image of a batch against every caption, ``S[i, j]`` for image ``i``
and caption ``j`` (caption ``i`` describes image ``i``), and ask in both directions that the
matching pair beat the others: image -> text along the rows of S, text -> image along its
columns. They return the sum of the two directions' batch means.

* :func:`joint_embedding_loss` - the symmetric structured joint embedding of Reed, Akata,
  Lee & Schiele (CVPR 2016), trained to produce the char-CNN-RNN embeddings of GAN-INT-CLS.
  Compatibility is the inner product ``S = images @ texts.T``. ``form='softmax'`` (default)
  is the softmax cross-entropy over each row and each column (a smooth multi-class loss);
  ``form='hinge'`` the multi-class hinge ``sum_{j != i} max(0, margin + S[i, j] - S[i, i])``
  summed over the wrong captions (columns: wrong images), as in Reed's released training
  code (the paper's structured loss takes the max over classes).
* :func:`damsm_sentence_loss` - the sentence-level term of AttnGAN's Deep Attentional
  Multimodal Similarity Model (Xu et al., CVPR 2018): cosine similarities scaled by
  ``gamma3 = 10``, softmax cross-entropy in both directions.

With ``labels`` (class per pair), other pairs of the same class are not counted as wrong
matches (AttnGAN masks them out of the softmax; here too, and the hinge skips them), so two
captions of the same bird species are not pushed apart.

``hard_negatives`` (not in either paper): a [batch, dim] text embedding per image, a caption
that is wrong for that image only (e.g. its own caption with one word changed,
:func:`jaxgen.data.shapes.counterfactual_caption`). It joins row i of the image -> text
direction as one more wrong caption (one more softmax term, or one more hinge); the text ->
image direction is unchanged, since a hard negative describes no image of the batch.

Everything works on raw scores (log-softmax, never softmax then log), and the cosine uses a
clamped norm so a zero vector (e.g. the embedding of an empty caption) has finite gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
FORMS = ('softmax', 'hinge')


def _check(a: Array, b: Array, labels, hard=None):
  if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
    raise ValueError(f'image and text embeddings must both be [batch, dim] of equal shape; '
                     f'got {a.shape} and {b.shape}.')
  if labels is not None and jnp.shape(labels) != a.shape[:1]:
    raise ValueError(f'labels must be [batch] = {a.shape[:1]}; got {jnp.shape(labels)}.')
  if hard is not None and jnp.shape(hard) != a.shape:
    raise ValueError(f'hard_negatives must be [batch, dim] = {a.shape}, one wrong caption '
                     f'per image; got {jnp.shape(hard)}.')


def _wrong_pairs(n: int, labels) -> Array:
  """bool [n, n]: (i, j) counts as a wrong match (i != j and, with labels, another class)."""
  wrong = ~jnp.eye(n, dtype=bool)
  if labels is not None:
    labels = jnp.asarray(labels)
    wrong &= labels[:, None] != labels[None, :]
  return wrong


def _bidirectional_cross_entropy(scores: Array, labels, hard_scores=None) -> Array:
  """Row-wise plus column-wise softmax cross-entropy with the diagonal as the targets;
  ``hard_scores[i]`` (optional) is one more wrong logit of row i only."""
  keep = _wrong_pairs(scores.shape[0], labels) | jnp.eye(scores.shape[0], dtype=bool)
  masked = jnp.where(keep, scores, -jnp.inf)
  diag = jnp.diagonal(scores)
  row_logits = masked if hard_scores is None else jnp.concatenate(
      [masked, hard_scores[:, None]], axis=1)
  rows = jax.nn.logsumexp(row_logits, axis=1) - diag
  cols = jax.nn.logsumexp(masked, axis=0) - diag
  return rows.mean() + cols.mean()


def joint_embedding_loss(image_emb: Array, text_emb: Array, *, form: str = 'softmax',
                         margin: float = 1.0, labels=None, hard_negatives=None) -> Array:
  """Reed et al.'s symmetric joint embedding loss (see the module docstring); a scalar."""
  _check(image_emb, text_emb, labels, hard_negatives)
  scores = image_emb @ text_emb.T
  hard = None if hard_negatives is None else jnp.sum(image_emb * hard_negatives, axis=-1)
  if form == 'softmax':
    return _bidirectional_cross_entropy(scores, labels, hard)
  if form == 'hinge':
    wrong = _wrong_pairs(scores.shape[0], labels)
    diag = jnp.diagonal(scores)
    img_to_txt = jnp.where(wrong, jax.nn.relu(margin + scores - diag[:, None]), 0.0).sum(axis=1)
    if hard is not None:
      img_to_txt = img_to_txt + jax.nn.relu(margin + hard - diag)
    txt_to_img = jnp.where(wrong, jax.nn.relu(margin + scores - diag[None, :]), 0.0)
    return img_to_txt.mean() + txt_to_img.sum(axis=0).mean()
  raise ValueError(f'Unknown form {form!r}; accepted: {", ".join(FORMS)}.')


def _norm(x: Array, eps: float) -> Array:
  """Row L2 norms; the sqrt clamped away from 0, where its derivative is infinite."""
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), eps * eps))


def cosine_similarity_matrix(a: Array, b: Array, eps: float = 1e-8) -> Array:
  """``a_i . b_j / max(|a_i| |b_j|, eps)`` (AttnGAN's clamp), finite gradients at zero."""
  return (a @ b.T) / jnp.maximum(_norm(a, eps)[:, None] * _norm(b, eps)[None, :], eps)


def cosine_similarity(a: Array, b: Array, eps: float = 1e-8) -> Array:
  """Row-wise ``a_i . b_i / max(|a_i| |b_i|, eps)``: the diagonal of
  :func:`cosine_similarity_matrix` without the other entries."""
  return jnp.sum(a * b, axis=-1) / jnp.maximum(_norm(a, eps) * _norm(b, eps), eps)


def damsm_sentence_loss(image_code: Array, sentence_code: Array, *, gamma3: float = 10.0,
                        labels=None, eps: float = 1e-8, hard_negatives=None) -> Array:
  """AttnGAN's DAMSM sentence loss: image->text plus text->image cross-entropy; a scalar."""
  _check(image_code, sentence_code, labels, hard_negatives)
  hard = None if hard_negatives is None else gamma3 * cosine_similarity(
      image_code, hard_negatives, eps)
  return _bidirectional_cross_entropy(
      gamma3 * cosine_similarity_matrix(image_code, sentence_code, eps), labels, hard)
