"""The GAN family: Goodfellow et al.'s Algorithm 1 with the loss, penalty and networks by name.

One train step is k = ``n_dis`` discriminator updates, then one generator update. The batch
holds ``n_dis * m`` real examples: each D update gets its own m real examples and m fresh
noise samples, then the G update uses m fresh noise samples (``g_step='fresh'``). All
randomness comes from ``fold_in(state.rng, state.step)``.

Networks in the state: ``g`` (with an EMA of its weights when ``ema_decay > 0``; samples and
evaluations use the EMA) and ``d``. Losses (``loss.name``) are computed from logits;
``penalty.name`` adds a gradient penalty to D's loss (refused for a BatchNorm discriminator,
whose output for one example depends on the rest of the batch, so a per-example input
gradient is not defined); ``weight_clip`` clips D's weights after each update (WGAN).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen import models, optim
from jaxgen.families import base
from jaxgen.losses import gan as gan_losses
from jaxgen.losses import penalties


G_STEPS = ('fresh', 'shared')


def sample_latent(rng, num: int, latent_dim: int, prior: str = 'normal'):
  if prior == 'normal':
    return jax.random.normal(rng, (num, latent_dim))
  if prior == 'uniform':
    return jax.random.uniform(rng, (num, latent_dim), minval=-1.0, maxval=1.0)
  raise ValueError(f'Unknown latent prior {prior!r}; accepted: normal, uniform.')


def step_noise(config, rng, step, m: int) -> dict:
  """The noise a train step draws from ``fold_in(rng, step)``, for ``m`` examples per update.

  ``d_z`` [n_dis, m, latent] and ``d_keys`` [n_dis] (the penalties' randomness) for the D
  updates, ``g_z`` [m, latent] for the G update ('fresh'; with ``g_step='shared'`` the G
  update reuses ``d_z[0]``). Exposed so a reference implementation can be fed the same noise.
  """
  key = jax.random.fold_in(rng, step)
  latent_dim, prior = config.model.latent_dim, config.model.latent_prior
  d_z, p_keys = [], []
  for k in jax.random.split(jax.random.fold_in(key, 0), config.n_dis):
    z_key, p_key = jax.random.split(k)
    d_z.append(sample_latent(z_key, m, latent_dim, prior))
    p_keys.append(p_key)
  return {'d_z': jnp.stack(d_z), 'p_keys': jnp.stack(p_keys),
          'g_z': sample_latent(jax.random.fold_in(key, 1), m, latent_dim, prior)}


def validate(config) -> None:
  base.positive_int('n_dis', config.n_dis)
  if config.g_step not in G_STEPS:
    raise ValueError(f'Unknown g_step {config.g_step!r}; accepted: {", ".join(G_STEPS)}.')
  if config.g_step == 'shared' and config.n_dis != 1:
    raise ValueError(f'g_step="shared" reuses the one D update\'s G forward, so it needs '
                     f'n_dis=1; got n_dis={config.n_dis}.')
  optim.validate(config.optimizer, lr_names=('g_lr', 'd_lr'))
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f'ema_decay must be in [0, 1) (0 disables EMA); got {config.ema_decay!r}.')
  gan_losses.get_gan_loss(config.loss.name)
  if penalties.get_penalty(config.penalty.name) is not None:
    if config.penalty.weight < 0:
      raise ValueError(f'penalty.weight must be >= 0; got {config.penalty.weight!r}.')
  models.get_gan_module(config.model.name)
  sample_latent(jax.random.PRNGKey(0), 1, 1, config.model.latent_prior)
  if not config.data.name.startswith('toy2d'):
    base.check_model_matches_data(config)
  models.get_gan(config.model)  # The model's own checks (e.g. resolution).


def structure(config) -> dict:
  return {'model': config.model.to_dict(),
          'data.resolution': config.data.get('resolution'),
          'data.channels': config.data.get('channels'),
          'ema_decay_enabled': config.ema_decay > 0,
          # A decaying schedule adds a step count to both optimizers' states.
          'lr_schedule_enabled': config.optimizer.schedule != 'constant'}


def optimizers(config):
  """Adam for G (``num_steps`` updates) and D (``num_steps * n_dis`` updates)."""
  g = optim.adam(config.optimizer.g_lr, config.optimizer, config.num_steps)
  d = optim.adam(config.optimizer.d_lr, config.optimizer, config.num_steps * config.n_dis)
  return g, d


def build(config, *, with_data: bool = True) -> base.Family:
  """The family (the GAN reads no data to build itself; ``with_data`` is for the contract)."""
  del with_data
  generator, discriminator = models.get_gan(config.model)
  g_tx, d_tx = optimizers(config)
  latent_dim, prior = config.model.latent_dim, config.model.latent_prior
  shape = base.data_shape(config)

  def init(key):
    g_key, d_key, train_key = jax.random.split(key, 3)
    g_vars = generator.init(g_key, jnp.zeros((2, latent_dim), jnp.float32), train=False)
    d_vars = discriminator.init(d_key, jnp.zeros((2, *shape), jnp.float32), train=False)
    return base.new_state(train_key, {
        'g': base.make_net(g_vars, g_tx, ema=config.ema_decay > 0),
        'd': base.make_net(d_vars, d_tx)})

  if config.penalty.name != 'none':
    d_vars = jax.eval_shape(init, jax.random.PRNGKey(0)).nets['d']['vars']
    # flax.linen.BatchNorm keeps running 'mean' and 'var' (SpectralNorm, in the same
    # 'batch_stats' collection, keeps 'u' and 'sigma', which do not couple examples).
    leaf_names = {str(path[-1].key) for path, _ in jax.tree_util.tree_flatten_with_path(d_vars)[0]}
    if {'mean', 'var'} <= leaf_names:
      raise ValueError(
          f'penalty.name={config.penalty.name!r} with a BatchNorm discriminator '
          f'(model {config.model.name!r}): BatchNorm couples the examples of a batch, so the '
          'gradient of D at one input is not defined per example. Use a discriminator without '
          'BatchNorm (model.spectral_norm=True for dcgan, or sngan / mlp2d).')

  def sample(state, key, num):
    z = sample_latent(key, num, latent_dim, prior)
    return generator.apply(base.variables(state.nets['g'], use_ema=True), z, train=False)

  return base.Family(init=init, train_step=make_train_step(config, generator, discriminator,
                                                           g_tx, d_tx),
                     sample=sample, examples_per_step=config.batch_size * config.n_dis,
                     progress_keys=('d_loss', 'g_loss'))


def make_train_step(config, generator, discriminator, g_tx, d_tx):
  """Returns ``train_step(state, batch) -> (state, metrics)`` (pure; the engine jits it).

  ``config.g_step='fresh'`` (default): Algorithm 1, the G update on fresh noise (two G
  forwards per step). ``'shared'``: the G update reuses the D update's G forward
  (pytorch/examples' DCGAN order, one G forward per step); needs ``n_dis = 1``.
  """
  loss = gan_losses.get_gan_loss(config.loss.name)
  n_dis, ema_decay = config.n_dis, config.ema_decay
  penalty_weight, weight_clip = config.penalty.weight, config.weight_clip
  joint_d = config.d_joint_batch
  penalty = penalties.get_penalty(config.penalty.name)
  clip = functools.partial(penalties.clip_weights, clip=weight_clip)

  g_apply = functools.partial(base.apply_train, generator)
  d_apply = functools.partial(base.apply_train, discriminator)

  def d_update(carry, inputs):
    """One D update on ``real`` and G(z) (G's statistics advance)."""
    g, d = carry
    real, z, p_key = inputs
    fake, g_vars = g_apply(g['params'], g['vars'], base.shard_batch_axis(z))
    d, metrics = d_update_on(d, real, jax.lax.stop_gradient(fake), p_key)
    return (dict(g, vars=g_vars), d), metrics

  def d_update_on(d, real, fake, p_key):
    """One optimizer update of D on a real and a (stopped) fake batch."""
    def loss_fn(params):
      if joint_d:  # One D pass (one power iteration for spectral norm) on real and fake.
        logits, new_vars = d_apply(params, d['vars'], jnp.concatenate([real, fake]))
        real_logits, fake_logits = jnp.split(logits, 2)
      else:  # Separate passes, as the reference DCGAN: BatchNorm sees pure batches.
        real_logits, new_vars = d_apply(params, d['vars'], real)
        fake_logits, new_vars = d_apply(params, new_vars, fake)
      adv = loss.d_loss(real_logits, fake_logits)
      total, pen = adv, jnp.zeros(())
      if penalty is not None:
        pen = penalty(lambda x: d_apply(params, d['vars'], x)[0], real, fake, p_key)
        total = adv + penalty_weight * pen
      return total, (new_vars, adv, pen, jnp.mean(real_logits), jnp.mean(fake_logits))

    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(d['params'])
    new_vars, adv, pen, real_mean, fake_mean = aux
    d = base.apply_gradients(d, grads, d_tx, new_vars=new_vars)
    if weight_clip > 0:
      d = dict(d, params=clip(d['params']))
    metrics = {'d_loss': adv, 'd_penalty': pen, 'd_real_logit': real_mean,
               'd_fake_logit': fake_mean,
               'd_finite': base.all_finite(total, grads).astype(jnp.float32)}
    return d, metrics

  def finish(state, g, d, g_loss, g_grads, d_metrics):
    g = base.apply_gradients(g, g_grads, g_tx, ema_decay=ema_decay)
    d_finite = d_metrics.pop('d_finite')
    finite = jnp.logical_and(d_finite > 0, base.all_finite(g_loss, g_grads))
    metrics = dict(d_metrics, g_loss=g_loss, finite=finite.astype(jnp.float32))
    return state.replace(step=state.step + 1, nets={'g': g, 'd': d}), metrics

  def shared_step(state: base.TrainState, batch):
    """pytorch/examples' order: one G forward serves the D and the G update.

    fake = G(z) once (its pullback kept by ``jax.vjp``); D is updated on real and the stopped
    fake; G's loss goes through the *updated* D, and its gradient is pulled back through the
    saved G forward. BatchNorm statistics as PyTorch keeps them: G's advance once (one
    forward), D's also in the G pass (a train-mode forward in PyTorch updates them).
    """
    real = batch['image']
    noise = step_noise(config, state.rng, state.step, real.shape[0])
    g, d = state.nets['g'], state.nets['d']
    z, p_key = base.shard_batch_axis(noise['d_z'][0]), noise['p_keys'][0]
    fake, g_pullback, g_vars = jax.vjp(lambda p: g_apply(p, g['vars'], z), g['params'],
                                       has_aux=True)
    g = dict(g, vars=g_vars)
    d, d_metrics = d_update_on(d, real, jax.lax.stop_gradient(fake), p_key)

    def g_loss_of_fake(f):
      logits, new_d_vars = d_apply(d['params'], d['vars'], f)
      return loss.g_loss(logits), new_d_vars

    (g_loss, d_vars), fake_grad = jax.value_and_grad(g_loss_of_fake, has_aux=True)(fake)
    (g_grads,) = g_pullback(fake_grad)
    return finish(state, g, dict(d, vars=d_vars), g_loss, g_grads, d_metrics)

  def train_step(state: base.TrainState, batch):
    images = batch['image']
    m = images.shape[0] // n_dis
    noise = step_noise(config, state.rng, state.step, m)
    # Example i * n_dis + j goes to D update j: splitting the (sharded) batch axis this way
    # keeps each update's m examples spread over the devices.
    real = jnp.swapaxes(images.reshape((m, n_dis, *images.shape[1:])), 0, 1)
    carry = (state.nets['g'], state.nets['d'])
    # No loop: XLA:CPU runs the convolutions of a D update inside a while loop on a slow path
    # (SN-DCGAN, 32x32 digits, one core: 10 s per step in a loop, 0.6 s as straight code with
    # n_dis = 1, 1.0 s with n_dis = 2 fully unrolled). A one-step scan with unroll=True still
    # measured 10 s, so n_dis = 1 calls the update directly.
    if n_dis == 1:
      carry, d_metrics = d_update(carry, (real[0], noise['d_z'][0], noise['p_keys'][0]))
    else:
      carry, d_metrics = jax.lax.scan(d_update, carry, (real, noise['d_z'], noise['p_keys']),
                                      unroll=True)
      every_finite = jnp.min(d_metrics['d_finite'])  # over all k updates
      d_metrics = jax.tree.map(lambda x: x[-1], d_metrics)  # the others: the last update's
      d_metrics['d_finite'] = every_finite
    g, d = carry
    z = base.shard_batch_axis(noise['g_z'])
    d_vars = base.variables(d)

    def g_loss_fn(params):
      fake, new_g_vars = g_apply(params, g['vars'], z)
      # D's mutable updates from the generator pass are discarded: D's statistics and
      # power-iteration vectors advance only in D's own updates.
      fake_logits = discriminator.apply(d_vars, fake, train=True, mutable=list(d['vars']))[0]
      return loss.g_loss(fake_logits), new_g_vars

    (g_loss, new_g_vars), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g['params'])
    return finish(state, dict(g, vars=new_g_vars), d, g_loss, g_grads, d_metrics)

  return shared_step if config.g_step == 'shared' else train_step
