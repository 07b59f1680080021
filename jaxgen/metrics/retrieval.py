"""Caption -> image retrieval accuracy among a fixed number of candidates.

For every caption, the image it describes is ranked against ``num_candidates - 1`` other
images drawn at random (seeded) from the rest of the set, by the similarity of their
embeddings (cosine by default, as AttnGAN's R-precision and DAMSM; ``'dot'`` for Reed et al.'s
inner-product compatibility). Top-k accuracy is the fraction of captions whose own image is
among the k best. The standard setting is 100 candidates, top-1 and top-5.

The same function ranks captions for an image (AttnGAN's R-precision: a generated image
against its own caption and 99 others) with the roles swapped: queries are images, keys
captions.

Ties count against the true image (its rank is the number of other candidates scoring at
least as high), so a constant embedding scores 0, not chance. Everything is numpy float64;
non-finite embeddings raise ValueError rather than produce a meaningless number.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SIMILARITIES = ('cosine', 'dot')


def sample_candidates(true_index, num_images: int, num_candidates: int = 100, *,
                      seed: int = 0, image_labels=None) -> np.ndarray:
  """int64 [N, num_candidates]: column 0 the true image, then distinct other images.

  With ``image_labels`` ([num_images]), the other images are drawn from other classes only.
  """
  true_index = np.asarray(true_index, dtype=np.int64)
  if true_index.ndim != 1 or true_index.size == 0:
    raise ValueError(f'true_index must be a non-empty 1-D array; got shape {true_index.shape}.')
  if true_index.min() < 0 or true_index.max() >= num_images:
    raise ValueError(f'true_index must lie in [0, {num_images}); got values in '
                     f'[{true_index.min()}, {true_index.max()}].')
  if image_labels is not None:
    image_labels = np.asarray(image_labels)
    if image_labels.shape != (num_images,):
      raise ValueError(f'image_labels must be [{num_images}]; got {image_labels.shape}.')
  rng = np.random.default_rng(seed)
  out = np.empty((len(true_index), num_candidates), dtype=np.int64)
  for q, t in enumerate(true_index):
    if image_labels is None:
      pool = np.delete(np.arange(num_images), t)
    else:
      pool = np.flatnonzero(image_labels != image_labels[t])
    if len(pool) < num_candidates - 1:
      raise ValueError(f'Only {len(pool)} eligible other images for caption {q}; '
                       f'{num_candidates - 1} are needed for {num_candidates} candidates.')
    out[q, 0] = t
    out[q, 1:] = rng.choice(pool, size=num_candidates - 1, replace=False)
  return out


def row_similarity(a: np.ndarray, b: np.ndarray, similarity: str = 'cosine') -> np.ndarray:
  """[N] similarities of the pairs (a_i, b_i), as :func:`caption_to_image_retrieval` scores
  them (``dot`` or ``cosine``): the diagonal of the pairwise scores, so both agree exactly."""
  return np.diagonal(_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                 similarity)).copy()


def _similarity(queries: np.ndarray, keys: np.ndarray, similarity: str) -> np.ndarray:
  """[N, D] x [M, D] -> [N, M] (``einsum``, not BLAS: one summation order for every pair,
  so equal keys score exactly equal and ties stay ties)."""
  if similarity not in SIMILARITIES:
    raise ValueError(f'Unknown similarity {similarity!r}; accepted: {", ".join(SIMILARITIES)}.')
  dots = np.einsum('nd,md->nm', queries, keys)
  if similarity == 'dot':
    return dots
  qn = np.linalg.norm(queries, axis=-1)
  kn = np.linalg.norm(keys, axis=-1)
  return dots / np.maximum(qn[:, None] * kn[None, :], 1e-12)


def candidate_scores(queries: np.ndarray, keys: np.ndarray, candidates: np.ndarray,
                     similarity: str, max_elements: int = 1 << 22) -> np.ndarray:
  """[N, C]: the similarity of query n with key ``candidates[n, c]``.

  Each chunk of queries is scored against every key once, then the candidates are gathered,
  so memory stays O(chunk * M) rather than O(N * C * D) (10 captions x 500 images x 100
  candidates x 1024 dims would be 4 GB).
  """
  chunk = max(1, max_elements // max(1, len(keys)))
  out = np.empty(candidates.shape, dtype=np.float64)
  for s in range(0, len(queries), chunk):
    full = _similarity(queries[s:s + chunk], keys, similarity)
    out[s:s + chunk] = np.take_along_axis(full, candidates[s:s + chunk], axis=1)
  return out


def true_ranks(scores) -> np.ndarray:
  """0-based rank of column 0 of ``scores`` [N, C]: how many others score >= it."""
  scores = np.asarray(scores)
  return np.sum(scores[:, 1:] >= scores[:, :1], axis=1)


def topk_accuracy(ranks, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
  ranks = np.asarray(ranks)
  return {k: float(np.mean(ranks < k)) for k in ks}


def caption_to_image_retrieval(caption_emb, image_emb, true_index=None, *,
                               num_candidates: int = 100, ks: Sequence[int] = (1, 5),
                               seed: int = 0, similarity: str = 'cosine',
                               image_labels=None, candidates=None) -> dict[str, float]:
  """Top-k caption -> image accuracy; returns {'top1': ..., 'top5': ...} (one key per k).

  ``caption_emb`` [N, D], ``image_emb`` [M, D]; ``true_index`` [N] gives each caption's
  image (default: caption i describes image i). ``candidates`` [N, C] (column 0 the true
  image) overrides the seeded draw of :func:`sample_candidates`.
  """
  caption_emb = np.asarray(caption_emb, dtype=np.float64)
  image_emb = np.asarray(image_emb, dtype=np.float64)
  if caption_emb.ndim != 2 or image_emb.ndim != 2 or caption_emb.shape[1] != image_emb.shape[1]:
    raise ValueError(f'Embeddings must be [N, D] and [M, D]; got {caption_emb.shape} and '
                     f'{image_emb.shape}.')
  if not (np.isfinite(caption_emb).all() and np.isfinite(image_emb).all()):
    raise ValueError('Embeddings contain NaN or infinite values.')
  if true_index is None:
    true_index = np.arange(len(caption_emb))
  if candidates is None:
    candidates = sample_candidates(true_index, len(image_emb), num_candidates, seed=seed,
                                   image_labels=image_labels)
  candidates = np.asarray(candidates)
  if candidates.shape[0] != len(caption_emb) or not np.array_equal(candidates[:, 0],
                                                                   np.asarray(true_index)):
    raise ValueError('candidates must be [N, C] with each caption\'s true image in column 0.')
  if similarity not in SIMILARITIES:
    raise ValueError(f'Unknown similarity {similarity!r}; accepted: {", ".join(SIMILARITIES)}.')
  if max(ks) > candidates.shape[1]:
    raise ValueError(f'k={max(ks)} exceeds the {candidates.shape[1]} candidates.')
  scores = candidate_scores(caption_emb, image_emb, candidates, similarity)
  acc = topk_accuracy(true_ranks(scores), ks)
  return {f'top{k}': v for k, v in acc.items()}


def r_precision(image_emb, caption_emb, *, num_candidates: int = 100, seed: int = 0,
                similarity: str = 'cosine') -> float:
  """AttnGAN's R-precision (R = 1): the fraction of images that rank their own caption
  first among ``num_candidates`` (it and others drawn at random); image ``i`` goes with
  caption ``i`` (e.g. it was generated from it). Text-to-image models report it with the
  embeddings of their pretrained text encoder; real images with their captions give its
  ceiling."""
  return caption_to_image_retrieval(image_emb, caption_emb, num_candidates=num_candidates,
                                    ks=(1,), seed=seed, similarity=similarity)['top1']
