"""The PyTorch DF-GAN (benchmarks.torch_dfgan: the released code's networks and train step)
against jaxgen's DF-GAN networks and losses, number for number.

* Layout: the bridge (benchmarks.torch_bridge's DF-GAN mapping) carries a flax G and D of
  every resolution (64, 128, 256) into the torch modules and back exactly, refuses a tree of
  other shapes, and the torch modules have the official code's parameter counts at the
  paper's widths.
* Forward passes: with jaxgen's weights copied into torch, G's images and D's logits agree to
  float32 rounding.
* Train steps: ``torch_dfgan.train_step`` (the released order: D on real / mismatched / fake
  pairs + MA-GP, Adam, then G through the updated D, Adam; betas (0, 0.9), G lr 1e-4, D lr
  4e-4) against a JAX step composed from ``jaxgen.models.dfgan``, ``jaxgen.losses.dfgan`` and
  ``optax.adam(b1=0, b2=0.9)`` (``make_jax_step``), STEPS steps from the same weights on the
  same noise, sentence vectors, real batches and mismatched pairing (the real features rolled
  by one on both sides). After every step the D loss and each of its terms, the G loss, every
  parameter and both Adam moments of every parameter are compared. When the jaxgen DF-GAN
  family exists, its train step takes ``make_jax_step``'s place against the same torch run
  (``run_torch``: modules, optimizers and tensors in, flax-laid-out results out).

The weights are jaxgen's parameter tree (shapes from ``init`` through ``jax.eval_shape``, so
no init is compiled) filled with PyTorch's default distribution U(+-1/sqrt(fan_in)), as the
released code initialises, except where that would leave parts of the step untested: the
affines' last layers are not zero (every affine would be the identity and their first layers
would get no gradient), D's residual scales gamma are 0.5, not 0 (the residual convolutions
would get exact-zero gradients), and D's last layer is HEAD_GAIN times larger, so that the
real pairs' input gradients have norms near 1 and MA-GP (k n^6) is a sizeable part of D's
loss and gradient (asserted) rather than ~1e-5 of it.

Tolerances (derived here, as in tests/test_torch_parity.py, whose reasoning this follows;
none is fitted to a run):

* Forward/backward rounding. A float32 evaluation of each stage (a convolution, a dense
  layer, a kernel-gradient's sum over batch and positions) is off relatively by about
  EPS32 * sqrt(N) with random-walk rounding, N the number of terms it sums, and the errors of
  the stages on the longest path add. With every stage taken at the longest sum, N_ACC (the
  kernel-gradient of D's first and G's last convolution over BATCH x 64 x 64 positions), the
  two sides differ relatively by at most RHO[n] = EPS32 * sqrt(N_ACC) * stages: D's gradient
  runs D forward, back to the image (MA-GP's input gradient), and the second-order backward
  through both (4 D_DEPTH stages); G's runs G and D forward and both back (2 (G_DEPTH +
  D_DEPTH)). An error is relative to the terms a sum adds, not to the sum, and a gradient
  component can be far smaller than its terms where they cancel. For a tensor, its largest
  |gradient| gives the terms' scale (taking every stage at N_ACC terms and adding the
  stages' errors linearly, not as a random walk, leaves room for moderate cancellation):
  delta = RHO[n] max|g|. A scalar has no other component to give a scale, and D's residual
  gains gamma each sum a term per activation of their block, which cancel to 1e-3 or less of
  their sum of |terms| A (measured with ``gamma_abs_terms``): for them delta = RHO['d']
  max(|g|, A), as tests/test_torch_parity.py does for every component. Forward-only
  quantities (outputs, losses) sum at most the head's 3 x 3 x (8 WIDTH + COND) terms per
  stage: RHO_FWD.
* Later steps start from weights that already differ: to first order the networks' outputs
  move relatively by the sum over tensors of rms(dW) / rms(W), added to RHO (a posteriori:
  each difference was checked against its own bound the step before).
* Adam with b1 = 0: mu is the gradient itself on both sides (optax 0 * mu + 1 * g, torch's
  lerp with weight 1 returns g), so mu may differ by delta. nu = b2 nu + (1 - b2) g^2 moves by
  (1 - b2)(2 |g| delta + delta^2) on top of b2 times its previous difference, plus four
  roundings per side (4 EPS32 nu). The update lr m / (sqrt(v^) + eps) is at most lr R_t in
  size (R_t = sqrt((1 - b2^t) / (1 - b2)) for b1 = 0), so two updates differ by at most
  2 lr R_t (a component whose gradient is within its error can take either sign); elsewhere
  by lr (dm + R_t dsqrt(v^)) / (sqrt(v^) - dsqrt(v^) + eps). Each component gets the smaller,
  plus the update's own rounding (~6 roundings per side of a value <= lr R_t) and that of
  p - u (EPS32 |p|), plus its difference after the previous step. Adam is scale-invariant
  (the first update is lr sign(g)), so the moments are compared as well: they catch a loss
  term with the wrong weight, which the parameters alone would not.
* Losses. The hinge terms are 1-Lipschitz in the logits, whose error is RHO_FWD (D forward;
  G and D forward for the fake pairs) times their largest magnitude; MA-GP's gradient norms
  carry the error of D forward and back (2 RHO_FWD['d']), which the power p multiplies. Each
  mean adds its own rounding (2 EPS32 of it), the D loss's sum 4 EPS32.

torch runs its native CPU kernels here (``torch.backends.mkldnn.flags(enabled=False)``) as
the DCGAN parity test does, after oneDNN's float32 gradients were found far off float64 there;
the benchmark keeps torch's default. The JAX step is compiled at XLA's backend optimisation
level 0 (FAST_COMPILE), which halves its compile time on a 2-core CPU (56 s -> 24 s, busy);
it changes code generation, not the float32 operations, which the bounds above take in any
order.
"""
import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import torch_bridge  # pylint: disable=wrong-import-position
from benchmarks import torch_dfgan  # pylint: disable=wrong-import-position
from jaxgen.losses import dfgan as losses  # pylint: disable=wrong-import-position
from jaxgen.models import dfgan  # pylint: disable=wrong-import-position

RES, WIDTH, BATCH, NZ, COND, NC, STEPS = 64, 4, 4, 8, 16, 3, 3
LR_G, LR_D, B1, B2, ADAM_EPS = 1e-4, 4e-4, 0.0, 0.9, 1e-8
LR = {'g': LR_G, 'd': LR_D}
MAGP_K, MAGP_P = 2.0, 6.0
HEAD_GAIN = 8.0
EPS32 = float(np.finfo(np.float32).eps)
N_BLOCKS = int(math.log2(RES)) - 2
# Stages in sequence from input to output: G's fc, per block two affines and a conv twice,
# the output conv; D's first conv, two convs per block, the head's two convs.
G_DEPTH = 1 + 6 * N_BLOCKS + 1
D_DEPTH = 1 + 2 * N_BLOCKS + 2
N_ACC = BATCH * RES * RES
RHO = {'d': EPS32 * math.sqrt(N_ACC) * 4 * D_DEPTH,
       'g': EPS32 * math.sqrt(N_ACC) * 2 * (G_DEPTH + D_DEPTH)}
N_FWD = 9 * (8 * WIDTH + COND)
RHO_FWD = {'g': EPS32 * math.sqrt(N_FWD) * G_DEPTH, 'd': EPS32 * math.sqrt(N_FWD) * D_DEPTH}
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def adam_ratio_bound(t):
  """max |m^_t| / sqrt(v^_t) for b1 = 0: m_t = g_t and v_t >= (1 - b2) g_t^2."""
  return math.sqrt((1 - B2 ** t) / (1 - B2))


def jaxgen_params(res=RES, width=WIDTH, seed=0, residual_gamma=False):
  """({'params': G}, {'params': D}) as jaxgen lays them out, filled as the module docstring
  says (numpy, float32)."""
  g = dfgan.Generator(res, NC, width, residual_gamma)
  d = dfgan.MatchingDiscriminator(res, width)
  key = jax.random.PRNGKey(0)
  g_shapes = jax.eval_shape(lambda: g.init(key, jnp.zeros((1, NZ)), jnp.zeros((1, COND))))
  d_shapes = jax.eval_shape(lambda: d.init(key, jnp.zeros((1, res, res, NC)),
                                           jnp.zeros((1, COND))))
  rng = np.random.default_rng(seed)

  def fill(tree, path=()):
    out = {}
    fan_in = int(np.prod(tree['kernel'].shape[:-1])) if 'kernel' in tree else None
    for k, v in tree.items():
      if isinstance(v, dict):
        out[k] = fill(v, path + (k,))
      elif k == 'gamma':
        out[k] = np.full(v.shape, 0.5, np.float32)
      else:
        bound = 1.0 / math.sqrt(fan_in)
        if path[-1] == 'joint_conv1':
          bound *= HEAD_GAIN
        x = rng.uniform(-bound, bound, size=v.shape)
        if path[-1] == 'gamma_2' and k == 'bias':
          x += 1.0  # gamma(cond) near 1, where the official init's bias 1 starts it
        out[k] = x.astype(np.float32)
    return out
  return fill(g_shapes), fill(d_shapes)


def make_jax_step(conv_impl='plain'):
  """``step(gp, dp, g_opt, d_opt, z, s, real) -> (gp, dp, g_opt, d_opt, metrics)``: the
  released step composed from jaxgen's networks and losses (real images NHWC)."""
  g = dfgan.Generator(RES, NC, WIDTH)
  d = dfgan.MatchingDiscriminator(RES, WIDTH, conv_impl)
  g_tx = optax.adam(LR_G, b1=B1, b2=B2, eps=ADAM_EPS)
  d_tx = optax.adam(LR_D, b1=B1, b2=B2, eps=ADAM_EPS)

  def step(gp, dp, g_opt, d_opt, z, s, real):
    fake = g.apply({'params': gp}, z, s)

    def d_loss_fn(dp):
      v = {'params': dp}
      features = d.apply(v, real, method='features')
      mis_logits = d.apply(v, losses.mismatch(features), s, method='head')
      magp, real_logits = losses.ma_gp_with_logits(lambda x, c: d.apply(v, x, c), real, s,
                                                   MAGP_K, MAGP_P)
      fake_logits = d.apply(v, jax.lax.stop_gradient(fake), s)
      terms = losses.discriminator_loss(real_logits, fake_logits, mis_logits)
      return terms['loss'] + magp, {'real': terms['real'], 'fake': terms['fake'],
                                    'mismatch': terms['mismatch'], 'magp': magp,
                                    'logits': jnp.stack([real_logits, fake_logits,
                                                         mis_logits])}

    (d_loss, metrics), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(dp)
    updates, d_opt = d_tx.update(d_grads, d_opt, dp)
    dp = optax.apply_updates(dp, updates)

    def g_loss_fn(gp):
      logits = d.apply({'params': dp}, g.apply({'params': gp}, z, s), s)
      return losses.generator_loss(logits), logits

    (g_loss, g_logits), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(gp)
    updates, g_opt = g_tx.update(g_grads, g_opt, gp)
    gp = optax.apply_updates(gp, updates)
    metrics.update(d_loss=d_loss, g_loss=g_loss, g_logits=g_logits)
    return gp, dp, g_opt, d_opt, metrics
  return jax.jit(step, compiler_options=FAST_COMPILE), g_tx, d_tx


def _data():
  rng = np.random.default_rng(16)
  zs = [rng.normal(size=(BATCH, NZ)).astype(np.float32) for _ in range(STEPS)]
  ss = [rng.normal(size=(BATCH, COND)).astype(np.float32) for _ in range(STEPS)]
  reals = [np.tanh(rng.normal(size=(BATCH, NC, RES, RES))).astype(np.float32)
           for _ in range(STEPS)]
  return zs, ss, reals


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


class _Check:
  """Collects max differences and the worst difference/tolerance ratio per quantity."""

  def __init__(self):
    self.rows = []

  def __call__(self, what, got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    self.rows.append((what, float(np.max(diff)), float(np.max(diff / tol))))

  def assert_ok(self):
    report = '\n'.join(f'{w:64s} max|diff| {d:.2e}  diff/tol {q:.3f}' for w, d, q in self.rows)
    print(report)
    bad = [w for w, _, q in self.rows if not q <= 1.0]
    assert not bad, f'over tolerance: {bad}\n{report}'


def gamma_abs_terms(g, d, c, z, s, real) -> dict:
  """For each D block's scalar gamma, the sum of |terms| of its D-loss gradient.

  gamma multiplies every element of its block's residual, and its gradient sums one term per
  element (first order: residual x cotangent; MA-GP's second-order part likewise), far larger
  in sum than the gradient where they cancel. Each gamma is replaced (``functional_call``) by
  a tensor of the residual's shape holding its value, so that its gradient is those terms.
  {flax path string: sum of |terms|}, computed on copies of the modules (float32: a scale,
  whose own rounding does not matter).
  """
  from torch.func import functional_call  # pylint: disable=g-import-not-at-top
  g, d, c = (copy.deepcopy(m) for m in (g, d, c))
  z, s, real = (torch.from_numpy(a) for a in (z, s, real))
  full = {}
  for j, blk in enumerate(d.DBlocks):
    size = real.shape[-1] // 2 ** (j + 1)
    shape = (real.shape[0], blk.conv_r[0].out_channels, size, size)
    full[f'DBlocks.{j}.gamma'] = blk.gamma.detach().expand(shape).clone().requires_grad_()
  s = s.requires_grad_()
  with torch.no_grad():
    fake = g(z, s)
  terms = torch_dfgan.discriminator_loss(lambda x: functional_call(d, full, (x,)), c,
                                         real.requires_grad_(), s, fake)
  grads = torch.autograd.grad(terms['d_loss'], list(full.values()))
  return {f"['features']['block{j}']['gamma']": float(gr.abs().sum())
          for j, gr in enumerate(grads)}


def run_torch(g_vars, d_vars, zs, ss, reals):
  """STEPS torch_dfgan.train_steps from the flax weights; per step the losses, gradients,
  D's gammas' sums of |terms| (``gamma_abs_terms``, before the step), and after the step the
  weights and Adam moments, all laid out as flax trees."""
  g, d, c = torch_dfgan.networks_from_flax(g_vars, d_vars)
  opt_g, opt_d = torch_dfgan.make_optimizers(g, d, c)
  assert (opt_g.defaults['lr'], opt_d.defaults['lr'], opt_g.defaults['betas']) == (
      LR_G, LR_D, (B1, B2))
  out = []
  for z, s, real in zip(zs, ss, reals):
    grads = {}
    abs_terms = gamma_abs_terms(g, d, c, z, s, real)

    def on_backward(which):
      mods = {'d': {'features': d, 'head': c}, 'g': {'': g}}[which]
      tree = {k: torch_bridge.dfgan_like_to_flax(m, {n: p.grad for n, p in
                                                     m.named_parameters()
                                                     if p.grad is not None})
              for k, m in mods.items()}
      grads[which] = tree[''] if which == 'g' else tree

    step_losses = torch_dfgan.train_step(g, d, c, opt_g, opt_d, torch.from_numpy(z),
                                         torch.from_numpy(s), torch.from_numpy(real),
                                         on_backward=on_backward)
    adam = {'g': torch_bridge.torch_adam_to_flax(opt_g, g, torch_bridge.dfgan_like_to_flax)}
    d_adam = {k: torch_bridge.torch_adam_to_flax(opt_d, m, torch_bridge.dfgan_like_to_flax)
              for k, m in (('features', d), ('head', c))}
    adam['d'] = {'count': d_adam['head']['count'],
                 'mu': {k: a['mu'] for k, a in d_adam.items()},
                 'nu': {k: a['nu'] for k, a in d_adam.items()}}
    out.append({'losses': {k: float(v) for k, v in step_losses.items()}, 'grads': grads,
                'abs_terms': abs_terms,
                'params': {'g': torch_bridge.dfgan_to_flax(g),
                           'd': {'features': torch_bridge.dfgan_to_flax(d),
                                 'head': torch_bridge.dfgan_to_flax(c)}},
                'adam': adam})
  return out


def adam_moments(opt_state):
  (state,) = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
  return state.mu, state.nu


def _rel_rms(dp, params):
  return sum(np.sqrt(np.mean(dp[k] ** 2)) / max(np.sqrt(np.mean(params[k] ** 2)), 1e-30)
             for k in dp)


# -------------------------------------------------------------------------------- layout

# The official code's counts at 256x256, ngf = ndf = 32, nz 100, sentence 256 (derived from
# its layer list in tests/test_dfgan.py): NetD also holds three unused 256 -> 256 shortcuts.
PAPER_COUNTS = {'g': 9_744_131, 'd': 6_421_830 + 3 * (256 * 256 + 256), 'c': 295_936}


def test_torch_modules_have_the_official_parameter_counts():
  g = torch_dfgan.NetG(32, 100, 256, 256)
  d, c = torch_dfgan.NetD(32, 256), torch_dfgan.NetC(32, 256)
  counts = {k: torch_dfgan.count_params(m) for k, m in (('g', g), ('d', d), ('c', c))}
  assert counts == PAPER_COUNTS
  with pytest.raises(ValueError, match='built for 64, 128, 256; got 32'):
    torch_dfgan.NetG(4, 8, 16, 32)


@pytest.mark.parametrize('res,residual_gamma', [(64, False), (128, False), (256, False),
                                                (64, True)])
def test_bridge_round_trip_at_every_resolution(res, residual_gamma):
  """flax -> torch -> flax returns every leaf exactly (G's preprint residual scale too); the
  shortcuts NetD creates but never uses are left as they were."""
  g_vars, d_vars = jaxgen_params(res, width=2, seed=res, residual_gamma=residual_gamma)
  g, d, c = torch_dfgan.networks_from_flax(g_vars, d_vars)
  assert (g.fc.in_features, c.cond_dim, len(g.GBlocks)) == (NZ, COND, int(math.log2(res)) - 2)
  assert (g.GBlocks[0].gamma is not None) == residual_gamma
  back = {'g': torch_bridge.dfgan_to_flax(g),
          'd': {'features': torch_bridge.dfgan_to_flax(d), 'head': torch_bridge.dfgan_to_flax(c)}}
  for n, want in (('g', g_vars['params']), ('d', d_vars['params'])):
    got_flat, want_flat = _flat(back[n]), _flat(want)
    assert set(got_flat) == set(want_flat)
    for k, v in want_flat.items():
      np.testing.assert_array_equal(got_flat[k], v, err_msg=k)
  # The same values into float64 modules: widened exactly.
  g64 = torch_dfgan.networks_from_flax(g_vars, d_vars, dtype=torch.float64)[0]
  assert g64.fc.weight.dtype == torch.float64
  np.testing.assert_array_equal(g64.fc.weight.detach().numpy().T, g_vars['params']['fc']['kernel'])
  d2 = torch_dfgan.NetD(2, res)
  unused = {j: b.conv_s.weight.detach().clone() for j, b in enumerate(d2.DBlocks)
            if not b.learned_shortcut}
  assert len(unused) == {64: 1, 128: 2, 256: 3}[res]  # the 8 ndf -> 8 ndf blocks
  torch_bridge.flax_to_dfgan(d_vars['params']['features'], d2)
  for j, w in unused.items():
    assert torch.equal(d2.DBlocks[j].conv_s.weight, w)


def test_bridge_refuses_other_shapes_and_missing_or_extra_leaves():
  g_vars, d_vars = jaxgen_params()
  with pytest.raises(ValueError, match='Shape mismatch'):
    torch_bridge.flax_to_dfgan(g_vars['params'], torch_dfgan.NetG(2 * WIDTH, NZ, COND, RES))
  head = dict(d_vars['params']['head'])
  head['extra'] = {'kernel': np.zeros((1, 1, 1, 1), np.float32)}
  with pytest.raises(ValueError, match='no counterpart in the torch module'):
    torch_bridge.flax_to_dfgan(head, torch_dfgan.NetC(WIDTH, COND))
  del head['extra'], head['joint_conv1']
  with pytest.raises(ValueError, match='has no flax counterpart'):
    torch_bridge.flax_to_dfgan(head, torch_dfgan.NetC(WIDTH, COND))


# ------------------------------------------------------------------------------- forward


def test_forward_passes_match_jaxgen():
  g_vars, d_vars = jaxgen_params(seed=1)
  rng = np.random.default_rng(2)
  z = rng.normal(size=(BATCH, NZ)).astype(np.float32)
  s = rng.normal(size=(BATCH, COND)).astype(np.float32)
  x = rng.uniform(-1, 1, size=(BATCH, NC, RES, RES)).astype(np.float32)
  g_j, d_j = dfgan.Generator(RES, NC, WIDTH), dfgan.MatchingDiscriminator(RES, WIDTH)
  got_g = jax.jit(g_j.apply, compiler_options=FAST_COMPILE)(g_vars, z, s)
  got_d = jax.jit(d_j.apply, compiler_options=FAST_COMPILE)(d_vars,
                                                             torch_bridge.nchw_to_nhwc(x), s)
  g, d, c = torch_dfgan.networks_from_flax(g_vars, d_vars)
  with torch.no_grad():
    want_g = g(torch.from_numpy(z), torch.from_numpy(s)).numpy()
    want_d = c(d(torch.from_numpy(x)), torch.from_numpy(s)).view(-1).numpy()
  # Both are float32 evaluations of the same layers: relative to the outputs' scale they
  # differ by at most RHO_FWD of the net that made them (module docstring). A layout mistake
  # (channel order, padding, upsampling, pooling, the sentence tiling) moves them by O(0.1).
  for got, want, n in ((torch_bridge.nhwc_to_nchw(got_g), want_g, 'g'),
                       (np.asarray(got_d), want_d, 'd')):
    scale = np.max(np.abs(want))
    assert scale > 0.05
    np.testing.assert_allclose(got, want, rtol=0, atol=RHO_FWD[n] * scale)


# ---------------------------------------------------------------------------- train step


# 'fast': D's strided convolutions by jaxgen.nn.fast_conv, whose input-gradient (and MA-GP's
# derivative of it) sums the same products in another order, so the same rounding bounds hold.
@pytest.mark.filterwarnings('ignore:TF32 acceleration on top of oneDNN')
@pytest.mark.parametrize('conv_impl', ['plain', 'fast'])
def test_train_steps_match_jaxgen_networks_and_losses(conv_impl):
  g_vars, d_vars = jaxgen_params()
  zs, ss, reals = _data()
  with torch.backends.mkldnn.flags(enabled=False):
    ref = run_torch(g_vars, d_vars, zs, ss, reals)
  step, g_tx, d_tx = make_jax_step(conv_impl)
  params = {'g': g_vars['params'], 'd': d_vars['params']}
  opts = {'g': g_tx.init(params['g']), 'd': d_tx.init(params['d'])}
  check = _Check()
  prev_dp = {n: {k: 0.0 for k in _flat(params[n])} for n in 'gd'}
  prev_dnu = prev_dp
  perturbation = 0.0
  allowances = []
  for t in range(STEPS):
    count = t + 1
    params['g'], params['d'], opts['g'], opts['d'], m = step(
        params['g'], params['d'], opts['g'], opts['d'], zs[t], ss[t],
        torch_bridge.nchw_to_nhwc(reals[t]))
    r = ref[t]
    ratio = adam_ratio_bound(count)
    dp, dnu = {n: {} for n in 'gd'}, {n: {} for n in 'gd'}
    for n in 'gd':
      rho = RHO[n] + perturbation
      grads = _flat(r['grads'][n])
      want_p, got_p = _flat(r['params'][n]), _flat(params[n])
      want_mu, want_nu = _flat(r['adam'][n]['mu']), _flat(r['adam'][n]['nu'])
      got_mu, got_nu = (_flat(x) for x in adam_moments(opts[n]))
      assert r['adam'][n]['count'] == count and set(want_p) == set(got_p)
      abs_terms = r['abs_terms'] if n == 'd' else {}
      for k, want in want_p.items():
        g = grads[k]
        delta = rho * max(np.max(np.abs(g)), abs_terms.get(k, 0.0))
        tol_mu = delta
        tol_nu = B2 * prev_dnu[n][k] + (1 - B2) * (2 * np.abs(g) * delta + delta ** 2) + (
            4 * EPS32 * want_nu[k])
        vhat = want_nu[k] / (1 - B2 ** count)
        d_vhat = tol_nu / (1 - B2 ** count)
        d_sqrt_v = np.minimum(np.sqrt(d_vhat), d_vhat / np.maximum(np.sqrt(vhat), 1e-30))
        smooth = (tol_mu + ratio * d_sqrt_v) / (
            np.maximum(np.sqrt(vhat) - d_sqrt_v, 0.0) + ADAM_EPS)
        d_update = LR[n] * np.minimum(2 * ratio, smooth) + 6 * EPS32 * LR[n] * ratio
        allowances.append(np.ravel(d_update) / LR[n])
        tol_p = prev_dp[n][k] + d_update + EPS32 * np.abs(want)
        check(f'step {count} {n} param {k}', got_p[k], want, tol_p + 1e-30)
        check(f'step {count} {n} adam mu {k}', got_mu[k], want_mu[k], tol_mu + 1e-30)
        check(f'step {count} {n} adam nu {k}', got_nu[k], want_nu[k], tol_nu + 1e-30)
        dp[n][k] = np.abs(got_p[k] - want)
        dnu[n][k] = np.abs(got_nu[k] - want_nu[k])
    # The losses see the weights as they differ at the step's start (D's loss) and after
    # D's update (G's), at most as they differ after the whole step.
    after = sum(_rel_rms(dp[n], _flat(r['params'][n])) for n in 'gd')
    moved = max(perturbation, after)
    rho_d, rho_gd = RHO_FWD['d'] + moved, RHO_FWD['g'] + RHO_FWD['d'] + moved
    want_l = r['losses']
    scale = np.max(np.abs(np.asarray(m['logits'])), axis=1)  # real, fake, mismatch pairs
    tol = {'real': rho_d * scale[0], 'fake': rho_gd * scale[1], 'mismatch': rho_d * scale[2],
           'magp': MAGP_P * 2 * rho_d * want_l['magp']}
    tol = {k: v + 2 * EPS32 * abs(want_l[k]) for k, v in tol.items()}
    tol['d_loss'] = (tol['real'] + (tol['fake'] + tol['mismatch']) / 2 + tol['magp']
                     + 4 * EPS32 * abs(want_l['d_loss']))
    tol['g_loss'] = (rho_gd * float(np.max(np.abs(m['g_logits'])))
                     + 2 * EPS32 * abs(want_l['g_loss']))
    for k, v in tol.items():
      check(f'step {count} {k}', m[k], want_l[k], v)
    perturbation = after
    prev_dp, prev_dnu = dp, dnu
  check.assert_ok()
  allowances = np.concatenate(allowances)
  magp_share = ref[0]['losses']['magp'] / ref[0]['losses']['d_loss']
  print(f'update allowance / lr: median {np.median(allowances):.2e}, fraction at the '
        f'2 lr R cap {np.mean(allowances >= 1.99):.2e}; MA-GP / D loss at step 1: '
        f'{magp_share:.2f}')
  # Not vacuous: MA-GP is a sizeable part of D's loss; a wrong optimizer setting (learning
  # rate, betas, a network stepped by the other's optimizer) moves nearly every parameter by
  # O(lr), which the parameter checks catch when most allowances are a small part of lr.
  assert magp_share > 0.1
  assert np.median(allowances) < 0.05 and np.mean(allowances >= 1.99) < 0.1
