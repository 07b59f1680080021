"""jaxgen's DCGAN train step, number for number against PyTorch (pytorch/examples' DCGAN).

Both sides start from the same weights (torch's init copied by benchmarks.torch_bridge),
see the same real batches and the same z (the noise the engine's step draws, from
``jaxgen.families.gan.step_noise``, fed to torch), and train with
Adam(2e-4, betas (0.5, 0.999), eps 1e-8) on the BCE-with-logits (non-saturating) losses,
for 3 steps in each order:

* 'fresh': D update on real and G(z1) (stopped), then G update on D(G(z2)) - the GAN
  family's default step (``g_step='fresh'``, Goodfellow et al.'s Algorithm 1).
* 'shared': pytorch/examples main.py: fake = G(z1), D update on real and the stopped fake,
  G update on D'(fake) through the UPDATED D and the same G forward (G's BatchNorm
  statistics advance once per step).

After every step the losses, every parameter, both Adam moments and every BatchNorm
running statistic are compared. ``jaxgen_step(order)`` is the jaxgen side: the GAN family's
own train step (``jaxgen.families.gan.make_train_step`` with ``g_step=order``), the
function the engine jits.

Tolerances (all derived below, none from a run):

* Forward/backward rounding. Each stage (a convolution, a BatchNorm reduction, their
  gradients) sums at most N_ACC float32 terms in an order that differs between oneDNN and
  XLA; with rounding errors that behave as a random walk, each stage's relative error is
  about EPS32 * sqrt(N_ACC), relative to the magnitude of what it sums, and the errors of
  the DEPTH stages on the longest path (forward and backward through G and D) add:
  RHO_FWD = EPS32 * sqrt(N_ACC) * DEPTH. A rounding error is relative to the magnitude of
  the terms summed, not to the sum: a weight gradient sums input x cotangent over batch
  and positions, and where those terms cancel the gradient can be orders of magnitude
  smaller than their sum of absolute values (at 32x32, torch+oneDNN's float32 G gradient
  was 0.6 % of max|g| off its float64 value, jaxgen's 1e-6 - see below). So
  each component's error is delta = rho * max(A, max|g|), A the sum of |terms| of that
  component (torch_dcgan.AbsGradRecorder, recorded in the torch run) and max|g| the
  tensor's scale, which bounds the errors coming from upstream. (The 0.6 % was not
  rounding: with oneDNN disabled torch's float32 gradient is 6.5e-7 off float64. The
  torch reference therefore runs on torch's native CPU kernels; see the oneDNN note below.)
* Adam. m and v are exponential averages of g and g^2, so per step they move by at most
  (1 - b1) delta and (1 - b2)(2|g| delta + delta^2) on top of b1, b2 times their
  difference after the previous step. The update lr * m^/(sqrt(v^) + eps) is ~ lr * sign(g)
  wherever |g| >> eps, so a component whose gradient is within its error can come out
  with either sign: two updates differ by at most 2 lr R_t (R_t: the largest |m^|/sqrt(v^)
  Adam can produce at step t, 1 at t = 1; ``adam_ratio_bound``). Elsewhere the update is
  smooth in the moments: it moves by at most lr (dm^ + R_t dsqrt(v^)) / (sqrt(v^) -
  dsqrt(v^) + eps), with v^ from torch's own Adam state. Each component gets the smaller
  of the two, so the bound is tight where the gradient is well determined (the median is
  asserted below 1 % of lr) and 2 lr R_t only where it cannot be. A parameter may then
  differ by its difference after the previous step + that + the rounding of the update
  (EPS32 |p|). Comparing m and v as well catches what Adam's scale invariance hides from
  the parameters (e.g. a loss off by a constant factor).
* Later steps start from what the previous step left: the bounds carry the actual
  differences after the previous step (a posteriori; each was checked against its own
  bound), and to first order the network's outputs move relatively by the sum over layers
  of ||dW|| / ||W|| (BatchNorm's scale and bias act on normalised, unit-scale features, so
  theirs counts as absolute). That sum is added to rho for the next step.
* Losses: softplus is 1-Lipschitz, so a loss moves by at most its logits' error; D's
  logits are a sum of BatchNorm'd unit-scale features with weights of norm ~0.02 *
  sqrt(fan_in) < 1, so their error is at most rho: |d_loss| <= 2 rho (two means),
  |g_loss| <= rho, plus the loss's own rounding.
* BatchNorm statistics: batch means/variances carry the activations' relative error rho
  (variance twice), relative to the channel's scale |mean| + sqrt(var). torch averages the
  unbiased batch variance, flax the biased one; jaxgen's running variances are converted
  (benchmarks.torch_bridge.running_var_torch_equivalent) with the number of BatchNorm
  passes per step (G: 2 in 'fresh', 1 in 'shared'; D: 3 in 'shared', real / fake /
  G-loss pass, as torch runs D in train mode there). In 'fresh' order D's are not compared:
  jaxgen's default step keeps D's collections from D's own update only (see _compare).

oneDNN. On the 2-core AMD EPYC this was written on (torch 2.13.0+cpu), with this test's
data at 32x32, torch's default (oneDNN) float32 step gave a G gradient 0.65 % (of the
tensor's max) off the same step in float64, in both orders, after the first D update
only (before it: 7.5e-7); cloning D's weights after the update did not change it, turning
oneDNN off (``torch.backends.mkldnn.flags(enabled=False)``) brought it to 6.5e-7, and
jaxgen's float32 step was 1e-6 off. Parity at 32x32 then failed on Adam sign flips of
2 lr. The reference here is therefore torch with oneDNN off (same semantics, native
kernels); the benchmark keeps torch's default. Not investigated further.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import torch_bridge  # pylint: disable=wrong-import-position
from benchmarks import torch_dcgan  # pylint: disable=wrong-import-position
from jaxgen.families import base, gan  # pylint: disable=wrong-import-position
from jaxgen.models import dcgan  # pylint: disable=wrong-import-position

RES, WIDTH, BATCH, NZ, NC, STEPS = 16, 8, 8, 100, 3, 3
LR, B1, B2, ADAM_EPS = 2e-4, 0.5, 0.999, 1e-8
EPS32 = float(np.finfo(np.float32).eps)
N_LAYERS = int(math.log2(RES)) - 1  # Convolutions per network (G and D alike).
# The longest float32 sums in the step: the kernel-gradients of D's first and G's last
# layer and G's last BatchNorm reduce over batch x (RES/2)^2 positions; the largest fan-in
# is D's last layer (4 x 4 x its input features).
N_ACC = max(BATCH * (RES // 2) ** 2, 16 * WIDTH * 2 ** (N_LAYERS - 2), NZ)
DEPTH = 2 * 2 * N_LAYERS  # Forward and backward through G and D.
RHO_FWD = EPS32 * math.sqrt(N_ACC) * DEPTH
# BatchNorm passes per step (see the module docstring).
BN_PASSES = {'fresh': {'g': 2}, 'shared': {'g': 1, 'd': 3}}
RNG = jax.random.PRNGKey(16)  # The train state's base key: the engine's noise comes from it.


def adam_ratio_bound(t, b1=B1, b2=B2):
  """max |m^_t| / sqrt(v^_t) over all gradient sequences (Cauchy-Schwarz), eps = 0."""
  s = sum((1 - b1) ** 2 * b1 ** (2 * (t - k)) / ((1 - b2) * b2 ** (t - k))
          for k in range(1, t + 1))
  return math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * math.sqrt(s)


def make_models(conv_impl='fast'):
  return (dcgan.Generator(RES, NC, WIDTH, conv_impl),
          dcgan.Discriminator(RES, WIDTH, conv_impl))


def make_tx():
  return optax.adam(LR, b1=B1, b2=B2, eps=ADAM_EPS)


def step_config(order):
  from experiments.configs import dcgan as dcgan_configs  # pylint: disable=g-import-not-at-top
  c = dcgan_configs.get_config('tiny')
  c.model.update(dict(resolution=RES, channels=NC, latent_dim=NZ, g_width=WIDTH,
                      d_width=WIDTH, conv_impl='fast'))
  c.data.update(dict(resolution=RES, channels=NC))
  c.optimizer.update(dict(g_lr=LR, d_lr=LR, b1=B1, b2=B2, eps=ADAM_EPS))
  c.loss.name, c.batch_size, c.num_steps, c.g_step = 'non_saturating', BATCH, STEPS, order
  return c


def jaxgen_step(order):
  """``step(nets, real, t) -> (nets, metrics)``: the GAN family's train step at step t."""
  config = step_config(order)
  gan.validate(config)
  g_model, d_model = make_models()
  g_tx, d_tx = gan.optimizers(config)
  train_step = gan.make_train_step(config, g_model, d_model, g_tx, d_tx)

  def step(nets, real, t):
    state = base.TrainState(step=t, rng=RNG, data_offset=0, nets=nets)
    state, metrics = train_step(state, {'image': real})
    return state.nets, metrics
  return jax.jit(step)


def engine_noise(order):
  """The z of each step, as the engine's step draws them (NCHW-free: [batch, NZ])."""
  config = step_config(order)
  out = []
  for t in range(STEPS):
    noise = gan.step_noise(config, RNG, t, BATCH)
    z1, z2 = (np.asarray(noise[k], np.float32) for k in ('d_z', 'g_z'))
    out.append((z1[0], z2) if order == 'fresh' else z1[0])
  return out


def adam_moments(opt_state):
  """(mu, nu) of the optax Adam state inside ``opt_state``."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
  assert len(found) == 1, opt_state
  return found[0].mu, found[0].nu


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _bn_positions(net):
  """{flax BatchNorm name: batch x height x width it reduces over}."""
  if net == 'g':  # After ConvTranspose_i, i < N_LAYERS - 1: 4 * 2**i square.
    return {f"['BatchNorm_{i}']": BATCH * (4 * 2 ** i) ** 2 for i in range(N_LAYERS - 1)}
  # After Conv_{i+1}: RES / 2**(i+2) square.
  return {f"['BatchNorm_{i}']": BATCH * (RES // 2 ** (i + 2)) ** 2
          for i in range(N_LAYERS - 2)}


class _Check:
  """Collects max differences and the worst difference/tolerance ratio per quantity."""

  def __init__(self):
    self.rows = []

  def __call__(self, what, got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    ratio = float(np.max(diff / tol))
    rel = float(np.max(diff) / max(np.max(np.abs(want)), 1e-30))
    self.rows.append((what, float(np.max(diff)), rel, ratio))

  def assert_ok(self):
    report = '\n'.join(f'{w:60s} max|diff| {d:.2e}  rel {r:.2e}  diff/tol {q:.3f}'
                       for w, d, r, q in self.rows)
    print(report)
    bad = [w for w, _, _, q in self.rows if not q <= 1.0]
    assert not bad, f'over tolerance: {bad}\n{report}'


def _data(order):
  rng = np.random.default_rng(16)
  reals = [np.tanh(rng.normal(size=(BATCH, NC, RES, RES))).astype(np.float32)
           for _ in range(STEPS)]
  return reals, engine_noise(order)


@pytest.mark.filterwarnings('ignore:TF32 acceleration on top of oneDNN')
@pytest.mark.parametrize('order', ['fresh', 'shared'])
def test_dcgan_steps_match_pytorch(order):
  torch.manual_seed(0)
  g_t = torch_dcgan.init_weights(torch_dcgan.make_generator(NZ, WIDTH, NC, RES))
  d_t = torch_dcgan.init_weights(torch_dcgan.make_discriminator(WIDTH, NC, RES))
  tx = make_tx()
  nets = {}
  for name, module in (('g', g_t), ('d', d_t)):
    v = torch_bridge.torch_to_flax(module)
    nets[name] = {'params': v['params'], 'vars': {'batch_stats': v['batch_stats']},
                  'opt': tx.init(v['params'])}
  reals, zs = _data(order)

  snaps = []

  def snapshot(t, g, d, g_opt, d_opt):
    del t
    snaps.append({name: {**torch_bridge.torch_to_flax(m),
                         'adam': torch_bridge.torch_adam_to_flax(opt, m)}
                  for name, m, opt in (('g', g, g_opt), ('d', d, d_opt))})

  # torch's native CPU kernels, not oneDNN's: at 32x32 (this test's data, 'shared' order)
  # torch's float32 G gradient through oneDNN came out 0.65 % of max|g| off its float64
  # value after the first D update (oneDNN off: 6.5e-7; jaxgen: 1e-6), far outside any
  # rounding bound, so oneDNN is not a reference here. See the module docstring.
  with torch.backends.mkldnn.flags(enabled=False):
    ref = torch_dcgan.run_reference(g_t, d_t, reals, zs, order, lr=LR, betas=(B1, B2),
                                    eps=ADAM_EPS, record_grads=True, on_step=snapshot)
  _compare(order, nets, reals, ref, snaps, g_t, d_t)


def _compare(order, nets, reals, ref, snaps, g_t, d_t):
  """Runs jaxgen_step(order) from ``nets`` and checks it against the torch run."""
  impl = 'engine'
  step = jaxgen_step(order)
  check = _Check()
  zeros = {n: {k: 0.0 for k in _flat(nets[n]['params'])} for n in 'gd'}
  # Actual differences after the previous step (a posteriori: the next step's inputs).
  prev_dp, prev_dmu, prev_dnu = zeros, zeros, zeros
  var_teq = {n: {k: v for k, v in _flat(nets[n]['vars']['batch_stats']).items()
                 if k.endswith("['var']")} for n in 'gd'}
  perturbation = 0.0  # Relative weight difference the step starts from.
  allowances = []
  for t in range(STEPS):
    count = t + 1
    old_vars = {n: _flat(nets[n]['vars']['batch_stats']) for n in 'gd'}
    nets, metrics = step(nets, torch_bridge.nchw_to_nhwc(reals[t]), t)
    rho = RHO_FWD + perturbation
    ratio = adam_ratio_bound(count)
    grads = {'g': _flat(torch_bridge.param_like_to_flax(g_t, ref['g_grads'][t])),
             'd': _flat(torch_bridge.param_like_to_flax(d_t, ref['d_grads'][t]))}
    abs_terms = {'g': _flat(torch_bridge.param_like_to_flax(g_t, ref['g_abs_grads'][t])),
                 'd': _flat(torch_bridge.param_like_to_flax(d_t, ref['d_abs_grads'][t]))}
    dp, dmu, dnu, scale = ({n: {} for n in 'gd'} for _ in range(4))
    for n in 'gd':
      snap = snaps[t][n]
      want_p, got_p = _flat(snap['params']), _flat(nets[n]['params'])
      want_mu, want_nu = _flat(snap['adam']['mu']), _flat(snap['adam']['nu'])
      got_mu, got_nu = (_flat(x) for x in adam_moments(nets[n]['opt']))
      assert snap['adam']['count'] == count
      for k, want in want_p.items():
        g = grads[n][k]
        # This step's gradient error: relative to the sum of |terms| of each component
        # (cancellation), and at least to the tensor's scale (errors from upstream).
        delta = rho * np.maximum(abs_terms[n][k], np.max(np.abs(g)))
        # Rounding of the moment updates, both sides: optax's b1 mu + (1 - b1) g rounds the
        # sum (b1 = 0.5 scales exactly), torch's lerp mu + (1 - b1)(g - mu) also rounds
        # g - mu; b2 nu + (1 - b2) g^2 rounds g^2, both products and the sum, at most
        # 2 EPS32 nu per side.
        mu_old = _flat(snaps[t - 1][n]['adam']['mu'])[k] if t else 0.0
        tol_mu = (B1 * prev_dmu[n][k] + (1 - B1) * delta
                  + EPS32 * (np.abs(want_mu[k]) + (1 - B1) * (np.abs(g) + np.abs(mu_old))))
        tol_nu = (B2 * prev_dnu[n][k] + (1 - B2) * (2 * np.abs(g) * delta + delta ** 2)
                  + 4 * EPS32 * want_nu[k])
        # Adam's update from moments within those bounds (bias-corrected), capped at the
        # largest step two Adam updates can differ by.
        vhat = want_nu[k] / (1 - B2 ** count)
        d_mhat = tol_mu / (1 - B1 ** count)
        d_vhat = tol_nu / (1 - B2 ** count)
        d_sqrt_v = np.minimum(np.sqrt(d_vhat), d_vhat / np.maximum(np.sqrt(vhat), 1e-30))
        smooth = (d_mhat + ratio * d_sqrt_v) / (
            np.maximum(np.sqrt(vhat) - d_sqrt_v, 0.0) + ADAM_EPS)
        # + the update's own rounding (bias corrections, sqrt, eps, division, lr: ~6
        # roundings per side of a value at most lr R_t).
        d_update = LR * np.minimum(2 * ratio, smooth) + 6 * EPS32 * LR * ratio
        tol_p = prev_dp[n][k] + d_update + EPS32 * np.abs(want)  # p - u rounds, per side.
        allowances.append(np.ravel(d_update))
        check(f'{order}/{impl} step {count} {n} param {k}', got_p[k], want, tol_p + 1e-30)
        check(f'{order}/{impl} step {count} {n} adam mu {k}', got_mu[k], want_mu[k],
              tol_mu + 1e-30)
        check(f'{order}/{impl} step {count} {n} adam nu {k}', got_nu[k], want_nu[k],
              tol_nu + 1e-30)
        dp[n][k] = np.abs(got_p[k] - want)
        scale[n][k] = 1.0 if 'BatchNorm' in k else np.sqrt(np.mean(want ** 2))
        dmu[n][k] = np.abs(got_mu[k] - want_mu[k])
        dnu[n][k] = np.abs(got_nu[k] - want_nu[k])
      # BatchNorm running statistics. Not D's in 'fresh' order: there torch's G-loss pass
      # (D in train mode) moves them a third time, while jaxgen's default step keeps D's
      # collections from D's own update only (its spectral-norm vectors live there too, and
      # they must not advance in the G pass). Running statistics enter no train-mode
      # computation: the parameters, moments and losses above are the algorithm.
      if order == 'fresh' and n == 'd':
        continue
      want_s, got_s = _flat(snap['batch_stats']), _flat(nets[n]['vars']['batch_stats'])
      positions = _bn_positions(n)
      for k, want in want_s.items():
        layer = k[:k.index(']') + 1]
        mean_t, var_t = want_s[layer + "['mean']"], want_s[layer + "['var']"]
        chan = np.abs(mean_t) + np.sqrt(var_t)
        if k.endswith("['mean']"):
          check(f'{order}/{impl} step {count} {n} running {k}', got_s[k], want,
                rho * chan + 1e-30)
        else:
          var_teq[n][k] = torch_bridge.running_var_torch_equivalent(
              got_s[k], old_vars[n][k], var_teq[n][k], BN_PASSES[order][n], positions[layer])
          check(f'{order}/{impl} step {count} {n} running {k} (torch-equivalent)',
                var_teq[n][k], want, 2 * rho * chan ** 2 + 4 * EPS32 * want)
    # The losses see G's and D's weights as they differ after this step's D update (at
    # most as after the whole step).
    perturbation = sum(np.sqrt(np.mean(dp[n][k] ** 2)) / scale[n][k] for n in 'gd' for k in dp[n])
    rho_loss = max(rho, RHO_FWD + perturbation)
    check(f'{order}/{impl} step {count} d_loss', metrics['d_loss'], ref['d_loss'][t],
          2 * rho_loss + 4 * EPS32 * abs(ref['d_loss'][t]))
    check(f'{order}/{impl} step {count} g_loss', metrics['g_loss'], ref['g_loss'][t],
          rho_loss + 4 * EPS32 * abs(ref['g_loss'][t]))
    prev_dp, prev_dmu, prev_dnu = dp, dmu, dnu
  check.assert_ok()
  # Not vacuous: for most weights a step's allowance is a small fraction of an Adam step.
  allowances = np.concatenate(allowances)
  print(f'update allowance / lr: median {np.median(allowances) / LR:.2e}, '
        f'fraction at the 2 lr R cap {np.mean(allowances >= 1.99 * LR):.2e}')
  assert np.median(allowances) < 0.01 * LR


@pytest.mark.parametrize('conv_impl', ['plain', 'fast'])
def test_bridge_forward_and_round_trip(conv_impl, resolution=64):
  """The converted weights give the same G and D outputs (eval and train mode), and
  converting back restores every torch tensor exactly."""
  torch.manual_seed(1)
  g_t = torch_dcgan.init_weights(torch_dcgan.make_generator(NZ, 4, NC, resolution))
  d_t = torch_dcgan.init_weights(torch_dcgan.make_discriminator(4, NC, resolution))
  with torch.no_grad():  # Non-trivial running statistics to carry across.
    for m in list(g_t.modules()) + list(d_t.modules()):
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
  g_j = dcgan.Generator(resolution, NC, 4, conv_impl)
  d_j = dcgan.Discriminator(resolution, 4, conv_impl)
  vg, vd = torch_bridge.torch_to_flax(g_t), torch_bridge.torch_to_flax(d_t)
  rng = np.random.default_rng(2)
  z = rng.normal(size=(4, NZ)).astype(np.float32)
  x = np.tanh(rng.normal(size=(4, NC, resolution, resolution))).astype(np.float32)
  n_layers = int(math.log2(resolution)) - 1
  # Forward only: n_layers stages per net, longest sum a BatchNorm over 4 x (res/2)^2
  # positions (or G's first fan-in, NZ); outputs (tanh, logits) are of unit scale.
  tol = EPS32 * math.sqrt(max(4 * (resolution // 2) ** 2, NZ)) * n_layers
  for train in (False, True):
    g_t.train(train)
    d_t.train(train)
    with torch.no_grad():
      want_g = g_t(torch.from_numpy(z).reshape(4, NZ, 1, 1)).numpy()
      want_d = d_t(torch.from_numpy(x)).numpy()
    kw = {'mutable': ['batch_stats']} if train else {}
    got_g = g_j.apply(vg, z, train=train, **kw)
    got_d = d_j.apply(vd, torch_bridge.nchw_to_nhwc(x), train=train, **kw)
    got_g, got_d = (got_g[0], got_d[0]) if train else (got_g, got_d)
    np.testing.assert_allclose(torch_bridge.nhwc_to_nchw(got_g), want_g, rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(got_d), want_d, rtol=0, atol=tol)
  g_back = torch_dcgan.make_generator(NZ, 4, NC, resolution)
  d_back = torch_dcgan.make_discriminator(4, NC, resolution)
  vg_now, vd_now = torch_bridge.torch_to_flax(g_t), torch_bridge.torch_to_flax(d_t)
  for src, dst, v in ((g_t, g_back, vg_now), (d_t, d_back, vd_now)):
    torch_bridge.flax_to_torch(v, dst)
    for k, want in src.state_dict().items():
      if not k.endswith('num_batches_tracked'):  # No flax counterpart.
        assert torch.equal(dst.state_dict()[k], want), k
