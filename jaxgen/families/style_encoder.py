"""The style encoder S of GAN-INT-CLS (Reed et al., ICML 2016, section 4.4): inverts G.

A run of its own on top of a finished GAN-INT-CLS run (``gan_workdir``): ``resolve`` copies
that run's ``model``, ``text``, ``data`` and ``ema_decay`` fields (so G and phi are rebuilt
exactly; ``text`` is the text-encoder family's contract, see
:mod:`jaxgen.families.text_conditioning`) and sets ``init_from`` to import its ``g`` and ``text``, both *frozen* here. Only
``s`` is trained, on ``||z - S(G(z, phi(t)))||^2`` (summed over the latent dimensions,
averaged over the batch) with z ~ N(0, I) and t the captions of the training batches; G runs
in evaluation mode (its EMA weights when the GAN run kept them, BatchNorm running statistics)
and never changes.

Evaluation (``evaluate``, and the figures at the end): Reed's ROC of S's cosine similarities
between real images of the same / different background-colour clusters
(:mod:`jaxgen.metrics.style`), on the first ``eval.num_images`` images of ``data.eval_split``,
next to the same ROC with raw pixels as the features (``style/roc_auc_pixels``: the
background fills most of the image, so pixels alone separate its clusters well);
the figures are the ROC curve (``style_roc.png``) and style transfer (``style_transfer.png``:
the real images on the first row, below them G(S(image), phi(caption)) for the fixed
sampling captions, one per row).
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import images as image_lib
from jaxgen import optim
from jaxgen.families import base, gan_int_cls
from jaxgen.families import text_conditioning as tc
from jaxgen.metrics import style as style_metrics
from jaxgen.models import gan_int_cls as models

COPIED = ('model', 'text', 'data', 'ema_decay')


def resolve(config) -> None:
  """Copies G's and phi's fields from the GAN run and names the networks to import."""
  path = config.gan_workdir
  if not path:
    raise ValueError('style_encoder needs --config.gan_workdir=<a finished gan_int_cls run>.')
  cfg_file = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_file):
    raise ValueError(f'gan_workdir {path!r} holds no run ({cfg_file} is missing).')
  with open(cfg_file) as f:
    gan = json.load(f)
  if gan.get('family') != 'gan_int_cls':
    raise ValueError(f'gan_workdir {path!r} holds a {gan.get("family")!r} run; the style '
                     'encoder inverts a gan_int_cls generator.')
  data_dir = config.data.get('data_dir')
  for key in COPIED:
    config[key] = gan[key]
  if data_dir:  # This machine's copy of the data.
    config.data.data_dir = data_dir
  config.init_from = {'g': f'{path}:g'}
  if not tc.is_precomputed(config):
    config.init_from['text'] = f'{path}:text'


def validate(config) -> None:
  models.check(config.model)
  tc.validate(config)
  optim.validate(config.optimizer)
  models.make_style_encoder(config.model, config.style.width)
  for name in ('num_images', 'num_clusters', 'batch_size'):
    base.positive_int(f'eval.{name}', config.eval[name])
  if config.eval.num_clusters > config.eval.num_images:
    raise ValueError(f'eval.num_clusters ({config.eval.num_clusters}) must be at most '
                     f'eval.num_images ({config.eval.num_images}).')


def structure(config) -> dict:
  return {'model': config.model.to_dict(), **tc.structure(config),
          'style.width': config.style.width, 'gan_ema': config.ema_decay > 0,
          'lr_schedule_enabled': config.optimizer.schedule != 'constant'}


def build(config, *, with_data: bool = True) -> base.Family:
  generator, _, text = gan_int_cls.networks(config)
  encoder = models.make_style_encoder(config.model, config.style.width)
  tx = optim.adam(config.optimizer.lr, config.optimizer, config.num_steps)
  latent_dim, res, ch = config.model.latent_dim, config.model.resolution, config.model.channels

  def init(key):
    gan_key, s_key, train_key = jax.random.split(key, 3)
    frozen = gan_int_cls.init_nets(config, gan_key, with_optimizers=False)
    nets = {k: v for k, v in frozen.items() if k != 'd'}
    x = jnp.zeros((2, res, res, ch), jnp.float32)
    nets['s'] = base.make_net(encoder.init(s_key, x, train=False), tx)
    return base.new_state(train_key, nets)

  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    nets = state.nets
    t = tc.embed(text, nets.get('text'), batch)
    z = base.shard_batch_axis(jax.random.normal(key, (t.shape[0], latent_dim)))
    x = jax.lax.stop_gradient(gan_int_cls.generate(generator, nets['g'], z, t))
    s = nets['s']

    def loss_fn(params):
      z_hat, new_vars = base.apply_train(encoder, params, s['vars'], x)
      return jnp.mean(jnp.sum(jnp.square(z - z_hat), axis=-1)), new_vars

    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(s['params'])
    new = dict(nets, s=base.apply_gradients(s, grads, tx, new_vars=new_vars))
    metrics = {'loss': loss, 'finite': base.all_finite(loss, grads).astype(jnp.float32)}
    return state.replace(step=state.step + 1, nets=new), metrics

  evaluate = figures = None
  if with_data:
    from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
    split = captions.load_caption_split(config.data, config.data.eval_split,
                                        tc.tokenizer(config, text),
                                        max_examples=config.eval.num_images, whole=True)
    images = split['image']
    cond = {'caption_ids': split['caption_ids'][:config.num_sample_captions, 0],
            'caption_len': split['caption_len'][:config.num_sample_captions, 0]}
    encode = jax.jit(lambda s_net, x: encode_style(encoder, s_net, x))

    def features(state):
      bs = config.eval.batch_size
      return np.concatenate([np.asarray(encode(state.nets['s'], images[i:i + bs]))
                             for i in range(0, len(images), bs)])

    # The reference: the same ROC with the raw pixels as features. The background covers
    # most pixels, so pixels alone already separate background clusters well; S is only
    # informative where it beats them.
    pixels = style_metrics.style_roc(images.reshape((len(images), -1)), images,
                                     config.eval.num_clusters, config.eval.seed)

    # The second reference: S as this run started (the engine's step-0 state), never trained.
    # Its features already group images by background, so what training adds is the gap.
    # Computed at the first evaluation (not at build, which the sampling tools also call).
    @functools.cache
    def untrained_auc():
      start = base.jit_init(base.Family(init=init, train_step=None), config.seed)()
      return style_metrics.style_roc(features(start), images, config.eval.num_clusters,
                                     config.eval.seed)['auc']

    def evaluate(state, final=False):
      del final
      res = style_metrics.style_roc(features(state), images, config.eval.num_clusters,
                                    config.eval.seed)
      return {'style/roc_auc': res['auc'], 'style/cos_same': res['cos_same'],
              'style/cos_other': res['cos_other'], 'style/roc_auc_pixels': pixels['auc'],
              'style/roc_auc_untrained': untrained_auc()}

    def figures(state, out_dir):
      res = style_metrics.style_roc(features(state), images, config.eval.num_clusters,
                                    config.eval.seed)
      roc = style_metrics.write_roc_png(
          os.path.join(out_dir, 'style_roc.png'),
          {'S(x)': (res['fpr'], res['tpr'], res['auc']),
           'raw pixels': (pixels['fpr'], pixels['tpr'], pixels['auc'])})
      n = min(8, len(images))
      grid = transfer(generator, encoder, text, state.nets, images[:n], cond)
      path = os.path.join(out_dir, 'style_transfer.png')
      image_lib.save_grid(path, grid.reshape((-1, *grid.shape[2:])), ncol=n)
      return [roc, path]

  return base.Family(init=init, train_step=train_step, sample=None,
                     batch_keys=tc.batch_keys(config),
                     examples_per_step=config.batch_size, evaluate=evaluate,
                     figures=figures, progress_keys=('loss',))


def text_to_image(config) -> tc.TextToImage:
  """The frozen G this run inverts, as the sampling tools use it."""
  return gan_int_cls.text_to_image(config)


def encode_style(encoder, s_net, x):
  """S(x): the latent vectors of images ``x`` (evaluation mode)."""
  return encoder.apply(base.variables(s_net), jnp.asarray(x, jnp.float32), train=False)


def transfer(generator, encoder, text, nets, real, cond) -> np.ndarray:
  """[1 + captions, N, r, r, C]: the real images, then G(S(real), phi(caption)) per caption."""

  @jax.jit
  def rows(nets, real, cond):
    z = encode_style(encoder, nets['s'], real)
    t = tc.embed(text, nets.get('text'), cond)
    zz = jnp.broadcast_to(z[None], (t.shape[0], *z.shape)).reshape((-1, z.shape[1]))
    tt = jnp.repeat(t, z.shape[0], axis=0)  # caption i for the i-th block of N images
    return gan_int_cls.generate(generator, nets['g'], zz, tt).reshape(
        (t.shape[0], *real.shape))

  real = jnp.asarray(real, jnp.float32)
  cond = {k: jnp.asarray(v) for k, v in cond.items()}
  return np.concatenate([np.asarray(real)[None], np.asarray(rows(nets, real, cond))])
