"""VAE / conditional-VAE training: state, jitted step, evaluation and ``train_and_evaluate``.

The VAE has one network pair and one optimizer, so it has its own small state and step
rather than the GAN's. It reuses the foundation's data pipeline, orbax checkpoint helpers,
metric writers, PNG grids and device mesh.

Targets. The pipeline yields images in [-1, 1]; the VAE models x01 = (x + 1) / 2 in [0, 1]:
- Bernoulli likelihood: ``binarize='none'`` uses the grey levels as soft targets (the
  cross-entropy of Kingma & Welling's MNIST experiments; then "log p(x)" is minus a
  cross-entropy, not the log-probability of a discrete image); ``binarize='dynamic'`` draws
  a fresh binary image x ~ Bernoulli(x01) at every training step (Burda et al.'s MNIST
  protocol) and evaluates on one fixed binarization of the test split (seeded by
  ``eval.binarize_seed``), so the reported log p(x) is that of binary images. Already binary
  data (TFDS ``binarized_mnist``) need ``binarize='none'``.
- Gaussian likelihood: x01 itself, optionally dequantized with uniform noise in
  [0, 1/256) (``dequantize=True``), which makes densities of 8-bit images meaningful.

Evaluation (``evaluate``): the test ELBO (``eval.elbo_samples`` Monte Carlo samples per
example, analytic KL) and the IWAE bound on log p(x) with ``eval.iwae_k`` importance samples,
drawn ``eval.iwae_chunk`` at a time so memory stays bounded (k = 5,000 in the final eval).
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxgen.data import pipeline
from jaxgen.losses import vae as vae_losses
from jaxgen.models import vae as vae_models
from jaxgen.train import checkpoint
from jaxgen.train.writers import Writer, truncate_after

PyTree = Any
CONFIG_FILE = 'config.json'
EVAL_FILE = 'eval.json'
BINARIZE = ('none', 'dynamic')
SCHEDULES = ('constant', 'cosine', 'iwae')
DIVERGENCE_POLICIES = ('stop', 'skip')
# model.* entries that do not change the shapes of the saved parameters.
NON_STRUCTURAL_MODEL_KEYS = ('init_output_bias', 'bias_examples')


class DivergenceError(RuntimeError):
  """Training produced a non-finite loss or gradient (divergence_policy='stop')."""


@flax.struct.dataclass
class VAEState:
  step: jax.Array       # int32 scalar: completed train steps.
  rng: jax.Array        # base key; step keys are fold_in(rng, step).
  params: PyTree
  opt_state: PyTree


# ---------------------------------------------------------------------------- config


def validate_config(config) -> None:
  """Raises ValueError naming the field, the value and what is accepted."""
  def positive(name, value, kind=(int, float)):
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
      raise ValueError(f'{name} must be positive; got {value!r}.')

  vae_models.validate(config.model)
  if config.get('num_epochs', 0) and config.model.name == 'linear_vae':
    raise ValueError('num_epochs is for image datasets; set num_steps for linear_vae.')
  if config.get('num_epochs', 0) < 0:
    raise ValueError(f'num_epochs must be >= 0 (0: use num_steps); got {config.num_epochs!r}.')
  for name in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints',
               'train_samples', 'steps_per_dispatch'):
    positive(name, config.get(name, 1), int)
  positive('optimizer.lr', config.optimizer.lr)
  for b in ('b1', 'b2'):
    if not 0.0 <= config.optimizer[b] < 1.0:
      raise ValueError(f'optimizer.{b} must be in [0, 1); got {config.optimizer[b]!r}.')
  schedule = config.optimizer.get('schedule', 'constant')
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown optimizer.schedule {schedule!r}; accepted: {", ".join(SCHEDULES)}.')
  if config.get('binarize', 'none') not in BINARIZE:
    raise ValueError(f'Unknown binarize {config.binarize!r}; accepted: {", ".join(BINARIZE)}.')
  likelihood = _likelihood(config)
  if config.get('binarize', 'none') == 'dynamic' and likelihood != 'bernoulli':
    raise ValueError('binarize="dynamic" needs model.likelihood="bernoulli"; got '
                     f'{likelihood!r}.')
  if config.get('dequantize', False) and likelihood != 'gaussian':
    raise ValueError('dequantize=True is for model.likelihood="gaussian"; got '
                     f'{likelihood!r}.')
  if config.get('kl_warmup_steps', 0) < 0:
    raise ValueError(f'kl_warmup_steps must be >= 0; got {config.kl_warmup_steps!r}.')
  policy = config.get('divergence_policy', 'stop')
  if policy not in DIVERGENCE_POLICIES:
    raise ValueError(f'Unknown divergence_policy {policy!r}; accepted: '
                     f'{", ".join(DIVERGENCE_POLICIES)}.')
  ev = config.eval
  for name in ('elbo_samples', 'iwae_k', 'final_iwae_k', 'iwae_chunk', 'batch_size'):
    positive(f'eval.{name}', ev[name], int)
  if config.model.name == 'linear_vae':
    return  # Vector data supplied in memory; no image pipeline.
  pipeline.validate(config.data)
  if config.model.resolution != config.data.resolution:
    raise ValueError(f'model.resolution ({config.model.resolution}) must equal '
                     f'data.resolution ({config.data.resolution}).')
  if config.model.channels != config.data.get('channels', 3):
    raise ValueError(f'model.channels ({config.model.channels}) must equal data.channels '
                     f'({config.data.get("channels", 3)}).')
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if config.batch_size % n_dev or config.batch_size % n_proc:
    raise ValueError(f'batch_size {config.batch_size} must divide evenly across the {n_dev} '
                     f'devices and {n_proc} processes; use a multiple of {n_dev}.')


def _likelihood(config) -> str:
  return 'gaussian' if config.model.name == 'linear_vae' else config.model.get(
      'likelihood', 'bernoulli')


def _conditional(config) -> bool:
  return config.model.get('num_classes', 0) > 0


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir whose saved run has another architecture (its checkpoints won't fit)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  old, new = saved.get('model', {}), json.loads(config.model.to_json())
  diffs = [f'model.{k}: saved {old.get(k)!r}, now {new.get(k)!r}'
           for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k) and k not in NON_STRUCTURAL_MODEL_KEYS]
  if diffs:
    raise ValueError(f'{workdir!r} holds a run with a different model, so its checkpoints cannot '
                     'be restored: ' + '; '.join(diffs) + '. Use a new --workdir.')


# ---------------------------------------------------------------------------- state and step


def learning_rate(config, steps_per_epoch: int | None = None):
  """The learning rate: a float (constant) or an optax schedule (cosine, iwae).

  'iwae' is Burda et al.'s schedule: passes i = 0..7 of 3^i epochs each at learning rate
  1e-4 * round(10^(1 - i/7), 1) (1e-3, 7.2e-4, ..., 1e-4), 3,280 epochs in all;
  ``optimizer.lr`` is ignored and ``steps_per_epoch`` is needed.
  """
  opt = config.optimizer
  schedule = opt.get('schedule', 'constant')
  if schedule == 'constant':
    return opt.lr
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(opt.lr, config.num_steps,
                                       alpha=opt.get('final_lr_frac', 0.1))
  if not steps_per_epoch:
    raise ValueError('optimizer.schedule="iwae" needs the number of steps per epoch.')
  values = [1e-4 * round(10.0 ** (1 - i / 7), 1) for i in range(8)]
  ends = np.cumsum([3 ** i * steps_per_epoch for i in range(8)])
  return optax.piecewise_constant_schedule(
      values[0], {int(ends[i]): values[i + 1] / values[i] for i in range(7)})


def make_optimizer(config, steps_per_epoch: int | None = None):
  """Adam (b1, b2, eps from the config) with ``learning_rate(config, steps_per_epoch)``."""
  opt = config.optimizer
  return optax.adam(learning_rate(config, steps_per_epoch), b1=opt.b1, b2=opt.b2,
                    eps=opt.get('eps', 1e-8))


def iwae_schedule_steps(steps_per_epoch: int) -> int:
  """Total steps of the IWAE-paper schedule (3,280 epochs)."""
  return sum(3 ** i for i in range(8)) * steps_per_epoch


def init_state(config, model, tx, data_shape, output_bias=None) -> VAEState:
  """Initialises parameters from ``config.seed``; optionally sets the decoder's pixel bias."""
  key = jax.random.PRNGKey(config.seed)
  init_key, train_key = jax.random.split(key)
  x = jnp.zeros((2, *data_shape), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if _conditional(config) else None
  params = model.init(init_key, x, y)['params']
  if output_bias is not None:
    params = flax.core.unfreeze(params)
    params['decoder']['pixel_bias'] = jnp.asarray(output_bias, jnp.float32).reshape(
        params['decoder']['pixel_bias'].shape)
  return VAEState(step=jnp.zeros((), jnp.int32), rng=train_key, params=params,
                  opt_state=tx.init(params))


def prepare_targets(config, images, rng):
  """Training targets from pipeline images in [-1, 1] (see the module docstring); jittable."""
  if config.model.name == 'linear_vae':
    return images
  x01 = (images + 1.0) * 0.5
  if config.get('binarize', 'none') == 'dynamic':
    return jax.random.bernoulli(rng, x01).astype(jnp.float32)
  if config.get('dequantize', False):
    # 8-bit levels v/255 -> (v + u) / 256, u ~ U[0, 1): a density on [0, 1].
    return (x01 * 255.0 + jax.random.uniform(rng, x01.shape)) / 256.0
  return x01


class EvalTargets:
  """Evaluation targets, batch by batch, identical whatever the batch size.

  The fixed binarization of a test split draws its uniforms from one numpy generator seeded
  with ``eval.binarize_seed``, consumed in order, so batch sizes do not change it; the
  Gaussian case uses the mid-point of each 8-bit bin when ``dequantize`` is on.
  """

  def __init__(self, config):
    self._config = config
    self._rng = np.random.default_rng(config.eval.get('binarize_seed', 0))

  def __call__(self, images):
    config = self._config
    images = np.asarray(images, np.float32)
    if config.model.name == 'linear_vae':
      return images
    x01 = (images + 1.0) * 0.5
    if config.get('binarize', 'none') == 'dynamic':
      return (self._rng.random(x01.shape, dtype=np.float32) < x01).astype(np.float32)
    if config.get('dequantize', False):
      return (x01 * 255.0 + 0.5) / 256.0
    return x01


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
  warm = config.get('kl_warmup_steps', 0)
  if not warm:
    return jnp.float32(1.0)
  return jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / warm)


def make_train_step(config, model, tx):
  """Returns ``train_step(state, batch) -> (state, metrics)`` (pure; jit it).

  The loss is -mean ELBO (KL weighted by ``kl_weight`` during an optional warm-up), with
  ``train_samples`` reparameterized samples per example. Metrics: elbo (always with
  weight 1), log_lik, kl, kl_weight, finite.
  """
  likelihood = _likelihood(config)
  num_samples = config.get('train_samples', 1)
  conditional = _conditional(config)
  skip_nonfinite = config.get('divergence_policy', 'stop') == 'skip'

  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    data_key, z_key = jax.random.split(key)
    x = prepare_targets(config, batch['image'], data_key)
    y = batch['label'] if conditional else None
    beta = kl_weight(config, state.step)

    def loss_fn(params):
      encode, decode = bind(model, params, y)
      out = vae_losses.elbo(encode, decode, x, z_key, likelihood=likelihood,
                            num_samples=num_samples)
      loss = -jnp.mean(out['log_lik'] - beta * out['kl'])
      return loss, out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if skip_nonfinite:
      params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                       (params, opt_state), (state.params, state.opt_state))
    metrics = {'loss': loss, 'elbo': jnp.mean(out['elbo']), 'log_lik': jnp.mean(out['log_lik']),
               'kl': jnp.mean(out['kl']), 'kl_weight': beta,
               'finite': finite.astype(jnp.float32)}
    return VAEState(step=state.step + 1, rng=state.rng, params=params,
                    opt_state=opt_state), metrics

  return train_step


# ---------------------------------------------------------------------------- evaluation


def make_eval_fns(config, model):
  """Jitted ``elbo_fn(params, x, y, key) -> [B]`` and ``iwae_fn(params, x, y, key, k) -> [B]``.

  ``x`` are already-prepared targets (``EvalTargets``).
  """
  likelihood = _likelihood(config)
  samples, chunk = config.eval.elbo_samples, config.eval.iwae_chunk

  @jax.jit
  def elbo_fn(params, x, y, key):
    encode, decode = bind(model, params, y)
    out = vae_losses.elbo(encode, decode, x, key, likelihood=likelihood, num_samples=samples)
    return out['elbo'], out['log_lik'], out['kl']

  @functools.partial(jax.jit, static_argnames='k')
  def iwae_fn(params, x, y, key, k):
    encode, decode = bind(model, params, y)
    return vae_losses.iwae_bound(encode, decode, x, key, likelihood=likelihood, k=k,
                                 chunk_size=chunk)

  return elbo_fn, iwae_fn


def evaluate(config, model, params, images, labels=None, *, iwae_k: int | None = None,
             seed: int = 0, fns=None) -> dict:
  """Mean test ELBO (and its terms) and IWAE log p(x) over ``images`` (pipeline range).

  Batches are padded to ``eval.batch_size`` so one compilation serves the whole split.
  Returns floats: elbo, log_lik, kl, iwae (when ``iwae_k``), num_examples, iwae_k.
  """
  elbo_fn, iwae_fn = fns or make_eval_fns(config, model)
  bs = config.eval.batch_size
  n = len(images)
  if n == 0:
    raise ValueError('evaluate() got no examples.')
  conditional = _conditional(config)
  if conditional and labels is None:
    raise ValueError('A conditional VAE needs labels to be evaluated.')
  key = jax.random.PRNGKey(seed)
  targets = EvalTargets(config)
  sums = {'elbo': 0.0, 'log_lik': 0.0, 'kl': 0.0, 'iwae': 0.0}
  for start in range(0, n, bs):
    x = jnp.asarray(targets(images[start:start + bs]))
    m = x.shape[0]
    y = None
    if conditional:
      y = jnp.asarray(labels[start:start + bs], jnp.int32)
    if m < bs:  # Pad (and ignore the padding) to keep one compiled shape.
      x = jnp.concatenate([x, jnp.repeat(x[:1], bs - m, 0)])
      y = None if y is None else jnp.concatenate([y, jnp.repeat(y[:1], bs - m, 0)])
    bkey = jax.random.fold_in(key, start)
    e, ll, kl = (np.asarray(v, np.float64)[:m] for v in elbo_fn(params, x, y, bkey))
    sums['elbo'] += e.sum()
    sums['log_lik'] += ll.sum()
    sums['kl'] += kl.sum()
    if iwae_k:
      iw = np.asarray(iwae_fn(params, x, y, jax.random.fold_in(bkey, 1), iwae_k), np.float64)
      sums['iwae'] += iw[:m].sum()
  out = {k: v / n for k, v in sums.items()}
  if not iwae_k:
    del out['iwae']
  out['num_examples'] = n
  out['iwae_k'] = int(iwae_k or 0)
  return out


# ---------------------------------------------------------------------------- runs


def build(config, steps_per_epoch: int | None = None):
  model = vae_models.make_vae(config.model)
  return model, make_optimizer(config, steps_per_epoch), vae_models.data_shape(config.model)


def train_split_size(config) -> int:
  """Examples in this process's share of the training split (as the pipeline counts them)."""
  _, num = pipeline._base_dataset(config.data, config.data.get('split', 'train'))  # pylint: disable=protected-access
  return num * jax.process_count()


def output_bias(config) -> np.ndarray | None:
  """The logit (Bernoulli) or value (Gaussian) of the mean training target per pixel."""
  if not config.model.get('init_output_bias', False) or config.model.name == 'linear_vae':
    return None
  images, _ = pipeline.load_split_arrays(config.data, config.data.get('split', 'train'),
                                         max_examples=config.model.get('bias_examples', 10_000))
  mean = np.mean((images + 1.0) * 0.5, axis=0)
  if _likelihood(config) == 'bernoulli':
    mean = np.clip(mean, 1e-3, 1 - 1e-3)
    return np.log(mean) - np.log1p(-mean)
  return mean


def ocp_steps(path: str) -> list[int]:
  """Finished checkpoint steps under ``path`` (orbax's own listing; [] when absent)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return list(ocp.utils.checkpoint_steps(path)) if os.path.isdir(path) else []


def _write_json(path, obj):
  if jax.process_index() != 0:
    return
  with open(path + '.tmp', 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(path + '.tmp', path)


def load_run(workdir: str, step: int | None = None):
  """Restores a finished or interrupted run: returns (config, model, params, step)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{workdir!r} has no {CONFIG_FILE}; pass the --workdir of a VAE run.')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.model.name not in vae_models.NAMES:
    raise ValueError(f'{workdir!r} holds a {config.model.name!r} run, not a VAE '
                     f'({", ".join(vae_models.NAMES)}).')
  model, tx, shape = build(config, steps_per_epoch=config.get('steps_per_epoch') or 1)
  target = jax.jit(lambda: init_state(config, model, tx, shape))()
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, create=False)
  state = checkpoint.restore(manager, target, step)
  manager.close()
  if state is None:
    raise ValueError(f'{workdir!r} has no checkpoint to restore.')
  return config, model, state.params, int(state.step)


def train_and_evaluate(config, workdir: str) -> VAEState:
  """Trains the VAE / CVAE of ``config`` in ``workdir`` (resuming), evaluates, draws figures.

  Writes config.json, metrics.jsonl + TensorBoard (train scalars every ``log_every`` steps,
  test ELBO / IWAE every ``eval_every``), checkpoints/, eval.json (final test ELBO and IWAE
  with ``eval.final_iwae_k`` samples) and figures/ (reconstructions, samples, interpolations,
  latent grid for a 2-d latent, class grids and re-renderings for a CVAE).
  """
  from jaxgen import vae_tools  # pylint: disable=g-import-not-at-top

  # An unlocked copy: steps_per_epoch (and num_steps from num_epochs) are filled in below.
  config = ml_collections.ConfigDict(
      config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  validate_config(config)
  if config.model.name == 'linear_vae':
    raise ValueError('model.name="linear_vae" is trained on in-memory vectors '
                     '(see tests/test_vae_ppca.py), not through train_and_evaluate.')
  check_workdir(config, workdir)

  split = config.data.get('split', 'train')
  steps_per_epoch = None
  if config.optimizer.get('schedule', 'constant') == 'iwae' or config.get('num_epochs', 0):
    steps_per_epoch = max(1, train_split_size(config) // config.batch_size)
    if config.get('num_epochs', 0):
      config.num_steps = config.num_epochs * steps_per_epoch
  config.steps_per_epoch = steps_per_epoch or 0
  model, tx, shape = build(config, steps_per_epoch)
  # Auto (GSPMD) axes: the losses reshape [S * B] <-> [S, B] with B sharded, which
  # explicit-sharding types would make every caller annotate.
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = NamedSharding(mesh, P())
  bias = output_bias(config)
  state = jax.jit(lambda: init_state(config, model, tx, shape, bias), out_shardings=replicated)()

  # All dataset reading is set up before the checkpoint manager exists, so a missing dataset
  # fails before anything is written (and tfds.testing.mock_data, which patches the file
  # system while a dataset is opened, never overlaps orbax's background threads).
  ckpt_dir = os.path.join(workdir, checkpoint.LATEST_DIR)
  listed = ocp_steps(ckpt_dir)
  start_step = max(listed) if listed else 0
  local_bs = config.batch_size // jax.process_count()
  data = pipeline.make_dataset(config.data, split, local_bs, seed=config.seed,
                               start_step=start_step)
  test_images, test_labels = pipeline.load_split_arrays(
      config.data, config.data.get('eval_split', 'test'),
      max_examples=config.eval.get('max_examples') or None)

  os.makedirs(workdir, exist_ok=True)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
  if int(state.step) != start_step:  # The listing and orbax disagree: position by orbax.
    start_step = int(state.step)
    data = pipeline.make_dataset(config.data, split, local_bs, seed=config.seed,
                                 start_step=start_step)
  if start_step:
    truncate_after(workdir, start_step)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, CONFIG_FILE) + '.tmp', 'w') as f:
      f.write(config.to_json(indent=2))
    os.replace(os.path.join(workdir, CONFIG_FILE) + '.tmp', os.path.join(workdir, CONFIG_FILE))

  # steps_per_dispatch > 1 runs that many steps in one lax.scan per host call: tiny models
  # (e.g. the IWAE-paper MLP at batch 20) are otherwise bound by Python dispatch. A single
  # step is not wrapped in a scan: XLA:CPU runs convolutions inside loops ~10x slower
  # (measured on the digits_conv VAE).
  block_sharding = NamedSharding(mesh, P(None, 'data'))
  train_step = make_train_step(config, model, tx)

  def run_block(st, blocks):
    if jax.tree.leaves(blocks)[0].shape[0] == 1:
      st, metrics = train_step(st, jax.tree.map(lambda x: x[0], blocks))
      return st, jax.tree.map(lambda x: x[None], metrics)
    return jax.lax.scan(train_step, st, blocks)

  multi_step = jax.jit(run_block, in_shardings=(replicated, block_sharding),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  keys = ('image', 'label') if _conditional(config) else ('image',)
  spd = config.get('steps_per_dispatch', 1)

  def next_block(n):
    batches = [next(data) for _ in range(n)]
    stacked = {k: np.stack([b[k] for b in batches]) for k in keys}
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        block_sharding, x, (n, x.shape[1] * jax.process_count(), *x.shape[2:])), stacked)

  fns = make_eval_fns(config, model)
  writer = Writer(workdir)
  is_main = jax.process_index() == 0
  bar = None
  if is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=config.num_steps, initial=start_step, desc=os.path.basename(workdir),
               unit='step', dynamic_ncols=True)
  pending, step = [], start_step
  last_time, last_step = time.time(), step
  eval_every = config.get('eval_every', 0)
  policy = config.get('divergence_policy', 'stop')
  while step < config.num_steps:
    n = min(spd, config.num_steps - step)
    state, metrics = multi_step(state, next_block(n))
    step += n
    pending.append(metrics)
    if bar is not None:
      bar.update(n)
    last = step >= config.num_steps
    crossed = lambda every: step // every != (step - n) // every
    if crossed(config.log_every) or last:
      host = jax.device_get(pending)
      pending = []
      merged = {k: np.concatenate([np.asarray(m[k]) for m in host]) for k in host[0]}
      finite = merged['finite']
      if policy == 'stop' and finite.min() < 1:
        bad = int(np.argmin(finite))
        manager.wait_until_finished()
        if bar is not None:
          bar.close()
        terms = {k: float(v[bad]) for k, v in merged.items()}
        raise DivergenceError(
            f'Non-finite loss or gradient at step {step - len(finite) + bad + 1} '
            f'(terms: {terms}). Nothing after the last checkpoint (step '
            f'{manager.latest_step()}) was saved. Lower optimizer.lr, or set '
            '--config.divergence_policy=skip to drop such updates.')
      now = time.time()
      scalars = {f'train/{k}': float(v[-1]) for k, v in merged.items()}
      scalars['train/nonfinite_steps'] = float((finite < 1).sum())
      scalars['steps_per_sec'] = (step - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      writer.scalars(step, scalars)
      if bar is not None:
        bar.set_postfix(elbo=f'{scalars["train/elbo"]:.2f}')
    if eval_every and crossed(eval_every) and not last:
      res = evaluate(config, model, state.params, test_images, test_labels,
                     iwae_k=config.eval.iwae_k, fns=fns)
      writer.scalars(step, {f'test/{k}': v for k, v in res.items()
                            if k in ('elbo', 'log_lik', 'kl', 'iwae')})
    if crossed(config.checkpoint_every) or last:
      checkpoint.save(manager, step, state)
  manager.wait_until_finished()
  manager.close()
  if bar is not None:
    bar.close()

  result = evaluate(config, model, state.params, test_images, test_labels,
                    iwae_k=config.eval.final_iwae_k, fns=fns)
  result['step'] = int(state.step)
  result['split'] = config.data.get('eval_split', 'test')
  writer.scalars(int(state.step), {f'test/{k}': v for k, v in result.items()
                                   if k in ('elbo', 'log_lik', 'kl', 'iwae')})
  writer.flush()
  writer.close()
  _write_json(os.path.join(workdir, EVAL_FILE), result)
  if is_main and config.get('write_figures', True):
    vae_tools.write_figures(config, model, state.params, test_images, test_labels,
                            os.path.join(workdir, 'figures'))
  return state
