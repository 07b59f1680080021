"""The DF-GAN family: config variants and errors, truncated sampling latents, and one set of
tiny engine runs (64x64, the smallest size of the paper's configs) checked against an
independent recomputation of the step from the networks (losses, MA-GP, Adam with betas (0, 0.9)),
against an interrupted and resumed run, and through the text-to-image sampling tool."""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from experiments.configs import dfgan as dfgan_config
from experiments.configs import text_encoder as text_config
from jaxgen import matching_probe, text_image_eval, text_to_image
from jaxgen.data import source
from jaxgen.engine import loop
from jaxgen.engine.writers import read_metrics
from jaxgen.families import base, dfgan
from jaxgen.families import text_conditioning as tc
from tests.conftest import set_fields
from tests.test_engine import assert_bitwise_equal, leaves

TINY_SPLITS = {'train': 8, 'test': 4, 'heldout': 4}


def tiny_config(data_dir, **overrides):
  cfg = dfgan_config.get_config('tiny')
  cfg.data.data_dir = data_dir
  cfg.data.split_sizes = dict(TINY_SPLITS)  # a 16-image build of jaxgen_shapes at 64x64
  cfg.write_figures = False
  return set_fields(cfg, overrides)


# ---------------------------------------------------------------------------- configs


def test_config_variants():
  cpu = dfgan_config.get_config('')
  assert cpu == dfgan_config.get_config('cpu')
  assert (cpu.model.resolution, cpu.model.g_width, cpu.batch_size) == (64, 8, 32)
  assert (cpu.optimizer.b1, cpu.optimizer.b2, cpu.optimizer.g_lr, cpu.optimizer.d_lr) == (
      0.0, 0.9, 1e-4, 4e-4)
  assert (cpu.ma_gp.k, cpu.ma_gp.p, cpu.truncation, cpu.trunc_rate) == (2.0, 6.0, True, 0.86)
  # The parameter counts the config's docstring states.
  nets = jax.eval_shape(dfgan.build(cpu, with_data=False).init, jax.random.PRNGKey(0)).nets
  counts = {n: base.count_params(nets[n]['params']) for n in ('g', 'd', 'text')}
  assert counts == {'g': 548_611, 'd': 224_724, 'text': 166_464}
  assert base.count_params(nets['d']['params']['head']) == 27_904
  for name, r in dfgan_config.RESOLUTION_VARIANTS.items():
    c = dfgan_config.get_config(name)
    assert c.model.resolution == c.data.resolution == r
  paper = dfgan_config.get_config('paper')
  assert (paper.model.resolution, paper.model.g_width, paper.model.d_width) == (256, 32, 32)
  assert (paper.text.encoder, paper.model.cond_dim, paper.model.latent_dim) == ('bilstm', 256,
                                                                                100)
  assert paper.text == text_config.get_config('bilstm,paper').text
  assert dfgan_config.get_config('paper,r64').model.resolution == 64
  cub, coco = dfgan_config.get_config('cub'), dfgan_config.get_config('coco')
  assert (cub.data.name, cub.data.builder_config, cub.batch_size) == (
      'jaxgen_cub_captions', 'bbox_crop', 32)
  assert cub.num_steps == 1300 * (8855 // 32) and coco.num_steps == 300 * (82783 // 32)
  assert (coco.data.name, coco.eval_reference_split, coco.eval_num_samples) == (
      'coco_captions', 'restval', 30_000)
  for c in (cpu, paper, cub, coco, dfgan_config.get_config('tiny')):
    dfgan.validate(c)  # every variant is a valid config
  cpu32 = dfgan_config.get_config('cpu32')
  assert (cpu32.model.resolution, cpu32.data.resolution, cpu32.model.g_width,
          cpu32.model.d_width, cpu32.batch_size, cpu32.num_steps) == (32, 32, 16, 16, 32, 12_000)
  dfgan.validate(cpu32)
  # cpu32,bilstm: the same run with the CPU bi-LSTM (words) in place of the char-CNN-RNN.
  bilstm = dfgan_config.get_config('cpu32,bilstm')
  dfgan.validate(bilstm)
  assert bilstm.text == text_config.get_config('bilstm,cpu64').text
  assert (bilstm.text.encoder, bilstm.data.tokenizer, bilstm.model.cond_dim) == (
      'bilstm', 'word', 128)
  assert bilstm.data.resolution == 32  # the images of the DF-GAN run, not the encoder's
  other = ('text', 'data', 'matching')  # matching: the encoder run's image network and loss
  same = {k: v for k, v in bilstm.to_dict().items() if k not in other}
  assert same == {k: v for k, v in cpu32.to_dict().items() if k not in other}
  for c, arg in ((cpu32, 'char_cnn_rnn,cpu'), (bilstm, 'bilstm,cpu64'), (paper, 'bilstm,paper')):
    enc = text_config.get_config(arg)
    assert (tuple(c.matching.image_features), c.matching.resolution, c.matching.loss.to_dict(),
            c.matching.weight) == (tuple(enc.image.features), enc.data.resolution,
                                   enc.loss.to_dict(), 0.0)
  # matching: only matching.weight changes (0: the paper).
  matching = dfgan_config.get_config('cpu32,matching')
  dfgan.validate(matching)
  assert matching.matching.weight == dfgan_config.MATCHING_WEIGHT == 0.1
  with matching.unlocked():
    matching.matching.weight = 0.0
  assert matching == cpu32
  assert dfgan_config.get_config('paper,bilstm').text == paper.text
  # Each option variant changes only its own field (off: '' or 0, the paper).
  for variant, field, on, off in (('counterfactual', 'data.counterfactual', 'shape,colour', ''),
                                  ('ema', 'ema_decay', 0.999, 0.0),
                                  ('mode_seeking', 'mode_seeking.weight', 1.0, 0.0),
                                  ('aux', 'aux_classifier.weight', 1.0, 0.0)):
    cfg = dfgan_config.get_config(f'cpu32,{variant}')
    dfgan.validate(cfg)
    get = lambda c: functools.reduce(getattr, field.split('.'), c)  # noqa: E731
    assert (get(cfg), get(cpu32)) == (on, off), variant
    assert set_fields(cfg, {field: off}) == cpu32, variant
  old = cpu32.to_dict()
  del old['mode_seeking']
  assert dfgan.mode_seeking_weight(ml_collections.ConfigDict(old)) == 0.0
  del old['aux_classifier']  # configs made before these options read as off
  assert dfgan.aux_weight(ml_collections.ConfigDict(old)) == 0.0
  assert dfgan.num_attributes(ml_collections.ConfigDict(old)) == 0
  with pytest.raises(ValueError, match='Unknown dfgan variant .*accepted: cpu, cpu32, bilstm'):
    dfgan_config.get_config('r16')


@pytest.mark.parametrize('field, value, match', [
    ('model.resolution', 16, 'dfgan cannot make 16x16 images; accepted resolutions: 32, 64'),
    ('data.resolution', 128, r'model.resolution \(64\) must equal data.resolution \(128\)'),
    ('model.cond_dim', 100, r'model.cond_dim \(100\) must equal the size of the sentence '
                            r'vectors, 16'),
    ('data.name', 'mnist', 'dfgan trains on a caption dataset'),
    ('ma_gp.k', -1.0, r'ma_gp.k must be a number >= 0 \(0 turns MA-GP off\); got -1.0'),
    ('ma_gp.p', 1.0, 'ma_gp.p must be a number >= 2'),
    ('optimizer.b1', 1.0, r'optimizer.b1 must be in \[0, 1\)'),
    ('optimizer.d_lr', 0.0, 'optimizer.d_lr must be positive'),
    ('batch_size', 1, 'batch_size must be >= 2; got 1'),
    ('truncation', 1, 'truncation must be True or False; got 1'),
    ('trunc_rate', 0.0, 'trunc_rate must be a positive number; got 0.0'),
    ('trunc_bound', -2.0, 'trunc_bound must be a positive number'),
    ('num_sample_captions', 0, 'num_sample_captions must be a positive integer'),
    ('text_scale', 0.0, 'text_scale must be a positive number; got 0.0'),
    ('ema_decay', 1.0, r'ema_decay must be a number in \[0, 1\) \(0: no EMA, the paper\); '
                       'got 1.0'),
    ('ema_decay', 'x', r'ema_decay must be a number in \[0, 1\)'),
    ('matching.weight', -1.0, r'matching.weight must be a number >= 0 \(0: off, the paper\)'),
    ('mode_seeking.weight', -1.0, r'mode_seeking.weight must be a number >= 0 \(0: off, '
                                  r'the paper\); got -1.0'),
    ('mode_seeking.weight', 'x', r'mode_seeking.weight must be a number >= 0'),
    ('aux_classifier.weight', -1.0, r'aux_classifier.weight must be a number >= 0 \(0: off, '
                                    r'the paper\); got -1.0'),
    ('aux_classifier.weight', True, r'aux_classifier.weight must be a number >= 0'),
    ('text.encoder', 'gpt', "Unknown text.encoder 'gpt'; accepted: char_cnn_rnn, bilstm"),
    ('data.counterfactual', 'size', 'data.counterfactual=.size.: accepted attributes are '
                                    'shape, colour'),
])
def test_bad_config_values_are_clear_errors(field, value, match):
  values = dfgan_config.get_config('tiny').to_dict()
  *path, name = field.split('.')
  node = values
  for key in path:
    node = node[key]
  node[name] = value  # any type (a ConfigDict would refuse some): the family must catch it
  cfg = ml_collections.ConfigDict(values)
  with pytest.raises(ValueError, match=match):
    dfgan.validate(cfg)


def test_text_from_and_precomputed_embeddings(tmp_path):
  cfg = set_fields(dfgan_config.get_config('tiny'), {'text_from': '/runs/te'})
  config, _ = loop.prepare(cfg)
  assert config.init_from.text == '/runs/te:text'
  pre = set_fields(dfgan_config.get_config('tiny'), {
      'text.encoder': 'precomputed', 'data.embedding_dim': 6, 'model.cond_dim': 6,
      'data.embeddings_dir': str(tmp_path)})
  config, module = loop.prepare(pre)
  family = module.build(config, with_data=False)
  assert family.batch_keys == ('image', tc.EMBEDDING_KEY) and family.sample is None
  assert set(jax.eval_shape(family.init, jax.random.PRNGKey(0)).nets) == {'g', 'd'}
  # Counterfactual captions must be embedded: refused with precomputed embeddings.
  with pytest.raises(ValueError, match='needs a text encoder'):
    dfgan.validate(set_fields(pre, {'data.counterfactual': 'shape'}))


# ---------------------------------------------------------------------------- latents


def test_truncated_latents_lie_within_the_threshold_and_follow_the_truncated_normal():
  cfg = dfgan_config.get_config('tiny')
  key, n = jax.random.PRNGKey(3), 4000
  z = np.asarray(dfgan.latents(cfg)(key, n))
  dim = cfg.model.latent_dim
  assert z.shape == (n, dim) and z.dtype == np.float32
  bound = np.float32(cfg.trunc_rate) * np.float32(cfg.trunc_bound)  # 0.86 * 2 = 1.72
  assert np.abs(z).max() <= bound
  law = stats.truncnorm(-cfg.trunc_bound, cfg.trunc_bound, scale=cfg.trunc_rate)
  # Kolmogorov-Smirnov on n * dim = 32,000 draws (fixed key): the law of the official
  # truncated_noise. Not vacuous: untruncated N(0, 1) draws exceed the bound and fail it.
  assert stats.kstest(z.ravel(), law.cdf).pvalue > 1e-3
  plain = np.asarray(jax.random.normal(key, (n, dim)))
  assert np.abs(plain).max() > bound
  assert stats.kstest(plain.ravel(), law.cdf).pvalue < 1e-6
  # Truncation off: the standard normal the training step uses.
  off = set_fields(dfgan_config.get_config('tiny'), {'truncation': False})
  np.testing.assert_array_equal(dfgan.latents(off)(key, n), plain)


# ---------------------------------------------------------------------------- training


def reference_terms(generator, discriminator, text, nets, batch, z, k, p):
  """The step's D terms, MA-GP and G gradient input, recomputed from the networks by hand:
  mismatched pairs by rolling the *images* (D is per-example, so this equals rolling the
  features), MA-GP with ``jax.grad`` and ``||g||^p`` through the square root."""
  s = tc.embed(text, nets['text'], batch)
  real = batch['image']
  fake = generator.apply({'params': nets['g']['params']}, z, s)

  def d_loss(d_params):
    logits = lambda x, sent: discriminator.apply({'params': d_params}, x, sent)
    real_l, fake_l = logits(real, s), logits(fake, s)
    mis_l = logits(jnp.roll(real, -1, axis=0), s)  # image i + 1 against sentence i
    gx, gs = jax.grad(lambda x, sent: jnp.sum(logits(x, sent)), argnums=(0, 1))(real, s)
    norm = jnp.sqrt(jnp.sum(gx ** 2, axis=(1, 2, 3)) + jnp.sum(gs ** 2, axis=1))
    terms = {'d_real': jnp.mean(jnp.maximum(0.0, 1.0 - real_l)),
             'd_fake': jnp.mean(jnp.maximum(0.0, 1.0 + fake_l)),
             'd_mismatch': jnp.mean(jnp.maximum(0.0, 1.0 + mis_l)),
             'ma_gp': k * jnp.mean(norm ** p)}
    total = terms['d_real'] + (terms['d_fake'] + terms['d_mismatch']) / 2 + terms['ma_gp']
    return total, dict(terms, d_loss=total)

  (_, terms), d_grads = jax.value_and_grad(d_loss, has_aux=True)(nets['d']['params'])
  return terms, d_grads, s


def reference_g(generator, discriminator, g_params, d_params_after, z, s):
  """G's loss through the updated D, and its gradient."""
  return jax.value_and_grad(lambda gp: -jnp.mean(discriminator.apply(
      {'params': d_params_after}, generator.apply({'params': gp}, z, s), s)))(g_params)


def adam_reference(p0, grads, lr, b1, b2, eps):
  """PyTorch's / optax's Adam in float64 numpy, one parameter, from a fresh state."""
  p, m, v = np.asarray(p0, np.float64), 0.0, 0.0
  out = []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    out.append(p)
  return out


def test_steps_through_the_engine_match_a_recomputation_and_resume_bitwise(tfds_dir, tmp_path):
  """Two steps: the uninterrupted run equals one stopped after step 1 and resumed; every
  logged term of both steps equals the recomputation on the same batch and noise; one D and
  one G parameter follow Adam(0, 0.9) over both steps; the text net stays frozen; ``sample``
  and the sampling tool draw 64x64 images from truncated latents."""
  # One sample grid, at the end (the grids' sampler is the one the tool below checks).
  cfg = lambda n: tiny_config(tfds_dir, num_steps=n, num_sample_snapshots=1)
  full_dir, half_dir = str(tmp_path / 'full'), str(tmp_path / 'half')
  full = loop.train_and_evaluate(cfg(2), full_dir)
  after_1 = loop.train_and_evaluate(cfg(1), half_dir)
  resumed = loop.train_and_evaluate(cfg(2), half_dir)
  assert int(resumed.step) == 2
  assert_bitwise_equal(full, resumed)
  assert os.path.exists(os.path.join(full_dir, 'samples', 'step_0000002.png'))

  config, module = loop.prepare(cfg(2))
  family = module.build(config)
  init = base.jit_init(family, config.seed)()
  assert 'opt' not in full.nets['text']
  assert_bitwise_equal(full.nets['text'], init.nets['text'])  # frozen: never changes
  generator, discriminator, text = dfgan.networks(config)
  data = source.make_dataset(config.data, config.data.split, config.batch_size,
                             seed=config.seed, start_step=0)
  records = {r['step']: r for r in read_metrics(full_dir) if 'finite' in r}
  assert sorted(records) == [1, 2]
  d_terms = jax.jit(functools.partial(reference_terms, generator, discriminator, text,
                                      k=config.ma_gp.k, p=config.ma_gp.p))
  g_ref = jax.jit(functools.partial(reference_g, generator, discriminator))
  d_leaf, g_leaf = "['features']['conv_img']['kernel']", "['to_rgb']['kernel']"
  d_grads, g_grads = [], []
  for before, after, step in ((init, after_1, 1), (after_1, full, 2)):
    batch = {k: jnp.asarray(v) for k, v in next(data).items() if k in (
        'image', *tc.TOKEN_KEYS)}
    z = jax.random.normal(jax.random.fold_in(before.rng, before.step),
                          (config.batch_size, config.model.latent_dim))
    terms, d_grad, s = d_terms(before.nets, batch, z)
    g_loss, g_grad = g_ref(before.nets['g']['params'], after.nets['d']['params'], z, s)
    terms['g_loss'] = g_loss
    for name, value in terms.items():
      # float32 on both sides in different but equivalent orders (rolled images vs rolled
      # features, grad vs vjp, ||g||^6 vs (||g||^2)^3): a few float32 ulps (2^-23 = 1.2e-7
      # relative) per term; MA-GP is O(1e-6) here, so the bound is relative only.
      np.testing.assert_allclose(records[step][name], value, rtol=1e-6, atol=0,
                                 err_msg=f'step {step}: {name}')
    assert records[step]['finite'] == 1.0
    d_grads.append(leaves(d_grad)[d_leaf])
    g_grads.append(leaves(g_grad)[g_leaf])

  opt = config.optimizer
  for net, leaf, lr, grads in (('d', d_leaf, opt.d_lr, d_grads), ('g', g_leaf, opt.g_lr, g_grads)):
    want = adam_reference(leaves(init.nets[net]['params'])[leaf], grads, lr, opt.b1, opt.b2,
                          opt.eps)
    for got_state, ref in zip((after_1, full), want):
      got = leaves(got_state.nets[net]['params'])[leaf]
      # float32 parameters of magnitude < 0.2 (ulp 1.5e-8) against a float64 reference: a
      # few ulps from optax's float32 arithmetic and the recomputed gradients' rounding
      # (Adam divides the gradient by its own size, so relative gradient errors stay
      # relative). A wrong beta moves the second update by a fraction of lr (1e-4, 4e-4).
      np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7, err_msg=net)
    moved = want[-1] - np.asarray(leaves(init.nets[net]['params'])[leaf], np.float64)
    assert np.abs(moved).max() > lr  # not vacuous: two updates of about lr each

  # Sample i: caption i mod 4 of the test split, truncated latents. The same images up to
  # float32 rounding (one computation compiled in two programs; images lie in [-1, 1]).
  draw = jax.jit(lambda nets, z, tokens: dfgan.generate(
      generator, nets['g'], z, tc.embed(text, nets['text'], tokens)))
  key = jax.random.PRNGKey(1)
  x = np.asarray(jax.jit(family.sample, static_argnums=2)(full, key, 8))
  cond = tc.eval_captions(config, text, config.num_sample_captions)
  tokens = {k: jnp.asarray(v)[jnp.arange(8) % 4] for k, v in cond.items()}
  np.testing.assert_allclose(x, draw(full.nets, dfgan.latents(config)(key, 8), tokens),
                             rtol=0, atol=1e-6)

  run = text_to_image.load(full_dir)
  assert run.model.resolution == 64 and run.step == 2
  grid = text_to_image.caption_grid(run, ['a small red circle at the top'], num=3)
  assert grid.shape == (1, 3, 64, 64, 3) and np.abs(grid).max() <= 1.0
  z = run.model.latents(jax.random.PRNGKey(0), 3)
  assert np.abs(np.asarray(z)).max() <= config.trunc_rate * config.trunc_bound
  tokens = tc.tokenize(text, ['a small red circle at the top'] * 3)
  # The family's latents and G, up to float32 rounding as above.
  np.testing.assert_allclose(grid[0], draw(full.nets, z, tokens), rtol=0, atol=1e-6)

  # The matching probe asks this D too. With the sentence's input weights of D's joint conv
  # zeroed, D cannot see the caption: every logit pair is equal, so every preference is
  # exactly 1/2 and every gap exactly 0.
  out = matching_probe.probe(run, num_images=8)
  assert (out['family'], out['cls'], out['interp'], out['step']) == ('dfgan', True, False, 2)
  for r in out['changes'].values():
    assert 0.0 <= r['preference'] <= 1.0 and np.isfinite(r['logit_gap'])
  d = run.nets['d']
  params = jax.tree.map(np.array, d['params'])
  joint = params['head']['joint_conv0']['kernel']  # [3, 3, 8 * width + cond_dim, 2 * width]
  assert joint.shape[2] == 8 * config.model.d_width + config.model.cond_dim
  joint[:, :, 8 * config.model.d_width:, :] = 0.0
  run.nets = dict(run.nets, d=dict(d, params=params))
  for r in matching_probe.probe(run, num_images=8)['changes'].values():
    assert r['preference'] == 0.5 and r['logit_gap'] == 0.0


def test_text_scale_multiplies_the_sentence_before_g_d_and_ma_gp(tmp_path):
  """One step with text_scale = 2 on embeddings e equals, bitwise, one step with scale 1 on
  2e (a power of two: the products are exact), and so does G's sampling path."""
  def built(scale):
    cfg = set_fields(dfgan_config.get_config('tiny'), {
        'text.encoder': 'precomputed', 'data.embedding_dim': 6, 'model.cond_dim': 6,
        'data.embeddings_dir': str(tmp_path), 'text_scale': scale})
    config, module = loop.prepare(cfg)
    return config, module.build(config, with_data=False)

  (c2, f2), (c1, f1) = built(2.0), built(1.0)
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(-1, 1, (4, 64, 64, 3)), jnp.float32)
  e = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  init = base.jit_init(f1, c1.seed)()
  out2 = jax.jit(f2.train_step)(init, {'image': image, tc.EMBEDDING_KEY: e})
  out1 = jax.jit(f1.train_step)(init, {'image': image, tc.EMBEDDING_KEY: 2 * e})
  assert_bitwise_equal(out2, out1)
  # After the step: at initialisation DF-GAN's affine layers ignore the sentence (their
  # output weights start at zero, as the official code's).
  nets = out1[0].nets
  z = jax.random.normal(jax.random.PRNGKey(1), (4, c1.model.latent_dim))
  g2 = dfgan.text_to_image(c2).generate(nets, z, e)
  np.testing.assert_array_equal(g2, dfgan.text_to_image(c1).generate(nets, z, 2 * e))
  # Not vacuous: the scale changes what G draws.
  assert not np.array_equal(g2, dfgan.text_to_image(c1).generate(nets, z, e))


def counterfactual_batch(text, rng):
  """Four random 64x64 images with four captions and, for data.counterfactual, each caption
  with one object's shape or colour changed."""
  captions = ['a small red circle at the top', 'a big blue square on the left',
              'a tiny green star in the middle', 'a huge pink cross at the bottom']
  changed = ['a small red square at the top', 'a big cyan square on the left',
             'a tiny green cross in the middle', 'a huge yellow cross at the bottom']
  cf = tc.tokenize(text, changed)
  return {'image': jnp.asarray(rng.uniform(-1, 1, (4, 64, 64, 3)), jnp.float32),
          **{k: jnp.asarray(v) for k, v in tc.tokenize(text, captions).items()},
          'counterfactual_ids': jnp.asarray(cf['caption_ids']),
          'counterfactual_len': jnp.asarray(cf['caption_len'])}


def test_counterfactual_captions_are_half_of_the_mismatched_pairs():
  """With data.counterfactual, D's mismatch term is the mean of the paper's (rolled pairs)
  and of each real image against its counterfactual caption; every other term, and the step
  without the option, as the hand recomputation above."""
  cfg = set_fields(dfgan_config.get_config('tiny'), {'data.counterfactual': 'shape,colour'})
  config, module = loop.prepare(cfg)
  family = module.build(config, with_data=False)
  assert family.batch_keys == ('image', *tc.TOKEN_KEYS, *tc.COUNTERFACTUAL_KEYS)
  plain_config, _ = loop.prepare(dfgan_config.get_config('tiny'))
  plain = module.build(plain_config, with_data=False)
  generator, discriminator, text = dfgan.networks(config)
  rng = np.random.default_rng(0)
  batch = counterfactual_batch(text, rng)
  init = base.jit_init(family, config.seed)()
  # D's head reads the sentence only through weights that start at random values; to make
  # the sentences matter at step 0 as after training, use D weights moved off initialisation.
  d_params = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(rng.normal(size=x.shape), x.dtype),
                          init.nets['d']['params'])
  state = init.replace(nets=dict(init.nets, d=dict(init.nets['d'], params=d_params)))
  _, metrics = jax.jit(family.train_step)(state, batch)
  _, plain_metrics = jax.jit(plain.train_step)(state, {k: batch[k] for k in plain.batch_keys})

  z = jax.random.normal(jax.random.fold_in(state.rng, state.step),
                        (4, config.model.latent_dim))
  terms, _, s = jax.jit(functools.partial(reference_terms, generator, discriminator, text,
                                          k=config.ma_gp.k, p=config.ma_gp.p))(
                                              state.nets, batch, z)
  s_cf = tc.embed(text, state.nets['text'], {'caption_ids': batch['counterfactual_ids'],
                                             'caption_len': batch['counterfactual_len']})
  cf_logits = discriminator.apply({'params': d_params}, batch['image'], s_cf)
  counterfactual = float(jnp.mean(jnp.maximum(0.0, 1.0 + cf_logits)))
  mismatch = 0.5 * (float(terms['d_mismatch']) + counterfactual)
  want = dict(terms, d_mismatch=mismatch, d_counterfactual=counterfactual,
              d_loss=float(terms['d_real']) + 0.5 * (float(terms['d_fake']) + mismatch)
              + float(terms['ma_gp']))
  for name, value in want.items():
    # float32, the same operations in another order: a few ulps (1.2e-7 relative) per term.
    np.testing.assert_allclose(float(metrics[name]), float(value), rtol=2e-6, atol=0,
                               err_msg=name)
  # Without the option: the paper's mismatch term alone (the rolled pairs).
  np.testing.assert_allclose(float(plain_metrics['d_mismatch']), float(terms['d_mismatch']),
                             rtol=2e-6, atol=0)
  assert 'd_counterfactual' not in plain_metrics
  # Not vacuous: the counterfactual pairs score differently from the rolled ones.
  assert abs(counterfactual - float(terms['d_mismatch'])) > 1e-3


def test_ema_of_g_follows_its_weights_and_is_what_samples():
  """With ema_decay = d, after every step g['ema'] = d * ema + (1 - d) * params (float64
  recurrence from the initial weights); training itself is bitwise that of the run without
  the average; sampling reads the average, not the trained weights; the two runs' saved
  structures differ (no resuming one as the other)."""
  def built(decay, tmp):
    cfg = set_fields(dfgan_config.get_config('tiny'), {
        'text.encoder': 'precomputed', 'data.embedding_dim': 6, 'model.cond_dim': 6,
        'data.embeddings_dir': tmp, 'ema_decay': decay})
    config, module = loop.prepare(cfg)
    return config, module.build(config, with_data=False)

  decay = 0.75  # far from 1, so that two steps move the average by a visible amount
  (c_ema, f_ema), (c_plain, f_plain) = built(decay, '/unused'), built(0.0, '/unused')
  rng = np.random.default_rng(0)
  batches = [{'image': jnp.asarray(rng.uniform(-1, 1, (4, 64, 64, 3)), jnp.float32),
              tc.EMBEDDING_KEY: jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
             for _ in range(2)]
  state = base.jit_init(f_ema, c_ema.seed)()
  plain = base.jit_init(f_plain, c_plain.seed)()
  assert 'ema' not in plain.nets['g']
  assert_bitwise_equal(state.nets['g']['ema'], state.nets['g']['params'])
  step_ema, step_plain = jax.jit(f_ema.train_step), jax.jit(f_plain.train_step)
  want = {k: np.asarray(v, np.float64) for k, v in leaves(state.nets['g']['params']).items()}
  for batch in batches:
    state, metrics = step_ema(state, batch)
    plain, plain_metrics = step_plain(plain, batch)
    # The average is never read by the step: the same losses and weights, bit for bit.
    assert_bitwise_equal(state.nets['g']['params'], plain.nets['g']['params'])
    assert_bitwise_equal(state.nets['d'], plain.nets['d'])
    assert_bitwise_equal(metrics, plain_metrics)
    params = leaves(state.nets['g']['params'])
    got = leaves(state.nets['g']['ema'])
    for name, p in params.items():
      p = np.asarray(p, np.float64)
      want[name] = decay * want[name] + (1 - decay) * p
      # optax.incremental_update in float32: two products and a sum of values no larger than
      # the weights, each rounded once, after the previous step's rounding: a few ulps
      # (2^-24 relative) of the largest weight involved; 8 ulps bound two steps of it.
      bound = 8 * 2.0 ** -24 * np.maximum(np.abs(p), np.abs(want[name])) + 1e-30
      assert np.all(np.abs(np.asarray(got[name], np.float64) - want[name]) <= bound), name
  moved = [np.abs(want[n] - np.asarray(params[n], np.float64)).max() for n in params]
  assert max(moved) > 1e-5  # not vacuous: the average lags the trained weights

  generator, _, _ = dfgan.networks(c_ema)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, c_ema.model.latent_dim))
  e = batches[0][tc.EMBEDDING_KEY]
  drawn = dfgan.text_to_image(c_ema).generate(state.nets, z, e)
  g = state.nets['g']
  np.testing.assert_array_equal(
      drawn, generator.apply({'params': g['ema'], **g['vars']}, z, e))
  assert not np.array_equal(drawn, generator.apply({'params': g['params'], **g['vars']}, z, e))
  # The average is part of the saved state: a run with it is not resumed without it.
  assert dfgan.structure(c_ema)['ema_decay_enabled'] is True
  assert dfgan.structure(c_plain)['ema_decay_enabled'] is False
  # Configs written before the option (no ema_decay field) are runs without the average.
  old = c_plain.to_dict()
  del old['ema_decay']
  assert dfgan.structure(ml_collections.ConfigDict(old)) == dfgan.structure(c_plain)


def _softmax_ce_rows(scores, extra=None):
  """Mean over rows of -log softmax(row)[i] in float64 (``extra``: one more column per row)."""
  full = scores if extra is None else np.concatenate([scores, extra[:, None]], axis=1)
  top = full.max(axis=1, keepdims=True)
  log_z = np.log(np.exp(full - top).sum(axis=1)) + top[:, 0]
  return float(np.mean(log_z - np.diag(scores)))


def test_matching_loss_adds_the_encoders_own_loss_on_g_images():
  """matching.weight = w: g_loss = g_adv + w * g_matching; g_matching is the caption encoder's
  joint-embedding loss (softmax, inner products) of E(fake resized to E's size) against the
  unscaled sentences with the counterfactual captions as hard negatives, recomputed in
  float64; G's first update is Adam's step on the gradient of that total; D's update and E
  and the text net do not depend on w."""
  cfg = set_fields(dfgan_config.get_config('tiny,matching,counterfactual'),
                   {'matching.weight': 0.5, 'text_scale': 2.0})
  dfgan.validate(cfg)
  assert (cfg.model.resolution, cfg.matching.resolution) == (64, 32)  # the resize path
  family = dfgan.build(cfg, with_data=False)
  plain_cfg = set_fields(dfgan_config.get_config('tiny,counterfactual'), {'text_scale': 2.0})
  plain = dfgan.build(plain_cfg, with_data=False)
  generator, discriminator, text = dfgan.networks(cfg)
  image = dfgan.image_net(cfg)
  assert dfgan.image_net(plain_cfg) is None
  rng = np.random.default_rng(0)
  batch = counterfactual_batch(text, rng)
  init = base.jit_init(family, cfg.seed)()
  assert 'opt' not in init.nets['image'] and 'opt' not in init.nets['text']  # both frozen
  # The scores' parameter column counts the model that draws, not the encoder's networks.
  assert set(text_image_eval.parameter_counts(init.nets)) == {'g', 'd'}
  state, metrics = jax.jit(family.train_step)(init, batch)
  plain_init = init.replace(nets={k: v for k, v in init.nets.items() if k != 'image'})
  plain_state, plain_metrics = jax.jit(plain.train_step)(plain_init, batch)
  assert_bitwise_equal(state.nets['image'], init.nets['image'])
  assert_bitwise_equal(state.nets['d'], plain_state.nets['d'])  # D's step ignores E
  assert 'g_matching' not in plain_metrics

  nets = init.nets
  phi = tc.embed(text, nets['text'], batch)
  phi_cf = tc.embed(text, nets['text'], tc.counterfactual_tokens(batch))
  z = jax.random.normal(jax.random.fold_in(init.rng, init.step), (4, cfg.model.latent_dim))
  d_after = {'params': state.nets['d']['params']}

  def g_total(g_params, weight):
    fake = generator.apply({'params': g_params}, z, 2.0 * phi)
    adv = -jnp.mean(discriminator.apply(d_after, fake, 2.0 * phi))
    small = jax.image.resize(fake, (4, 32, 32, 3), 'linear', antialias=True)
    v = image.apply({'params': nets['image']['params']}, small)
    scores = v @ phi.T
    hard = jnp.sum(v * phi_cf, axis=1)
    rows = jax.nn.logsumexp(jnp.concatenate([scores, hard[:, None]], 1), 1) - jnp.diag(scores)
    cols = jax.nn.logsumexp(scores, 0) - jnp.diag(scores)
    match = jnp.mean(rows) + jnp.mean(cols)
    return adv + weight * match, (adv, match, v)

  (_, (adv, match, v)), grad = jax.value_and_grad(g_total, has_aux=True)(
      nets['g']['params'], 0.5)
  v64, phi64, cf64 = (np.asarray(a, np.float64) for a in (v, phi, phi_cf))
  s64 = v64 @ phi64.T
  want = _softmax_ce_rows(s64, np.sum(v64 * cf64, axis=1)) + _softmax_ce_rows(s64.T)
  # float32 embeddings (16-d inner products, log-sum-exp of 5 terms) against float64: the
  # bound of the losses' own tests, 1e-5 relative.
  np.testing.assert_allclose(float(metrics['g_matching']), want, rtol=1e-5)
  np.testing.assert_allclose(float(match), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['g_adv']), float(adv), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(metrics['g_loss']),
                             float(metrics['g_adv']) + 0.5 * float(metrics['g_matching']),
                             rtol=1e-6)
  np.testing.assert_allclose(float(plain_metrics['g_loss']), float(metrics['g_adv']),
                             rtol=1e-6, atol=1e-7)
  # G's first update: Adam(0, 0.9) of the total's gradient. Adam's first step is
  # -lr * g / (|g| + eps), so the check is mostly on the gradient's sign, element by element.
  leaf = "['to_rgb']['kernel']"
  g_leaf = leaves(grad)[leaf]
  opt = cfg.optimizer
  ref = adam_reference(leaves(nets['g']['params'])[leaf], [g_leaf], opt.g_lr, opt.b1, opt.b2,
                       opt.eps)[0]
  np.testing.assert_allclose(leaves(state.nets['g']['params'])[leaf], ref, rtol=0, atol=1e-7)
  # Not vacuous: the matching term flips the sign of some of G's gradient entries (about 5 %
  # of this kernel here), where the Adam check above would fail without it.
  _, adv_grad = jax.value_and_grad(g_total, has_aux=True)(nets['g']['params'], 0.0)
  flipped = np.sign(leaves(adv_grad)[leaf]) != np.sign(g_leaf)
  assert flipped.sum() >= 5
  assert not np.array_equal(leaves(state.nets['g']['params'])[leaf],
                            leaves(plain_state.nets['g']['params'])[leaf])


def test_matching_loss_needs_a_trained_encoder_run():
  cfg = dfgan_config.get_config('tiny,matching')
  with pytest.raises(ValueError, match='matching.weight > 0 scores G.s images with the image '
                                       'network of a trained text-encoder run: set text_from'):
    loop.prepare(cfg)
  cfg = set_fields(dfgan_config.get_config('tiny,matching'), {'text_from': '/runs/enc:text'})
  dfgan.resolve(cfg)
  assert (cfg.init_from.text, cfg.init_from.image) == ('/runs/enc:text', '/runs/enc:image')
  cfg = set_fields(dfgan_config.get_config('tiny,matching'), {'text_from': '/runs/enc'})
  dfgan.resolve(cfg)
  assert (cfg.init_from.text, cfg.init_from.image) == ('/runs/enc:text', '/runs/enc:image')
  assert dfgan.structure(cfg)['matching.image_features'] == [8, 8]
  assert 'matching.image_features' not in dfgan.structure(dfgan_config.get_config('tiny'))


def test_mode_seeking_term_penalises_equal_images_for_two_latents():
  """mode_seeking.weight = w: G runs on (z, s) and (z', s); g_mode_seeking is MSGAN's
  1 / (mean|G(z', s) - G(z, s)| / mean|z' - z| + 1e-5), recomputed in float64 from G's
  initial weights; g_loss = g_adv + w * g_mode_seeking; D's update is the run's without the
  term (it sees only the first half)."""
  cfg = set_fields(dfgan_config.get_config('tiny'), {'mode_seeking.weight': 0.5})
  config, module = loop.prepare(cfg)
  family = module.build(config, with_data=False)
  plain_config, _ = loop.prepare(dfgan_config.get_config('tiny'))
  plain = module.build(plain_config, with_data=False)
  assert 'g_mode_seeking' in family.progress_keys and 'g_mode_seeking' not in plain.progress_keys
  generator, discriminator, text = dfgan.networks(config)
  batch = counterfactual_batch(text, np.random.default_rng(0))
  init = base.jit_init(family, cfg.seed)()
  state, metrics = jax.jit(family.train_step)(init, batch)
  plain_state, plain_metrics = jax.jit(plain.train_step)(init, batch)
  key = jax.random.fold_in(init.rng, init.step)
  z = jax.random.normal(key, (4, config.model.latent_dim))
  z2 = jax.random.normal(jax.random.fold_in(key, 1), (4, config.model.latent_dim))
  phi = tc.embed(text, init.nets['text'], batch)
  g_vars = {'params': init.nets['g']['params']}
  f1, f2 = (np.asarray(generator.apply(g_vars, zz, phi), np.float64) for zz in (z, z2))
  lz = np.mean(np.abs(f2 - f1)) / np.mean(np.abs(np.asarray(z2, np.float64) - np.asarray(z)))
  want = 1.0 / (lz + 1e-5)
  # Two float32 means of |differences| (4 * 64 * 64 * 3 and 4 * 8 terms, pairwise summed) and
  # a quotient: a relative error of a few float32 ulps; G's own outputs differ from the
  # float64 recomputation of the same float32 network by its rounding only (they are the same
  # float32 computation), so 1e-5 relative is loose.
  np.testing.assert_allclose(float(metrics['g_mode_seeking']), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['g_loss']),
                             float(metrics['g_adv']) + 0.5 * want, rtol=1e-5)
  # The term is MSGAN's formula (a direct check of the helper on arrays).
  a, b = np.full((2, 3), 0.5), np.zeros((2, 3))
  za, zb = np.ones((2, 4)), np.zeros((2, 4))
  np.testing.assert_allclose(float(dfgan.mode_seeking_term(a, b, za, zb)), 1 / (0.5 + 1e-5),
                             rtol=1e-6)
  # D's step sees the same fakes as without the term: G on twice the batch gives the first
  # half's images up to the float32 rounding of another batch size (the hinge terms on them
  # agree to a few ulps of float32), and the same real pairs (those terms are bitwise equal).
  # D's weights are not compared: Adam's first step is lr * sign(g) wherever |g| >> eps, so a
  # rounding-sized change of a near-zero gradient entry can move a weight by 2 * lr.
  for term in ('d_real', 'd_mismatch', 'ma_gp'):
    assert float(metrics[term]) == float(plain_metrics[term]), term
  np.testing.assert_allclose(float(metrics['d_fake']), float(plain_metrics['d_fake']), rtol=1e-5)
  # G's update differs (the term has a gradient).
  assert not all(np.array_equal(w, leaves(plain_state.nets['g']['params'])[n])
                 for n, w in leaves(state.nets['g']['params']).items())


# ---------------------------------------------------------------- attribute classifier


def _bce(logits, targets):
  """Sigmoid cross-entropy in float64, stable form: max(x, 0) - x * y + log(1 + exp(-|x|))."""
  x, y = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
  return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


def test_attribute_targets_are_the_images_shapes_and_colours():
  shape = np.array([[0, -1], [3, 3], [5, 1]])   # one object; two of one shape; two shapes
  colour = np.array([[7, -1], [2, 4], [0, 0]])
  want = np.zeros((3, 6 + 8))
  for row, (ss, cc) in enumerate(zip(shape, colour)):
    for v in ss[ss >= 0]:
      want[row, v] = 1
    for v in cc[cc >= 0]:
      want[row, 6 + v] = 1
  got = dfgan.attribute_targets(jnp.asarray(shape), jnp.asarray(colour), 6, 8)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert want.sum() == 2 + 3 + 3  # not vacuous: 1 + 1 labels, 1 + 2, 2 + 1


def test_aux_classifier_terms_against_a_float64_recomputation():
  """aux_classifier.weight = w: D's head is one linear layer on its flattened 4x4 features;
  d_aux is the sigmoid cross-entropy of that head on the *real* images against their
  multi-hot shapes and colours, g_aux the same of the fakes through the updated D (the
  captions' labels); d_loss and g_loss add w times each; every other D term equals the run
  without the option, whose D has the same weights but no head."""
  w = 0.5
  cfg = set_fields(dfgan_config.get_config('tiny'), {'aux_classifier.weight': w})
  config, module = loop.prepare(cfg)
  family = module.build(config, with_data=False)
  assert family.batch_keys == ('image', *tc.TOKEN_KEYS, *dfgan.AUX_KEYS)
  assert 'g_aux' in family.progress_keys
  plain_config, _ = loop.prepare(dfgan_config.get_config('tiny'))
  plain = module.build(plain_config, with_data=False)
  assert 'g_aux' not in plain.progress_keys
  generator, discriminator, text = dfgan.networks(config)
  rng = np.random.default_rng(0)
  batch = dict(counterfactual_batch(text, rng),
               object_shape=jnp.asarray([[0, -1], [1, 4], [3, -1], [4, 4]], jnp.int32),
               object_colour=jnp.asarray([[0, -1], [2, 6], [1, -1], [6, 3]], jnp.int32))
  targets = np.asarray(dfgan.attribute_targets(batch['object_shape'], batch['object_colour'],
                                               6, 8))
  init = base.jit_init(family, config.seed)()
  head = init.nets['d']['params']['attributes']
  assert head['kernel'].shape == (4 * 4 * 8 * config.model.d_width, 14)
  state, metrics = jax.jit(family.train_step)(init, batch)
  without_head = dict(init.nets['d'], params={k: v for k, v in init.nets['d']['params'].items()
                                              if k != 'attributes'})
  plain_init = base.jit_init(plain, config.seed)()
  plain_state = plain_init.replace(nets=dict(init.nets, d=dict(
      without_head, opt=plain_init.nets['d']['opt'])))
  _, plain_metrics = jax.jit(plain.train_step)(plain_state, {k: batch[k]
                                                             for k in plain.batch_keys})

  def head_bce(d_params, images):
    features = discriminator.apply({'params': d_params}, images, method='features')
    f = np.asarray(features, np.float64).reshape(len(images), -1)
    p = d_params['attributes']
    logits = f @ np.asarray(p['kernel'], np.float64) + np.asarray(p['bias'], np.float64)
    return _bce(logits, targets)

  d_aux = head_bce(init.nets['d']['params'], batch['image'])
  z = jax.random.normal(jax.random.fold_in(init.rng, init.step), (4, config.model.latent_dim))
  s = tc.embed(text, init.nets['text'], batch)
  fake = generator.apply({'params': init.nets['g']['params']}, z, s)
  g_aux = head_bce(state.nets['d']['params'], fake)
  # float32 features and a float32 dot of 512 terms against a float64 recomputation of the
  # same float32 features: relative error of the dot ~ sqrt(512) ulps ~ 3e-6; 1e-5 relative.
  np.testing.assert_allclose(float(metrics['d_aux']), d_aux, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['g_aux']), g_aux, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['g_loss']), float(metrics['g_adv']) + w * g_aux,
                             rtol=1e-5)
  # D's other terms are untouched by the head (the same weights, the same operations).
  for term in ('d_real', 'd_fake', 'd_mismatch', 'ma_gp'):
    assert float(metrics[term]) == float(plain_metrics[term]), term
  np.testing.assert_allclose(float(metrics['d_loss']),
                             float(plain_metrics['d_loss']) + w * d_aux, rtol=1e-5)
  # G's loss without the term is the run's without the option, but through a D' whose
  # features moved with the head's gradient, so only the aux term is checked exactly above;
  # and the head's gradient did move D's feature weights relative to the plain run.
  plain_after, _ = jax.jit(plain.train_step)(plain_state, {k: batch[k] for k in plain.batch_keys})
  assert not np.array_equal(
      np.asarray(plain_after.nets['d']['params']['features']['conv_img']['kernel']),
      np.asarray(state.nets['d']['params']['features']['conv_img']['kernel']))


def test_aux_classifier_trains_through_the_engine_on_the_datasets_labels(tfds_dir, tmp_path):
  """The labels reach the step from the jaxgen_shapes pipeline: two engine steps log finite
  d_aux and g_aux near log 2 (a fresh head's logits are small); a caption set without the
  labels is a clear error."""
  cfg = tiny_config(tfds_dir, num_steps=2, **{'aux_classifier.weight': 1.0})
  loop.train_and_evaluate(cfg, str(tmp_path / 'run'))
  records = [r for r in read_metrics(str(tmp_path / 'run')) if 'finite' in r]
  assert [r['step'] for r in records] == [1, 2]
  for r in records:
    assert r['finite'] == 1.0
    for name in ('d_aux', 'g_aux'):
      # log 2 = 0.693 at logits 0; a fresh lecun-normal head on O(1) features gives logits of
      # O(1), so the mean cross-entropy lies well inside (0.3, 1.5).
      assert 0.3 < r[name] < 1.5, (name, r[name])
  bad = dfgan_config.get_config('tiny').to_dict()
  bad['aux_classifier']['weight'] = 1.0
  bad['data']['name'] = 'jaxgen_flowers_captions'
  with pytest.raises(ValueError, match='aux_classifier.weight > 0 needs per-object shape and '
                                       'colour labels, which only jaxgen_shapes stores'):
    dfgan.validate(ml_collections.ConfigDict(bad))
