"""Tokenisers, text/image encoders and the char-CNN-RNN embedding reader.

Encoders are checked against plain numpy re-implementations of the papers' equations
(float64), and for the property that matters most to a text-to-image model: nothing past a
caption's length changes its embedding.
"""
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import embeddings, text
from jaxgen.models import text_encoders as te

# float32 tolerances. The encoders below are tiny (fan-in <= 4 * 72 one-hot inputs, a handful
# of recurrent steps, activations O(1)), so each output is a short chain of float32 sums
# and products whose rounding error is a few units of 2**-24 per operation, times at most a
# few hundred operations: 1e-5 absolute bounds it with margin, while any structural
# mistake (a wrong gate, shift, mask or pooling window) changes outputs by O(0.1).
ATOL = 1e-5


# ----------------------------------------------------------------------------- tokenisers

def test_reed_alphabet_and_char_ids():
  v = text.CharVocab()
  assert len(text.REED_ALPHABET) == 70 and len(set(text.REED_ALPHABET)) == 69
  assert v.size == 72 and v.oov_id == 71 and v.max_len == 201
  dash = text.REED_ALPHABET.rindex('-') + 1  # Reed's Lua dict keeps the later '-'.
  assert dash == 60  # a-z 1-26, 0-9 27-36, then "-,;.!?:'\"/\\|_@#$%^&*~`+" 37-59.
  ids, lens = v.encode_batch(['Ab-z ', 'é?'])
  assert ids.dtype == np.int32 and lens.dtype == np.int32 and ids.shape == (2, 201)
  np.testing.assert_array_equal(ids[0, :6], [1, 2, dash, 26, 70, 0])
  np.testing.assert_array_equal(ids[1, :3], [71, text.REED_ALPHABET.index('?') + 1, 0])
  np.testing.assert_array_equal(lens, [5, 2])
  assert not ids[0, 5:].any() and not ids[1, 2:].any()
  assert v.decode(ids[0]) == 'ab-z '


def test_char_bad_text_is_defined():
  v = text.CharVocab(max_len=10)
  ids, lens = v.encode_batch(['', 'x' * 25, b'ok\xff', '\U0001F426 bird', 'A\u0130'])
  assert lens.tolist() == [0, 10, 3, 6, 3]   # 'İ'.lower() is 'i' + a combining dot.
  assert not ids[0].any()                                    # empty: all padding
  np.testing.assert_array_equal(ids[1], [24] * 10)           # truncated to max_len
  np.testing.assert_array_equal(ids[2, :3], [15, 11, 71])    # invalid UTF-8 byte: OOV
  assert ids[3, 0] == 71 and v.decode(ids[3, 1:6]) == ' bird'  # emoji: OOV
  with pytest.raises(TypeError, match='str or bytes'):
    v.encode_batch([None])
  with pytest.raises(ValueError, match='max_len'):
    text.CharVocab(max_len=0)


def test_word_vocab_build_counts_and_ties():
  caps = ['The bird, the BIRD!', 'a red bird', 'a blue bird', 'zebra']
  v = text.WordVocab.build(caps, min_count=2)
  # counts: bird 4, the 2, a 2 (tie: alphabetical), red/blue/zebra 1 (below min_count)
  assert v.words == ['bird', 'a', 'the']
  assert v.word_to_id == {'bird': 2, 'a': 3, 'the': 4} and v.size == 5
  assert text.WordVocab.build(caps, max_size=2).words == ['bird', 'a']
  assert text.WordVocab.build(reversed(caps)).words == text.WordVocab.build(caps).words
  ids, lens = v.encode_batch(['A bird; the zebra?', '', '!!!'])
  np.testing.assert_array_equal(ids[0, :5], [3, 2, 4, 1, 0])  # punctuation dropped, OOV 1
  np.testing.assert_array_equal(lens, [4, 0, 0])
  assert not ids[1:].any()
  long_ids, long_len = text.WordVocab(v.words, max_len=3).encode_batch(['bird ' * 9])
  assert long_len[0] == 3 and long_ids.shape == (1, 3)
  assert text.WordVocab.from_json(v.to_json()).word_to_id == v.word_to_id
  assert v.decode(ids[0]) == 'a bird the <unk>'


# ----------------------------------------------------------------------------- references

def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _np_char_cnn_rnn(params, ids, length, model):
  """Reed's char-CNN-RNN in numpy (float64) on one caption, ids[:length] only."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.eye(model.vocab_size)[ids[:length]]
  x[ids[:length] == 0] = 0.0
  k = model.kernel_size
  for i in range(len(model.conv_features)):
    w, b = p[f'conv{i}']['kernel'], p[f'conv{i}']['bias']
    # 'SAME' for stride 1: (k - 1) // 2 zeros before, the rest after; positions past the
    # caption are zeros.
    xp = np.pad(x, (((k - 1) // 2, k - 1 - (k - 1) // 2), (0, 0)))
    x = np.stack([sum(xp[t + d] @ w[d] for d in range(k)) + b for t in range(len(x))]) \
        if len(x) else np.zeros((0, w.shape[-1]))
    x = np.maximum(x, 0)
    n = -(-len(x) // model.pool_size)
    x = np.stack([x[j * model.pool_size:(j + 1) * model.pool_size].max(0) for j in range(n)]) \
        if n else np.zeros((0, x.shape[1]))
  h = np.zeros(model.rnn_features)
  hs = []
  c = p['cell']
  for t in range(len(x)):  # SimpleCell: h' = tanh(x W_i + b + h W_h)
    h = np.tanh(x[t] @ c['i']['kernel'] + c['i']['bias'] + h @ c['h']['kernel'])
    hs.append(h)
  mean = np.mean(hs, axis=0) if hs else np.zeros(model.rnn_features)
  return mean @ p['proj']['kernel'] + p['proj']['bias']


def _np_lstm(cell, xs):
  """flax OptimizedLSTMCell equations; returns the hidden states."""
  h = np.zeros(cell['hi']['kernel'].shape[0])
  c = np.zeros_like(h)
  out = []
  for x in xs:
    def gate(g, x=x, h=h):
      return x @ cell['i' + g]['kernel'] + h @ cell['h' + g]['kernel'] + cell['h' + g]['bias']
    i, f, g, o = _sigmoid(gate('i')), _sigmoid(gate('f')), np.tanh(gate('g')), _sigmoid(gate('o'))
    c = f * c + i * g
    h = o * np.tanh(c)
    out.append(h)
  return np.array(out).reshape(len(xs), len(h))


# ----------------------------------------------------------------------------- encoders

def _tiny_char_model():
  return te.CharCnnRnn(conv_features=(6, 5), kernel_size=4, pool_size=3, rnn_features=4,
                       embed_dim=3)


def test_char_cnn_rnn_matches_numpy_reference_and_ignores_padding():
  model = _tiny_char_model()
  key = jax.random.key(0)
  ids = np.asarray(jax.random.randint(key, (4, 20), 0, 72), np.int32)
  lengths = np.array([20, 7, 1, 0], np.int32)
  params = model.init(jax.random.key(1), ids, lengths)
  emb = np.asarray(model.apply(params, ids, lengths))
  assert emb.shape == (4, 3) and np.isfinite(emb).all()
  for b in range(4):
    ref = _np_char_cnn_rnn(params['params'], ids[b], lengths[b], model)
    np.testing.assert_allclose(emb[b], ref, atol=ATOL)
  # Garbage past the length, or a longer padded array, changes nothing.
  garbage = np.where(np.arange(20)[None] < lengths[:, None], ids, 63).astype(np.int32)
  np.testing.assert_array_equal(model.apply(params, garbage, lengths), emb)
  longer = np.pad(ids, ((0, 0), (0, 31)), constant_values=5)
  np.testing.assert_allclose(model.apply(params, longer, lengths), emb, atol=ATOL)


def test_bilstm_matches_numpy_reference_and_ignores_padding():
  model = te.BiLstmEncoder(vocab_size=11, embed_features=5, hidden=3)
  ids = np.array([[2, 5, 7, 9, 3, 4], [10, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.int32)
  lengths = np.array([6, 2, 0], np.int32)
  params = model.init(jax.random.key(2), ids, lengths)
  sent, words = model.apply(params, ids, lengths)
  assert sent.shape == (3, 6) and words.shape == (3, 6, 6)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  table = p['embed']['embedding']
  assert np.all(np.abs(table) <= 0.1)  # AttnGAN's U(-0.1, 0.1) initialisation
  for b in range(3):
    n = lengths[b]
    x = table[ids[b, :n]]
    fwd = _np_lstm(p['fwd_cell'], x)
    bwd = _np_lstm(p['bwd_cell'], x[::-1])[::-1]
    ref_words = np.zeros((6, 6))
    ref_words[:n] = np.concatenate([fwd, bwd], axis=1)
    np.testing.assert_allclose(words[b], ref_words, atol=ATOL)
    ref_sent = np.concatenate([fwd[-1], bwd[0]]) if n else np.zeros(6)
    np.testing.assert_allclose(sent[b], ref_sent, atol=ATOL)
  garbage = np.where(np.arange(6)[None] < lengths[:, None], ids, 8).astype(np.int32)
  s2, w2 = model.apply(params, garbage, lengths)
  np.testing.assert_array_equal(s2, sent)
  np.testing.assert_array_equal(w2, words)
  # Dropout is active only with train=True and an rng.
  s3, _ = model.apply(params, ids, lengths, train=True, rngs={'dropout': jax.random.key(0)})
  assert not np.allclose(s3[0], sent[0])


def test_empty_captions_have_finite_embeddings_and_gradients():
  from jaxgen.losses import text as text_losses
  char = _tiny_char_model()
  ids, lens = text.CharVocab(max_len=12).encode_batch(['', '', 'a bird'])
  cp = char.init(jax.random.key(0), ids, lens)
  word = te.BiLstmEncoder(vocab_size=5, embed_features=4, hidden=2)
  wids, wlens = text.WordVocab(['bird']).encode_batch(['', '?', 'bird'])
  wp = word.init(jax.random.key(0), wids, wlens)

  def loss(cp, wp):
    s, _ = word.apply(wp, wids, wlens)
    return (text_losses.joint_embedding_loss(char.apply(cp, ids, lens)[:, :2], s[:, :2] + 1.0)
            + text_losses.damsm_sentence_loss(s, s))

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(cp, wp)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_image_encoder_and_registry():
  enc = te.ImageEncoder(features=(4, 8), embed_dim=7)
  x = jnp.zeros((2, 16, 16, 3))
  params = enc.init(jax.random.key(0), x)
  assert enc.apply(params, x).shape == (2, 7)
  # Two stride-2 convolutions: the last feature map is 4x4, averaged before the projection.
  assert params['params']['conv1']['kernel'].shape == (4, 4, 4, 8)
  with pytest.raises(ValueError, match='batch, height'):
    enc.apply(params, x[0])
  assert isinstance(te.make_text_encoder('char_cnn_rnn', embed_dim=8), te.CharCnnRnn)
  assert te.make_text_encoder('bilstm', vocab_size=9).hidden == 128
  with pytest.raises(ValueError, match='char_cnn_rnn, bilstm'):
    te.make_text_encoder('transformer')
  # Ids beyond the model's vocabulary are read as OOV (never NaN from an out-of-range take).
  ids = np.array([[3, 40, 2]], np.int32)
  lens = np.array([3], np.int32)
  word = te.BiLstmEncoder(vocab_size=5, embed_features=4, hidden=2)
  wp = word.init(jax.random.key(0), ids, lens)
  np.testing.assert_array_equal(word.apply(wp, ids, lens)[0],
                                word.apply(wp, np.array([[3, 1, 2]], np.int32), lens)[0])
  char = _tiny_char_model()
  cp = char.init(jax.random.key(0), ids, lens)
  np.testing.assert_array_equal(char.apply(cp, ids + 100, lens),
                                char.apply(cp, np.full_like(ids, 71), lens))
  with pytest.raises(ValueError, match='lengths must be'):
    _tiny_char_model().init(jax.random.key(0), np.zeros((2, 5), np.int32), np.zeros(3))


def test_reed_default_sizes():
  m = te.CharCnnRnn()
  ids, lens = text.CharVocab().encode_batch(['this bird has a red crown'])
  params = m.init(jax.random.key(0), ids, lens)['params']
  assert params['conv0']['kernel'].shape == (4, 72, 384)
  assert params['conv2']['kernel'].shape == (4, 512, 256)
  assert params['proj']['kernel'].shape == (256, 1024)


# ----------------------------------------------------------------------------- embeddings

def _write_pickles(tmp_path, emb, names, protocol=2):
  with open(tmp_path / embeddings.EMBEDDINGS_FILE, 'wb') as f:
    pickle.dump(emb, f, protocol=protocol)
  with open(tmp_path / embeddings.FILENAMES_FILE, 'wb') as f:
    pickle.dump(names, f, protocol=protocol)


@pytest.mark.parametrize('as_array', [False, True])
def test_char_cnn_rnn_embedding_reader(tmp_path, as_array):
  rng = np.random.default_rng(0)
  arrays = [rng.normal(size=(10, 1024)).astype(np.float32) for _ in range(3)]
  names = ['001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111',
           '001.Black_footed_Albatross/Black_Footed_Albatross_0002_55', '200.Common_Yellowthroat/x']
  _write_pickles(tmp_path, np.stack(arrays) if as_array else arrays, names)
  emb, got = embeddings.load_char_cnn_rnn_embeddings(str(tmp_path))
  assert emb.shape == (3, 10, 1024) and emb.dtype == np.float32 and got == names
  np.testing.assert_array_equal(emb, np.stack(arrays))
  table = embeddings.embeddings_by_filename(str(tmp_path))
  np.testing.assert_array_equal(table[names[2]], arrays[2])


def test_embedding_reader_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='StackGAN'):
    embeddings.load_char_cnn_rnn_embeddings(str(tmp_path))
  _write_pickles(tmp_path, [np.zeros((10, 4))] * 2, ['a'])
  with pytest.raises(ValueError, match='2 embeddings but 1 filenames'):
    embeddings.load_char_cnn_rnn_embeddings(str(tmp_path))
  _write_pickles(tmp_path, [np.zeros((10, 4)), np.zeros((9, 4))], ['a', 'b'])
  with pytest.raises(ValueError, match='one shape'):
    embeddings.load_char_cnn_rnn_embeddings(str(tmp_path))

  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))

  _write_pickles(tmp_path, Evil(), ['a'])
  with pytest.raises(pickle.UnpicklingError, match='Refusing'):
    embeddings.load_char_cnn_rnn_embeddings(str(tmp_path))
