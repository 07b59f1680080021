"""Discriminator regularisers: gradient penalties and weight clipping, selectable by name.

A penalty is a pure function ``penalty(d_fn, real, fake, rng) -> scalar`` where ``d_fn(x)``
returns D's logits [B] for a batch x (any shape [B, ...]). The train step adds
``config.penalty.weight * penalty(...)`` to D's loss, so the penalty must stay
differentiable w.r.t. D's parameters (it is: gradients of gradients).

* ``wgan_gp`` (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on
  x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] drawn per example. Paper weight: 10.
* ``r1`` (Mescheder et al. 2018; alias ``zero_gp``, the zero-centred GP on real data):
  0.5 * E[||grad_x D(x)||_2^2] on real x. With the 0.5 inside, ``penalty.weight`` is the
  paper's gamma (R1 = gamma/2 E||grad D||^2).
* :func:`clip_weights`: the original WGAN's weight clipping (Arjovsky et al. 2017),
  applied by the train step after every D update when ``config.weight_clip > 0``.

Per-example input gradients are taken as grad_x sum_i D(x)_i, which equals the per-example
gradients only when D treats examples independently: use these penalties with a D without
batch-coupled layers (no BatchNorm in D; spectral normalisation is fine).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxgen import registry

Array = jax.Array
DFn = Callable[[Array], Array]


def input_gradients(d_fn: DFn, x: Array) -> Array:
  """grad_x of sum(D(x)): per-example gradients of D's logits, shape of ``x``."""
  return jax.grad(lambda inp: jnp.sum(d_fn(inp)))(x)


def _per_example_sq_norm(g: Array) -> Array:
  return jnp.sum(jnp.square(g.reshape((g.shape[0], -1))), axis=1)


def interpolates(real: Array, fake: Array, rng: Array) -> Array:
  """eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per example."""
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  return eps * real + (1.0 - eps) * fake


def wgan_gp(d_fn: DFn, real: Array, fake: Array, rng: Array) -> Array:
  """Two-sided WGAN-GP: mean over interpolates of (||grad D|| - 1)^2."""
  x_hat = interpolates(real, fake, rng)
  sq = _per_example_sq_norm(input_gradients(d_fn, x_hat))
  # sqrt has an infinite derivative at 0; a tiny floor keeps the double backward finite
  # where the gradient vanishes (e.g. dead ReLUs) and changes the value by < 1e-6.
  norm = jnp.sqrt(sq + 1e-12)
  return jnp.mean(jnp.square(norm - 1.0))


def r1(d_fn: DFn, real: Array, fake: Array, rng: Array) -> Array:
  """R1: 0.5 * mean over real examples of ||grad_x D(x)||^2 (zero-centred)."""
  del fake, rng
  return 0.5 * jnp.mean(_per_example_sq_norm(input_gradients(d_fn, real)))


_PENALTIES = {
    'none': None,
    'wgan_gp': wgan_gp,
    'r1': r1,
    'zero_gp': r1,
}
PENALTY_NAMES = tuple(_PENALTIES)


def get_penalty(name: str):
  """Returns the penalty function called ``name`` (None for ``'none'``)."""
  return registry.lookup(_PENALTIES, name, 'penalty')


def clip_weights(params, clip: float):
  """Clips every parameter (kernels and biases) of ``params`` into [-clip, clip]."""
  if not clip > 0:
    raise ValueError(f'weight clip must be > 0; got {clip!r}.')
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)
