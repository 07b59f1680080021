"""GAN-INT-CLS (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016).

Networks: ``g`` (G(z, phi(t)); an EMA of its weights when ``ema_decay > 0``), ``d``
(D(x, phi(t))) and ``text``, the caption encoder phi, *frozen* (no optimizer state; random
unless imported from a text-encoder run with ``text_from='<workdir>'``, i.e.
``init_from={'text': '<workdir>:text'}``), absent when the batches carry precomputed
embeddings (``text.encoder='precomputed'``). ``config.text`` is the text-encoder family's
(``text.encoder`` and ``text.<encoder>``, built by
:func:`jaxgen.families.text_encoder.make_text_net`); see
:mod:`jaxgen.families.text_conditioning`.

Two switches give Reed's four variants (``experiments/configs/gan_int_cls.py``):

* ``cls`` (matching-aware D): D also sees real images with wrong captions (the batch's
  embeddings rolled by one) as fake; the fake and wrong terms are weighted by 1/2. With
  ``wrong_captions='nearest'`` the wrong caption is instead the batch's most similar other
  caption below ``wrong_max_similarity`` (:func:`jaxgen.losses.matching.nearest_mismatched`).
  With ``data.counterfactual`` (not Reed's; ``jaxgen_shapes`` only) every other row (0, 2,
  ...) instead gets its own caption with one object's shape or colour changed
  (:func:`jaxgen.data.shapes.counterfactual_caption`; logged: ``d_counterfactual``, those
  rows' share of the wrong term).
* ``interp`` (GAN-INT): G is also trained on images generated from interpolated embeddings
  ``interp_beta * t1 + (1 - interp_beta) * t2`` of two captions of the batch (t2: the roll),
  weighted by ``interp_weight``. No real image matches them, so only G's loss uses them.

One train step (all randomness from ``fold_in(rng, step)``): D is updated on real/right,
G(z, t)/right and (CLS) real/wrong, each a separate D pass (BatchNorm sees pure batches, as
in Reed's code); then G is updated on fresh noise through the updated D (with GAN-INT on the
right and the interpolated captions together). Losses are sigmoid cross-entropies on logits
(:mod:`jaxgen.losses.matching`).

Sampling: ``sample(state, key, num)`` cycles through ``num_sample_captions`` fixed captions
of ``data.eval_split`` (sample i gets caption i mod that number), so a grid of 8 columns
shows one caption per column with a different z in each row.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen import optim
from jaxgen.families import base
from jaxgen.families import text_conditioning as tc
from jaxgen.losses import matching
from jaxgen.models import gan_int_cls as models


def resolve(config) -> None:
  """``text_from='<workdir>[:net]'`` -> ``init_from.text`` (the net defaults to ``text``)."""
  source = config.get('text_from', '')
  if not source:
    return
  if tc.is_precomputed(config):
    raise ValueError('text_from imports a text encoder, but text.encoder="precomputed" uses '
                     'the embeddings of the batches; set one or the other.')
  tail = source.rstrip('/').rsplit('/', 1)[-1]
  config.init_from.text = source if ':' in tail else f'{source}:text'


def validate(config) -> None:
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  models.check(config.model)
  base.check_model_matches_data(config)
  if config.data.name not in captions.CAPTION_SETS:
    raise ValueError(f'gan_int_cls trains on a caption dataset; data.name={config.data.name!r} '
                     f'is not one of: {", ".join(captions.CAPTION_SETS)}.')
  tc.validate(config)
  optim.validate(config.optimizer, lr_names=('g_lr', 'd_lr'))
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f'ema_decay must be in [0, 1) (0 disables EMA); got {config.ema_decay!r}.')
  for name in ('cls', 'interp'):
    if not isinstance(config[name], bool):
      raise ValueError(f'{name} must be True or False; got {config[name]!r}.')
  matching.check_wrong_captions(config.get('wrong_captions', 'roll'),
                                config.get('wrong_max_similarity', 0.8))
  if tc.counterfactual(config) and not config.cls:
    raise ValueError('data.counterfactual replaces half of the CLS term\'s wrong captions; it '
                     'needs cls=True.')
  if not 0.0 <= config.interp_beta <= 1.0:
    raise ValueError(f'interp_beta must be in [0, 1]; got {config.interp_beta!r}.')
  if config.interp_weight < 0:
    raise ValueError(f'interp_weight must be >= 0; got {config.interp_weight!r}.')
  if (config.cls or config.interp) and config.batch_size < 2:
    raise ValueError(f'cls and interp pair each caption with another of the batch: '
                     f'batch_size must be >= 2; got {config.batch_size}.')
  base.positive_int('num_sample_captions', config.num_sample_captions)


def structure(config) -> dict:
  return {'model': config.model.to_dict(), **tc.structure(config),
          'ema_decay_enabled': config.ema_decay > 0,
          'lr_schedule_enabled': config.optimizer.schedule != 'constant'}


def networks(config):
  """``(generator, discriminator, text)`` of ``config``; ``text`` is a
  :class:`~jaxgen.families.text_encoder.TextNet`, or None for precomputed embeddings."""
  generator, discriminator = models.make_gan(config.model)
  return generator, discriminator, tc.text_net(config)


def init_nets(config, key, with_optimizers=True) -> dict:
  """Fresh ``g``, ``d`` and (frozen) ``text`` entries; ``with_optimizers=False``: all frozen."""
  generator, discriminator, text = networks(config)
  g_key, d_key, t_key = jax.random.split(key, 3)
  dim = tc.embed_dim(config, text)
  z = jnp.zeros((2, config.model.latent_dim), jnp.float32)
  t = jnp.zeros((2, dim), jnp.float32)
  x = jnp.zeros((2, config.model.resolution, config.model.resolution, config.model.channels))
  g_tx, d_tx = optimizers(config) if with_optimizers else (None, None)
  nets = {'g': base.make_net(generator.init(g_key, z, t, train=False), g_tx,
                             ema=config.ema_decay > 0),
          'd': base.make_net(discriminator.init(d_key, x, t, train=False), d_tx)}
  text_net = tc.init_text_net(text, t_key)
  if text_net is not None:
    nets['text'] = text_net
  return nets


def optimizers(config):
  g = optim.adam(config.optimizer.g_lr, config.optimizer, config.num_steps)
  d = optim.adam(config.optimizer.d_lr, config.optimizer, config.num_steps)
  return g, d


def generate(generator, g_net, z, t):
  """G(z, t) in evaluation mode (EMA weights when kept, BatchNorm running statistics)."""
  return generator.apply(base.variables(g_net, use_ema=True), z, t, train=False)


def text_to_image(config) -> tc.TextToImage:
  """G as the sampling and scoring tools use it (:class:`~text_conditioning.TextToImage`)."""
  generator, _, text = networks(config)
  return tc.TextToImage(
      generate=lambda nets, z, t: generate(generator, nets['g'], z, t),
      latents=tc.normal_latents(config.model.latent_dim),
      latent_dim=config.model.latent_dim, resolution=config.model.resolution, text=text)


def build(config, *, with_data: bool = True) -> base.Family:
  """The family; ``with_data`` reads the fixed sampling captions (needed by ``sample``)."""
  generator, discriminator, text = networks(config)
  sample = None
  if with_data and text is not None:
    sample = tc.caption_sampler(text_to_image(config),
                                tc.eval_captions(config, text, config.num_sample_captions))

  def init(key):
    init_key, train_key = jax.random.split(key)
    return base.new_state(train_key, init_nets(config, init_key))

  return base.Family(init=init, train_step=make_train_step(config, generator, discriminator,
                                                           text),
                     sample=sample, batch_keys=('image', *tc.batch_keys(config)),
                     examples_per_step=config.batch_size,
                     progress_keys=('d_loss', 'g_loss'))


def make_train_step(config, generator, discriminator, text):
  """``train_step(state, batch) -> (state, metrics)`` (pure; the engine jits it)."""
  g_tx, d_tx = optimizers(config)
  use_cls, use_int = config.cls, config.interp
  beta, int_weight, ema_decay = config.interp_beta, config.interp_weight, config.ema_decay
  latent_dim = config.model.latent_dim
  wrong_how = config.get('wrong_captions', 'roll')
  wrong_max_sim = config.get('wrong_max_similarity', 0.8)
  with_counterfactual = tc.counterfactual(config)

  g_apply = functools.partial(base.apply_train, generator)
  d_apply = functools.partial(base.apply_train, discriminator)

  def train_step(state: base.TrainState, batch):
    real = batch['image']
    m = real.shape[0]
    key = jax.random.fold_in(state.rng, state.step)
    d_key, g_key, i_key = jax.random.split(key, 3)
    nets = state.nets
    g, d = nets['g'], nets['d']
    t = tc.embed(text, nets.get('text'), batch)

    # D update: real/right -> real, fake/right -> fake, (CLS) real/wrong -> fake.
    z = base.shard_batch_axis(jax.random.normal(d_key, (m, latent_dim)))
    fake, g_vars = g_apply(g['params'], g['vars'], z, t)
    fake = jax.lax.stop_gradient(fake)
    g = dict(g, vars=g_vars)

    wrong_t = matching.wrong_captions(t, wrong_how, wrong_max_sim) if use_cls else None
    if with_counterfactual:  # rows 0, 2, 4, ...: the image's caption, one attribute changed
      even = (jnp.arange(m) % 2 == 0)[:, None]
      t_cf = tc.embed(text, nets.get('text'), tc.counterfactual_tokens(batch))
      wrong_t = jnp.where(even, t_cf, wrong_t)

    def d_loss_fn(params):
      real_logits, new_vars = d_apply(params, d['vars'], real, t)
      fake_logits, new_vars = d_apply(params, new_vars, fake, t)
      wrong_logits = None
      if use_cls:
        wrong_logits, new_vars = d_apply(params, new_vars, real, wrong_t)
      terms = matching.matching_aware_d_loss(real_logits, fake_logits, wrong_logits)
      if with_counterfactual:  # the wrong term's share from the counterfactual rows
        terms['counterfactual'] = matching.sigmoid_ce(wrong_logits[::2], 0.0)
      return terms['loss'], (new_vars, terms)

    (d_loss, (d_vars, d_terms)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        d['params'])
    d = base.apply_gradients(d, d_grads, d_tx, new_vars=d_vars)

    # G update on fresh noise, through the updated D (whose statistics this pass leaves alone).
    z_g = jax.random.normal(g_key, (m, latent_dim))
    t_g = t
    if use_int:
      z_g = jnp.concatenate([z_g, jax.random.normal(i_key, (m, latent_dim))])
      t_g = jnp.concatenate([t, matching.interpolate(t, beta)])
    z_g = base.shard_batch_axis(z_g)
    d_now = base.variables(d)

    def g_loss_fn(params):
      images, new_vars = g_apply(params, g['vars'], z_g, t_g)
      logits = discriminator.apply(d_now, images, t_g, train=True, mutable=list(d['vars']))[0]
      right, interp = (logits[:m], logits[m:]) if use_int else (logits, None)
      terms = matching.generator_loss(right, interp, int_weight)
      return terms['loss'], (new_vars, terms)

    (g_loss, (g_vars, g_terms)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        g['params'])
    g = base.apply_gradients(dict(g, vars=g_vars), g_grads, g_tx, ema_decay=ema_decay)
    new_nets = dict(nets, g=g, d=d)  # 'text' passes through untouched.
    finite = base.all_finite(d_loss, d_grads, g_loss, g_grads)
    metrics = {'d_loss': d_loss, 'd_real': d_terms['real'], 'd_fake': d_terms['fake'],
               'd_wrong': d_terms['wrong'], 'g_loss': g_loss, 'g_right': g_terms['right'],
               'g_interp': g_terms['interp'], 'finite': finite.astype(jnp.float32)}
    if with_counterfactual:
      metrics['d_counterfactual'] = d_terms['counterfactual']
    return state.replace(step=state.step + 1, nets=new_nets), metrics

  return train_step
