"""jaxgen.nn.fast_conv against the plain formulation (flax layers, lax convolutions).

Every fast layer must compute the same function as the flax layer it replaces, with the
same parameter tree: outputs, input-gradients, kernel- and bias-gradients and the
second-order gradients a gradient penalty takes through D. References are XLA's own
``lax.conv_transpose`` / ``lax.conv_general_dilated`` (through ``nn.ConvTranspose`` and
``nn.Conv``), which share no code with the phase decomposition. Arithmetic is at HIGHEST
precision in float32; differences are float rounding (measured at most ~1e-6 relative).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import fast_conv

HIGHEST = jax.lax.Precision.HIGHEST


EPS32 = float(np.finfo(np.float32).eps)


def gamma(k):
  """Higham's gamma_k = k u / (1 - k u), u = eps32 / 2: a float32 sum of k products, in any
  order, is off by at most gamma_k times the sum of the products' magnitudes."""
  u = EPS32 / 2
  return k * u / (1 - k * u)


def close(a, b, what, bound):
  """|a - b| <= bound elementwise (bound: an array, or a scalar)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  err = np.abs(a - b)
  assert np.all(err <= bound), (what, float(np.max(err / np.maximum(bound, 1e-300))))


def chain_bound(depth, k, scale):
  """Two float32 evaluations of the same chain of ``depth`` linear maps (sums of <= k
  products) joined by Lipschitz maps (tanh, ReLU, BatchNorm's affine map) that scale signal
  and rounding error alike: each map adds at most gamma_k of its output's scale, the errors
  add along the chain, and the two evaluations differ by twice that."""
  return 2 * depth * gamma(k) * scale


def linear_map_bound(k, magnitudes):
  """Two float32 evaluations of the same linear map (any summation orders, any splitting into
  phases or matrix products): each output is a sum of at most k products, so each is within
  gamma_k sum |products| of the exact value, and the two within twice that. ``magnitudes``
  are the sums of |products| (the same map applied to absolute values), themselves computed
  in float32, hence the extra factor (1 + gamma_k)."""
  return 2 * gamma(k) * (1 + gamma(k)) * np.abs(np.asarray(magnitudes, np.float64))


def randn(seed, shape, dtype=np.float32):
  # numpy, not jax.random: each new shape would compile a sampler (~1 s apiece on CPU).
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def compare_layers(fast, plain, x_shape, seed=0):
  """Same parameters, outputs, and gradients of <y, c> w.r.t. the input and every parameter."""
  k2 = jax.random.PRNGKey(seed)
  x = randn(seed, x_shape)
  v_fast = jax.jit(fast.init)(k2, x)
  v_plain = jax.jit(plain.init)(k2, x)
  assert jax.tree.structure(v_fast) == jax.tree.structure(v_plain)
  for a, b in zip(jax.tree.leaves(v_fast), jax.tree.leaves(v_plain)):
    np.testing.assert_array_equal(a, b)  # Same initialisers, same key: the same parameters.
  # Non-trivial bias so that bias handling is compared too.
  v = jax.tree.map(lambda p: np.asarray(p) + 0.1 * randn(seed + 1, p.shape), v_plain)
  c = randn(seed + 2, jax.eval_shape(plain.apply, v, x).shape)

  def run(v, x, fast_layer):  # One program per layer: eager dispatch is ~20x slower here.
    m = fast if fast_layer else plain
    y = m.apply(v, x)
    grads = jax.grad(lambda v, x: jnp.sum(m.apply(v, x) * c), argnums=(0, 1))(v, x)
    return y, grads

  run = jax.jit(run, static_argnums=2)
  (y_fast, (gv_fast, gx_fast)), (y_plain, (gv_plain, gx_plain)) = run(v, x, True), run(v, x, False)

  # The output, the input gradient and the parameter gradients are linear in each factor, so
  # the plain layer on |v|, |x| with |c| gives every sum of |products| (bias included).
  @jax.jit
  def magnitudes(v, x):
    y = plain.apply(v, x)
    grads = jax.grad(lambda v, x: jnp.sum(plain.apply(v, x) * np.abs(c)), argnums=(0, 1))(v, x)
    return y, grads
  y_abs, (gv_abs, gx_abs) = magnitudes(jax.tree.map(np.abs, v), np.abs(x))
  # Terms per sum: an output or input-gradient entry sums over at most the kernel's taps
  # times one channel dimension (<= the kernel size), plus the bias; a parameter-gradient
  # entry over the batch and output positions.
  k_taps = max(p.size for p in jax.tree.leaves(v)) + 1
  k_positions = c.size // c.shape[-1]
  close(y_fast, y_plain, 'output', linear_map_bound(k_taps, y_abs))
  close(gx_fast, gx_plain, 'input gradient', linear_map_bound(k_taps, gx_abs))
  for path, a in jax.tree_util.tree_flatten_with_path(gv_fast)[0]:
    b, bound = gv_plain, gv_abs
    for p in path:
      b, bound = b[p.key], bound[p.key]
    close(a, b, f'gradient of {jax.tree_util.keystr(path)}',
          linear_map_bound(k_positions, bound))
  return y_plain


TRANSPOSE_CASES = {
    # DCGAN's G layers: 4x4 kernel, stride 2, SAME (doubles the size).
    'dcgan_4x4_s2_same': dict(features=8, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                              x=(2, 5, 5, 6)),
    'many_features_4x4_s2_same': dict(features=24, kernel_size=(4, 4), strides=(2, 2),
                                      padding='SAME', x=(2, 4, 4, 3)),
    'one_feature_4x4_s2': dict(features=1, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                               x=(2, 6, 6, 5)),
    'odd_3x3_s2_valid': dict(features=5, kernel_size=(3, 3), strides=(2, 2), padding='VALID',
                             x=(2, 5, 4, 3)),
    'stride3_5x5_same': dict(features=4, kernel_size=(5, 5), strides=(3, 3), padding='SAME',
                             x=(1, 4, 3, 2)),
    'kernel_smaller_than_stride': dict(features=3, kernel_size=(2, 2), strides=(3, 3),
                                       padding='VALID', x=(2, 3, 3, 2)),
    'mixed_strides': dict(features=4, kernel_size=(4, 3), strides=(2, 1), padding='SAME',
                          x=(2, 5, 6, 3)),
    'explicit_padding': dict(features=4, kernel_size=(4, 4), strides=(2, 2),
                             padding=((1, 2), (0, 3)), x=(2, 4, 5, 3)),
    'transpose_kernel': dict(features=5, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                             transpose_kernel=True, x=(2, 4, 4, 3)),
    'no_bias_1d': dict(features=3, kernel_size=(4,), strides=(2,), padding='SAME',
                       use_bias=False, x=(3, 7, 2)),
    '3d': dict(features=2, kernel_size=(2, 3, 4), strides=(2, 2, 2), padding='SAME',
               x=(1, 3, 2, 3, 2)),
    'unbatched': dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                      x=(4, 4, 2)),
    'stride_1_falls_back': dict(features=3, kernel_size=(3, 3), strides=(1, 1),
                                padding='SAME', x=(2, 4, 4, 2)),
    # DCGAN's first G layer, z (1x1) -> 4x4: one matrix product.
    'single_position_valid': dict(features=6, kernel_size=(4, 4), padding='VALID',
                                  x=(3, 1, 1, 5)),
    'single_position_transpose_kernel': dict(features=4, kernel_size=(3, 2), padding='VALID',
                                             transpose_kernel=True, x=(2, 1, 1, 3)),
    'single_position_3d_two_batch_dims': dict(features=2, kernel_size=(2, 3, 2),
                                              padding='VALID', use_bias=False,
                                              x=(2, 3, 1, 1, 1, 4)),
    'single_position_unbatched': dict(features=3, kernel_size=(4, 4), padding='VALID',
                                      x=(1, 1, 2)),
    'single_position_same_falls_back': dict(features=3, kernel_size=(4, 4), padding='SAME',
                                            x=(2, 1, 1, 2)),
}


@pytest.mark.parametrize('name', sorted(TRANSPOSE_CASES))
def test_conv_transpose_equals_flax(name):
  kw = dict(TRANSPOSE_CASES[name])
  x_shape = kw.pop('x')
  y = compare_layers(fast_conv.ConvTranspose(precision=HIGHEST, **kw),
                     nn.ConvTranspose(precision=HIGHEST, **kw), x_shape)
  if name == 'dcgan_4x4_s2_same':
    assert y.shape == (2, 10, 10, 8)


CONV_CASES = {
    # DCGAN's D layers: 4x4 kernel, stride 2, SAME (halves the size).
    'dcgan_4x4_s2_same': dict(features=8, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                              x=(2, 8, 8, 3)),
    'few_in_many_out': dict(features=16, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                            x=(2, 8, 8, 1)),
    'many_in_few_out': dict(features=2, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                            x=(2, 8, 8, 12)),
    'odd_size_3x3_s2_same': dict(features=4, kernel_size=(3, 3), strides=(2, 2),
                                 padding='SAME', x=(2, 7, 9, 3)),
    'valid_5x5_s3': dict(features=4, kernel_size=(5, 5), strides=(3, 3), padding='VALID',
                         x=(2, 11, 10, 2)),
    'explicit_padding': dict(features=3, kernel_size=(4, 4), strides=(2, 2),
                             padding=((2, 0), (1, 3)), x=(2, 9, 8, 2)),
    'mixed_strides_1d_kernel': dict(features=3, kernel_size=(4, 1), strides=(2, 1),
                                    padding='SAME', x=(2, 8, 5, 2)),
    'no_bias_1d': dict(features=3, kernel_size=(4,), strides=(2,), padding='SAME',
                       use_bias=False, x=(3, 9, 2)),
    'unbatched': dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding='SAME',
                      x=(8, 8, 2)),
    'stride_1_falls_back': dict(features=3, kernel_size=(3, 3), strides=(1, 1),
                                padding='SAME', x=(2, 5, 5, 2)),
}


@pytest.mark.parametrize('name', sorted(CONV_CASES))
def test_conv_equals_flax(name):
  kw = dict(CONV_CASES[name])
  x_shape = kw.pop('x')
  compare_layers(fast_conv.Conv(precision=HIGHEST, **kw), nn.Conv(precision=HIGHEST, **kw),
                 x_shape)


@pytest.mark.parametrize('merge', [True, False])
def test_input_dilated_conv_both_phase_layouts_equal_lax(merge):
  """Merged (one conv over the union window) and per-phase layouts, vs lhs_dilation."""
  x = randn(1, (2, 5, 6, 3))
  w = randn(2, (4, 3, 3, 7))
  for strides, pads in [((2, 2), ((2, 2), (1, 1))), ((3, 2), ((0, -1), (2, 3))),
                        ((2, 3), ((-1, 1), (1, 0)))]:
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=strides,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       precision=HIGHEST)
    out = jax.jit(lambda x, w: fast_conv.input_dilated_conv(
        x, w, strides, pads, HIGHEST, merge_phases=merge))(x, w)
    mag = jax.lax.conv_general_dilated(np.abs(x), np.abs(w), (1, 1), pads, lhs_dilation=strides,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       precision=HIGHEST)
    close(out, ref, f'strides {strides}, padding {pads}', linear_map_bound(w.size, mag))


def test_second_order_gradients_equal_flax():
  """A gradient penalty differentiates D's input-gradient w.r.t. D's parameters: the
  fast layers' custom backward passes must themselves differentiate correctly."""
  x = randn(0, (2, 8, 8, 3))

  class D(nn.Module):
    conv: type
    conv_t: type

    @nn.compact
    def __call__(self, x):
      h = self.conv(6, (4, 4), strides=(2, 2), padding='SAME', precision=HIGHEST)(x)
      h = jnp.tanh(h)
      h = self.conv_t(4, (4, 4), strides=(2, 2), padding='SAME', precision=HIGHEST)(h)
      return jnp.sum(jnp.tanh(h) ** 2, axis=(1, 2, 3))

  fast, plain = D(fast_conv.Conv, fast_conv.ConvTranspose), D(nn.Conv, nn.ConvTranspose)
  v = jax.jit(plain.init)(jax.random.PRNGKey(1), x)

  def penalty(model, v):  # R1: 0.5 E ||grad_x D(x)||^2
    gx = jax.grad(lambda x: jnp.sum(model.apply(v, x)))(x)
    return 0.5 * jnp.mean(jnp.sum(gx ** 2, axis=(1, 2, 3)))

  run = jax.jit(lambda v, m: jax.value_and_grad(lambda v: penalty(m, v))(v), static_argnums=1)
  (p_fast, g_fast), (p_plain, g_plain) = run(v, fast), run(v, plain)
  # Forward (conv, conv_t), backward (their transposes) and the double backward through
  # both: 8 linear maps of at most 4 x 4 x 6 = 96 terms in a chain.
  close(p_fast, p_plain, 'penalty', chain_bound(4, 96, abs(float(p_plain))))
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
    close(a, b, 'penalty gradient', chain_bound(8, 96, np.abs(np.asarray(b)).max()))
  assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g_plain)) > 1e-3  # not vacuous


def test_kernel_gradient_matches_finite_differences():
  """Independent of any XLA convolution: <dL/dW, V> against a central difference in float64."""
  with jax.enable_x64(True):
    x = randn(0, (2, 7, 6, 3), np.float64)
    w = randn(1, (4, 4, 3, 5), np.float64)
    direction = randn(2, w.shape, np.float64)
    for f in (lambda w: fast_conv.strided_conv(x, w, (2, 2), ((1, 2), (1, 1))),
              lambda w: fast_conv.conv_transpose(x, w, (2, 2), 'SAME')):
      loss = jax.jit(lambda w, f=f: jnp.sum(jnp.sin(f(w))))
      central = lambda h: float((loss(w + h * direction) - loss(w - h * direction)) / (2 * h))
      fd, fd_2h = central(1e-5), central(2e-5)
      ad = float(jnp.vdot(jax.jit(jax.grad(loss))(w), direction))
      # Central differences: truncation (fd_2h - fd) / 3 to leading order (Richardson,
      # doubled for higher orders), rounding 2 eps |loss| / (2 h) with loss a float64 sum
      # (x 16 for its own evaluation), and the autodiff value's float64 rounding.
      f64 = np.finfo(np.float64).eps
      tol = (2 * abs(fd_2h - fd) / 3 + 16 * 2 * f64 * abs(float(loss(w))) / 2e-5
             + 16 * f64 * abs(ad))
      assert abs(ad - fd) <= tol, (ad, fd, tol)


def test_dcgan_fast_and_plain_compute_the_same_networks():
  from jaxgen.models import dcgan
  import ml_collections
  base = dict(name='dcgan', resolution=16, channels=1, latent_dim=8, g_width=4, d_width=4,
              spectral_norm=False, compute_dtype='float32')
  g_f, d_f = dcgan.make_gan(ml_collections.ConfigDict({**base, 'conv_impl': 'fast'}))
  g_p, d_p = dcgan.make_gan(ml_collections.ConfigDict({**base, 'conv_impl': 'plain'}))
  z = randn(0, (3, 8))
  gv = jax.jit(lambda k: g_p.init(k, z, train=False))(jax.random.PRNGKey(1))
  shapes = jax.eval_shape(lambda k: g_f.init(k, z, train=False), jax.random.PRNGKey(1))
  assert jax.tree.structure(gv) == jax.tree.structure(shapes)
  gen = jax.jit(lambda g, v, z: g.apply(v, z, train=False), static_argnums=0)
  img_f, img_p = gen(g_f, gv, z), gen(g_p, gv, z)
  g_kernels = [p for p in jax.tree.leaves(gv['params']) if p.ndim > 1]
  close(img_f, img_p, 'G output', chain_bound(len(g_kernels), max(p.size for p in g_kernels),
                                              np.abs(np.asarray(img_p)).max()))
  dv = jax.jit(lambda k: d_p.init(k, img_p, train=False))(jax.random.PRNGKey(2))
  d_grad = jax.jit(jax.grad(lambda d, v, x: jnp.sum(d.apply(v, x, train=False)), argnums=2),
                   static_argnums=0)
  gx_f, gx_p = d_grad(d_f, dv, img_p), d_grad(d_p, dv, img_p)
  d_kernels = [p for p in jax.tree.leaves(dv['params']) if p.ndim > 1]
  close(gx_f, gx_p, 'D input gradient',  # forward and backward through every layer
        chain_bound(2 * len(d_kernels), max(p.size for p in d_kernels),
                    np.abs(np.asarray(gx_p)).max()))


def test_bad_arguments_are_rejected_with_what_is_accepted():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="accepted: 'SAME', 'VALID'"):
    fast_conv.conv_transpose(x, jnp.zeros((4, 4, 3, 2)), (2, 2), 'FULL')
  with pytest.raises(ValueError, match='Kernel has 5 input features, input has 3'):
    fast_conv.input_dilated_conv(x, jnp.zeros((4, 4, 5, 2)), (2, 2), ((1, 1), (1, 1)))
  with pytest.raises(ValueError, match='2 \\(low, high\\) pairs'):
    fast_conv.input_dilated_conv(x, jnp.zeros((4, 4, 3, 2)), (2, 2), ((1, 1),))
  with pytest.raises(ValueError, match='empty'):
    fast_conv.input_dilated_conv(x, jnp.zeros((4, 4, 3, 2)), (2, 2), ((-5, -5), (0, 0)))


def test_single_position_layer_is_one_matrix_product():
  """The 1x1-input layer compiles to a dot, never a convolution (the point of the path)."""
  layer = fast_conv.ConvTranspose(8, (4, 4), padding='VALID', use_bias=False)
  x = randn(0, (4, 1, 1, 10))
  v = layer.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(layer.apply).lower(v, x).as_text()
  assert 'convolution' not in hlo and 'dot_general' in hlo
  # Output position o meets kernel tap k - 1 - o only: y = x . flip(W), checked in numpy.
  w = np.asarray(v['params']['kernel'], np.float64)
  want = np.einsum('nc,hwcf->nhwf', x[:, 0, 0].astype(np.float64), w[::-1, ::-1])
  mag = np.einsum('nc,hwcf->nhwf', np.abs(x[:, 0, 0]).astype(np.float64), np.abs(w[::-1, ::-1]))
  close(layer.apply(v, x), want, 'y', gamma(x.shape[-1]) * mag)  # one float32 sum vs float64
