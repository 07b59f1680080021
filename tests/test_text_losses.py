"""Joint-embedding and DAMSM losses against numpy loops; retrieval accuracy against brute force."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.losses import text as losses
from jaxgen.metrics import retrieval

# The losses are sums of N log-sum-exps / hinges of N float32 inner products of D-vectors
# with O(1) entries (N, D <= 8): each score carries a rounding error of about D * 2**-24 * |s|
# and the reductions add N such terms, so 1e-5 relative bounds float32 vs float64 with margin.
RTOL = 1e-5


def _np_ce_both(scores, keep):
  """sum over rows i of -log softmax_i(scores[i, keep[i]])[i], and the same over columns."""
  n = len(scores)
  total_rows = total_cols = 0.0
  for i in range(n):
    row = [scores[i, j] for j in range(n) if keep[i, j]]
    total_rows += np.log(np.sum(np.exp(row))) - scores[i, i]
    col = [scores[j, i] for j in range(n) if keep[j, i]]
    total_cols += np.log(np.sum(np.exp(col))) - scores[i, i]
  return total_rows / n + total_cols / n


def _data(n=6, d=5, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


def test_joint_embedding_softmax_matches_hand_computation():
  img, txt = _data()
  s = img.astype(np.float64) @ txt.astype(np.float64).T
  ref = _np_ce_both(s, np.ones_like(s, bool))
  got = losses.joint_embedding_loss(jnp.asarray(img), jnp.asarray(txt))
  np.testing.assert_allclose(got, ref, rtol=RTOL)
  # A 2x2 case by hand: S = [[2, 0], [1, 3]].
  # rows: log(e^2 + 1) - 2, log(e + e^3) - 3; cols: log(e^2 + e) - 2, log(1 + e^3) - 3.
  i2, t2 = jnp.array([[2.0, 0.0], [1.0, 3.0]]), jnp.eye(2)
  e = np.e
  hand = (np.log(e**2 + 1) - 2 + np.log(e + e**3) - 3) / 2 + \
         (np.log(e**2 + e) - 2 + np.log(1 + e**3) - 3) / 2
  np.testing.assert_allclose(losses.joint_embedding_loss(i2, t2), hand, rtol=RTOL)


def test_joint_embedding_hinge_and_labels_match_loops():
  img, txt = _data(seed=1)
  labels = np.array([0, 1, 0, 2, 1, 3])
  s = img.astype(np.float64) @ txt.astype(np.float64).T
  n = len(s)
  for lab in (None, labels):
    wrong = [[i != j and (lab is None or lab[i] != lab[j]) for j in range(n)] for i in range(n)]
    rows = sum(max(0, 0.5 + s[i, j] - s[i, i]) for i in range(n) for j in range(n)
               if wrong[i][j]) / n
    cols = sum(max(0, 0.5 + s[i, j] - s[j, j]) for i in range(n) for j in range(n)
               if wrong[i][j]) / n
    got = losses.joint_embedding_loss(img, txt, form='hinge', margin=0.5, labels=lab)
    np.testing.assert_allclose(got, rows + cols, rtol=RTOL)
    keep = np.array(wrong) | np.eye(n, dtype=bool)
    np.testing.assert_allclose(losses.joint_embedding_loss(img, txt, labels=lab),
                               _np_ce_both(s, keep), rtol=RTOL)


def test_damsm_sentence_loss_matches_attngan_formula():
  img, txt = _data(seed=2)
  a, b = img.astype(np.float64), txt.astype(np.float64)
  cos = (a @ b.T) / (np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None])
  ref = _np_ce_both(10.0 * cos, np.ones_like(cos, bool))
  np.testing.assert_allclose(losses.damsm_sentence_loss(img, txt), ref, rtol=RTOL)
  # Scale invariance (cosine) and symmetry (both directions are summed).
  np.testing.assert_allclose(losses.damsm_sentence_loss(3 * img, 0.5 * txt), ref, rtol=RTOL)
  np.testing.assert_allclose(losses.damsm_sentence_loss(txt, img), ref, rtol=RTOL)
  np.testing.assert_allclose(losses.damsm_sentence_loss(img, txt, gamma3=5.0),
                             _np_ce_both(5.0 * cos, np.ones_like(cos, bool)), rtol=RTOL)


def test_hard_negatives_join_only_their_own_row():
  """``hard_negatives[i]`` is one more wrong caption of image i: one more term of row i's
  softmax (or one more hinge), and no column changes. Checked against loops in float64."""
  img, txt = _data(seed=5)
  hard = np.random.default_rng(6).normal(size=img.shape).astype(np.float32)
  a, b, h = (x.astype(np.float64) for x in (img, txt, hard))
  n = len(a)
  labels = np.array([0, 1, 0, 2, 1, 3])

  def ce(s, hs, keep):
    rows = sum(np.log(np.sum(np.exp([s[i, j] for j in range(n) if keep[i, j]] + [hs[i]])))
               - s[i, i] for i in range(n)) / n
    cols = sum(np.log(np.sum(np.exp([s[j, i] for j in range(n) if keep[j, i]]))) - s[i, i]
               for i in range(n)) / n
    return rows + cols

  s = a @ b.T
  hs = np.einsum('nd,nd->n', a, h)
  for lab in (None, labels):
    keep = np.array([[i == j or lab is None or lab[i] != lab[j] for j in range(n)]
                     for i in range(n)])
    got = losses.joint_embedding_loss(img, txt, labels=lab, hard_negatives=hard)
    np.testing.assert_allclose(got, ce(s, hs, keep), rtol=RTOL)
    wrong = keep & ~np.eye(n, dtype=bool)
    rows = sum(max(0, 0.5 + s[i, j] - s[i, i]) for i in range(n) for j in range(n)
               if wrong[i, j]) + sum(max(0, 0.5 + hs[i] - s[i, i]) for i in range(n))
    cols = sum(max(0, 0.5 + s[i, j] - s[j, j]) for i in range(n) for j in range(n)
               if wrong[i, j])
    got = losses.joint_embedding_loss(img, txt, form='hinge', margin=0.5, labels=lab,
                                      hard_negatives=hard)
    np.testing.assert_allclose(got, (rows + cols) / n, rtol=RTOL)
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  cos = norm(a) @ norm(b).T
  hcos = np.einsum('nd,nd->n', norm(a), norm(h))
  np.testing.assert_allclose(losses.damsm_sentence_loss(img, txt, hard_negatives=hard),
                             ce(10.0 * cos, 10.0 * hcos, np.ones((n, n), bool)), rtol=RTOL)
  np.testing.assert_allclose(losses.cosine_similarity(img, hard), hcos, rtol=RTOL)
  # Not vacuous: a hard negative always adds a positive amount to the softmax loss.
  assert losses.joint_embedding_loss(img, txt, hard_negatives=hard) > \
      losses.joint_embedding_loss(img, txt)
  with pytest.raises(ValueError, match='hard_negatives must be'):
    losses.joint_embedding_loss(img, txt, hard_negatives=hard[:2])


def test_losses_are_stable_and_have_finite_gradients():
  img, txt = _data(seed=3)
  # Scores of order 1e4: softmax then log would overflow; log-sum-exp does not.
  big = losses.joint_embedding_loss(100 * img, 100 * txt)
  assert np.isfinite(big)
  # Perfectly separated pairs (orthogonal one-hots, large scale): the loss goes to 0.
  eye = 50 * jnp.eye(4)
  assert losses.joint_embedding_loss(eye, eye) < 1e-6
  assert losses.joint_embedding_loss(eye, eye, form='hinge') == 0
  # A zero vector (empty caption) keeps the cosine's gradient finite.
  txt0 = txt.copy()
  txt0[2] = 0
  g = jax.grad(lambda t: losses.damsm_sentence_loss(img, t))(jnp.asarray(txt0))
  assert np.isfinite(g).all()


def test_softmax_loss_gradient_matches_finite_differences():
  img, txt = _data(n=4, d=3, seed=4)
  with jax.enable_x64(True):
    i64, t64 = jnp.asarray(img, jnp.float64), jnp.asarray(txt, jnp.float64)
    f = lambda i: losses.joint_embedding_loss(i, t64)  # noqa: E731
    g = np.asarray(jax.grad(f)(i64))
    h = 1e-6  # float64 central differences: error O(h^2) + O(eps / h) ~ 1e-10.
    fd = np.zeros_like(g)
    for idx in np.ndindex(*img.shape):
      e = np.zeros(img.shape)
      e[idx] = h
      fd[idx] = (f(i64 + e) - f(i64 - e)) / (2 * h)
  np.testing.assert_allclose(g, fd, atol=1e-8)


def test_loss_input_errors():
  img, txt = _data()
  with pytest.raises(ValueError, match='equal shape'):
    losses.joint_embedding_loss(img, txt[:3])
  with pytest.raises(ValueError, match='softmax, hinge'):
    losses.joint_embedding_loss(img, txt, form='triplet')
  with pytest.raises(ValueError, match='labels must be'):
    losses.damsm_sentence_loss(img, txt, labels=np.zeros(2))


# ----------------------------------------------------------------------------- retrieval

def _brute_force(cap, img, cands, k):
  hits = 0
  for q in range(len(cap)):
    def cos(m):
      return float(cap[q] @ img[m] / (np.linalg.norm(cap[q]) * np.linalg.norm(img[m])))
    true = cos(cands[q][0])
    better = sum(1 for m in cands[q][1:] if cos(m) >= true)
    hits += better < k
  return hits / len(cap)


def test_retrieval_matches_brute_force():
  rng = np.random.default_rng(0)
  img = rng.normal(size=(150, 8))
  cap = img[:120] + 1.5 * rng.normal(size=(120, 8))  # caption i describes image i
  got = retrieval.caption_to_image_retrieval(cap, img, seed=7)
  cands = retrieval.sample_candidates(np.arange(120), 150, 100, seed=7)
  for k in (1, 5):
    assert got[f'top{k}'] == pytest.approx(_brute_force(cap, img, cands, k), abs=0)
  assert 0 < got['top1'] < got['top5'] < 1  # noisy captions: a non-trivial case


def test_retrieval_known_answers():
  rng = np.random.default_rng(1)
  img = rng.normal(size=(100, 6))
  # Captions equal to their images: cosine 1 beats every other candidate.
  assert retrieval.caption_to_image_retrieval(img, img) == {'top1': 1.0, 'top5': 1.0}
  # Constant embeddings: every candidate ties, and ties count against the true image.
  const = np.ones((100, 6))
  assert retrieval.caption_to_image_retrieval(const, const) == {'top1': 0.0, 'top5': 0.0}
  # Hand-built ranks: image m scores m / 100 against every caption (dot product with e0);
  # caption q describes image q and is offered all 100 images, so 99 - q others beat it.
  cands = np.stack([np.roll(np.arange(100), -q) for q in range(10)])
  scores_img = np.zeros((100, 2))
  scores_img[:, 0] = np.arange(100) / 100.0
  cap = np.tile([1.0, 0.0], (10, 1))
  true_idx = cands[:, 0]
  ranks = np.array([np.sum(scores_img[cands[q, 1:], 0] >= scores_img[cands[q, 0], 0])
                    for q in range(10)])
  assert ranks.tolist() == [99 - q for q in range(10)]
  got = retrieval.caption_to_image_retrieval(cap, scores_img, true_idx, candidates=cands,
                                             similarity='dot', ks=(1, 92, 95))
  assert got == {'top1': 0.0, 'top92': 0.2, 'top95': 0.5}
  np.testing.assert_array_equal(retrieval.true_ranks([[3, 1, 2], [1, 1, 0], [0, 5, 5]]),
                                [0, 1, 2])


def test_sample_candidates_properties():
  labels = np.repeat(np.arange(30), 5)
  c = retrieval.sample_candidates(np.arange(150), 150, 100, seed=3, image_labels=labels)
  assert c.shape == (150, 100)
  np.testing.assert_array_equal(c[:, 0], np.arange(150))
  assert all(len(set(row)) == 100 for row in c)
  assert all((labels[row[1:]] != labels[row[0]]).all() for row in c)
  np.testing.assert_array_equal(
      c, retrieval.sample_candidates(np.arange(150), 150, 100, seed=3, image_labels=labels))
  with pytest.raises(ValueError, match='99 are needed'):
    retrieval.sample_candidates([0], 50, 100)
  with pytest.raises(ValueError, match='NaN'):
    retrieval.caption_to_image_retrieval(np.full((100, 2), np.nan), np.ones((100, 2)))


def test_row_similarity_is_the_diagonal_of_the_pairwise_scores():
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
  for similarity in retrieval.SIMILARITIES:
    full = retrieval._similarity(a, b, similarity)  # pylint: disable=protected-access
    # float64 dot products of 5 terms: within a few ulps of each other.
    np.testing.assert_allclose(retrieval.row_similarity(a, b, similarity), np.diagonal(full),
                               rtol=1e-12)
  np.testing.assert_allclose(retrieval.row_similarity(a, 2 * a), 1.0, rtol=1e-12)
  with pytest.raises(ValueError, match='accepted: cosine, dot'):
    retrieval.row_similarity(a, b, 'l2')
