"""The contract between the training engine and a model family, and the state they share.

A *family* (GAN, VAE, ...) is a module with three functions:

* ``validate(config)``: raises ValueError naming a bad field and what is accepted;
* ``structure(config) -> dict``: the config entries that decide the shapes of the saved state
  (a workdir whose saved run differs in them cannot be resumed);
* ``build(config) -> Family``: the pure functions below (networks are made here, nothing is
  trained or read from disk beyond what the family needs to know shapes).

The training state is one pytree, :class:`TrainState`: the step, the base key, the input
offset, and ``nets``, a dict of named networks. Each network is a dict with

* ``params``: its trainable parameters;
* ``vars``: its other flax collections (``batch_stats``, spectral-norm vectors), maybe ``{}``;
* ``opt``: its optax state, absent for a *frozen* network (imported, never updated);
* ``ema``: an exponential moving average of ``params``, when the family keeps one.

The engine never looks inside ``nets``: checkpoints, sharding, the finite check, imports from
other runs and resumption work on the whole tree.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any
Batch = dict
Metrics = dict


@flax.struct.dataclass
class TrainState:
  step: jax.Array         # int32 scalar: completed train steps.
  rng: jax.Array          # base key; the key of step s is fold_in(rng, s).
  # Batches skipped by divergence rollbacks: the input pipeline is at step + data_offset.
  data_offset: jax.Array
  nets: dict              # name -> {'params', 'vars', 'opt'?, 'ema'?}


def new_state(rng, nets: dict) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), rng=rng,
                    data_offset=jnp.zeros((), jnp.int32), nets=nets)


class Family(NamedTuple):
  """What a family gives the engine. Every function is pure except ``evaluate``/``figures``."""
  # key -> TrainState at step 0 (the key is PRNGKey(config.seed)).
  init: Callable[[jax.Array], TrainState]
  # (state, batch) -> (state, metrics); metrics hold scalars and 'finite' (1.0 when every loss
  # and gradient of the step was finite). Jitted, with the state donated, by the engine.
  train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
  # (state, key, num) -> num images in [-1, 1], NHWC (or points for 2-D data); jitted by the
  # engine with num static. Conditioning, when the family has any, comes with the family, not
  # the caller: class labels in turn (the CVAE: sample i gets class i mod classes), or a fixed
  # set of K captions the family read at build time (the text-to-image families: sample i gets
  # caption i mod K, so a grid with K columns shows one caption per column). Sampling under
  # other conditions (a caption typed on the command line, interpolated embeddings, a style
  # vector) is the family module's own functions, e.g. gan_int_cls.generate(g, net, z, t).
  sample: Callable[[TrainState, jax.Array, int], jax.Array] | None = None
  # Features each batch carries ('image', 'label', ...), all sharded over the data axis.
  batch_keys: tuple = ('image',)
  # Examples per train step, a multiple of config.batch_size (n_dis * batch for the GAN).
  examples_per_step: int = 0
  # (state) -> {name: float}: host-side evaluation (e.g. test ELBO), periodic and final.
  evaluate: Callable[[TrainState], dict] | None = None
  # (state, out_dir) -> list of files: figures written once training ends.
  figures: Callable[[TrainState, str], list] | None = None
  # Metric names shown on the progress bar.
  progress_keys: tuple = ()


# ---------------------------------------------------------------------------- networks


def make_net(variables, tx: optax.GradientTransformation | None = None,
             ema: bool = False) -> dict:
  """A network entry from flax ``variables``; ``tx=None`` makes it frozen."""
  variables = dict(variables)
  params = variables.pop('params')
  net = {'params': params, 'vars': variables}
  if tx is not None:
    net['opt'] = tx.init(params)
  if ema:
    net['ema'] = jax.tree.map(jnp.copy, params)
  return net


def apply_gradients(net: dict, grads, tx: optax.GradientTransformation, *,
                    new_vars=None, ema_decay: float = 0.0) -> dict:
  """One optimizer update of ``net`` (and its EMA, ``optax.incremental_update``)."""
  if 'opt' not in net:
    raise ValueError('apply_gradients on a frozen network (it has no optimizer state).')
  updates, opt = tx.update(grads, net['opt'], net['params'])
  params = optax.apply_updates(net['params'], updates)
  out = dict(net, params=params, opt=opt)
  if new_vars is not None:
    out['vars'] = new_vars
  if 'ema' in net:
    out['ema'] = optax.incremental_update(params, net['ema'], step_size=1.0 - ema_decay)
  return out


def variables(net: dict, use_ema: bool = False) -> dict:
  """flax variables of ``net``: its EMA weights when ``use_ema`` and it has them."""
  params = net['ema'] if use_ema and 'ema' in net else net['params']
  return {'params': params, **net['vars']}


def apply_train(module, params, net_vars: dict, *args):
  """``module`` in training mode on ``args``: (output, its updated mutable collections).

  ``net_vars`` is a network's ``vars`` (BatchNorm statistics, spectral-norm vectors); every
  collection in it is mutable, so the pass returns their new values.
  """
  return module.apply({'params': params, **net_vars}, *args, train=True,
                      mutable=list(net_vars))


# XLA:CPU options for compiling a family's init. LLVM's default level (2) spends most of an
# init's compile time on the threefry hash that each parameter shape gets; level 1 compiles
# the inits of the project's configs up to several times faster, to the same bits for all but
# SN-GAN's, where a few draws differ by an ulp or two (per config in docs/engine.md, measured
# by benchmarks.init_compile). Nothing compares an init across the two levels: every tool
# compiles it here. Level 0 is faster still but moves normal and uniform draws by an ulp
# (measured on a tiny DF-GAN). The init runs once per run, so its run time does not matter; the train
# step keeps the default (at level 1 a tiny DF-GAN step ran 1.5x slower).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def jit_init(family: Family, seed: int, out_shardings=None) -> Callable[[], TrainState]:
  """``() -> family.init(PRNGKey(seed))``, jitted the way every jaxgen tool that makes a state
  at step 0 compiles it (the engine, the benchmarks, the tests), so equal seeds give equal
  bits; calls with equal seeds and ``out_shardings`` compile the same program, which the
  persistent compilation cache, when on, then serves."""
  options = INIT_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None

  def initial_state():
    return family.init(jax.random.PRNGKey(seed))
  return jax.jit(initial_state, out_shardings=out_shardings, compiler_options=options)


def all_finite(*trees) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for t in trees for x in jax.tree.leaves(t)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def shard_batch_axis(x):
  """Splits ``x``'s leading (batch) axis over the current mesh's ``data`` axis, if any.

  For arrays made inside a step (latents, labels drawn from a key): without this they are
  replicated and every device would run the networks on the whole global batch. A no-op
  without a mesh (plain jit). The constraint is for the engine's mesh, whose axis is 'Auto'
  (:func:`jaxgen.engine.loop.make_mesh`).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or 'data' not in mesh.axis_names:
    return x
  if mesh.shape['data'] == 1 or x.shape[0] % mesh.shape['data']:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec('data'))


def positive_int(name: str, value) -> None:
  """Raises ValueError unless ``value`` is a positive int (a bool is not); ``name`` says which."""
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f'{name} must be a positive integer; got {value!r}.')


def check_model_matches_data(config, keys=('resolution', 'channels')) -> None:
  """Raises ValueError unless ``model.<key>`` equals ``data.<key>`` for each of ``keys``."""
  for key in keys:
    if config.model[key] != config.data[key]:
      raise ValueError(f'model.{key} ({config.model[key]}) must equal data.{key} '
                       f'({config.data[key]}).')


def data_shape(config) -> tuple:
  """Shape of one example of ``config.data`` (no batch axis)."""
  if config.data.name.startswith('toy2d'):
    return (2,)
  return (config.data.resolution, config.data.resolution, config.data.channels)
