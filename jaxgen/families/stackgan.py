"""StackGAN (Zhang et al., "StackGAN: Text to Photo-realistic Image Synthesis with Stacked
Generative Adversarial Networks", ICCV 2017): text to image in two stages, trained one after
the other as two runs.

``config.stage`` says which (the networks are :mod:`jaxgen.models.stackgan`'s, the losses
:mod:`jaxgen.losses.stackgan`'s):

* **Stage 1** draws a coarse 64x64 image from noise z and the caption: networks ``g``
  (Stage-I G, with its conditioning augmentation), ``d`` (Stage-I D) and ``text``, the
  caption encoder phi, *frozen* as in GAN-INT-CLS (random unless imported with
  ``text_from='<text-encoder workdir>[:net]'``, absent for precomputed embeddings,
  ``text.encoder='precomputed'``; see :mod:`jaxgen.families.text_conditioning`).
* **Stage 2** redraws that image at ``model.stage2_resolution`` (256, or 128): networks ``g1``
  (the Stage-I G of the run named by ``stage1_from='<workdir>'``, *frozen*), ``g`` (Stage-II G,
  which reads only g1's image and the caption), ``d`` (Stage-II D, with its unconditional
  head) and ``text`` (the stage-1 run's, frozen). :func:`resolve` turns ``stage1_from`` into
  ``init_from = {'g1': '<workdir>:g', 'text': '<workdir>:text'}`` and copies from that run's
  config.json what must match: ``text``, the tokenizer fields of ``data`` and the Stage-I
  model fields (:data:`STAGE1_MODEL_FIELDS`; ``c_dim`` and ``ca_activation`` are then Stage-II's
  too, as in the authors' code, where both stages read one config). It refuses a workdir
  without a run, or with another family's or a stage-2 run. A stage-2 checkpoint holds g1 and
  text, so the run stays usable (sampling, scoring) after the stage-1 workdir is gone.

**The latent.** Conditioning augmentation samples the condition c = mu + sigma * eps; here
eps is part of the latent, so a latent fixes the image: ``[z, eps]`` at stage 1 and
``[z, eps1, eps2]`` at stage 2 (eps1 for g1's CA, eps2 for g's), ``latent_dim`` =
``model.latent_dim + stage * model.c_dim``, every entry N(0, 1) (:func:`latent_size`,
:func:`split_latent`).

**One train step** (the authors' ``trainer.py``; all randomness is one latent
``normal(fold_in(rng, step), [B, latent_dim])``):

1. G draws the fake batch once, in training mode (BatchNorm on batch statistics): stage 1
   G(z, t; eps); stage 2 G(g1(z, t; eps1), t; eps2), where g1 runs in evaluation mode
   (running statistics; ``stage1_batch_stats=True``: batch statistics, as in the authors'
   code, where Stage-I sits inside Stage-II's module in training mode; g1 never changes
   either way).
2. D is updated on real/right -> real, fake/right -> fake and real/wrong -> fake (the
   matching-aware loss; wrong = the conditions rolled by one over the batch, B pairs, where
   the code shifts them for B - 1), weighted as the code: ``real + (fake + wrong) / 2``; at
   stage 2 with the unconditional logits
   ``(real + u_real) / 2 + (fake + wrong + u_fake) / 3``.
3. G is updated on the *same* fake batch through the updated D (the code back-propagates the
   graph of step 1; here ``jax.vjp`` keeps G's forward pass for its backward, so G runs once
   per step): ``-log D(fake, right)`` (+ the unconditional term at stage 2) +
   ``kl_weight * KL(N(mu, sigma^2) || N(0, I))`` of its CA (mean over batch and dimensions;
   2.0 in the code's configs, the paper's lambda = 1).

What D reads as the condition is ``model.d_cond_proj``'s choice: the text embedding t, which D
compresses itself (the paper; True), or G's CA mean mu, gradient stopped (the code; False).
Each D pass is separate (BatchNorm sees pure batches); the passes inside G's loss use D's
batch statistics and leave its running statistics alone. Adam (``optimizer.g_lr``,
``d_lr`` = 2e-4, ``b1`` = 0.5) with :mod:`jaxgen.optim`'s schedules; the authors halve both
rates every 100 epochs (paper) or ``LR_DECAY_EPOCH`` (code), which those schedules cannot
express, so the configs keep them constant. Metrics: ``d_loss``, ``d_real``, ``d_fake``,
``d_wrong``, ``g_loss`` (what G minimises), ``g_adv`` (its adversarial part), ``kl``, and at
stage 2 ``d_uncond_real``, ``d_uncond_fake``, ``g_uncond``.

Sampling (``sample(state, key, num)``, the engine's grids) cycles through
``num_sample_captions`` fixed captions of ``data.eval_split`` as GAN-INT-CLS does (none with
precomputed embeddings); :func:`text_to_image` draws for any embedding.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import optim
from jaxgen.families import base, gan_int_cls
from jaxgen.families import text_conditioning as tc
from jaxgen.losses import matching
from jaxgen.losses import stackgan as losses
from jaxgen.models import stackgan as models
from jaxgen.models import with_defaults

STAGES = (1, 2)
# model.* fields that decide the Stage-I generator, copied into a stage-2 run from its
# stage-1 run.
STAGE1_MODEL_FIELDS = ('channels', 'latent_dim', 'c_dim', 'g1_width', 'ca_activation')
# data.* fields that decide the captions' tokens (or the precomputed embeddings' size): the
# frozen text encoder must see what it saw at stage 1.
TEXT_DATA_FIELDS = ('tokenizer', 'max_caption_len', 'vocab_min_count', 'vocab_max_size',
                    'split_sizes', 'embedding_dim')


def stage_of(config) -> int:
  """``config.stage``, or a ValueError saying what is accepted."""
  stage = config.get('stage')
  if isinstance(stage, bool) or stage not in STAGES:
    raise ValueError(f'stage must be 1 (Stage-I: 64x64 images from text and noise) or 2 '
                     f'(Stage-II: refines the images of a finished stage-1 run); got {stage!r}.')
  return stage


def output_resolution(config) -> int:
  """The side of the images this stage draws: 64, or ``model.stage2_resolution``."""
  if stage_of(config) == 1:
    return models.STAGE1_RESOLUTION
  return with_defaults(config.model, models.DEFAULTS).stage2_resolution


# ---------------------------------------------------------------------------- config


def resolve(config) -> None:
  """Stage 1: ``text_from`` -> ``init_from.text``. Stage 2: ``stage1_from`` -> ``init_from``
  of g1 and text, and the fields copied from that run. Both: ``model.resolution``, the
  side of the images drawn (what the text-to-image tools read)."""
  stage = stage_of(config)
  if stage == 1:
    if config.get('stage1_from'):
      raise ValueError('stage1_from names the stage-1 run that a stage-2 run refines; this run '
                       'has stage=1. Remove stage1_from, or set stage=2.')
    gan_int_cls.resolve(config)  # The same text_from contract.
  else:
    _resolve_stage2(config)
  config.model.resolution = output_resolution(config)


def _resolve_stage2(config) -> None:
  if config.get('text_from'):
    raise ValueError('A stage-2 run takes its text encoder from its stage-1 run (stage1_from); '
                     'text_from is for stage 1. Remove it.')
  path = config.get('stage1_from') or ''
  if not path:
    raise ValueError('stage=2 refines a finished stage-1 run: set '
                     '--config.stage1_from=<the stage-1 workdir>.')
  g1_source = f'{path}:g'
  if config.init_from.get('g1') == g1_source:
    return  # Already resolved: the saved config.json of a stage-2 run.
  cfg_file = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_file):
    raise ValueError(f'stage1_from {path!r} holds no run ({cfg_file} is missing); train '
                     'stage 1 there first (experiments/configs/stackgan.py:stage1).')
  with open(cfg_file) as f:
    stage1 = json.load(f)
  if stage1.get('family') != 'stackgan' or stage1.get('stage') != 1:
    what = (f'a stage-{stage1.get("stage")} stackgan run' if stage1.get('family') == 'stackgan'
            else f'a {stage1.get("family")!r} run')
    raise ValueError(f'stage1_from {path!r} holds {what}; stage 2 needs a stage-1 stackgan run '
                     '(stage=1), whose g it refines.')
  if stage1['data']['name'] != config.data.name:
    raise ValueError(f'stage1_from {path!r} trained on data.name={stage1["data"]["name"]!r}; '
                     f'this stage-2 run reads {config.data.name!r}. Both stages train on the '
                     'same captions.')
  stage1_model = with_defaults(ml_collections.ConfigDict(stage1['model']), models.DEFAULTS)
  for key in STAGE1_MODEL_FIELDS:
    config.model[key] = stage1_model[key]
  config.text = ml_collections.ConfigDict(stage1['text'])
  for key in TEXT_DATA_FIELDS:
    if key in stage1['data']:
      config.data[key] = stage1['data'][key]
    elif key in config.data:
      del config.data[key]
  config.init_from.g1 = g1_source
  if not tc.is_precomputed(config):
    config.init_from.text = f'{path}:text'


def validate(config) -> None:
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  stage = stage_of(config)
  models.check(config.model)
  model = with_defaults(config.model, models.DEFAULTS)
  side = output_resolution(config)
  if config.data.resolution != side:
    raise ValueError(f'Stage {stage} draws {side}x{side} images: data.resolution must be {side}; '
                     f'got {config.data.resolution}.')
  if model.channels != config.data.channels:
    raise ValueError(f'model.channels ({model.channels}) must equal data.channels '
                     f'({config.data.channels}).')
  if config.data.name not in captions.CAPTION_SETS:
    raise ValueError(f'stackgan trains on a caption dataset; data.name={config.data.name!r} is '
                     f'not one of: {", ".join(captions.CAPTION_SETS)}.')
  tc.validate(config)
  optim.validate(config.optimizer, lr_names=('g_lr', 'd_lr'))
  kl = config.kl_weight
  if isinstance(kl, bool) or not isinstance(kl, (int, float)) or kl < 0:
    raise ValueError(f'kl_weight (of the CA regulariser) must be a number >= 0; got {kl!r}.')
  if not isinstance(config.stage1_batch_stats, bool):
    raise ValueError(f'stage1_batch_stats must be True or False; got '
                     f'{config.stage1_batch_stats!r}.')
  if config.batch_size < 2:
    raise ValueError(f'D pairs each real image with another caption of the batch: batch_size '
                     f'must be >= 2; got {config.batch_size}.')
  base.positive_int('num_sample_captions', config.num_sample_captions)


def structure(config) -> dict:
  return {'stage': stage_of(config),
          'model': with_defaults(config.model, models.DEFAULTS).to_dict(),
          **tc.structure(config),
          'lr_schedule_enabled': config.optimizer.schedule != 'constant'}


# ---------------------------------------------------------------------------- networks


class Networks(NamedTuple):
  """The flax modules of a run (no parameters)."""
  g: object            # Generator1 (stage 1) or Generator2 (stage 2): the one trained
  d: object            # Discriminator1 / Discriminator2
  g1: object | None    # stage 2: the frozen Generator1
  text: object | None  # its TextNet (None: precomputed embeddings)


def networks(config) -> Networks:
  if stage_of(config) == 1:
    g, d = models.make_stage1(config.model)
    return Networks(g, d, None, tc.text_net(config))
  g1, _ = models.make_stage1(config.model)
  g, d = models.make_stage2(config.model)
  return Networks(g, d, g1, tc.text_net(config))


def latent_size(config) -> int:
  """z and one CA eps per generator: ``latent_dim + stage * c_dim``."""
  model = with_defaults(config.model, models.DEFAULTS)
  return model.latent_dim + stage_of(config) * model.c_dim


def split_latent(config, latent):
  """``(z, eps1, eps2)`` of ``[B, latent_size]`` latents; ``eps2`` is None at stage 1."""
  model = with_defaults(config.model, models.DEFAULTS)
  z_dim, c_dim = model.latent_dim, model.c_dim
  z, eps1 = latent[:, :z_dim], latent[:, z_dim:z_dim + c_dim]
  eps2 = latent[:, z_dim + c_dim:] if stage_of(config) == 2 else None
  return z, eps1, eps2


def optimizers(config):
  g = optim.adam(config.optimizer.g_lr, config.optimizer, config.num_steps)
  d = optim.adam(config.optimizer.d_lr, config.optimizer, config.num_steps)
  return g, d


def init_nets(config, key, nets: Networks) -> dict:
  """Fresh networks at step 0: ``g``, ``d``, frozen ``text`` and (stage 2) frozen ``g1``
  (the latter two replaced by ``init_from`` at a run's first start)."""
  model = with_defaults(config.model, models.DEFAULTS)
  g_key, d_key, g1_key, t_key = jax.random.split(key, 4)
  t = jnp.zeros((2, tc.embed_dim(config, nets.text)), jnp.float32)
  z = jnp.zeros((2, model.latent_dim), jnp.float32)
  eps = jnp.zeros((2, model.c_dim), jnp.float32)
  stage1_image = jnp.zeros((2, models.STAGE1_RESOLUTION, models.STAGE1_RESOLUTION,
                            model.channels), jnp.float32)
  side = output_resolution(config)
  x = jnp.zeros((2, side, side, model.channels), jnp.float32)
  cond = t if model.d_cond_proj else eps
  g_tx, d_tx = optimizers(config)
  g_in = z if nets.g1 is None else stage1_image
  out = {'g': base.make_net(nets.g.init(g_key, g_in, t, train=False, ca_eps=eps), g_tx),
         'd': base.make_net(nets.d.init(d_key, x, cond, train=False), d_tx)}
  if nets.g1 is not None:
    out['g1'] = base.make_net(nets.g1.init(g1_key, z, t, train=False, ca_eps=eps), tx=None)
  text_net = tc.init_text_net(nets.text, t_key)
  if text_net is not None:
    out['text'] = text_net
  return out


def stage1_images(g1, g1_net, z, t, eps, batch_stats: bool = False):
  """The frozen Stage-I G's images: evaluation mode, or with ``batch_stats`` BatchNorm on the
  batch's statistics (its running statistics are not updated). The train step takes gradients
  with respect to Stage-II's parameters only, so nothing flows back into g1 (the authors
  detach its image)."""
  variables = base.variables(g1_net)
  if batch_stats:
    return g1.apply(variables, z, t, train=True, ca_eps=eps, mutable=list(g1_net['vars']))[0][0]
  return g1.apply(variables, z, t, train=False, ca_eps=eps)[0]


def generate(config, nets: Networks, state_nets: dict, latent, t):
  """Images of latents ``[N, latent_size]`` and embeddings ``t`` in evaluation mode
  (deterministic: the CA noise is part of the latent); stage 2 runs g1, then g."""
  z, eps1, eps2 = split_latent(config, latent)
  if nets.g1 is None:
    return nets.g.apply(base.variables(state_nets['g']), z, t, train=False, ca_eps=eps1)[0]
  x1 = stage1_images(nets.g1, state_nets['g1'], z, t, eps1)
  return nets.g.apply(base.variables(state_nets['g']), x1, t, train=False, ca_eps=eps2)[0]


def text_to_image(config) -> tc.TextToImage:
  """The run's generator as the sampling and scoring tools use it
  (:class:`~jaxgen.families.text_conditioning.TextToImage`)."""
  nets = networks(config)
  dim = latent_size(config)
  return tc.TextToImage(generate=lambda state_nets, z, t: generate(config, nets, state_nets, z, t),
                        latents=tc.normal_latents(dim), latent_dim=dim,
                        resolution=output_resolution(config), text=nets.text)


# ---------------------------------------------------------------------------- training


def build(config, *, with_data: bool = True) -> base.Family:
  """The family; ``with_data`` reads the fixed sampling captions (needed by ``sample``)."""
  nets = networks(config)
  sample = None
  if with_data and nets.text is not None:
    sample = tc.caption_sampler(text_to_image(config),
                                tc.eval_captions(config, nets.text, config.num_sample_captions))

  def init(key):
    init_key, train_key = jax.random.split(key)
    return base.new_state(train_key, init_nets(config, init_key, nets))

  keys = ('d_loss', 'g_loss', 'kl')
  return base.Family(init=init, train_step=make_train_step(config, nets), sample=sample,
                     batch_keys=('image', *tc.batch_keys(config)),
                     examples_per_step=config.batch_size, progress_keys=keys)


def make_train_step(config, nets: Networks):
  """``train_step(state, batch) -> (state, metrics)`` (pure; the engine jits it)."""
  g_tx, d_tx = optimizers(config)
  stage = stage_of(config)
  cond_proj = with_defaults(config.model, models.DEFAULTS).d_cond_proj
  kl_weight, batch_stats = float(config.kl_weight), config.stage1_batch_stats
  dim = latent_size(config)

  def d_cond(t, mu):
    """D's condition: the text embedding (the paper) or G's CA mean, detached (the code)."""
    return t if cond_proj else jax.lax.stop_gradient(mu)

  def d_logits(d_vars, x, cond, mutable):
    """(conditional, unconditional or None) logits, and D's updated mutable collections."""
    out, new_vars = nets.d.apply(d_vars, x, cond, train=True, mutable=mutable)
    return (out if stage == 2 else (out, None)), new_vars

  def train_step(state: base.TrainState, batch):
    real = batch['image']
    m = real.shape[0]
    latent = jax.random.normal(jax.random.fold_in(state.rng, state.step), (m, dim))
    z, eps1, eps2 = split_latent(config, base.shard_batch_axis(latent))
    state_nets = state.nets
    g, d = state_nets['g'], state_nets['d']
    t = tc.embed(nets.text, state_nets.get('text'), batch)
    if stage == 1:
      g_in, eps = z, eps1
    else:
      g_in, eps = stage1_images(nets.g1, state_nets['g1'], z, t, eps1, batch_stats), eps2

    # G's one forward pass; its backward (g_pullback) comes after D's update.
    def g_forward(params):
      return nets.g.apply({'params': params, **g['vars']}, g_in, t, train=True, ca_eps=eps,
                          mutable=list(g['vars']))
    (fake, mu, logvar), g_pullback, g_vars = jax.vjp(g_forward, g['params'], has_aux=True)

    # D update: real/right -> real, fake/right and real/wrong -> fake.
    cond = d_cond(t, mu)
    mutable = list(d['vars'])

    def d_loss_fn(params):
      v = d['vars']
      (real_c, real_u), v = d_logits({'params': params, **v}, real, cond, mutable)
      (fake_c, fake_u), v = d_logits({'params': params, **v}, fake, cond, mutable)
      (wrong_c, _), v = d_logits({'params': params, **v}, real, matching.mismatched(cond),
                                 mutable)
      terms = losses.d_loss(real_c, fake_c, wrong_c, real_u, fake_u)
      return terms['loss'], (v, terms)

    (d_loss, (d_vars, d_terms)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        d['params'])
    d = base.apply_gradients(d, d_grads, d_tx, new_vars=d_vars)

    # G update on the same fake batch, through the updated D (whose statistics stay).
    d_now = base.variables(d)

    def g_loss_fn(out):
      fake, mu, logvar = out
      cond_logits, uncond_logits = d_logits(d_now, fake, d_cond(t, mu), mutable)[0]
      adv = losses.g_loss(cond_logits, uncond_logits)
      kl = losses.kl_loss(mu, logvar)
      return adv['loss'] + kl_weight * kl, (adv, kl)

    (g_loss, (g_adv, kl)), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(
        (fake, mu, logvar))
    g_grads, = g_pullback(cotangent)
    g = base.apply_gradients(dict(g, vars=g_vars), g_grads, g_tx)
    new_nets = dict(state_nets, g=g, d=d)  # 'g1' and 'text' pass through untouched.
    finite = base.all_finite(d_loss, d_grads, g_loss, g_grads)
    metrics = {'d_loss': d_loss, 'd_real': d_terms['real'], 'd_fake': d_terms['fake'],
               'd_wrong': d_terms['wrong'], 'g_loss': g_loss, 'g_adv': g_adv['loss'], 'kl': kl,
               'finite': finite.astype(jnp.float32)}
    if stage == 2:
      metrics.update(d_uncond_real=d_terms['uncond_real'], d_uncond_fake=d_terms['uncond_fake'],
                     g_uncond=g_adv['uncond'])
    return state.replace(step=state.step + 1, nets=new_nets), metrics

  return train_step
