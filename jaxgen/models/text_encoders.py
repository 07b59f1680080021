"""Text encoders (and a small image encoder) for text-to-image models, looked up by name.

* :class:`CharCnnRnn` - the char-CNN-RNN of Reed, Akata, Lee & Schiele, "Learning Deep
  Representations of Fine-Grained Visual Descriptions" (CVPR 2016), whose 1024-d caption
  embeddings condition GAN-INT-CLS (Reed et al., ICML 2016) and StackGAN. One-hot characters
  go through temporal convolutions, each followed by ReLU and a max-pool over time (Reed's
  birds/flowers model: widths 384, 512, 256, kernel 4, pool 3), then a recurrent layer; the
  caption vector is the mean of its hidden states, mapped linearly to ``embed_dim``. Unlike
  Reed's valid convolutions this uses 'SAME' ones, so that any length works, including 0.
* :class:`BiLstmEncoder` - the text encoder of AttnGAN's DAMSM (Xu et al., "AttnGAN:
  Fine-Grained Text to Image Generation with Attentional GANs", CVPR 2018), also DF-GAN's:
  300-d word embeddings, dropout, a bidirectional LSTM with 128 hidden units per direction;
  per-word features are the concatenated states of both directions (256-d), the sentence
  vector the concatenated *final* states (forward after the last word, backward after the
  first).
* :class:`ImageEncoder` - a small CNN (stride-2 convolutions, LeakyReLU, global average
  pool, linear) mapping images to the same embedding space, for training a joint embedding
  with the losses of :mod:`jaxgen.losses.text`.

Masking: every text encoder takes ``(ids [B, T] int32, lengths [B] int32)``; positions at or
beyond ``lengths`` never influence the outputs (whatever ids they hold), and per-word outputs
there are zero. A length-0 caption gives a finite embedding (the image of an all-zero
sequence summary). Lengths are clipped to [0, T]. Ids outside [0, vocab_size) - a
vocabulary larger than the model's - are read as the out-of-vocabulary id of
:mod:`jaxgen.data.text` (the last id for characters, 1 for words), never as NaN.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import registry

Array = jax.Array
CELLS = ('rnn', 'lstm', 'gru')


def _mask(lengths: Array, size: int) -> Array:
  """bool [B, size]: position t < lengths."""
  return jnp.arange(size)[None, :] < lengths[:, None]


def _check_ids(ids, lengths):
  if ids.ndim != 2:
    raise ValueError(f'ids must be [batch, length] integers; got shape {ids.shape}.')
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f'ids must be integers; got {ids.dtype}.')
  if lengths.shape != ids.shape[:1]:
    raise ValueError(f'lengths must be [batch] = {ids.shape[:1]}; got {lengths.shape}.')
  return jnp.clip(lengths.astype(jnp.int32), 0, ids.shape[1])


def _cell(kind: str, features: int, name: str):
  if kind == 'rnn':
    return nn.SimpleCell(features, name=name)
  if kind == 'lstm':
    return nn.OptimizedLSTMCell(features, name=name)
  if kind == 'gru':
    return nn.GRUCell(features, name=name)
  raise ValueError(f'Unknown cell {kind!r}; accepted: {", ".join(CELLS)}.')


class CharCnnRnn(nn.Module):
  """Reed et al.'s char-CNN-RNN: (ids [B, T], lengths [B]) -> embedding [B, embed_dim].

  ``vocab_size`` counts every id (CharVocab.size: 72 with padding and OOV); id 0 and ids at
  or past the length are encoded as all-zero vectors (Reed's one-hot of nothing).
  """
  vocab_size: int = 72
  conv_features: Sequence[int] = (384, 512, 256)
  kernel_size: int = 4
  pool_size: int = 3
  rnn_features: int = 256
  cell: str = 'rnn'
  embed_dim: int = 1024

  @nn.compact
  def __call__(self, ids: Array, lengths: Array) -> Array:
    lengths = _check_ids(ids, lengths)
    mask = _mask(lengths, ids.shape[1])
    # One-hot of ids, zero for padding (id 0) and for every position past the length.
    ids = jnp.where((ids >= 0) & (ids < self.vocab_size), ids, self.vocab_size - 1)
    x = jax.nn.one_hot(ids, self.vocab_size) * (mask & (ids != 0))[..., None]
    for i, features in enumerate(self.conv_features):
      x = nn.Conv(features, (self.kernel_size,), padding='SAME', name=f'conv{i}')(x)
      # ReLU outputs are >= 0, so zeroing the invalid positions leaves every max-pool window
      # that holds a valid position unchanged: the pooled valid prefix depends on valid
      # inputs only.
      x = nn.relu(x) * mask[..., None]
      t = x.shape[1]
      pad = -t % self.pool_size
      x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
      x = nn.max_pool(x, (self.pool_size,), strides=(self.pool_size,))
      lengths = -(-lengths // self.pool_size)  # ceil: windows holding a valid position
      mask = _mask(lengths, x.shape[1])
    rnn = nn.RNN(_cell(self.cell, self.rnn_features, 'cell'), name='rnn')
    h = rnn(x, seq_lengths=lengths) * mask[..., None]
    count = jnp.maximum(lengths, 1).astype(h.dtype)[:, None]
    mean = h.sum(axis=1) / count  # Zero vector for an empty caption.
    return nn.Dense(self.embed_dim, name='proj')(mean)


class BiLstmEncoder(nn.Module):
  """AttnGAN's DAMSM text encoder.

  (ids [B, T], lengths [B]) -> (sentence [B, 2 * hidden], words [B, T, 2 * hidden]); words
  past the length are zero, and so is the sentence vector of an empty caption.
  """
  vocab_size: int
  embed_features: int = 300
  hidden: int = 128
  dropout: float = 0.5

  @nn.compact
  def __call__(self, ids: Array, lengths: Array, *, train: bool = False):
    lengths = _check_ids(ids, lengths)
    mask = _mask(lengths, ids.shape[1])
    init = nn.initializers.uniform(scale=0.2)  # AttnGAN: U(-0.1, 0.1) word embeddings...
    emb = nn.Embed(self.vocab_size, self.embed_features,
                   embedding_init=lambda k, s, d=jnp.float32: init(k, s, d) - 0.1,
                   name='embed')(jnp.where(mask & (ids >= self.vocab_size), 1,
                                           jnp.where(mask & (ids >= 0), ids, 0)))
    emb = emb * mask[..., None]
    emb = nn.Dropout(self.dropout, deterministic=not train)(emb)
    forward = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name='fwd_cell'), return_carry=True,
                     name='forward')
    backward = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name='bwd_cell'), return_carry=True,
                      reverse=True, keep_order=True, name='backward')
    (_, h_fwd), out_fwd = forward(emb, seq_lengths=lengths)
    (_, h_bwd), out_bwd = backward(emb, seq_lengths=lengths)
    words = jnp.concatenate([out_fwd, out_bwd], axis=-1) * mask[..., None]
    empty = (lengths == 0)[:, None]
    sentence = jnp.where(empty, 0.0, jnp.concatenate([h_fwd, h_bwd], axis=-1))
    return sentence, words


class ImageEncoder(nn.Module):
  """A small CNN: images [B, H, W, C] in [-1, 1] -> embeddings [B, embed_dim]."""
  features: Sequence[int] = (16, 32, 64)
  embed_dim: int = 1024

  @nn.compact
  def __call__(self, images: Array) -> Array:
    if images.ndim != 4:
      raise ValueError(f'images must be [batch, height, width, channels]; got {images.shape}.')
    x = images
    for i, f in enumerate(self.features):
      x = nn.Conv(f, (4, 4), strides=(2, 2), padding='SAME', name=f'conv{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Dense(self.embed_dim, name='proj')(x.mean(axis=(1, 2)))


TEXT_ENCODERS = {'char_cnn_rnn': CharCnnRnn, 'bilstm': BiLstmEncoder}


def make_text_encoder(name: str, **kwargs) -> nn.Module:
  """The text encoder called ``name`` built with ``kwargs`` (its dataclass fields)."""
  return registry.lookup(TEXT_ENCODERS, name, 'text encoder')(**kwargs)
