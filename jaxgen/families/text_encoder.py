"""The text-encoder family: a caption encoder and an image encoder trained into one space.

Two networks: ``text`` (char-CNN-RNN of Reed et al., CVPR 2016, or AttnGAN's DAMSM bi-LSTM,
:mod:`jaxgen.models.text_encoders`, chosen by ``config.text.encoder``) and ``image``
(:class:`~jaxgen.models.text_encoders.ImageEncoder`, embedding images to the text's size).
One step embeds a batch of (image, one of its captions) pairs and takes one Adam step of
both networks on an image-text matching loss (``config.loss.name``, :mod:`jaxgen.losses.text`):

* ``joint_embedding``: Reed et al.'s symmetric structured joint embedding (inner products;
  ``loss.form`` softmax or hinge, ``loss.margin``), for the char-CNN-RNN;
* ``damsm``: the sentence term of AttnGAN's DAMSM (cosine similarities times
  ``loss.gamma3``), for the bi-LSTM.

With ``loss.use_labels`` (class-labelled sets: CUB, Oxford-102) pairs of the same class do
not count as wrong matches. Dropout (bi-LSTM) draws from ``fold_in(state.rng, step)``.

With ``data.counterfactual`` (not in the papers; ``jaxgen_shapes`` only, e.g.
``'shape'``) every image also gets its own caption with one object's attribute changed
(:func:`jaxgen.data.shapes.counterfactual_caption`) as one more wrong caption of the image ->
text direction (``hard_negatives`` of :mod:`jaxgen.losses.text`). A random wrong caption of
the batch almost always differs from the right one in colour, position or size already, so
without it the matching loss has little reason to keep the shape word (``python -m
jaxgen.matching_probe`` on a text-encoder run measures what it keeps).
Logged: ``batch_counterfactual``, how often an image scores its caption above its
counterfactual one.

Evaluation: caption -> image retrieval over each split of ``config.eval.splits``: every
caption of every image is a query, ranked against its own image and
``eval.num_candidates - 1`` others (a fixed seeded draw), by ``eval.similarity``; reports
``<split>/top1`` and ``<split>/top5`` (chance: 1 / num_candidates and 5 / num_candidates),
and ``<split>/r_precision``: each real image ranks its first caption among
``eval.num_candidates`` (:func:`jaxgen.metrics.retrieval.r_precision`), the ceiling of a
text-to-image model's R-precision with this encoder.

The text network is a contract with the text-to-image families: they build the same module
with :func:`make_text_net` from the same ``config.text`` (and ``config.data`` tokenizer
fields), and import the trained weights frozen with
``init_from = {'text': '<this run's workdir>:text'}`` (GAN-INT-CLS:
``--config.text_from=<this run's workdir>``; :mod:`jaxgen.families.text_conditioning`).

``config.text``: ``encoder`` (a name of :data:`ENCODERS`) and, under the encoder's name,
the module's fields except ``vocab_size`` (which comes from the tokenizer), e.g.
``text.char_cnn_rnn.embed_dim`` or ``text.bilstm.hidden``. The tokenizer is
``config.data.tokenizer`` (``char`` for the char-CNN-RNN, ``word`` for the bi-LSTM, with
``data.max_caption_len``, ``data.vocab_min_count``, ``data.vocab_max_size``;
:func:`jaxgen.data.captions.tokenizer_for`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen import optim
from jaxgen.data import captions
from jaxgen.families import base
from jaxgen.losses import text as text_losses
from jaxgen.metrics import retrieval
from jaxgen.models import text_encoders as te

# encoder name -> the tokenizer (data.tokenizer) it reads.
ENCODERS = {'char_cnn_rnn': 'char', 'bilstm': 'word'}
LOSSES = ('joint_embedding', 'damsm')


# ---------------------------------------------------------------------------- the text net


class TextNet(NamedTuple):
  """A caption encoder and the tokenizer its ids come from."""
  module: Any          # flax module: (ids [B, T], lengths [B]) -> embedding (or a tuple)
  tokenizer: Any       # jaxgen.data.text.CharVocab / WordVocab
  dim: int             # size of the sentence embedding
  encoder: str         # config.text.encoder

  def init(self, key):
    ids = jnp.zeros((2, self.tokenizer.max_len), jnp.int32)
    return self.module.init(key, ids, jnp.ones((2,), jnp.int32))

  def embed(self, variables, ids, lengths, *, train: bool = False, rng=None):
    """Sentence embeddings [B, dim]; ``train`` turns on dropout (needs ``rng``)."""
    if self.encoder == 'bilstm':
      rngs = {'dropout': rng} if train else {}
      return self.module.apply(variables, ids, lengths, train=train, rngs=rngs)[0]
    return self.module.apply(variables, ids, lengths)


def _module_fields(encoder: str) -> tuple[str, ...]:
  cls = te.TEXT_ENCODERS[encoder]
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.name not in ('vocab_size', 'parent', 'name'))


def _plain(value):
  """ConfigDict / JSON values as hashable module fields (lists -> tuples)."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def text_fields(config) -> dict:
  """The encoder's module fields from ``config.text`` (checked; no tokenizer needed)."""
  text = config.get('text')
  if text is None or 'encoder' not in text:
    raise ValueError('config.text.encoder is missing; accepted: '
                     f'{", ".join(ENCODERS)} (see experiments/configs/text_encoder.py).')
  encoder = text.encoder
  if encoder not in ENCODERS:
    raise ValueError(f'Unknown text.encoder {encoder!r}; accepted: {", ".join(ENCODERS)}.')
  fields = _plain(text.get(encoder) or {})
  allowed = _module_fields(encoder)
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    raise ValueError(f'text.{encoder} has unknown fields {unknown}; accepted: '
                     f'{", ".join(allowed)}.')
  want = ENCODERS[encoder]
  have = config.data.get('tokenizer', 'char')
  if have != want:
    raise ValueError(f'text.encoder={encoder!r} reads {want!r} tokens, but data.tokenizer is '
                     f'{have!r}; set data.tokenizer={want!r}.')
  return fields


def text_dim(config) -> int:
  """Size of the sentence embedding ``config.text`` describes."""
  fields = text_fields(config)
  defaults = {f.name: f.default for f in dataclasses.fields(te.TEXT_ENCODERS[config.text.encoder])}
  get = lambda k: fields.get(k, defaults[k])
  return get('embed_dim') if config.text.encoder == 'char_cnn_rnn' else 2 * get('hidden')


def make_text_net(config) -> TextNet:
  """The text encoder of ``config.text`` and the tokenizer of ``config.data``.

  The one place the text module and its tokenizer are chosen: the text-encoder family and
  every text-to-image family build their ``text`` network here, so weights trained by one
  load into the other (``init_from``). A word tokenizer reads the train split's captions
  (once per process), since the vocabulary sets the embedding table's size.
  """
  fields = text_fields(config)
  tokenizer = captions.tokenizer_for(config.data)
  module = te.make_text_encoder(config.text.encoder, vocab_size=tokenizer.size, **fields)
  return TextNet(module, tokenizer, text_dim(config), config.text.encoder)


def text_structure(config) -> dict:
  """The config entries that decide the text network's shapes (for ``structure``)."""
  out = {'text.encoder': config.text.encoder,
         f'text.{config.text.encoder}': _plain(text_fields(config))}
  if ENCODERS[config.text.encoder] == 'word':
    out['data.vocab'] = {k: _plain(config.data.get(k)) for k in
                         ('name', 'split_sizes', 'vocab_min_count', 'vocab_max_size')}
  return out


def make_image_net(config):
  return te.ImageEncoder(features=tuple(config.image.features), embed_dim=text_dim(config))


# ---------------------------------------------------------------------------- family


def matching_loss(config):
  """``loss(image_emb, text_emb, labels=None) -> scalar`` named by ``config.loss.name``."""
  name = config.loss.name
  if name == 'joint_embedding':
    return functools.partial(text_losses.joint_embedding_loss, form=config.loss.form,
                             margin=config.loss.margin)
  if name == 'damsm':
    return functools.partial(text_losses.damsm_sentence_loss, gamma3=config.loss.gamma3)
  raise ValueError(f'Unknown loss.name {name!r}; accepted: {", ".join(LOSSES)}.')


def validate(config) -> None:
  if config.data.name not in captions.CAPTION_SETS:
    raise ValueError(f'The text encoder trains on a caption dataset; data.name is '
                     f'{config.data.name!r}, accepted: {", ".join(captions.CAPTION_SETS)}.')
  text_fields(config)
  matching_loss(config)
  if config.loss.name == 'joint_embedding' and config.loss.form not in text_losses.FORMS:
    raise ValueError(f'Unknown loss.form {config.loss.form!r}; accepted: '
                     f'{", ".join(text_losses.FORMS)}.')
  if config.loss.use_labels and not captions.CAPTION_SETS[config.data.name].filename:
    raise ValueError(f'loss.use_labels needs class labels, which {config.data.name!r} does '
                     'not have; set loss.use_labels=False.')
  optim.validate(config.optimizer)
  if config.optimizer.clip_norm < 0:
    raise ValueError(f'optimizer.clip_norm must be >= 0 (0: off); got '
                     f'{config.optimizer.clip_norm!r}.')
  if not config.image.features or any(not isinstance(f, int) or f <= 0
                                      for f in config.image.features):
    raise ValueError(f'image.features must be positive integers; got {config.image.features!r}.')
  for name in ('num_candidates', 'batch_size'):
    base.positive_int(f'eval.{name}', config.eval[name])
  if config.eval.num_candidates < 5:
    raise ValueError(f'eval.num_candidates must be >= 5 (top-5 is reported); got '
                     f'{config.eval.num_candidates}.')
  if config.eval.similarity not in retrieval.SIMILARITIES:
    raise ValueError(f'Unknown eval.similarity {config.eval.similarity!r}; accepted: '
                     f'{", ".join(retrieval.SIMILARITIES)}.')
  if config.evaluators:
    raise ValueError('The text encoder generates no images: config.evaluators must be empty.')


def structure(config) -> dict:
  return {**text_structure(config), 'image.features': list(config.image.features),
          'lr_schedule_enabled': config.optimizer.schedule != 'constant',
          'clip_norm_enabled': config.optimizer.clip_norm > 0}


def make_optimizer(config):
  adam = optim.adam(config.optimizer.lr, config.optimizer, config.num_steps)
  if config.optimizer.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.optimizer.clip_norm), adam)
  return adam


def build(config, *, with_data: bool = True) -> base.Family:
  """The family; ``with_data=False`` skips reading the evaluation splits."""
  text = make_text_net(config)
  image = make_image_net(config)
  tx = make_optimizer(config)
  loss = matching_loss(config)
  use_labels = bool(config.loss.use_labels)
  with_counterfactual = bool(captions.counterfactual_attributes(config.data))
  similarity = (jax.vmap(jnp.dot) if config.loss.name == 'joint_embedding'
                else text_losses.cosine_similarity)
  shape = (config.data.resolution, config.data.resolution, 3)

  def init(key):
    t_key, i_key, train_key = jax.random.split(key, 3)
    return base.new_state(train_key, {
        'text': base.make_net(text.init(t_key), tx),
        'image': base.make_net(image.init(i_key, jnp.zeros((2, *shape), jnp.float32)), tx)})

  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    t_net, i_net = state.nets['text'], state.nets['image']
    labels = batch['label'] if use_labels else None

    def loss_fn(t_params, i_params):
      t_vars = {'params': t_params, **t_net['vars']}
      s = text.embed(t_vars, batch['caption_ids'], batch['caption_len'], train=True, rng=key)
      v = image.apply({'params': i_params, **i_net['vars']}, batch['image'])
      hard = None
      if with_counterfactual:  # one dropout draw per pass: a second key for the second
        hard = text.embed(t_vars, batch['counterfactual_ids'], batch['counterfactual_len'],
                          train=True, rng=jax.random.fold_in(key, 1))
      return loss(v, s, labels=labels, hard_negatives=hard), (v, s, hard)

    (value, (v, s, hard)), (g_t, g_i) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(t_net['params'], i_net['params'])
    # In-batch caption -> image accuracy (the progress bar's sanity check).
    sim = text_losses.cosine_similarity_matrix(s, v)
    batch_top1 = jnp.mean(jnp.argmax(sim, axis=1) == jnp.arange(sim.shape[0]))
    nets = {'text': base.apply_gradients(t_net, g_t, tx),
            'image': base.apply_gradients(i_net, g_i, tx)}
    metrics = {'loss': value, 'batch_top1': batch_top1,
               'finite': base.all_finite(value, g_t, g_i).astype(jnp.float32)}
    if with_counterfactual:
      metrics['batch_counterfactual'] = jnp.mean(similarity(v, s) > similarity(v, hard))
    return state.replace(step=state.step + 1, nets=nets), metrics

  evaluate = None
  if with_data:
    evaluate = make_evaluate(config, text, image)
  keys = (('image', 'caption_ids', 'caption_len') + (('label',) if use_labels else ())
          + (captions.COUNTERFACTUAL_KEYS if with_counterfactual else ()))
  return base.Family(init=init, train_step=train_step, sample=None, batch_keys=keys,
                     examples_per_step=config.batch_size, evaluate=evaluate,
                     progress_keys=('loss', 'batch_top1')
                     + (('batch_counterfactual',) if with_counterfactual else ()))


# ---------------------------------------------------------------------------- evaluation


def batched(fn, arrays, batch_size):
  """``fn`` over ``arrays`` in batches padded to ``batch_size`` (one compiled shape)."""
  n, out = len(arrays[0]), []
  for s in range(0, n, batch_size):
    chunk = [a[s:s + batch_size] for a in arrays]
    m = len(chunk[0])
    if m < batch_size:
      chunk = [np.concatenate([c, np.repeat(c[:1], batch_size - m, 0)]) for c in chunk]
    out.append(np.asarray(fn(*chunk))[:m])
  return np.concatenate(out)


def embed_images(image, net: dict, images, batch_size: int = 250) -> np.ndarray:
  """[N, D] embeddings of ``images`` ([-1, 1] NHWC) by the ``image`` network entry ``net``
  (e.g. a text-to-image model's samples, for R-precision)."""
  variables = base.variables(net)
  return batched(jax.jit(lambda x: image.apply(variables, x)), [np.asarray(images)],
                  batch_size)


def embed_captions(text: TextNet, net: dict, ids, lengths, batch_size: int = 250) -> np.ndarray:
  """[N, D] sentence embeddings of tokenised captions by the ``text`` network entry ``net``."""
  variables = base.variables(net)
  return batched(jax.jit(lambda i, l: text.embed(variables, i, l)),
                  [np.asarray(ids), np.asarray(lengths)], batch_size)


def embed_split(text, image, nets, data, batch_size: int):
  """(caption embeddings [Q, D], their image index [Q], image embeddings [N, D]) of a split
  read by :func:`jaxgen.data.captions.load_caption_split` (every caption of every image)."""
  img = embed_images(image, nets['image'], data['image'], batch_size)
  n, c = data['caption_len'].shape
  valid = (np.arange(c)[None, :] < data['num_captions'][:, None]).reshape(-1)
  ids = data['caption_ids'].reshape(n * c, -1)[valid]
  lens = data['caption_len'].reshape(-1)[valid]
  cap = embed_captions(text, nets['text'], ids, lens, batch_size)
  return cap, np.repeat(np.arange(n), c)[valid], img


def make_evaluate(config, text, image):
  """``evaluate(state, final)``: caption -> image retrieval on each of ``eval.splits``."""
  ev = config.eval
  splits = {}
  for split in ev.splits:
    data = captions.load_caption_split(config.data, split, text.tokenizer,
                                       max_examples=ev.max_examples or None, whole=True)
    n = len(data['image'])
    if n < ev.num_candidates:
      raise ValueError(f'{config.data.name}:{split} has {n} images, fewer than '
                       f'eval.num_candidates={ev.num_candidates}; lower eval.num_candidates.')
    true = np.repeat(np.arange(n), data['num_captions'])
    cands = retrieval.sample_candidates(true, n, ev.num_candidates, seed=ev.seed)
    splits[split] = (data, cands)

  def evaluate(state, final=False):
    del final
    out = {}
    for split, (data, cands) in splits.items():
      cap, true, img = embed_split(text, image, state.nets, data, ev.batch_size)
      res = retrieval.caption_to_image_retrieval(cap, img, true, candidates=cands,
                                                 similarity=ev.similarity)
      first = np.searchsorted(true, np.arange(len(img)))  # each image's first caption
      out.update({f'{split}/top1': res['top1'], f'{split}/top5': res['top5'],
                  f'{split}/num_queries': float(len(true)),
                  f'{split}/r_precision': retrieval.r_precision(
                      img, cap[first], num_candidates=ev.num_candidates, seed=ev.seed,
                      similarity=ev.similarity)})
    return out

  return evaluate
