"""DF-GAN building blocks: the affine layer and the fusion block against float64 hand
computations with a float32 rounding bound, the hinge terms by hand, MA-GP against central
finite differences in the image and the sentence, shapes and text dependence of G and D at
64/128/256, parameter counts at the paper's width against a count derived from the layer
list, the config errors, and both forward passes against a PyTorch-layout (NCHW, float64)
re-implementation of the official ones."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen.losses import dfgan as losses
from jaxgen.models import dfgan

EPS = float(np.finfo(np.float64).eps)
U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32 (round to nearest)


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def randomize(params, seed):
  """Every leaf replaced by N(0, 0.5) float32 values (the init zeros the affines' last layers,
  which would make gamma = 1 and beta = 0 and the tests trivial)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: jnp.asarray(0.5 * rng.normal(size=p.shape), jnp.float32), params)


# --------------------------------------------------------- float64 references with bounds
#
# Each reference returns (value, bound): the exact result (float64, on the same float32
# inputs and parameters) and a bound on how far a float32 evaluation can be from it. Standard
# rounding analysis: a dot product of n terms plus a bias, in any summation order, is off by
# at most gamma(n + 1) * (|W| |x| + |b|) with gamma(k) = k u / (1 - k u); an input already off
# by e moves the result by at most |W| e more. ReLU is exact; LeakyReLU is 1-Lipschitz and its
# 0.2 * x costs two roundings (0.2 is not a float32, then the product). gamma * x + beta costs
# two roundings (one if fused).


def gamma_n(n):
  return n * U32 / (1 - n * U32)


def dense_ref(kernel, bias, x, ex):
  w, b = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
  y = x @ w + b
  err = ex @ np.abs(w) + gamma_n(w.shape[0] + 1) * ((np.abs(x) + ex) @ np.abs(w) + np.abs(b))
  return y, err


def leaky_ref(x, ex):
  y = np.where(x >= 0, x, 0.2 * x)
  return y, ex + gamma_n(2) * 0.2 * (np.abs(x) + ex)


def affine_ref(p, x, ex, cond):
  def mlp(name):
    h, eh = dense_ref(p[f'{name}_1']['kernel'], p[f'{name}_1']['bias'], cond,
                      np.zeros_like(cond))
    h = np.maximum(h, 0.0)
    return dense_ref(p[f'{name}_2']['kernel'], p[f'{name}_2']['bias'], h, eh)

  (g, eg), (b, eb) = mlp('gamma'), mlp('beta')
  g, eg, b, eb = (a[:, None, None, :] for a in (g, eg, b, eb))
  y = g * x + b
  err = (np.abs(g) * ex + eg * np.abs(x) + eg * ex + eb
         + gamma_n(2) * ((np.abs(g) + eg) * (np.abs(x) + ex) + np.abs(b) + eb))
  return y, err


def dfblock_ref(p, x, cond):
  h, e = affine_ref(p['affine0'], x, np.zeros_like(x), cond)
  h, e = leaky_ref(h, e)
  h, e = affine_ref(p['affine1'], h, e, cond)
  return leaky_ref(h, e)


def inputs(shape=(2, 3, 3, 5), cond_dim=7, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  cond = rng.normal(size=(shape[0], cond_dim)).astype(np.float32)
  return x, cond


def test_affine_starts_as_identity_and_has_the_official_shapes():
  x, cond = inputs()
  params = dfgan.Affine().init(jax.random.PRNGKey(0), x, cond)['params']
  assert jax.tree.map(lambda a: a.shape, params) == {
      'gamma_1': {'kernel': (7, 5), 'bias': (5,)}, 'gamma_2': {'kernel': (5, 5), 'bias': (5,)},
      'beta_1': {'kernel': (7, 5), 'bias': (5,)}, 'beta_2': {'kernel': (5, 5), 'bias': (5,)}}
  # gamma's last layer: weight 0, bias 1; beta's: weight 0, bias 0 -> 1 * x + 0, exact.
  np.testing.assert_array_equal(dfgan.Affine().apply({'params': params}, x, cond), x)
  # PyTorch's default init on the first layers: U(+-1/sqrt(fan_in)), fan_in = 7.
  w = np.asarray(params['gamma_1']['kernel'])
  assert np.abs(w).max() <= 1 / np.sqrt(7) and np.abs(w).max() > 0.5 / np.sqrt(7)


def test_affine_against_float64_hand_computation():
  x, cond = inputs()
  module = dfgan.Affine()
  params = randomize(module.init(jax.random.PRNGKey(0), x, cond)['params'], 1)
  got = np.asarray(module.apply({'params': params}, x, cond), np.float64)
  want, bound = affine_ref(params, x.astype(np.float64), np.zeros(x.shape), cond.astype(np.float64))
  assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
  assert np.max(bound / (np.abs(want) + 1)) < 1e-5  # the bound is a few float32 ulps


def test_dfblock_against_float64_hand_computation():
  x, cond = inputs(seed=2)
  module = dfgan.DFBlock()
  params = randomize(module.init(jax.random.PRNGKey(0), x, cond)['params'], 3)
  got = np.asarray(module.apply({'params': params}, x, cond), np.float64)
  want, bound = dfblock_ref(params, x.astype(np.float64), cond.astype(np.float64))
  assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
  assert np.max(bound / (np.abs(want) + 1)) < 1e-4
  assert np.any(want < 0) and np.any(want > 0)  # both branches of the LeakyReLU exercised


# ------------------------------------------------------------------------------- losses


def test_hinge_terms_against_hand_computation():
  # Dyadic values with few mantissa bits: every relu(1 -+ l), sum of 4 and division by 4 is
  # exact in float32, so the results must equal the hand values exactly.
  sr = np.array([2.0, 0.5, -1.25, 1.0])    # relu(1 - l): 0, 0.5, 2.25, 0 -> 0.6875
  sf = np.array([-3.0, -0.5, 0.25, 1.5])   # relu(1 + l): 0, 0.5, 1.25, 2.5 -> 1.0625
  sw = np.array([-1.0, 0.0, -2.0, 0.75])   # relu(1 + l): 0, 1, 0, 1.75 -> 0.6875
  out = losses.discriminator_loss(*(jnp.asarray(a, jnp.float32) for a in (sr, sf, sw)))
  assert float(out['real']) == 0.6875
  assert float(out['fake']) == 1.0625
  assert float(out['mismatch']) == 0.6875
  assert float(out['loss']) == 0.6875 + (1.0625 + 0.6875) / 2
  assert float(losses.generator_loss(jnp.asarray(sf, jnp.float32))) == -(-3 - 0.5 + 0.25 + 1.5) / 4


def test_mismatch_rolls_features_like_the_official_step():
  f = jnp.arange(4.0)[:, None, None, None] * jnp.ones((4, 2, 2, 3))
  np.testing.assert_array_equal(losses.mismatch(f)[:, 0, 0, 0], [1.0, 2.0, 3.0, 0.0])
  with pytest.raises(ValueError, match='at least 2'):
    losses.mismatch(f[:1])


def smooth_logit_fn(seed=0, pixels=32, cond_dim=5):
  """A smooth D(x, s) coupling image and sentence, float64, for finite differences."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(pixels, 6)) / np.sqrt(pixels)
  bm = rng.normal(size=(cond_dim, 6)) / np.sqrt(cond_dim)
  v, w = rng.normal(size=6), rng.normal(size=cond_dim)

  def fn(x, s):
    h = jnp.tanh(x.reshape((x.shape[0], -1)) @ a + s @ bm)
    return jax.nn.softplus(h) @ v + jnp.sin(s) @ w
  return fn


def fd_grads(fn, args, which, h=1e-5):
  """Per-example central differences of fn w.r.t. args[which], one coordinate at a time (all
  examples at once: each row of fn depends on its own row only), and an error bound:
  Richardson's (D(2h) - D(h)) / 3 for the truncation (doubled for higher orders) plus the
  rounding of the two float64 evaluations over 2h, 2 eps |f| / (2h) (doubled again for
  fn's own rounding)."""
  arr = np.asarray(args[which], np.float64)
  flat = arr.reshape(arr.shape[0], -1)
  grads, errors = np.zeros_like(flat), np.zeros_like(flat)

  def at(delta):
    moved = list(args)
    moved[which] = jnp.asarray((flat + delta).reshape(arr.shape))
    return np.asarray(fn(*moved))

  for j in range(flat.shape[1]):
    diffs = []
    for step in (h, 2 * h):
      e = np.zeros_like(flat)
      e[:, j] = step
      up, down = at(e), at(-e)
      diffs.append((up - down) / (2 * step))
      fmax = np.maximum(np.abs(up), np.abs(down))
    grads[:, j] = diffs[0]
    errors[:, j] = 2 * (np.abs(diffs[1] - diffs[0]) / 3 + 2 * EPS * fmax / (2 * h))
  return grads, errors


def test_ma_gp_matches_finite_differences_in_image_and_sentence():
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    fn = smooth_logit_fn()
    x = jnp.asarray(rng.normal(size=(3, 4, 4, 2)))
    s = jnp.asarray(rng.normal(size=(3, 5)))
    got, logits = losses.ma_gp_with_logits(fn, x, s)
    got = float(got)
    np.testing.assert_array_equal(logits, fn(x, s))
    gx, ex = fd_grads(fn, (x, s), 0)
    gs, es = fd_grads(fn, (x, s), 1)
  g, e = np.concatenate([gx, gs], 1), np.concatenate([ex, es], 1)
  norms, d = np.linalg.norm(g, axis=1), np.linalg.norm(e, axis=1)
  want = 2.0 * np.mean(norms ** 6)
  # ||g + e|| is within ||e|| = d of ||g||, and n^6 moves by <= 6 (n + d)^5 d over that range;
  # plus float64 rounding of the autodiff side (a few eps per layer: 16 eps).
  tol = 2.0 * np.mean(6 * (norms + d) ** 5 * d) + 16 * EPS * abs(want)
  assert abs(got - want) <= tol, (got, want, tol)
  # Both gradients count, and they are combined as one norm, not a sum of two norms.
  nx, ns = np.linalg.norm(gx, axis=1), np.linalg.norm(gs, axis=1)
  for other in (2.0 * np.mean(nx ** 6), 2.0 * np.mean(ns ** 6), 2.0 * np.mean((nx + ns) ** 6)):
    assert abs(got - other) > 100 * tol, (got, other)
  # k and p: k * mean(n^p).
  with jax.enable_x64(True):
    assert float(losses.ma_gp(fn, x, s, k=0.5, p=2.0)) == pytest.approx(
        0.5 * np.mean(norms ** 2), rel=1e-6)


# ----------------------------------------------------------------------------- networks

TINY = 4


def _shapes(resolution, batch=2, nz=6, cond=5):
  g = dfgan.Generator(resolution, 3, TINY)
  d = dfgan.MatchingDiscriminator(resolution, TINY)
  z, s = jnp.zeros((batch, nz)), jnp.zeros((batch, cond))
  x = jnp.zeros((batch, resolution, resolution, 3))
  key = jax.random.PRNGKey(0)
  img, _ = jax.eval_shape(lambda: g.init_with_output(key, z, s))
  feats, _ = jax.eval_shape(lambda: d.init_with_output(key, x, method='features'))
  logits, _ = jax.eval_shape(lambda: d.init_with_output(key, x, s))
  return img.shape, feats.shape, logits.shape


@pytest.mark.parametrize('resolution', [32, 64, 128, 256])
def test_shapes(resolution):
  img, feats, logits = _shapes(resolution)
  assert img == (2, resolution, resolution, 3)
  assert feats == (2, 4, 4, 8 * TINY)
  assert logits == (2,)


def synthetic_params(module, *args, method=None, **overrides):
  """Parameters of ``module`` with the shapes its init makes (``jax.eval_shape``, so nothing is
  compiled) and values N(0, 1/fan_in) for kernels, N(0, 0.1^2) for vectors; a leaf whose
  path contains a key of ``overrides`` gets ``overrides[key](shape)``. Compiling ``init`` of
  a DF-GAN G costs far more than its forward pass on XLA:CPU (every layer's random init is
  its own kernel: ~15 s for a 64x64 G at width 4 on a busy 2-core machine), too much here;
  the real initialisers are checked on the affine layer above."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, method=method))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    names = [getattr(k, 'key', '') for k in path]
    for key, make in overrides.items():
      if key in names:
        return jnp.asarray(make(leaf.shape), jnp.float32)
    if len(leaf.shape) > 1:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)
    return jnp.asarray(0.1 * rng.normal(size=leaf.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def gamma_2_init(shape):
  """The official init of gamma's last layer: kernel 0, bias 1."""
  return np.ones(shape) if len(shape) == 1 else np.zeros(shape)


def test_generator_and_discriminator_depend_on_the_sentence():
  rng = np.random.default_rng(5)
  z = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  s1 = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  s2 = s1 + 1.0
  g = dfgan.Generator(64, 3, TINY)
  g_apply = jax.jit(g.apply)  # one compile instead of op-by-op dispatch
  # The official init of the affines' last layers (W = 0, gamma bias 1, beta bias 0): every
  # affine is the identity and G must ignore the sentence exactly - s enters only there.
  at_init = synthetic_params(g, z, s1, gamma_2=gamma_2_init, beta_2=np.zeros)
  img1 = g_apply(at_init, z, s1)
  assert img1.shape == (2, 64, 64, 3) and np.all(np.abs(img1) <= 1)
  np.testing.assert_array_equal(g_apply(at_init, z, s2), img1)
  # With non-zero last layers (as after training) the image follows the sentence.
  trained = synthetic_params(g, z, s1)
  assert float(jnp.max(jnp.abs(g_apply(trained, z, s2) - g_apply(trained, z, s1)))) > 1e-3

  d = dfgan.MatchingDiscriminator(64, TINY)
  # gamma 0.5 (not the init's 0) so the residual paths take part as well.
  dp = synthetic_params(d, img1, s1, gamma=lambda shape: np.full(shape, 0.5))
  d_apply = jax.jit(d.apply)
  l1, l2 = d_apply(dp, img1, s1), d_apply(dp, img1, s2)
  assert l1.shape == (2,) and float(jnp.max(jnp.abs(l1 - l2))) > 1e-4
  feats = d.apply(dp, img1, method='features')
  assert feats.shape == (2, 4, 4, 8 * TINY)
  # The split call gives the same logits (up to float32 reordering between the programs).
  np.testing.assert_allclose(d.apply(dp, feats, s1, method='head'), l1, rtol=1e-5, atol=1e-6)
  # MA-GP through the real networks is differentiable w.r.t. D's parameters.
  pen, grads = jax.jit(jax.value_and_grad(
      lambda p: losses.ma_gp(lambda x, s: d.apply(p, x, s), img1, s1)))(dp)
  assert np.isfinite(float(pen)) and float(pen) > 0
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(grads))


def official_counts(nz=100, cond=256, ngf=32, ndf=32, r=256, ch=3):
  """Parameter counts from the layer list of the official code (G_Block, D_Block, NetC)."""
  mults = dfgan.channel_multipliers(r)
  assert mults == tuple(min(2 ** i, 8) for i in range(int(np.log2(r)) - 1))[::-1]
  cd = nz + cond                                   # the affines see concat(z, s)
  affine = lambda c: 2 * ((cd * c + c) + (c * c + c))   # gamma and beta MLPs
  dfblk = lambda c: 2 * affine(c)
  conv = lambda k, i, o, bias=True: k * k * i * o + (o if bias else 0)
  g = nz * ngf * 8 * 16 + ngf * 8 * 16             # fc
  for a, b in zip(mults[:-1], mults[1:]):
    i, o = ngf * a, ngf * b
    g += dfblk(i) + conv(3, i, o) + dfblk(o) + conv(3, o, o) + (conv(1, i, o) if i != o else 0)
  g += conv(3, ngf, ch)                            # to_rgb
  d, unused = conv(3, ch, ndf), 0
  dm = mults[::-1]
  for a, b in zip(dm[:-1], dm[1:]):
    i, o = ndf * a, ndf * b
    d += conv(4, i, o, False) + conv(3, o, o, False) + 1   # + gamma
    if i != o:
      d += conv(1, i, o)
    else:
      unused += conv(1, i, o)  # PyTorch creates conv_s anyway
  head = conv(3, ndf * 8 + cond, ndf * 2, False) + conv(4, ndf * 2, 1, False)
  return g, d, head, unused


def test_parameter_counts_at_paper_width():
  g = dfgan.Generator(256, 3, 32)
  d = dfgan.MatchingDiscriminator(256, 32)
  z, s, x = jnp.zeros((1, 100)), jnp.zeros((1, 256)), jnp.zeros((1, 256, 256, 3))
  gp = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, s))
  dp = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, s))['params']
  want_g, want_d, want_head, unused = official_counts()
  assert count(gp) == want_g == 9_744_131
  assert count(dp['features']) == want_d == 6_421_830
  assert count(dp['head']) == want_head == 295_936
  # PyTorch's NetD also holds three unused 256->256 1x1 shortcut convs (with bias).
  assert unused == 3 * (256 * 256 + 256)


def test_parameter_counts_of_the_cpu32_size():
  """32x32, widths 16, a 128-d sentence (``dfgan.py:cpu32``): the same layer-list count,
  three UpBlocks and three DownBlocks (the figures the 32x32 results table prints)."""
  g = dfgan.Generator(32, 3, 16)
  d = dfgan.MatchingDiscriminator(32, 16)
  z, s, x = jnp.zeros((1, 100)), jnp.zeros((1, 128)), jnp.zeros((1, 32, 32, 3))
  gp = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, s))
  dp = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, s))['params']
  want_g, want_d, want_head, _ = official_counts(cond=128, ngf=16, ndf=16, r=32)
  assert count(gp) == want_g == 780_163
  assert count(dp['features']) + count(dp['head']) == want_d + want_head == 451_235


def test_residual_gamma_variant_starts_as_the_shortcut():
  x = jnp.asarray(np.random.default_rng(6).normal(size=(1, 4, 4, 8)), jnp.float32)
  cond = jnp.ones((1, 3))
  block = dfgan.UpBlock(4, residual_gamma=True)
  params = synthetic_params(block, x, cond, gamma=np.zeros)  # gamma's init: 0
  assert params['params']['gamma'].shape == (1,)
  sc = params['params']['c_sc']
  want = jnp.einsum('bhwi,io->bhwo', dfgan.upsample_nearest(x), sc['kernel'][0, 0]) + sc['bias']
  # gamma = 0 removes the residual exactly; only the 1x1 conv's float32 rounding is left.
  np.testing.assert_allclose(jax.jit(block.apply)(params, x, cond), want, rtol=1e-6, atol=1e-6)
  shapes = jax.eval_shape(lambda: dfgan.UpBlock(4).init(jax.random.PRNGKey(0), x, cond))
  assert 'gamma' not in shapes['params']


# ------------------------------------------------------------------------------ configs


def cfg(**overrides):
  base = dict(resolution=64, channels=3, latent_dim=100, cond_dim=256, g_width=32, d_width=32)
  return ml_collections.ConfigDict({**base, **overrides})


def test_unsupported_resolution_is_a_clear_error():
  with pytest.raises(ValueError, match='dfgan cannot make 16x16 images; accepted resolutions: '
                                       '32, 64, 128, 256'):
    dfgan.make_networks(cfg(resolution=16))
  with pytest.raises(ValueError, match='cannot make 512x512'):
    dfgan.Generator(512, 3, 4).init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match='takes 64x64 images'):
    dfgan.Discriminator(64, 4).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_config_errors():
  g, d = dfgan.make_networks(cfg())
  assert (g.resolution, g.width, g.residual_gamma, d.width) == (64, 32, False, 32)
  assert d.conv_impl == 'plain' and dfgan.make_networks(cfg(conv_impl='fast'))[1].conv_impl == (
      'fast')
  with pytest.raises(ValueError, match="Unknown model.conv_impl 'cudnn'; accepted: plain, fast"):
    dfgan.make_networks(cfg(conv_impl='cudnn'))
  with pytest.raises(ValueError, match='model.g_width must be a positive integer; got 0'):
    dfgan.make_networks(cfg(g_width=0))
  with pytest.raises(ValueError, match='model.residual_gamma must be True or False'):
    dfgan.make_networks(cfg(residual_gamma='yes'))
  c = cfg()
  del c['cond_dim']
  with pytest.raises(ValueError, match='model.cond_dim is required'):
    dfgan.make_networks(c)


# ------------------------------------------------------------- against a PyTorch layout


def torch_reference(params_g, params_d, z, s, images):
  """The official forward passes in NCHW and float64: benchmarks.torch_dfgan's NetG, NetD and
  NetC (the released code's modules: G's ``fc(z).view(B, 8w, 4, 4)``, ``F.interpolate``
  nearest, ``F.avg_pool2d``, the head's ``cat((features, s.repeat(1, 1, 4, 4)), 1)``) loaded
  with the same parameters by benchmarks.torch_bridge (flax kernels (kh, kw, in, out) ->
  torch (out, in, kh, kw), dense kernels transposed; float32 values, widened exactly)."""
  torch = pytest.importorskip('torch')
  from benchmarks import torch_dfgan  # pylint: disable=g-import-not-at-top
  g, d, c = torch_dfgan.networks_from_flax(params_g, params_d, dtype=torch.float64)
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  with torch.no_grad():
    fake = g(t(z), t(s))
    logits = c(d(t(images).permute(0, 3, 1, 2)), t(s)).view(-1)
  return fake.permute(0, 2, 3, 1).numpy(), logits.numpy()


def test_forward_passes_match_a_pytorch_layout_reference():
  rng = np.random.default_rng(7)
  z = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  images = jnp.asarray(rng.uniform(-1, 1, size=(2, 64, 64, 3)), jnp.float32)
  g, d = dfgan.Generator(64, 3, TINY), dfgan.MatchingDiscriminator(64, TINY)
  pg = synthetic_params(g, z, s)
  pd = synthetic_params(d, images, s, gamma=lambda shape: np.full(shape, 0.5))
  fake, logits = jax.jit(g.apply)(pg, z, s), jax.jit(d.apply)(pd, images, s)
  want_fake, want_logits = torch_reference(pg, pd, z, s, images)
  # float32 against float64: each of the ~25 layers on the longest path sums <= 1,300 terms
  # of unit-scale values (fan-in 3x3x(8w + cond) in the head), a relative error of about
  # eps32 * sqrt(1300) ~ 2e-6 per layer with random-walk rounding, so ~5e-5 in all; 2e-4 of
  # the outputs' scale leaves a margin of 4. A layout mistake (channel order, padding,
  # upsampling, pooling) changes the outputs by O(0.1) of their scale.
  for got, want in ((fake, want_fake), (logits, want_logits)):
    scale = np.max(np.abs(want))
    assert scale > 0.05
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=2e-4 * scale)
