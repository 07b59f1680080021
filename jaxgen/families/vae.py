"""The VAE family (Kingma & Welling 2013) and the conditional VAE (``model.num_classes > 0``).

One network ``vae`` (encoder q(z|x[, y]) and decoder p(x|z[, y])) trained on -ELBO with
``train_samples`` reparameterised samples per example and the analytic KL (weighted 0 -> 1
over ``kl_warmup_steps``).

Targets. The pipeline yields images in [-1, 1]; the VAE models x01 = (x + 1) / 2 in [0, 1]:
- Bernoulli likelihood: ``binarize='none'`` uses the grey levels as soft targets (the
  cross-entropy of Kingma & Welling's MNIST experiments; "log p(x)" is then minus a
  cross-entropy, not the log-probability of a discrete image); ``binarize='dynamic'`` draws a
  fresh binary image x ~ Bernoulli(x01) at every step (Burda et al.'s MNIST protocol) and
  evaluates on one fixed binarization of the test split (seeded by ``eval.binarize_seed``).
  Already binary data (TFDS ``binarized_mnist``) need ``binarize='none'``.
- Gaussian likelihood: x01 itself, optionally dequantized with uniform noise in [0, 1/256)
  (``dequantize=True``), which makes densities of 8-bit images meaningful.

Evaluation: the test ELBO (``eval.elbo_samples`` Monte Carlo samples per example) and the
IWAE bound on log p(x) with ``eval.iwae_k`` importance samples (``eval.final_iwae_k`` at the
end), drawn ``eval.iwae_chunk`` at a time so memory stays bounded, over the whole
``data.eval_split`` (every process scores the same examples, so the numbers do not depend on
the number of processes).
"""
from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import optim
from jaxgen.data import pipeline
from jaxgen.families import base, vae_figures
from jaxgen.families.vae_targets import EvalTargets, conditional, likelihood, prepare_targets
from jaxgen.losses import vae as vae_losses
from jaxgen.models import vae as vae_models

BINARIZE = ('none', 'dynamic')
# model.* entries that do not change the shapes of the saved parameters.
NON_STRUCTURAL_MODEL_KEYS = ('init_output_bias', 'bias_examples')


def resolve(config) -> None:
  """Fills ``steps_per_epoch`` (and ``num_steps`` from ``num_epochs``) from the split size."""
  if config.optimizer.schedule == 'iwae' or config.num_epochs:
    if config.model.name == 'linear_vae':
      raise ValueError('num_epochs and the iwae schedule are for image datasets; set '
                       'num_steps for linear_vae.')
    num = pipeline.split_size(config.data, config.data.split)
    config.steps_per_epoch = max(1, num // config.batch_size)
    if config.num_epochs:
      config.num_steps = config.num_epochs * config.steps_per_epoch


def validate(config) -> None:
  vae_models.validate(config.model)
  if config.model.name == 'linear_vae':
    raise ValueError('model.name="linear_vae" is trained on in-memory vectors '
                     '(see tests/test_vae_ppca.py), not through the engine.')
  if config.num_epochs < 0:
    raise ValueError(f'num_epochs must be >= 0 (0: use num_steps); got {config.num_epochs!r}.')
  base.positive_int('train_samples', config.train_samples)
  optim.validate(config.optimizer)
  if config.binarize not in BINARIZE:
    raise ValueError(f'Unknown binarize {config.binarize!r}; accepted: {", ".join(BINARIZE)}.')
  if config.binarize == 'dynamic' and likelihood(config) != 'bernoulli':
    raise ValueError('binarize="dynamic" needs model.likelihood="bernoulli"; got '
                     f'{likelihood(config)!r}.')
  if config.dequantize and likelihood(config) != 'gaussian':
    raise ValueError(f'dequantize=True is for model.likelihood="gaussian"; got '
                     f'{likelihood(config)!r}.')
  if config.kl_warmup_steps < 0:
    raise ValueError(f'kl_warmup_steps must be >= 0; got {config.kl_warmup_steps!r}.')
  for name in ('elbo_samples', 'iwae_k', 'final_iwae_k', 'iwae_chunk', 'batch_size'):
    base.positive_int(f'eval.{name}', config.eval[name])
  base.check_model_matches_data(config)


def structure(config) -> dict:
  model = {k: v for k, v in config.model.to_dict().items()
           if k not in NON_STRUCTURAL_MODEL_KEYS}
  return {'model': model, 'lr_schedule_enabled': config.optimizer.schedule != 'constant'}


def bind(model, params, y=None):
  """``encode`` / ``decode`` closures over ``params`` in the form ``jaxgen.losses.vae`` expects.

  ``decode`` gets sample-major z ([S * B, D]) and tiles the labels S times to match.
  """
  variables = {'params': params}

  def encode(x):
    return model.apply(variables, x, y, method=model.encode)

  def decode(z):
    yy = None if y is None else jnp.tile(y, z.shape[0] // y.shape[0])
    return model.apply(variables, z, yy, method=model.decode)

  return encode, decode


def kl_weight(config, step):
  if not config.kl_warmup_steps:
    return jnp.float32(1.0)
  return jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / config.kl_warmup_steps)


# ---------------------------------------------------------------------------- family


def output_bias(config) -> np.ndarray | None:
  """The logit (Bernoulli) or value (Gaussian) of the mean training target per pixel."""
  if not config.model.init_output_bias or config.model.name == 'linear_vae':
    return None
  images, _ = pipeline.load_split_arrays(config.data, config.data.split,
                                         max_examples=config.model.bias_examples)
  mean = np.mean((images + 1.0) * 0.5, axis=0)
  if likelihood(config) == 'bernoulli':
    mean = np.clip(mean, 1e-3, 1 - 1e-3)
    return np.log(mean) - np.log1p(-mean)
  return mean


def make_optimizer(config):
  return optim.adam(config.optimizer.lr, config.optimizer, config.num_steps,
                    config.steps_per_epoch)


def init_params(config, model, key, bias=None):
  x = jnp.zeros((2, *vae_models.data_shape(config.model)), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if conditional(config) else None
  params = model.init(key, x, y)['params']
  if bias is not None:
    params = flax.core.unfreeze(params)
    params['decoder']['pixel_bias'] = jnp.asarray(bias, jnp.float32).reshape(
        params['decoder']['pixel_bias'].shape)
  return params


def build(config, *, with_data: bool = True) -> base.Family:
  """The family; ``with_data=False`` skips reading the data (output bias, evaluation split)."""
  model = vae_models.make_vae(config.model)
  tx = make_optimizer(config)
  bias = output_bias(config) if with_data else None
  evaluate = figures = None
  if with_data:
    eval_images, eval_labels = pipeline.load_split_arrays(
        config.data, config.data.eval_split, max_examples=config.eval.max_examples or None)
    fns = make_eval_fns(config, model)

    def evaluate_split(state, final=False):
      k = config.eval.final_iwae_k if final else config.eval.iwae_k
      res = evaluate_params(config, model, state.nets['vae']['params'], eval_images,
                            eval_labels, iwae_k=k, fns=fns)
      return {f'test/{n}': res[n] for n in ('elbo', 'log_lik', 'kl', 'iwae', 'num_examples',
                                            'iwae_k')}

    def draw_figures(state, out_dir):
      take = min(len(eval_images), 64)
      return vae_figures.write_figures(
          config, model, state.nets['vae']['params'], eval_images[:take],
          None if eval_labels is None else eval_labels[:take], out_dir)

    evaluate, figures = evaluate_split, draw_figures

  def init(key):
    init_key, train_key = jax.random.split(key)
    return base.new_state(train_key, {'vae': base.make_net(
        {'params': init_params(config, model, init_key, bias)}, tx)})

  def sample(state, key, num):
    # z ~ N(0, I); a CVAE draws the classes in turn (0, 1, ..., 0, 1, ...): a grid of 10
    # columns shows one class per column, and any num gives balanced classes.
    z = jax.random.normal(key, (num, config.model.latent_dim))
    y = jnp.arange(num) % config.model.num_classes if conditional(config) else None
    x01 = model.apply({'params': state.nets['vae']['params']}, z, y, method=model.mean_image)
    return x01 * 2.0 - 1.0

  return base.Family(init=init, train_step=make_train_step(config, model, tx), sample=sample,
                     batch_keys=('image', 'label') if conditional(config) else ('image',),
                     examples_per_step=config.batch_size, evaluate=evaluate,
                     figures=figures,
                     progress_keys=('elbo',))


def make_train_step(config, model, tx):
  """``train_step(state, batch) -> (state, metrics)``: one Adam step on -ELBO (pure).

  Metrics: loss, elbo (always with KL weight 1), log_lik, kl, kl_weight, finite.
  """
  lik, num_samples = likelihood(config), config.train_samples

  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    data_key, z_key = jax.random.split(key)
    x = prepare_targets(config, batch['image'], data_key)
    y = batch['label'] if conditional(config) else None
    beta = kl_weight(config, state.step)
    net = state.nets['vae']

    def loss_fn(params):
      encode, decode = bind(model, params, y)
      out = vae_losses.elbo(encode, decode, x, z_key, likelihood=lik, num_samples=num_samples)
      return -jnp.mean(out['log_lik'] - beta * out['kl']), out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(net['params'])
    metrics = {'loss': loss, 'elbo': jnp.mean(out['elbo']), 'log_lik': jnp.mean(out['log_lik']),
               'kl': jnp.mean(out['kl']), 'kl_weight': beta,
               'finite': base.all_finite(loss, grads).astype(jnp.float32)}
    new = base.apply_gradients(net, grads, tx)
    return state.replace(step=state.step + 1, nets={'vae': new}), metrics

  return train_step


# ---------------------------------------------------------------------------- evaluation


def make_eval_fns(config, model):
  """Jitted ``elbo_fn(params, x, y, key)`` and ``iwae_fn(params, x, y, key, k)`` ([B] each)."""
  lik = likelihood(config)
  samples, chunk = config.eval.elbo_samples, config.eval.iwae_chunk

  @jax.jit
  def elbo_fn(params, x, y, key):
    encode, decode = bind(model, params, y)
    out = vae_losses.elbo(encode, decode, x, key, likelihood=lik, num_samples=samples)
    return out['elbo'], out['log_lik'], out['kl']

  @functools.partial(jax.jit, static_argnames='k')
  def iwae_fn(params, x, y, key, k):
    encode, decode = bind(model, params, y)
    return vae_losses.iwae_bound(encode, decode, x, key, likelihood=lik, k=k, chunk_size=chunk)

  return elbo_fn, iwae_fn


def evaluate_params(config, model, params, images, labels=None, *, iwae_k: int | None = None,
                    seed: int = 0, fns=None) -> dict:
  """Mean ELBO (and its terms) and IWAE log p(x) over ``images`` (pipeline range, [-1, 1]).

  Batches are padded to ``eval.batch_size`` so one compilation serves the whole split.
  Returns floats: elbo, log_lik, kl, iwae (when ``iwae_k``), num_examples, iwae_k.
  """
  elbo_fn, iwae_fn = fns or make_eval_fns(config, model)
  bs, n = config.eval.batch_size, len(images)
  if n == 0:
    raise ValueError('evaluate() got no examples.')
  if conditional(config) and labels is None:
    raise ValueError('A conditional VAE needs labels to be evaluated.')
  key = jax.random.PRNGKey(seed)
  targets = EvalTargets(config)
  sums = {'elbo': 0.0, 'log_lik': 0.0, 'kl': 0.0, 'iwae': 0.0}
  for start in range(0, n, bs):
    x = jnp.asarray(targets(images[start:start + bs]))
    m = x.shape[0]
    y = jnp.asarray(labels[start:start + bs], jnp.int32) if conditional(config) else None
    if m < bs:  # Pad (and ignore the padding) to keep one compiled shape.
      x = jnp.concatenate([x, jnp.repeat(x[:1], bs - m, 0)])
      y = None if y is None else jnp.concatenate([y, jnp.repeat(y[:1], bs - m, 0)])
    bkey = jax.random.fold_in(key, start)
    for name, v in zip(('elbo', 'log_lik', 'kl'), elbo_fn(params, x, y, bkey)):
      sums[name] += np.asarray(v, np.float64)[:m].sum()
    if iwae_k:
      iw = np.asarray(iwae_fn(params, x, y, jax.random.fold_in(bkey, 1), iwae_k), np.float64)
      sums['iwae'] += iw[:m].sum()
  out = {k: v / n for k, v in sums.items() if iwae_k or k != 'iwae'}
  return dict(out, num_examples=n, iwae_k=int(iwae_k or 0))
