"""VAE / CVAE modules, family and tools: shapes, conditioning, targets, schedule, runs.

Resumption, preemption and divergence handling of VAE runs are tested for every family in
tests/test_engine.py.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from experiments.configs import cvae as cvae_configs
from experiments.configs import vae as vae_configs
from jaxgen import vae_tools
from jaxgen.models import vae as vae_models
from jaxgen import optim
from jaxgen.engine import loop
from jaxgen.engine.writers import read_metrics
from jaxgen.families import vae, vae_figures, vae_targets
from tests.conftest import set_fields


U32 = np.finfo(np.float32).eps / 2  # Unit roundoff of float32 (2^-24).
U64 = np.finfo(np.float64).eps / 2
# numpy's float32 log / log1p are not correctly rounded; we allow 4 ulp each.
ULP = 4
# False-failure probability of each statistical check on a correct implementation.
P_FALSE = 1e-6


def gamma32(k):
  """gamma_k = k u / (1 - k u): relative error bound of k float32 roundings (Higham)."""
  return k * U32 / (1 - k * U32)


def model_config(**kw):
  base = dict(name='vae', encoder='mlp', decoder='mlp', hidden=(16,), conv_widths=(4, 8),
              conv_hidden=0, latent_dim=3, activation='relu', likelihood='bernoulli',
              gaussian_variance='fixed', gaussian_std=0.1, min_std=1e-3, resolution=16,
              channels=1, num_classes=0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def tiny(kind='vae', tfds_dir='', **overrides):
  cfg = (vae_configs if kind == 'vae' else cvae_configs).get_config('tiny')
  cfg.data.data_dir = tfds_dir
  return set_fields(cfg, overrides)


@pytest.mark.parametrize('enc,dec', [('mlp', 'mlp'), ('conv', 'conv'), ('conv', 'mlp')])
@pytest.mark.parametrize('num_classes', [0, 10])
def test_shapes_and_conditioning(enc, dec, num_classes):
  c = model_config(encoder=enc, decoder=dec, num_classes=num_classes,
                   name='cvae' if num_classes else 'vae')
  model = vae_models.make_vae(c)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 1))
  y = jnp.array([0, 1, 2, 3]) if num_classes else None
  params = model.init(jax.random.PRNGKey(1), x, y)
  mu, logvar = model.apply(params, x, y, method=model.encode)
  assert mu.shape == logvar.shape == (4, 3)
  loc, lv = model.apply(params, mu, y, method=model.decode)
  assert loc.shape == (4, 16, 16, 1) and lv is None
  img = model.apply(params, mu, y, method=model.mean_image)
  assert float(img.min()) >= 0 and float(img.max()) <= 1
  if num_classes:  # Both networks see the label.
    y2 = (y + 5) % 10
    assert not np.allclose(model.apply(params, x, y, method=model.encode)[0],
                           model.apply(params, x, y2, method=model.encode)[0])
    assert not np.allclose(model.apply(params, mu, y, method=model.decode)[0],
                           model.apply(params, mu, y2, method=model.decode)[0])
    with pytest.raises(ValueError, match='pass labels'):
      model.apply(params, x, None, method=model.encode)


def test_gaussian_variances():
  x = jnp.full((2, 16, 16, 1), 0.5)
  for var, shape in (('fixed', ()), ('scalar', ()), ('pixel', (16, 16, 1))):
    c = model_config(likelihood='gaussian', gaussian_variance=var, gaussian_std=0.2)
    model = vae_models.make_vae(c)
    params = model.init(jax.random.PRNGKey(0), x)
    _, logvar = model.apply(params, jnp.zeros((2, 3)), method=model.decode)
    assert logvar.shape == shape
    if var == 'fixed':  # The float64 constant 2 log 0.2, rounded once to float32.
      assert logvar.dtype == jnp.float32 and float(logvar) == float(np.float32(2 * np.log(0.2)))
    else:  # Smooth floor at min_std^2 even for a very negative raw parameter.
      p = jax.tree.map(lambda a: a, params)
      p['params']['raw_logvar'] = jnp.full(shape, -1e3)
      _, lv = model.apply(p, jnp.zeros((2, 3)), method=model.decode)
      # logaddexp(-1000, 2 log 1e-3) = max + log1p(e^-986): the exponential underflows to 0
      # in float32, so the result is the floor 2 log(1e-3) (one float32 rounding) exactly.
      np.testing.assert_array_equal(np.asarray(lv), np.float32(2 * np.log(1e-3)))


@pytest.mark.parametrize('bad,match', [
    (dict(name='vq_vae'), 'Unknown VAE model'),
    (dict(latent_dim=0), 'latent_dim'),
    (dict(encoder='resnet'), 'model.encoder'),
    (dict(encoder='conv', conv_widths=(4, 8, 16, 32, 64)), 'divisible by 32'),
    (dict(likelihood='poisson'), 'model.likelihood'),
    (dict(likelihood='gaussian', gaussian_variance='learned'), 'gaussian_variance'),
    (dict(name='cvae', num_classes=0), 'num_classes >= 2'),
    (dict(num_classes=10), 'unconditional'),
    (dict(activation='swish2'), 'activation'),
])
def test_bad_model_configs(bad, match):
  with pytest.raises(ValueError, match=match):
    vae_models.make_vae(model_config(**bad))


def test_bad_run_configs():
  for overrides, match in ((dict(binarize='otsu'), 'binarize'),
                           ({'model.likelihood': 'gaussian'}, 'needs model.likelihood'),
                           (dict(dequantize=True), 'dequantize'),
                           ({'data.resolution': 32}, 'must equal'),
                           ({'optimizer.schedule': 'step'}, 'schedule'),
                           ({'eval.iwae_k': 0}, 'eval.iwae_k')):
    with pytest.raises(ValueError, match=match):
      loop.prepare(tiny(**overrides))
  with pytest.raises(ValueError, match='variant'):
    vae_configs.get_config('svhn')
  with pytest.raises(ValueError, match='labels'):
    cvae_configs.get_config('celeb_a')


def test_iwae_schedule():
  cfg = vae_configs.get_config('iwae')
  lr = optim.learning_rate(cfg.optimizer.lr, cfg.optimizer, cfg.num_steps, steps_per_epoch=10)
  ends = np.cumsum([3 ** i * 10 for i in range(8)])  # 10, 40, 130, ..., 32800 steps.
  assert ends[-1] == 32800  # Burda et al.'s 3,280 epochs of 10 steps
  expected = [1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4]
  starts = [0, *ends[:-1]]
  for i, value in enumerate(expected):
    # optax's piecewise constant: the float32 initial value times i float32 ratios
    # values[j + 1] / values[j], each ratio and product one rounding: gamma(2 i + 1); the
    # float64 1e-4 * round(...) differs from the literal by <= 2 float64 roundings.
    rtol = gamma32(2 * i + 1) + 2 * U64
    np.testing.assert_allclose(float(lr(starts[i])), value, rtol=rtol, atol=0)
    np.testing.assert_allclose(float(lr(ends[i] - 1)), value, rtol=rtol, atol=0)
  assert cfg.model.hidden == (200, 200) and cfg.model.latent_dim == 50
  assert cfg.batch_size == 20 and cfg.optimizer.eps == 1e-4 and cfg.num_epochs == 3280


def test_targets_binarization_and_dequantization():
  images = np.random.default_rng(0).uniform(-1, 1, size=(2000, 4, 4, 1)).astype(np.float32)
  x01 = (images + 1) / 2
  cfg = tiny()
  t = np.asarray(vae_targets.prepare_targets(cfg, jnp.asarray(images), jax.random.PRNGKey(0)))
  assert set(np.unique(t)) <= {0.0, 1.0}
  # Dynamic binarization: t ~ Bernoulli(p = x01), independently. mean(t - p) and
  # mean((t - p)(2p - 1)) have mean 0 and sd sqrt(sum p(1-p) w^2) / n (w = 1, 2p - 1): each
  # within norm.isf(P_FALSE / 2) = 4.9 sd (seed fixed). The second rejects a fixed threshold
  # (t = [p > 1/2]: 1/12 on uniform p, ~70 sd), checked below.
  def z_scores(targets):
    p = x01.astype(np.float64).ravel()
    d = targets.astype(np.float64).ravel() - p
    return [abs(np.mean(d * w)) / (np.sqrt(np.sum(p * (1 - p) * w ** 2)) / p.size)
            for w in (np.ones_like(p), 2 * p - 1)]
  k = stats.norm.isf(P_FALSE / 2)
  assert max(z_scores(t)) < k, z_scores(t)
  assert z_scores((x01 > 0.5).astype(np.float32))[1] > 10 * k
  # The fixed test binarization does not depend on how the split is batched.
  whole = vae_targets.EvalTargets(cfg)(images)
  parts = vae_targets.EvalTargets(cfg)
  np.testing.assert_array_equal(np.concatenate([parts(images[:7]), parts(images[7:])]), whole)
  assert not np.array_equal(whole, vae_targets.EvalTargets(tiny(**{'eval.binarize_seed': 1}))(images))
  soft = tiny(binarize='none')
  # (x + 1) * 0.5 and (x + 1) / 2: the same rounded sum, halved exactly: bitwise equal.
  np.testing.assert_array_equal(
      np.asarray(vae_targets.prepare_targets(soft, jnp.asarray(images), None)), x01)
  deq = tiny(binarize='none', dequantize=True, **{'model.likelihood': 'gaussian'})
  levels = np.round(x01 * 255)
  d = np.asarray(vae_targets.prepare_targets(deq, jnp.asarray(levels / 127.5 - 1), jax.random.PRNGKey(1)))
  # d = ((img + 1) * 0.5 * 255 + u) / 256 in float32 from img = L / 127.5 - 1 rounded to
  # float32 (|img| <= 1: <= 2^-25), + 1 (<= 2^-24 in [0, 2]), halved, so x01 within 3 2^-26;
  # times 255 (that error * 255, plus a rounding <= 2^-17 below 256), + u (<= 2^-17); / 256
  # exact. So d lies within tol of [L / 256, (L + 1) / 256].
  tol = (255 * 3 * 2.0 ** -26 + 2 * 2.0 ** -17) / 256
  assert np.all(d >= levels / 256 - tol) and np.all(d <= (levels + 1) / 256 + tol)
  frac = d * 256 - levels  # The uniform offsets: spread over [0, 1), not a constant.
  assert frac.min() < 0.01 and frac.max() > 0.99


def test_vae_run_end_to_end(tfds_dir, tmp_path):
  workdir = str(tmp_path / 'vae')
  cfg = tiny(tfds_dir=tfds_dir, num_steps=30, log_every=10, checkpoint_every=15, eval_every=0,
             **{'model.latent_dim': 2, 'optimizer.lr': 3e-3})
  state = loop.train_and_evaluate(cfg, workdir)
  assert int(state.step) == 30
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['15', '30']
  figures = set(os.listdir(os.path.join(workdir, 'figures')))
  assert {'reconstructions.png', 'interpolations.png', 'samples.png',
          'latent_grid.png'} <= figures
  assert os.path.exists(os.path.join(workdir, 'progress.png'))
  with open(os.path.join(workdir, 'eval.json')) as f:
    res = json.load(f)
  assert res['step'] == 30
  assert np.isfinite(res['test/elbo']) and res['test/kl'] >= 0
  # Per example elbo = log_lik - kl is one float32 rounding; with log_lik_i <= 0 and
  # kl_i >= 0, mean |elbo_i| <= |log_lik| + kl; each of the three float64 means (100
  # additions and a division) adds gamma64(101) of that.
  scale = abs(res['test/log_lik']) + res['test/kl']
  assert abs(res['test/elbo'] - (res['test/log_lik'] - res['test/kl'])) <= (
      U32 + 3 * 101 * U64 / (1 - 101 * U64)) * scale
  assert res['test/iwae'] > res['test/elbo']  # Tighter bound (k = 16) on 100 examples.
  # The final evaluation is over eval.max_examples = 100 test examples with final_iwae_k
  # importance samples: scoring the final weights that way gives the same numbers.
  from jaxgen.data import pipeline
  test_images, _ = pipeline.load_split_arrays(cfg.data, 'test', max_examples=100)
  assert len(test_images) == 100
  model = vae_models.make_vae(cfg.model)
  again = vae.evaluate_params(cfg, model, state.nets['vae']['params'], test_images,
                              iwae_k=cfg.eval.final_iwae_k)
  assert again['num_examples'] == 100 and again['iwae_k'] == cfg.eval.final_iwae_k == 16
  # The same function, arguments, keys and compiled programs: bitwise (and JSON round-trips
  # float64 exactly).
  for name in ('elbo', 'log_lik', 'kl', 'iwae'):
    assert res[f'test/{name}'] == again[name], (name, res[f'test/{name}'], again[name])
  train = [r for r in read_metrics(workdir) if 'elbo' in r]
  # Every log_every steps, and at each checkpoint (the engine checks the pending steps'
  # metrics for divergence before it saves).
  assert [r['step'] for r in train] == [10, 15, 20, 30]
  assert train[-1]['elbo'] > train[0]['elbo']  # It learns.
  # The decoder's pixel bias started at the logit of the mean training image.
  init_key = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
  params0 = vae.init_params(cfg, model, init_key, vae.output_bias(cfg))
  imgs, _ = pipeline.load_split_arrays(cfg.data, 'train')
  m = np.clip(((imgs + 1) / 2).mean(0), 1e-3, 1 - 1e-3)
  assert m.dtype == np.float32  # The same float32 mean as the family's (same numpy reduction).
  want = np.log(m / (1 - m))
  # Both are float32 logits of the same m: the family's log(m) - log1p(-m) costs ULP ulp per
  # log of |log m| + |log1p(-m)| and a rounding of the result; this one rounds 1 - m and the
  # division (gamma(2) relative in the log's argument, so absolute in the log) and the log
  # costs ULP ulp of the result.
  tol = (ULP * U32 * (np.abs(np.log(m)) + np.abs(np.log1p(-m))) + U32 * np.abs(want)
         + gamma32(2) + ULP * U32 * np.abs(want))
  assert np.all(np.abs(np.asarray(params0['decoder']['pixel_bias']) - want) <= tol)
  # Tools on the finished run.
  config, model, params, step = vae_tools.load_run(workdir)
  assert step == 30
  grid = vae_tools.latent_grid(config, model, params, n=5)
  assert grid.shape == (25, 16, 16, 1)
  with pytest.raises(ValueError, match='no classes'):
    vae_tools.generate(config, model, params, label=3)
  assert vae_tools.main(['evaluate', f'--workdir={workdir}', '--k=8', '--max-examples=20']) == 0
  assert vae_tools.main(['rerender', f'--workdir={workdir}']) == 2  # Not a CVAE: clear error.
  # A different architecture in the same workdir is refused before anything is written.
  with pytest.raises(ValueError, match='latent_dim'):
    loop.train_and_evaluate(tiny(tfds_dir=tfds_dir, **{'model.latent_dim': 5}), workdir)


def init_params(config, bias=None):
  """The weights the VAE family's init gives (first half of PRNGKey(seed))."""
  key = jax.random.split(jax.random.PRNGKey(config.seed))[0]
  return vae.init_params(config, vae_models.make_vae(config.model), key, bias)


def test_cvae_tools():
  """generate (a chosen class) and rerender (same style z, every class) on a CVAE."""
  config = tiny('cvae')
  model = vae_models.make_vae(config.model)
  params = init_params(config)
  samples = vae_tools.generate(config, model, params, label=7, num=6)
  assert samples.shape == (6, 16, 16, 1)
  images = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 1), minval=-1,
                                         maxval=1))
  labels = np.array([1, 5, 9])
  out = vae_tools.rerender(config, model, params, images, labels)
  assert out.shape == (3 * 11, 16, 16, 1)
  # Each row starts with the original ((x + 1) * 0.5 and (x + 1) / 2 are the same bits).
  np.testing.assert_array_equal(out[11], (images[1] + 1) / 2)
  # Column c of row i is the decoder mean at image i's style z (encoded with its label) as c.
  # (Encoded with the whole batch: a dynamically binarized batch draws its uniforms in order.)
  # The MLP decoder maps each row independently, so the same program (a batch of 3 x 10) with
  # that z and class in row 14 gives the same bits.
  z = vae_figures.encode_mean(config, model, params, images, labels)[1:2]
  same_shape = vae_figures.decode_mean(config, model, params, np.repeat(z, 30, 0),
                                       np.full(30, 4))
  np.testing.assert_array_equal(out[11 + 1 + 4], same_shape[14])
  assert not np.array_equal(out[11 + 1 + 4], out[11 + 1 + 5])  # Another class differs.
  grid = vae_tools.class_grid(config, model, params, num_styles=3)
  assert grid.shape == (30, 16, 16, 1)
  for bad in (10, -1, None):
    with pytest.raises(ValueError, match=r'\[0, 9\]'):
      vae_tools.generate(config, model, params, label=bad)
  with pytest.raises(ValueError, match='2-d latent'):
    vae_tools.latent_grid(config, model, params)


def test_cvae_run_end_to_end(tfds_dir, tmp_path):
  workdir = str(tmp_path / 'cvae')
  cfg = tiny('cvae', tfds_dir=tfds_dir, num_steps=10, eval_every=0)
  state = loop.train_and_evaluate(cfg, workdir)
  assert int(state.step) == 10 and set(state.nets) == {'vae'}
  assert {'class_grid.png', 'rerender.png'} <= set(os.listdir(os.path.join(workdir, 'figures')))
  with open(os.path.join(workdir, 'eval.json')) as f:
    res = json.load(f)
  assert res['step'] == 10 and np.isfinite(res['test/elbo']) and np.isfinite(res['test/iwae'])
  path = str(tmp_path / 'seven.png')
  assert vae_tools.main(['generate', f'--workdir={workdir}', '--label=7', f'--out={path}']) == 0
  assert os.path.exists(path)
  assert vae_tools.main(['rerender', f'--workdir={workdir}', '--num=3']) == 0
  assert vae_tools.main(['generate', f'--workdir={workdir}', '--label=12']) == 2


def test_initial_weights_are_a_function_of_the_seed():
  """The run is a function of the seed: another seed starts elsewhere."""
  cfg = tiny(**{'model.init_output_bias': False})
  cfg1 = ml_collections.ConfigDict(cfg.to_dict())
  cfg1.seed = 1
  a, again, b = init_params(cfg), init_params(cfg), init_params(cfg1)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert any(not np.allclose(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('kind,variant', [
    ('vae', 'binarized_mnist'),
    pytest.param('vae', 'iwae', marks=pytest.mark.slow),
    pytest.param('vae', 'mnist', marks=pytest.mark.slow),
    pytest.param('vae', 'fashion_mnist', marks=pytest.mark.slow),
    pytest.param('vae', 'celeb_a', marks=pytest.mark.slow),
    pytest.param('cvae', 'mnist_dynamic', marks=pytest.mark.slow),
])
def test_tfds_variants_run_on_mock_data(kind, variant, tmp_path):
  """The dataset variants train and evaluate end to end (TFDS mock data: no download)."""
  import tensorflow_datasets as tfds
  cfg = (vae_configs if kind == 'vae' else cvae_configs).get_config(variant)
  cfg.data.data_dir = str(tmp_path / 'tfds')
  cfg.model.hidden = (16,)
  cfg.model.conv_widths = (4,) * len(cfg.model.conv_widths)
  cfg.model.conv_hidden = 0
  cfg.model.latent_dim = 4
  cfg.batch_size = 8
  cfg.num_epochs = 0
  cfg.num_steps = 2
  cfg.eval_every = 0
  cfg.steps_per_dispatch = 2  # Both steps in one scanned dispatch.
  cfg.write_figures = False
  cfg.eval.update(dict(elbo_samples=1, final_iwae_k=2, iwae_chunk=2, batch_size=8,
                       max_examples=8))
  with tfds.testing.mock_data(num_examples=32):
    state = loop.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert int(state.step) == 2
  with open(tmp_path / 'run' / 'eval.json') as f:
    res = json.load(f)
  assert np.isfinite(res['test/elbo']) and np.isfinite(res['test/iwae'])


def test_scanned_steps_match_single_steps():
  """steps_per_dispatch: a lax.scan over the step function reproduces one call per step."""
  cfg = tiny()
  model, tx = vae_models.make_vae(cfg.model), vae.make_optimizer(cfg)
  state = vae.build(cfg, with_data=False).init(jax.random.PRNGKey(cfg.seed))
  step = vae.make_train_step(cfg, model, tx)
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 16, 16, 1), minval=-1, maxval=1)
  one = state
  for i in range(4):
    one, _ = jax.jit(step)(one, {'image': images[i]})
  scanned, metrics = jax.jit(lambda s, b: jax.lax.scan(step, s, b))(state, {'image': images})
  assert metrics['elbo'].shape == (4,) and int(scanned.step) == 4
  # The scan body is the same step computation on the same inputs, and XLA:CPU evaluates a
  # computation deterministically: bitwise (measured: it is). A step that read the wrong
  # batch or key would differ.
  for a, b in zip(jax.tree.leaves(one.nets['vae']['params']),
                  jax.tree.leaves(scanned.nets['vae']['params']), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(jax.tree.leaves(one.nets['vae']['params'])[0],
                            jax.tree.leaves(state.nets['vae']['params'])[0])
