"""DF-GAN (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image Synthesis",
CVPR 2022): one generator straight to the output size, text fused into every block, a
matching-aware hinge discriminator regularised by MA-GP.

Networks (:mod:`jaxgen.models.dfgan`):

* ``g``: G(z, s), a 4x4 map from z and a chain of UpBlocks, each fusing ``concat(z, s)``
  through its DF-Blocks (text-predicted channel-wise scale and shift), up to
  ``model.resolution`` (32, 64, 128 or 256). No BatchNorm, no EMA: the weights are the sampler.
* ``d``: the feature extractor (DownBlocks to 4x4) and the conditional head (the sentence
  vector tiled over the 4x4 grid, two convolutions to one logit), one network with one
  optimizer, as the official code steps ``netD`` and ``netC`` together.
* ``text``: the caption encoder, *frozen* (no optimizer state): the text-encoder family's
  ``config.text`` (DF-GAN's is the DAMSM bi-LSTM, ``text.encoder='bilstm'``), random unless
  imported with ``text_from='<text-encoder workdir>[:net]'`` (``init_from.text``); absent when
  batches carry precomputed embeddings (``text.encoder='precomputed'``). See
  :mod:`jaxgen.families.text_conditioning`. Its sentence size is ``model.cond_dim``.
* ``image`` (only with ``matching.weight > 0``, not the paper): the image network of the same
  text-encoder run, frozen, which scores G's images against their captions (below).

One train step, a pure function of (state, batch) as the authors' released ``train`` loop
does it (tobran/DF-GAN, ``code/lib/modules.py``): with ``key = fold_in(state.rng,
state.step)`` and s the batch's sentence vectors,

1. z = ``normal(key, [B, model.latent_dim])`` (training noise is never truncated) and one
   G forward, fake = G(z, s);
2. D update on ``real + (fake + mismatch) / 2 + MA-GP``: hinge terms for D(real, s) (above
   +1), D(fake, s) and the mismatched pairs (below -1), the latter D's real features rolled by
   one along the batch against the unrolled sentences; MA-GP
   ``k * mean ||(grad_x D, grad_s D)||^p`` on the real, matching pairs
   (:mod:`jaxgen.losses.dfgan`; ``ma_gp.k`` = 2, ``ma_gp.p`` = 6 as the paper; k = 0 turns
   it off). One feature pass over the real images serves the real term, the penalty and the
   mismatched pairs;
3. G update on ``-mean D'(fake, s)`` through the *updated* D', back-propagated through the
   forward of step 1 (G has not changed, and has no batch statistics, so this is the fake of
   the official step: one G forward per step).

``data.counterfactual`` (default '': the paper; ``jaxgen_shapes`` only) makes half of the
mismatched pairs counterfactual: each real image against its own caption with one object's
shape or colour changed (:func:`jaxgen.data.shapes.counterfactual_caption`), so the mismatch
term is the mean of the paper's hinge term and that one (logged as ``d_counterfactual``). A
random other caption of this dataset almost always differs in position already, so the
paper's pairs let D pass without reading shape or colour; these pairs do not.

``text_scale`` (default 1: the paper) multiplies the encoder's sentence vectors before G, D
and MA-GP see them (s = text_scale * phi(t)): G reads ``concat(z, s)``, so a sentence much
shorter than z (a cosine-trained encoder's, whose length nothing fixes) moves G little until
its weights grow.

``matching.weight`` (default 0: the paper; AttnGAN's DAMSM loss for G, Xu et al. 2018, with
the caption encoder's own matching loss) adds ``weight * L_match(E(fake), phi(t))`` to G's
loss: E is the image network of the text-encoder run that ``text_from`` names, imported with
its text network and frozen (``image``; fake images resized to ``matching.resolution``, the
size E was trained at, when G's differs), phi(t) the unscaled sentences, and L_match the loss
that run was trained with (``matching.loss``: joint embedding or DAMSM's sentence term), so
each fake must match its own caption better than the batch's other captions (and, with
``data.counterfactual``, better than its caption with one word changed). Logged as
``g_matching`` beside the adversarial ``g_adv``; ``g_loss`` is their weighted sum.

``mode_seeking.weight`` (default 0: the paper; MSGAN's mode-seeking term, Mao et al. 2019,
as their code computes it) draws a second latent z' for every caption of the batch, runs G on
both (one forward of twice the batch; D's step sees only the first half, so its update is the
run's without the term) and adds ``weight / (mean|G(z', s) - G(z, s)| / mean|z' - z| + 1e-5)``
to G's loss: G is penalised when two latents give the same image for one caption. Logged as
``g_mode_seeking`` (the term before its weight).

``aux_classifier.weight`` (default 0: the paper; ``jaxgen_shapes`` only; the auxiliary
classifier of AC-GAN, Odena et al. 2017, as TAC-GAN, Dash et al. 2017, puts it beside a text
condition) gives D one more head, a linear layer on its 4x4 features that predicts which
shapes and which colours the image holds (:func:`attribute_targets`: 6 + 8 sigmoid outputs,
multi-hot, so one- and two-object images need no object order). D's loss adds ``weight *
BCE(head(features(real)), y)`` on the real images with their labels (logged ``d_aux``), G's
adds ``weight * BCE(head'(features'(fake)), y)`` through the updated D' with the labels of the
caption each fake was drawn from (``g_aux``). D's classifier never trains on fakes, so its
features learn the shapes of real images only and G is asked to draw what they read.
A caption of this set names every object, so its labels are the caption's.

Adam for both, betas (0.0, 0.9), G at 1e-4 and D at 4e-4 (the official optimisers).
``ema_decay`` (default 0: the paper) keeps ``g['ema']``, ``ema <- decay * ema + (1 - decay) *
params`` after each G update; the step's own G forward and update use the trained weights.
Metrics: ``d_loss`` (with MA-GP), its terms ``d_real``, ``d_fake``, ``d_mismatch``,
``ma_gp`` (and ``d_counterfactual``, ``d_aux``), ``g_loss``, and ``finite``.

Sampling: ``truncation`` (the official configs: on, ``trunc_rate`` 0.86) draws
``trunc_rate * TN(-trunc_bound, trunc_bound)`` latents, a standard normal truncated to
``[-trunc_bound, trunc_bound]`` (2, as the code) and scaled, so every coordinate lies in
``[-trunc_rate * trunc_bound, trunc_rate * trunc_bound]``; off, N(0, I). ``sample(state, key,
num)`` (grids, the engine's evaluators) and :func:`text_to_image` (its ``latents``) both use
:func:`latents`; sample i gets caption i mod ``num_sample_captions`` of ``data.eval_split``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgen import optim
from jaxgen.families import base, gan_int_cls
from jaxgen.families import text_conditioning as tc
from jaxgen.families import text_encoder
from jaxgen.losses import dfgan as losses
from jaxgen.models import dfgan as models
from jaxgen.models import text_encoders


def resolve(config) -> None:
  """``text_from='<workdir>[:net]'`` -> ``init_from.text`` (the contract of gan_int_cls);
  with ``matching.weight > 0`` also ``init_from.image``, that run's image network."""
  gan_int_cls.resolve(config)
  if not matching_weight(config):
    return
  source = config.get('text_from', '')
  if not source:
    raise ValueError('matching.weight > 0 scores G\'s images with the image network of a '
                     'trained text-encoder run: set text_from=<text-encoder workdir>.')
  # gan_int_cls.resolve wrote '<workdir>:<net>'; the image network of the same run.
  config.init_from.image = config.init_from.text.rpartition(':')[0] + ':image'


def option_weight(config, section: str) -> float:
  """``config.<section>.weight`` of an option that is not the paper's, as a float; 0.0 (off)
  for runs made before the option existed."""
  option = config.get(section)
  return float(option.weight) if option is not None else 0.0


def matching_weight(config) -> float:
  """The weight of G's image-text matching loss."""
  return option_weight(config, 'matching')


MODE_SEEKING_EPS = 1e-5  # MSGAN's code: 1 / (lz + eps)


def mode_seeking_weight(config) -> float:
  """The weight of MSGAN's mode-seeking term."""
  return option_weight(config, 'mode_seeking')


def mode_seeking_term(fake, fake2, z, z2) -> jax.Array:
  """MSGAN's term ``1 / (mean|fake2 - fake| / mean|z2 - z| + 1e-5)`` (means over every entry
  of the batch): large when two latents draw nearly the same images."""
  lz = jnp.mean(jnp.abs(fake2 - fake)) / jnp.mean(jnp.abs(z2 - z))
  return 1.0 / (lz + MODE_SEEKING_EPS)


def aux_weight(config) -> float:
  """The weight of the attribute classifier's terms."""
  return option_weight(config, 'aux_classifier')


# The labels the attribute head predicts, as batch keys: jaxgen_shapes' per-object shape and
# colour ([B, 2], -1 in the second slot of one-object images).
AUX_KEYS = ('object_shape', 'object_colour')


def num_attributes(config) -> int:
  """Outputs of D's attribute head: one per shape and one per colour (0 when it is off)."""
  if not aux_weight(config) > 0:
    return 0
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  return len(shapes.SHAPES) + len(shapes.COLOURS)


def attribute_targets(object_shape, object_colour, num_shapes: int,
                      num_colours: int) -> jax.Array:
  """Multi-hot targets [B, num_shapes + num_colours] from per-object labels [B, slots] (-1:
  no object): 1 where some object of the image has that shape (colour)."""
  def present(labels, n):  # one_hot of -1 is all zeros; two objects may share a value
    return jnp.minimum(jax.nn.one_hot(labels, n).sum(axis=1), 1.0)
  return jnp.concatenate([present(object_shape, num_shapes),
                          present(object_colour, num_colours)], axis=-1)


def attribute_loss(logits, targets) -> jax.Array:
  """Mean sigmoid cross-entropy over the batch and the attributes (on logits)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def sentence_dim(config) -> int:
  """Size of the sentence vectors s: ``data.embedding_dim`` for precomputed embeddings, else
  the text encoder's (``text.char_cnn_rnn.embed_dim``, ``2 * text.bilstm.hidden``)."""
  if tc.is_precomputed(config):
    return int(config.data.embedding_dim)
  return text_encoder.text_dim(config)


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(config) -> None:
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  models.check(config.model)
  base.check_model_matches_data(config)
  if config.data.name not in captions.CAPTION_SETS:
    raise ValueError(f'dfgan trains on a caption dataset; data.name={config.data.name!r} is '
                     f'not one of: {", ".join(captions.CAPTION_SETS)}.')
  tc.validate(config)
  dim = sentence_dim(config)
  if config.model.cond_dim != dim:
    raise ValueError(f'model.cond_dim ({config.model.cond_dim}) must equal the size of the '
                     f'sentence vectors, {dim} (text.encoder={config.text.encoder!r}).')
  optim.validate(config.optimizer, lr_names=('g_lr', 'd_lr'))
  k, p = config.ma_gp.k, config.ma_gp.p
  if not _number(k) or k < 0:
    raise ValueError(f'ma_gp.k must be a number >= 0 (0 turns MA-GP off); got {k!r}.')
  if not _number(p) or p < 2:
    raise ValueError(f'ma_gp.p must be a number >= 2 (below 2 the penalty\'s derivative is '
                     f'infinite where a gradient vanishes); got {p!r}.')
  if config.batch_size < 2:
    raise ValueError(f'The mismatched pairs pair each image with another of the batch: '
                     f'batch_size must be >= 2; got {config.batch_size}.')
  for section in ('matching', 'mode_seeking', 'aux_classifier'):
    option = config.get(section)
    if option is not None and (not _number(option.weight) or option.weight < 0):
      raise ValueError(f'{section}.weight must be a number >= 0 (0: off, the paper); got '
                       f'{option.weight!r}.')
  if matching_weight(config) > 0:
    matching = config.matching
    if tc.is_precomputed(config):
      raise ValueError('matching.weight > 0 needs the text-encoder run\'s image network; '
                       'precomputed embeddings come without one.')
    text_encoder.matching_loss(matching)  # an unknown loss.name is a clear error
    if not matching.image_features or any(not isinstance(f, int) or f <= 0
                                          for f in matching.image_features):
      raise ValueError(f'matching.image_features must be positive integers (the text-encoder '
                       f'run\'s image.features); got {matching.image_features!r}.')
    base.positive_int('matching.resolution', matching.resolution)
  if aux_weight(config) > 0 and config.data.name != 'jaxgen_shapes':
    raise ValueError(f'aux_classifier.weight > 0 needs per-object shape and colour labels, '
                     f'which only jaxgen_shapes stores; data.name={config.data.name!r}.')
  decay = ema_decay(config)
  if not _number(decay) or not 0.0 <= decay < 1.0:
    raise ValueError(f'ema_decay must be a number in [0, 1) (0: no EMA, the paper); got '
                     f'{decay!r}.')
  if not isinstance(config.truncation, bool):
    raise ValueError(f'truncation must be True or False; got {config.truncation!r}.')
  for name in ('trunc_rate', 'trunc_bound'):
    if not _number(config[name]) or not config[name] > 0:
      raise ValueError(f'{name} must be a positive number; got {config[name]!r}.')
  base.positive_int('num_sample_captions', config.num_sample_captions)
  scale = text_scale(config)
  if not _number(scale) or not scale > 0:
    raise ValueError(f'text_scale must be a positive number; got {scale!r}.')


def text_scale(config):
  """The factor of the sentence vectors (1.0 for runs made before the option existed)."""
  return config.get('text_scale', 1.0)


def ema_decay(config):
  """The decay of G's weight average (0.0, no average, for runs made before the option)."""
  return config.get('ema_decay', 0.0)


def scaled(config, phi) -> jax.Array:
  """s = text_scale * phi(t) [B, cond_dim]: what G, D and MA-GP see."""
  return float(text_scale(config)) * phi



def structure(config) -> dict:
  out = {'model': config.model.to_dict(), **tc.structure(config),
         'ema_decay_enabled': ema_decay(config) > 0,
         'lr_schedule_enabled': config.optimizer.schedule != 'constant'}
  if matching_weight(config) > 0:  # the frozen image network's shapes
    out['matching.image_features'] = list(config.matching.image_features)
  if num_attributes(config):  # D's attribute head
    out['d.num_attributes'] = num_attributes(config)
  return out


def networks(config):
  """``(generator, discriminator, text)``: :class:`~jaxgen.models.dfgan.Generator`,
  :class:`~jaxgen.models.dfgan.MatchingDiscriminator` and the
  :class:`~jaxgen.families.text_encoder.TextNet` (None for precomputed embeddings)."""
  generator, discriminator = models.make_networks(config.model, num_attributes(config))
  return generator, discriminator, tc.text_net(config)


def image_net(config):
  """The frozen image network E of G's matching loss (None when ``matching.weight`` is 0)."""
  if not matching_weight(config) > 0:
    return None
  return text_encoders.ImageEncoder(features=tuple(config.matching.image_features),
                                    embed_dim=sentence_dim(config))


def optimizers(config):
  g = optim.adam(config.optimizer.g_lr, config.optimizer, config.num_steps)
  d = optim.adam(config.optimizer.d_lr, config.optimizer, config.num_steps)
  return g, d


def init_nets(config, key, with_optimizers=True) -> dict:
  """Fresh ``g``, ``d`` and (frozen) ``text`` entries; ``with_optimizers=False``: all frozen."""
  generator, discriminator, text = networks(config)
  g_key, d_key, t_key = jax.random.split(key, 3)
  r, c = config.model.resolution, config.model.channels
  z = jnp.zeros((2, config.model.latent_dim), jnp.float32)
  s = jnp.zeros((2, config.model.cond_dim), jnp.float32)
  x = jnp.zeros((2, r, r, c), jnp.float32)
  g_tx, d_tx = optimizers(config) if with_optimizers else (None, None)
  nets = {'g': base.make_net(generator.init(g_key, z, s), g_tx, ema=ema_decay(config) > 0),
          'd': base.make_net(discriminator.init(d_key, x, s, method='init_all'), d_tx)}
  text_net = tc.init_text_net(text, t_key)
  if text_net is not None:
    nets['text'] = text_net
  image = image_net(config)
  if image is not None:
    r = config.matching.resolution
    nets['image'] = base.make_net(
        image.init(jax.random.fold_in(t_key, 1), jnp.zeros((2, r, r, c), jnp.float32)))
  return nets


def latents(config):
  """``(key, num) -> [num, latent_dim]``: the sampling latents (see the module docstring)."""
  dim = config.model.latent_dim
  if not config.truncation:
    return tc.normal_latents(dim)
  rate, bound = float(config.trunc_rate), float(config.trunc_bound)
  return lambda key, num: rate * jax.random.truncated_normal(key, -bound, bound, (num, dim))


def generate(generator, g_net, z, s):
  """G(z, s) with its EMA weights when the run keeps them: deterministic (G has no dropout or
  batch statistics)."""
  return generator.apply(base.variables(g_net, use_ema=True), z, s)


def text_to_image(config) -> tc.TextToImage:
  """G as the sampling and scoring tools use it (:class:`~text_conditioning.TextToImage`)."""
  generator, _, text = networks(config)
  scale = float(text_scale(config))
  return tc.TextToImage(
      generate=lambda nets, z, t: generate(generator, nets['g'], z, scale * t),
      latents=latents(config), latent_dim=config.model.latent_dim,
      resolution=config.model.resolution, text=text)


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

  return base.Family(init=init,
                     train_step=make_train_step(config, generator, discriminator, text),
                     sample=sample,
                     batch_keys=('image', *tc.batch_keys(config),
                                 *(AUX_KEYS if aux_weight(config) > 0 else ())),
                     examples_per_step=config.batch_size,
                     progress_keys=('d_loss', 'g_loss', 'ma_gp')
                     + (('g_matching',) if matching_weight(config) > 0 else ())
                     + (('g_mode_seeking',) if mode_seeking_weight(config) > 0 else ())
                     + (('g_aux',) if aux_weight(config) > 0 else ()))


def make_train_step(config, generator, discriminator, text):
  """``train_step(state, batch) -> (state, metrics)`` (pure; the engine jits it)."""
  g_tx, d_tx = optimizers(config)
  with_counterfactual = tc.counterfactual(config)
  k, p = float(config.ma_gp.k), float(config.ma_gp.p)
  latent_dim = config.model.latent_dim
  decay = float(ema_decay(config))
  weight, image = matching_weight(config), image_net(config)
  ms_weight = mode_seeking_weight(config)
  aux_w = aux_weight(config)
  if aux_w > 0:
    from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
    num_shapes, num_colours = len(shapes.SHAPES), len(shapes.COLOURS)
  if image is not None:
    match_loss = text_encoder.matching_loss(config.matching)
    match_size = config.matching.resolution

  def train_step(state: base.TrainState, batch):
    real = batch['image']
    m = real.shape[0]
    nets = state.nets
    if aux_w > 0:  # the caption's (= the real image's) shapes and colours, multi-hot
      targets = attribute_targets(batch['object_shape'], batch['object_colour'], num_shapes,
                                  num_colours)
    g, d = nets['g'], nets['d']
    phi = tc.embed(text, nets.get('text'), batch)
    s = scaled(config, phi)
    phi_cf = s_cf = None
    if with_counterfactual:
      phi_cf = tc.embed(text, nets.get('text'), tc.counterfactual_tokens(batch))
      s_cf = scaled(config, phi_cf)
    key = jax.random.fold_in(state.rng, state.step)
    z = base.shard_batch_axis(jax.random.normal(key, (m, latent_dim)))
    z_in, s_in = z, s
    if ms_weight > 0:  # a second latent per caption: G runs on both, D sees the first half
      z2 = base.shard_batch_axis(jax.random.normal(jax.random.fold_in(key, 1), (m, latent_dim)))
      z_in, s_in = jnp.concatenate([z, z2]), jnp.concatenate([s, s])
    # The one G forward of the step; its vjp carries G's gradient after D's update.
    fakes, g_vjp = jax.vjp(
        lambda params: generator.apply({'params': params, **g['vars']}, z_in, s_in), g['params'])
    fake = fakes[:m]

    def d_loss_fn(params):
      variables = {'params': params, **d['vars']}

      def real_logits_and_features(x, sent):
        features = discriminator.apply(variables, x, method='features')
        return discriminator.apply(variables, features, sent, method='head'), features

      if k > 0:
        gp, real_logits, features = losses.ma_gp_with_logits(real_logits_and_features, real,
                                                             s, k, p, has_aux=True)
      else:  # MA-GP off (an ablation): no second-order pass.
        (real_logits, features), gp = real_logits_and_features(real, s), jnp.zeros(())
      mis_logits = discriminator.apply(variables, losses.mismatch(features), s, method='head')
      extra = {}
      if with_counterfactual:
        # Half of the mismatched pairs: each real image against its own caption with one
        # attribute changed (so the mismatch term is the mean of the two hinge terms).
        cf_logits = discriminator.apply(variables, features, s_cf, method='head')
        extra['counterfactual'] = losses.hinge_fake(cf_logits)
        mis_logits = jnp.concatenate([mis_logits, cf_logits])
      fake_logits = discriminator.apply(variables, fake, s)  # fake: a constant here (detached)
      terms = losses.discriminator_loss(real_logits, fake_logits, mis_logits)
      total = terms['loss'] + gp
      if aux_w > 0:  # D's attribute head learns the real images' labels (never the fakes')
        extra['aux'] = attribute_loss(
            discriminator.apply(variables, features, method='attributes'), targets)
        total = total + aux_w * extra['aux']
      return total, dict(terms, ma_gp=gp, **extra)

    (d_loss, d_terms), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d['params'])
    d = base.apply_gradients(d, d_grads, d_tx)

    d_now = base.variables(d)

    def g_loss_fn(all_images):
      images = all_images[:m]
      features = discriminator.apply(d_now, images, method='features')
      adv = losses.generator_loss(discriminator.apply(d_now, features, s, method='head'))
      total, terms = adv, {}
      if aux_w > 0:  # the fakes must show their captions' shapes and colours to D's head
        aux = attribute_loss(discriminator.apply(d_now, features, method='attributes'),
                             targets)
        total, terms = total + aux_w * aux, {'g_adv': adv, 'g_aux': aux}
      if ms_weight > 0:
        ms = mode_seeking_term(images, all_images[m:], z, z2)
        total, terms = total + ms_weight * ms, dict(terms, g_adv=adv, g_mode_seeking=ms)
      if image is None:
        return total, terms
      x = images
      if x.shape[1] != match_size:  # E's training size (antialiased, differentiable)
        x = jax.image.resize(x, (m, match_size, match_size, x.shape[-1]), 'linear',
                             antialias=True)
      match = match_loss(image.apply(base.variables(nets['image']), x), phi,
                         hard_negatives=phi_cf)
      return total + weight * match, dict(terms, g_adv=adv, g_matching=match)

    (g_loss, g_terms), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fakes)
    (g_grads,) = g_vjp(fake_grad)
    g = base.apply_gradients(g, g_grads, g_tx, ema_decay=decay)
    finite = base.all_finite(d_loss, d_grads, g_loss, g_grads)
    metrics = {'d_loss': d_loss, 'd_real': d_terms['real'], 'd_fake': d_terms['fake'],
               'd_mismatch': d_terms['mismatch'], 'ma_gp': d_terms['ma_gp'],
               'g_loss': g_loss, 'finite': finite.astype(jnp.float32)}
    if with_counterfactual:
      metrics['d_counterfactual'] = d_terms['counterfactual']
    if aux_w > 0:
      metrics['d_aux'] = d_terms['aux']
    metrics.update(g_terms)
    return state.replace(step=state.step + 1, nets=dict(nets, g=g, d=d)), metrics

  return train_step
