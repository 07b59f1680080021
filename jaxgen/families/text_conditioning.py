"""Caption conditioning shared by the text-to-image families (GAN-INT-CLS, its style encoder,
StackGAN, DF-GAN).

The text encoder phi follows the text-encoder family's contract
(:mod:`jaxgen.families.text_encoder`): ``config.text.encoder`` names it and
``config.text.<encoder>`` holds its module fields; the tokenizer is ``config.data.tokenizer``
(with ``data.max_caption_len``, ``data.vocab_min_count``, ...). Both are set by
``experiments.configs.text_encoder.set_text(c, arg)``, so a text-to-image run built with the
same ``arg`` as a text-encoder run imports its network with
``init_from={'text': '<text-encoder workdir>:text'}``.

* ``text.encoder`` one of :data:`jaxgen.families.text_encoder.ENCODERS` (``char_cnn_rnn``,
  ``bilstm``): the family holds a *frozen* network ``text`` (no optimizer state), built by
  :func:`jaxgen.families.text_encoder.make_text_net` (the one builder; :func:`text_net` here
  only adds the precomputed case). Batches carry ``caption_ids`` and ``caption_len``.
* ``text.encoder='precomputed'``: no text network; batches carry ``caption_embedding``
  [B, ``data.embedding_dim``] read from ``data.embeddings_dir`` (e.g. Reed's char-CNN-RNN
  embeddings, see :mod:`jaxgen.data.embeddings`); ``config.text``'s other fields are unused.

Sampling needs captions: :func:`eval_captions` reads a fixed set, caption 0 of each of the
first ``num`` images of ``data.eval_split``, which the families cycle through in
``sample(state, key, num)`` (sample i shows caption i mod num).

Every text-to-image family module also defines ``text_to_image(config) -> TextToImage``: how
to draw images from a trained run's networks for any caption embedding. The sampling tool
(:mod:`jaxgen.text_to_image`) and the text-image scorer (:mod:`jaxgen.text_image_eval`) use
only that, so they work on every such family.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import captions
from jaxgen.families import base
from jaxgen.families import text_encoder

PRECOMPUTED = 'precomputed'
TOKEN_KEYS = ('caption_ids', 'caption_len')
EMBEDDING_KEY = 'caption_embedding'
# Each caption with one object's shape or colour changed (data.counterfactual, jaxgen_shapes).
COUNTERFACTUAL_KEYS = captions.COUNTERFACTUAL_KEYS


class TextToImage(NamedTuple):
  """A text-to-image family's generator, as the tools outside training see it."""
  # (nets, z [N, latent_dim], t [N, embed dim]) -> images [N, r, r, C] in [-1, 1], evaluation
  # mode (EMA weights when kept), deterministic given z: ``nets`` is the run's state.nets.
  generate: Callable[[dict, jax.Array, jax.Array], jax.Array]
  # (key, num) -> [num, latent_dim]: the latents the family samples with (e.g. truncated).
  latents: Callable[[jax.Array, int], jax.Array]
  latent_dim: int
  resolution: int
  text: object  # its TextNet (None: precomputed embeddings)


def normal_latents(latent_dim: int):
  return lambda key, num: jax.random.normal(key, (num, latent_dim))


def caption_sampler(model: TextToImage, cond: dict):
  """The engine's ``sample(state, key, num)`` for a text-to-image family: sample i from
  caption i mod len(cond) of ``cond`` (e.g. :func:`eval_captions`), latents from
  ``model.latents(key, num)``."""
  cond = {k: jnp.asarray(v) for k, v in cond.items()}
  k = len(next(iter(cond.values())))

  def sample(state, key, num):
    rows = jnp.arange(num) % k
    t = embed(model.text, state.nets.get('text'), {n: v[rows] for n, v in cond.items()})
    return model.generate(state.nets, model.latents(key, num), t)
  return sample


def encoders() -> tuple[str, ...]:
  """The accepted values of ``text.encoder``."""
  return (*text_encoder.ENCODERS, PRECOMPUTED)


def is_precomputed(config) -> bool:
  return config.text.get('encoder') == PRECOMPUTED


def validate(config) -> None:
  """``config.text`` (and the tokenizer / embedding fields of ``config.data``)."""
  text = config.get('text')
  encoder = text.get('encoder') if text is not None else None
  if encoder not in encoders():
    raise ValueError(f'Unknown text.encoder {encoder!r}; accepted: {", ".join(encoders())} '
                     '(see experiments/configs/text_encoder.py: set_text).')
  if encoder == PRECOMPUTED:
    base.positive_int('data.embedding_dim (the size of the precomputed caption embeddings, '
                      'for text.encoder="precomputed")', config.data.get('embedding_dim'))
    if not config.data.get('embeddings_dir'):
      raise ValueError('text.encoder="precomputed" conditions on the embeddings of the '
                       'batches: set data.embeddings_dir to the folder of the precomputed '
                       'caption embeddings (StackGAN\'s char-CNN-RNN pickles; see '
                       'jaxgen.data.source).')
  else:
    text_encoder.text_fields(config)  # unknown module fields, tokenizer mismatch
  if counterfactual(config) and encoder == PRECOMPUTED:
    raise ValueError('data.counterfactual writes new captions, which precomputed embeddings '
                     'cannot embed: it needs a text encoder (text.encoder != "precomputed").')


def counterfactual(config) -> bool:
  """Whether the batches carry counterfactual captions (``data.counterfactual``, checked)."""
  return bool(captions.counterfactual_attributes(config.data))


def counterfactual_tokens(batch) -> dict:
  """The batch's counterfactual captions under the token keys, for :func:`embed`."""
  return dict(zip(TOKEN_KEYS, (batch[k] for k in COUNTERFACTUAL_KEYS)))


def structure(config) -> dict:
  """The config entries that decide phi's shapes."""
  if is_precomputed(config):
    return {'text.encoder': PRECOMPUTED, 'data.embedding_dim': config.data.embedding_dim}
  return text_encoder.text_structure(config)


def text_net(config) -> text_encoder.TextNet | None:
  """The :class:`~jaxgen.families.text_encoder.TextNet` of ``config`` (None: precomputed)."""
  if is_precomputed(config):
    return None
  return text_encoder.make_text_net(config)


def batch_keys(config) -> tuple[str, ...]:
  if is_precomputed(config):
    return (EMBEDDING_KEY,)
  return TOKEN_KEYS + (COUNTERFACTUAL_KEYS if counterfactual(config) else ())


def embed_dim(config, text) -> int:
  """Size of phi(t): ``data.embedding_dim`` for precomputed embeddings, else ``text.dim``."""
  return int(config.data.embedding_dim) if text is None else int(text.dim)


def init_text_net(text, key) -> dict | None:
  """A frozen ``text`` network entry (randomly initialised; ``init_from`` replaces it)."""
  if text is None:
    return None
  return base.make_net(text.init(key), tx=None)


def embed(text, net, batch) -> jax.Array:
  """phi(t) [B, dim] for a batch (never differentiated: the text network is frozen; the
  bi-LSTM runs without dropout)."""
  if text is None:
    return jax.lax.stop_gradient(batch[EMBEDDING_KEY].astype(jnp.float32))
  out = text.embed(base.variables(net), batch['caption_ids'], batch['caption_len'])
  return jax.lax.stop_gradient(out.astype(jnp.float32))


def tokenize(text, texts) -> dict:
  """``{'caption_ids', 'caption_len'}`` of caption strings, with ``text``'s tokenizer."""
  ids, lengths = text.tokenizer.encode_batch(list(texts))
  return {'caption_ids': np.asarray(ids, np.int32), 'caption_len': np.asarray(lengths, np.int32)}


def tokenizer(config, text):
  """``text``'s tokenizer, or ``data.tokenizer``'s when there is no text network."""
  return text.tokenizer if text is not None else captions.tokenizer_for(config.data)


def eval_captions(config, text, num: int) -> dict:
  """Caption 0 of each of the first ``num`` images of ``data.eval_split``, tokenised by
  ``text``'s tokenizer."""
  split = captions.load_caption_split(config.data, config.data.eval_split,
                                      tokenizer(config, text), max_examples=num, whole=True)
  if len(split['caption_len']) < num:
    raise ValueError(f'data.eval_split {config.data.eval_split!r} has '
                     f'{len(split["caption_len"])} images; num_sample_captions={num} needs '
                     'as many.')
  return {'caption_ids': split['caption_ids'][:, 0], 'caption_len': split['caption_len'][:, 0]}
