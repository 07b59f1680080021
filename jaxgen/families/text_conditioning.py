"""Caption conditioning shared by the text-to-image families (GAN-INT-CLS, its style encoder).

``config.text`` names the text encoder phi:

* ``text.name`` a model of :mod:`jaxgen.models.text_encoders` (``char_cnn_rnn``, ``bilstm``):
  the family holds a *frozen* network ``text`` (no optimizer state), built by
  :func:`text_module` from the other ``config.text`` fields that are fields of that module
  (the same fields a text-encoder run saves, so ``init_from={'text': '<run>:text'}`` imports
  it with matching shapes). Batches carry ``caption_ids`` and ``caption_len``.
* ``text.name='precomputed'``: no text network; batches carry ``caption_embedding``
  [B, ``text.embed_dim``] (e.g. Reed's char-CNN-RNN embeddings, see
  :mod:`jaxgen.data.embeddings`).

Sampling needs captions: :func:`eval_captions` reads a fixed set, caption 0 of each of the
first ``num`` images of ``data.eval_split``, which the families cycle through in
``sample(state, key, num)`` (sample i shows caption i mod num).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.families import base
from jaxgen.models import text_encoders

PRECOMPUTED = 'precomputed'
TOKEN_KEYS = ('caption_ids', 'caption_len')
EMBEDDING_KEY = 'caption_embedding'


def names() -> tuple[str, ...]:
  return (*text_encoders.TEXT_ENCODERS, PRECOMPUTED)


def text_module(text_cfg):
  """The flax text encoder of ``text_cfg`` (None for precomputed embeddings)."""
  name = text_cfg.name
  if name == PRECOMPUTED:
    return None
  if name not in text_encoders.TEXT_ENCODERS:
    raise ValueError(f'Unknown text.name {name!r}; accepted: {", ".join(names())}.')
  fields = {f.name for f in dataclasses.fields(text_encoders.TEXT_ENCODERS[name])
            if f.init and f.name not in ('parent', 'name')}
  kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in text_cfg.items() if k in fields}
  return text_encoders.make_text_encoder(name, **kwargs)


def batch_keys(text_cfg) -> tuple[str, ...]:
  return (EMBEDDING_KEY,) if text_cfg.name == PRECOMPUTED else TOKEN_KEYS


def _dummy_tokens(num: int = 2, length: int = 8):
  return jnp.ones((num, length), jnp.int32), jnp.full((num,), length, jnp.int32)


def embed_dim(text_cfg, module) -> int:
  """Size of phi(t): ``text.embed_dim`` for precomputed embeddings, else the module's output."""
  if module is None:
    return int(text_cfg.embed_dim)
  out = jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0),
                                                       *_dummy_tokens())[0])
  out = out[0] if isinstance(out, tuple) else out  # bilstm: (sentence, words)
  return int(out.shape[-1])


def validate(text_cfg) -> None:
  module = text_module(text_cfg)  # Unknown names.
  if module is None:
    dim = text_cfg.get('embed_dim')
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
      raise ValueError(f'text.embed_dim must be a positive integer (the size of the '
                       f'precomputed embeddings); got {dim!r}.')
  else:
    embed_dim(text_cfg, module)  # The module's own errors, before anything is built.


def init_text_net(module, key) -> dict | None:
  """A frozen ``text`` network entry (randomly initialised; ``init_from`` replaces it)."""
  if module is None:
    return None
  return base.make_net(module.init(key, *_dummy_tokens()), tx=None)


def embed(module, net, batch) -> jax.Array:
  """phi(t) [B, dim] for a batch (never differentiated: the text network is frozen)."""
  if module is None:
    return jax.lax.stop_gradient(batch[EMBEDDING_KEY].astype(jnp.float32))
  out = module.apply(base.variables(net), batch['caption_ids'], batch['caption_len'])
  out = out[0] if isinstance(out, tuple) else out
  return jax.lax.stop_gradient(out.astype(jnp.float32))


def tokenize(data_cfg, texts) -> dict:
  """``{'caption_ids', 'caption_len'}`` of caption strings, with the run's tokenizer."""
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  ids, lengths = captions.tokenizer_for(data_cfg).encode_batch(list(texts))
  return {'caption_ids': np.asarray(ids, np.int32), 'caption_len': np.asarray(lengths, np.int32)}


def eval_captions(config, num: int) -> dict:
  """Caption 0 of each of the first ``num`` images of ``data.eval_split``, tokenised."""
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  split = captions.load_caption_split(config.data, config.data.eval_split,
                                      captions.tokenizer_for(config.data), max_examples=num,
                                      whole=True)
  if len(split['caption_len']) < num:
    raise ValueError(f'data.eval_split {config.data.eval_split!r} has '
                     f'{len(split["caption_len"])} images; num_sample_captions={num} needs '
                     'as many.')
  return {'caption_ids': split['caption_ids'][:, 0], 'caption_len': split['caption_len'][:, 0]}
