"""Style-encoder evaluation as Reed et al. (ICML 2016, section 5.3) did it.

Real images are clustered by background colour (k-means; Reed used 100 clusters on their
birds). The style encoder S maps each image to a latent vector; for every pair of images the
cosine similarity of their S vectors is a score that should be higher for pairs from the
same cluster. The ROC curve of that score against "same cluster" and its area (AUC) measure
how much of the style (here: the background) S recovers. Chance is 0.5.

The background colour of an image is the per-channel median of its border pixels (in
``jaxgen_shapes`` objects never reach the border). scikit-learn's ``KMeans``,
``roc_auc_score`` and ``roc_curve`` are used when installed; otherwise numpy versions
(Lloyd's algorithm with k-means++ seeding; the rank-sum AUC) give the same definitions.
"""
from __future__ import annotations

import numpy as np


def background_colours(images) -> np.ndarray:
  """[N, C]: per-channel median of the border pixels of NHWC images."""
  x = np.asarray(images, np.float32)
  if x.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C]; got shape {x.shape}.')
  border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
  return np.median(border, axis=1)


def _kmeans_numpy(points, k, seed, iters=100):
  rng = np.random.default_rng(seed)
  centres = [points[rng.integers(len(points))]]
  for _ in range(1, k):  # k-means++ seeding
    d2 = np.min(((points[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(points), 1 / len(points))
    centres.append(points[rng.choice(len(points), p=p)])
  centres = np.asarray(centres)
  labels = np.zeros(len(points), np.int64)
  for _ in range(iters):
    labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    new = np.asarray([points[labels == j].mean(0) if np.any(labels == j) else centres[j]
                      for j in range(k)])
    if np.allclose(new, centres):
      break
    centres = new
  return labels


def cluster(points, k: int, seed: int = 0) -> np.ndarray:
  """k-means labels [N] of ``points`` [N, D]."""
  points = np.asarray(points, np.float64)
  if not isinstance(k, int) or not 1 <= k <= len(points):
    raise ValueError(f'num_clusters must be an integer in [1, {len(points)}]; got {k!r}.')
  try:
    from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _kmeans_numpy(points, k, seed)
  return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(points)


def pair_scores(features, labels) -> tuple[np.ndarray, np.ndarray]:
  """(cosine similarity, same label) for every pair i < j.

  From the N x N Gram matrix: memory O(N^2 + N D), where gathering both rows of every pair
  would take O(N^2 D) (12 GB for 500 images of 64x64x3 raw pixels)."""
  f = np.asarray(features, np.float64)
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  i, j = np.triu_indices(len(f), k=1)
  labels = np.asarray(labels)
  return (f @ f.T)[i, j], labels[i] == labels[j]


def roc_auc(scores, positive) -> float:
  """Area under the ROC curve (ties count one half): the Mann-Whitney statistic."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if n_pos == 0 or n_neg == 0:
    raise ValueError('ROC AUC needs both same-cluster and different-cluster pairs; got '
                     f'{n_pos} and {n_neg}.')
  try:
    from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
    return float(roc_auc_score(positive, scores))
  except ImportError:
    from scipy.stats import rankdata  # pylint: disable=g-import-not-at-top
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores, positive) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) over every threshold."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  order = np.argsort(-scores, kind='stable')
  s, p = scores[order], positive[order]
  last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # one point per distinct score
  tp, fp = np.cumsum(p)[last], np.cumsum(~p)[last]
  return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def style_roc(features, images, num_clusters: int, seed: int = 0) -> dict:
  """Reed's evaluation: clusters of ``images`` by background, ROC of S's ``features``."""
  labels = cluster(background_colours(images), num_clusters, seed)
  scores, same = pair_scores(features, labels)
  fpr, tpr = roc_curve(scores, same)
  return {'auc': roc_auc(scores, same), 'fpr': fpr, 'tpr': tpr, 'clusters': labels,
          'cos_same': float(scores[same].mean()), 'cos_other': float(scores[~same].mean())}


def write_roc_png(path: str, curves: dict, title: str = 'Style encoder: same background?'):
  """One ROC curve per entry ``{label: (fpr, tpr, auc)}``, written as a PNG."""
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
  for label, (fpr, tpr, auc) in curves.items():
    ax.plot(fpr, tpr, label=f'{label} (AUC {auc:.3f})')
  ax.plot([0, 1], [0, 1], 'k:', lw=0.8, label='chance')
  ax.set_xlabel('false positive rate')
  ax.set_ylabel('true positive rate')
  ax.set_title(title, fontsize=9)
  ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
