"""bfloat16 compute with float32 parameters (``model.compute_dtype``), checked on CPU.

What is checked: the convolutions / matmuls really run in bfloat16 (read off the jaxpr);
parameters, optimizer state, BatchNorm statistics, EMA, outputs, losses and penalties stay
float32; bf16 results agree with float32 to bf16 accuracy (and are not identical, so bf16 was
used); and an update far below bf16's resolution still lands in the float32 master weights.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import models
from jaxgen.engine import loop
from jaxgen.families import base, gan

BF16_EPS = 2.0 ** -8  # Unit roundoff of bfloat16 (8 significand bits).


def equations(jaxpr):
  """Every equation of a jaxpr, sub-jaxprs (jit, scan, custom_jvp, ...) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from equations(inner)


def operand_dtypes(fn, *args, primitive):
  closed = jax.make_jaxpr(fn)(*args)
  return [tuple(str(v.aval.dtype) for v in eqn.invars)
          for eqn in equations(closed.jaxpr) if eqn.primitive.name == primitive]


def make(tiny_config, model, dtype, **overrides):
  cfg = tiny_config(model, **{'model.compute_dtype': dtype}, **overrides)
  g, d = models.get_gan(cfg.model)
  return cfg, g, d


def init_vars(cfg, g, d, abstract=False):
  res, ch = cfg.model.resolution, cfg.model.channels
  init = lambda: (g.init(jax.random.PRNGKey(0), jnp.zeros((2, cfg.model.latent_dim)), train=False),
                  d.init(jax.random.PRNGKey(1), jnp.zeros((2, res, res, ch)), train=False))
  return jax.eval_shape(init) if abstract else jax.jit(init)()


@pytest.mark.parametrize('model,primitive', [('dcgan', 'conv_general_dilated'),
                                             ('gan', 'dot_general')])
def test_bf16_compute_fp32_params_and_outputs(tiny_config, model, primitive):
  # Shapes and dtypes only: nothing is compiled.
  cfg, g, d = make(tiny_config, model, 'bfloat16')
  g_vars, d_vars = init_vars(cfg, g, d, abstract=True)
  for leaf in jax.tree.leaves((g_vars, d_vars)):
    assert leaf.dtype == jnp.float32
  res, ch = cfg.model.resolution, cfg.model.channels
  z = jax.ShapeDtypeStruct((4, cfg.model.latent_dim), jnp.float32)
  x = jax.ShapeDtypeStruct((4, res, res, ch), jnp.float32)
  g_fn = lambda v, z: g.apply(v, z, train=False)
  d_fn = lambda v, x: d.apply(v, x, train=False)
  g_ops = operand_dtypes(g_fn, g_vars, z, primitive=primitive)
  d_ops = operand_dtypes(d_fn, d_vars, x, primitive=primitive)
  assert g_ops and d_ops
  assert all(dt == ('bfloat16', 'bfloat16') for dt in g_ops + d_ops), (g_ops, d_ops)
  assert jax.eval_shape(g_fn, g_vars, z).dtype == jnp.float32
  assert jax.eval_shape(d_fn, d_vars, x).dtype == jnp.float32
  # Training mode too: BatchNorm statistics stay float32.
  if model == 'dcgan':
    _, new_stats = jax.eval_shape(
        lambda v, z: g.apply(v, z, train=True, mutable=['batch_stats']), g_vars, z)
    assert {leaf.dtype for leaf in jax.tree.leaves(new_stats)} == {jnp.dtype(jnp.float32)}
  # The float32 model has no bf16 operation at all.
  _, g32, _ = make(tiny_config, model, 'float32')
  ops32 = operand_dtypes(lambda v, z: g32.apply(v, z, train=False), g_vars, z,
                         primitive=primitive)
  assert ops32 and all(dt == ('float32', 'float32') for dt in ops32)


@pytest.mark.parametrize('model', ['dcgan', 'gan'])
def test_bf16_outputs_agree_with_fp32_to_bf16_accuracy(tiny_config, model):
  cfg, g16, d16 = make(tiny_config, model, 'bfloat16')
  _, g32, d32 = make(tiny_config, model, 'float32')
  g_vars, d_vars = init_vars(cfg, g32, d32)
  # The same parameter trees serve both: compute_dtype changes no parameter.
  assert (jax.tree.structure(init_vars(cfg, g16, d16, abstract=True))
          == jax.tree.structure((g_vars, d_vars)))
  z = jax.random.normal(jax.random.PRNGKey(3), (16, cfg.model.latent_dim))

  # train=True: BatchNorm normalises with batch statistics (the initial running ones are
  # 0 / 1, which leave outputs too small to compare relatively).
  @jax.jit
  def outputs(g_vars, d_vars):
    gen = lambda g: g.apply(g_vars, z, train=True, mutable=['batch_stats'])[0]
    img32, img16 = gen(g32), gen(g16)
    disc = lambda d: d.apply(d_vars, img32, train=True, mutable=['batch_stats'])[0]
    return img32, img16, disc(d32), disc(d16)

  img32, img16, l32, l16 = outputs(g_vars, d_vars)
  assert l16.dtype == jnp.float32 and img16.dtype == jnp.float32
  # A few layers, each rounding its inputs to bf16: errors of a few units of bf16's
  # roundoff relative to the output scale. Nonzero: bf16 was really used.
  for a32, a16 in ((img32, img16), (l32, l16)):
    scale = float(jnp.max(jnp.abs(a32)))
    err = float(jnp.max(jnp.abs(a32 - a16)))
    assert 0.0 < err < 16 * BF16_EPS * scale, (err, scale)


def run_steps(cfg, num_steps):
  """(initial state, [state after each step], [metrics of each step]) on random images."""
  family, shape = gan.build(cfg), base.data_shape(cfg)
  state0 = jax.jit(lambda: family.init(jax.random.PRNGKey(cfg.seed)))()
  step = jax.jit(family.train_step)
  rng = np.random.default_rng(0)
  state, states, history = state0, [], []
  for _ in range(num_steps):
    images = rng.uniform(-1, 1, (cfg.batch_size * cfg.n_dis, *shape)).astype(np.float32)
    state, metrics = step(state, {'image': images})
    states.append(state)
    history.append(jax.device_get(metrics))
  return state0, states, history


@pytest.fixture(scope='module')
def bf16_and_fp32_runs():
  """Two steps of the tiny DCGAN (with EMA) in bf16 and in fp32 on random images."""
  from experiments.configs import dcgan  # pylint: disable=g-import-not-at-top
  runs = {}
  for dtype in ('bfloat16', 'float32'):
    cfg = dcgan.get_config('tiny')
    cfg.model.compute_dtype = dtype
    cfg.ema_decay = 0.9
    runs[dtype] = (cfg, *run_steps(cfg, 2))
  return runs


def test_bf16_train_step_keeps_fp32_state_and_losses(bf16_and_fp32_runs):
  _, _, states, h16 = bf16_and_fp32_runs['bfloat16']
  _, _, _, h32 = bf16_and_fp32_runs['float32']
  s16 = states[-1]
  assert int(s16.step) == 2
  g_net, d_net = s16.nets['g'], s16.nets['d']
  assert set(g_net) == {'params', 'vars', 'opt', 'ema'} and set(d_net) == {'params', 'vars', 'opt'}
  for leaf in jax.tree.leaves((g_net['params'], d_net['params'], g_net['vars'], d_net['vars'],
                               g_net['opt'], d_net['opt'], g_net['ema'])):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, leaf.dtype
  for m16, m32 in zip(h16, h32):
    for key in ('d_loss', 'g_loss', 'd_real_logit', 'd_fake_logit'):
      a, b = m16[key], m32[key]
      assert a.dtype == np.float32 and np.isfinite(a), (key, a)
      # Losses inherit bf16's relative error from the logits (a few bf16 roundoffs).
      assert abs(float(a) - float(b)) <= 16 * BF16_EPS * max(1.0, abs(float(b))), (key, a, b)
    assert float(m16['finite']) == 1.0
  assert float(h16[0]['d_loss']) != float(h32[0]['d_loss'])


def test_bf16_gradient_penalty_stays_fp32(tiny_config):
  # WGAN-GP; R1 takes the same input gradient (on real images only).
  name = 'wgan_gp'
  from jaxgen.losses import penalties  # pylint: disable=g-import-not-at-top
  # Spectral-norm D: no BatchNorm in D, so per-example input gradients are well defined.
  cfg, _, d16 = make(tiny_config, 'dcgan', 'bfloat16', **{'model.spectral_norm': True})
  _, g32, d32 = make(tiny_config, 'dcgan', 'float32', **{'model.spectral_norm': True})
  _, d_vars = init_vars(cfg, g32, d32)
  res, ch = cfg.model.resolution, cfg.model.channels
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
  real = jax.random.uniform(k1, (8, res, res, ch), minval=-1.0, maxval=1.0)
  fake = jax.random.uniform(k2, (8, res, res, ch), minval=-1.0, maxval=1.0)
  penalty = penalties.get_penalty(name)

  @jax.jit
  def value_and_grads(params):
    def pen(d, p):
      return penalty(lambda x: d.apply({**d_vars, 'params': p}, x, train=False), real, fake, k3)
    return jax.value_and_grad(lambda p: pen(d16, p))(params), pen(d32, params)

  (p16, grads), p32 = value_and_grads(d_vars['params'])
  assert p16.dtype == jnp.float32 and np.isfinite(float(p16))
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  # A gradient norm taken through bf16 layers: a few bf16 roundoffs relative.
  assert 0.0 < abs(float(p16) - float(p32)) <= 32 * BF16_EPS * abs(float(p32)), (p16, p32)


def test_updates_below_bf16_resolution_reach_the_fp32_weights(bf16_and_fp32_runs):
  cfg, before, states, _ = bf16_and_fp32_runs['bfloat16']
  after = states[0]
  # G's first BatchNorm scale starts at 1 + N(0, 0.02^2): Adam's first update moves each
  # entry by lr = 2e-4 (|m_hat / sqrt(v_hat)| = 1), 40x below bf16's spacing near 1 (2^-7).
  g_before, g_after = before.nets['g']['params'], after.nets['g']['params']
  name = sorted(k for k in g_before if k.startswith('BatchNorm'))[0]
  old = np.asarray(g_before[name]['scale'])
  new = np.asarray(g_after[name]['scale'])
  lr = cfg.optimizer.g_lr
  delta = np.abs(new - old)
  assert np.all(delta > 0)
  np.testing.assert_allclose(np.median(delta), lr, rtol=0.05)
  # In bf16 the same update would be lost: it is below half the spacing of bf16 numbers at
  # these weights, so w + delta rounds back to w.
  spacing = 2.0 ** (np.floor(np.log2(np.abs(old))) - 7)
  assert delta.max() < 0.5 * spacing.min()
  w = jnp.asarray(old, jnp.bfloat16)
  assert bool(jnp.all(w + jnp.asarray(new - old, jnp.bfloat16) == w))


@pytest.mark.parametrize('model', ['dcgan', 'gan'])
@pytest.mark.parametrize('bad', ['float16', 'bf16', 'int8'])
def test_unknown_compute_dtype_is_refused(tiny_config, model, bad):
  cfg = tiny_config(model, **{'model.compute_dtype': bad})
  with pytest.raises(ValueError, match=r"compute_dtype .*accepted: float32, bfloat16"):
    models.get_gan(cfg.model)


def test_steps_per_dispatch_scan_equals_sequential_steps(tiny_config):
  """make_multi_step(k) (one dispatch, lax.scan) == k dispatches of the same step."""
  cfg = tiny_config('gan', n_dis=2)
  family, shape = gan.build(cfg), base.data_shape(cfg)
  train_step = family.train_step
  k = 3
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (k, cfg.batch_size * cfg.n_dis, *shape)).astype(np.float32)
  state0 = jax.jit(lambda: family.init(jax.random.PRNGKey(cfg.seed)))()
  multi, metrics = jax.jit(loop.make_multi_step(train_step, k))(state0, {'image': images})
  single = jax.jit(train_step)
  state, seq = state0, []
  for i in range(k):
    state, m = single(state, {'image': images[i]})
    seq.append(m)
  assert int(multi.step) == int(state.step) == k
  for a, b in zip(jax.tree.leaves(multi), jax.tree.leaves(state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  for key in ('d_loss', 'g_loss'):
    assert metrics[key].shape == (k,)
    np.testing.assert_allclose(metrics[key], [float(m[key]) for m in seq], rtol=1e-5, atol=1e-6)
