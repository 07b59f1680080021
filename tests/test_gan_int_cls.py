"""GAN-INT-CLS: the matching-aware and GAN-INT losses by hand, the networks, Reed's four
variants end to end through the engine on tiny embedded shapes, the frozen text encoder,
imports of a frozen encoder with resume, the text-encoder run -> GAN-INT-CLS import end to end,
and precomputed embeddings."""
import os
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import gan_int_cls as gic_config
from experiments.configs import text_encoder as text_config
from jaxgen.data import embeddings, shapes
from jaxgen.engine import loop
from jaxgen.engine.writers import read_metrics
from jaxgen.families import base
from jaxgen.families import gan_int_cls
from jaxgen.losses import matching
from jaxgen.models import gan_int_cls as models
from tests import test_captions_data as tcd
from tests import test_text_encoder_family as tef
from tests.conftest import set_fields
from tests.test_engine import assert_bitwise_equal, leaves

TINY_SHAPES = shapes.JaxgenShapesConfig(
    resolution=16, split_sizes={'train': 32, 'test': 16, 'heldout': 8}, name='tiny16')


@pytest.fixture
def shapes_dir(tfds_dir, monkeypatch):
  """``tfds_dir`` with a 16x16 jaxgen_shapes of 32/16/8 examples, named 'tiny16'."""
  # A test-only builder config, named so that it survives config.json.
  monkeypatch.setitem(shapes.JaxgenShapes.builder_configs, 'tiny16', TINY_SHAPES)
  return tfds_dir


def tiny_config(data_dir, variant='gan_int_cls', **overrides):
  cfg = gic_config.get_config(f'{variant},tiny')
  cfg.data.data_dir = data_dir
  cfg.data.builder_config = 'tiny16'
  cfg.model.resolution = cfg.data.resolution = 16
  cfg.write_figures = False
  return set_fields(cfg, overrides)


# ---------------------------------------------------------------------------- losses


def _softplus(x):  # float64 reference: -log sigmoid(-x) = log(1 + e^x)
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def test_matching_aware_loss_against_hand_computation():
  sr, sf, sw = np.array([2.0, -1.0, 0.5]), np.array([-3.0, 0.2, 1.0]), np.array([0.0, 4.0, -2.])
  real = np.mean(_softplus(-sr))   # -log D(real, right)
  fake = np.mean(_softplus(sf))    # -log(1 - D(fake, right))
  wrong = np.mean(_softplus(sw))   # -log(1 - D(real, wrong))
  out = matching.matching_aware_d_loss(jnp.asarray(sr), jnp.asarray(sf), jnp.asarray(sw))
  # float32 softplus of O(1) inputs: a few ulp (~1e-7 relative) per term.
  np.testing.assert_allclose(out['loss'], real + 0.5 * (fake + wrong), rtol=1e-6)
  for k, v in {'real': real, 'fake': fake, 'wrong': wrong}.items():
    np.testing.assert_allclose(out[k], v, rtol=1e-6, err_msg=k)
  plain = matching.matching_aware_d_loss(jnp.asarray(sr), jnp.asarray(sf))
  np.testing.assert_allclose(plain['loss'], real + fake, rtol=1e-6)
  assert float(plain['wrong']) == 0.0
  g = matching.generator_loss(jnp.asarray(sf), jnp.asarray(sw), interp_weight=0.3)
  np.testing.assert_allclose(g['loss'], np.mean(_softplus(-sf)) + 0.3 * np.mean(_softplus(-sw)),
                             rtol=1e-6)


def test_losses_are_finite_at_saturated_logits():
  big = jnp.array([100.0, -100.0])  # sigmoid then log would give log(0) = -inf here
  out = matching.matching_aware_d_loss(big, big, big)
  g = matching.generator_loss(big, big)
  for v in (*out.values(), *g.values()):
    assert np.isfinite(float(v))
  np.testing.assert_allclose(out['real'], 50.0, rtol=1e-6)  # (0 + 100) / 2


def test_interpolation_and_mismatch():
  t = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  wrong = np.asarray(matching.mismatched(t))
  for i in range(4):
    np.testing.assert_array_equal(wrong[i], t[i - 1])
  for beta in (0.5, 0.25):
    mixed = np.asarray(matching.interpolate(t, beta))
    ref = np.stack([beta * t[i] + (1 - beta) * t[i - 1] for i in range(4)])
    np.testing.assert_allclose(mixed, ref, rtol=1e-6, atol=1e-7)  # one fma of O(1) values
  np.testing.assert_array_equal(matching.interpolate(t, 1.0), t)
  with pytest.raises(ValueError, match='at least 2'):
    matching.mismatched(t[:1])


def test_nearest_mismatch_against_brute_force():
  rng = np.random.default_rng(1)
  t = rng.normal(size=(12, 5)).astype(np.float32)
  t[3] = 2.0 * t[7] + 1e-3  # a near-copy of row 7 (cosine ~1): never each other's wrong caption
  unit = t / np.linalg.norm(t, axis=1, keepdims=True)
  sim = unit @ unit.T
  for max_sim in (0.8, 0.3, 1.0):
    got = np.asarray(matching.nearest_mismatched(jnp.asarray(t), max_sim))
    for i in range(12):
      others = [j for j in range(12) if j != i and sim[i, j] <= max_sim]
      # Rows are picked whole; the choice (argmax of cosine) is checked by brute force. Ties
      # between candidates have probability 0 for Gaussian rows.
      j = max(others, key=lambda k: sim[i, k]) if others else (i - 1) % 12
      np.testing.assert_array_equal(got[i], t[j])
      assert j != i
  near = np.asarray(matching.nearest_mismatched(jnp.asarray(t), 0.8))
  assert not np.array_equal(near[3], t[7]) and not np.array_equal(near[7], t[3])
  # Nothing allowed (every other row above the ceiling): the roll by one.
  same = np.tile(t[:1], (4, 1))
  np.testing.assert_array_equal(matching.nearest_mismatched(jnp.asarray(same), 0.5),
                                matching.mismatched(jnp.asarray(same)))
  # No gradient flows through the choice; the chosen rows carry theirs (d/dt sum(t[pick]) =
  # how often each row is picked).
  grad = jax.grad(lambda x: jnp.sum(matching.nearest_mismatched(x, 0.8)))(jnp.asarray(t))
  picks = [int(np.flatnonzero((np.asarray(near) == t[k]).all(1)).size) for k in range(12)]
  np.testing.assert_array_equal(np.asarray(grad),
                                np.repeat(np.asarray(picks, np.float32)[:, None], 5, 1))
  assert np.array_equal(matching.wrong_captions(jnp.asarray(t), 'roll'), matching.mismatched(t))
  with pytest.raises(ValueError, match="accepted: roll, nearest"):
    matching.wrong_captions(jnp.asarray(t), 'hard')
  with pytest.raises(ValueError, match='in \\[-1, 1\\]'):
    matching.nearest_mismatched(jnp.asarray(t), 1.5)
  with pytest.raises(ValueError, match='at least 2'):
    matching.nearest_mismatched(jnp.asarray(t[:1]))


# ---------------------------------------------------------------------------- networks


def test_projection_term_is_reeds_logit_plus_a_bilinear_inner_product():
  rng = np.random.default_rng(2)
  x = jnp.asarray(np.tanh(rng.normal(size=(3, 16, 16, 3))), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 10)), jnp.float32)
  reed = models.Discriminator(16, 4, 8, projection=False)
  proj = models.Discriminator(16, 4, 8, projection=True)
  v = proj.init(jax.random.PRNGKey(0), x, t, train=False)
  shared = {k: w for k, w in v['params'].items() if k != 'text_inner'}
  base_vars = {**v, 'params': shared}

  def with_kernel(kernel):
    params = dict(v['params'], text_inner={'kernel': jnp.asarray(kernel, jnp.float32)})
    return np.asarray(proj.apply({**v, 'params': params}, x, t, train=False), np.float64)
  # A zero map adds nothing: exactly Reed's discriminator with the same weights.
  shape = v['params']['text_inner']['kernel'].shape  # (proj_dim, 4x4 feature width)
  assert shape == (8, 8)
  np.testing.assert_array_equal(with_kernel(np.zeros(shape)),
                                reed.apply(base_vars, x, t, train=False))
  # The added term is linear in the map: f(aA + bB) - f(0) = a (f(A) - f(0)) + b (f(B) - f(0)).
  # Float32 rounding of O(1) logits from sums of a few hundred terms: 1e-4 absolute.
  a_, b_ = rng.normal(size=shape), rng.normal(size=shape)
  zero = with_kernel(np.zeros(shape))
  np.testing.assert_allclose(with_kernel(2.0 * a_ - 0.5 * b_) - zero,
                             2.0 * (with_kernel(a_) - zero) - 0.5 * (with_kernel(b_) - zero),
                             atol=1e-4)
  assert not np.allclose(with_kernel(a_), zero)  # and it does depend on the caption's map
  with pytest.raises(ValueError, match='d_projection must be True or False'):
    models.check(ml_collections.ConfigDict(
        dict(gic_config.get_config('tiny').model.to_dict(), d_projection='yes')))


@pytest.mark.parametrize('resolution', [16, 32])
def test_network_shapes_and_text_dependence(resolution):
  cfg = gic_config.get_config('tiny').model
  cfg.resolution = resolution
  g, d = models.make_gan(cfg)
  s = models.make_style_encoder(cfg, 8)
  key = jax.random.PRNGKey(0)
  z, t = jax.random.normal(key, (3, cfg.latent_dim)), jax.random.normal(key, (3, 5))
  g_vars = g.init(key, z, t, train=False)
  x = g.apply(g_vars, z, t, train=False)
  assert x.shape == (3, resolution, resolution, 3)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  d_vars = d.init(key, x, t, train=False)
  logits = d.apply(d_vars, x, t, train=False)
  assert logits.shape == (3,)
  assert not np.allclose(logits, d.apply(d_vars, x, t[::-1], train=False))  # D reads t
  assert not np.allclose(x, g.apply(g_vars, z, t[::-1], train=False))       # G reads t
  assert s.apply(s.init(key, x, train=False), x, train=False).shape == (3, cfg.latent_dim)
  assert g_vars['params']['text_proj']['kernel'].shape == (5, cfg.proj_dim)


def test_config_variants_and_errors():
  for variant, switches in gic_config.SWITCHES.items():
    c = gic_config.get_config(variant)
    assert (c.cls, c.interp) == switches and c.model.resolution == 32
  paper = gic_config.get_config('gan_cls,paper')
  assert (paper.cls, paper.interp) == (True, False)
  # cpu32: the default 32x32 sizes, longer, with G's EMA and the second half's linear decay.
  cpu32, default = gic_config.get_config('gan_int_cls,cpu32'), gic_config.get_config('')
  assert cpu32.model == default.model and cpu32.batch_size == default.batch_size
  assert (cpu32.num_steps, cpu32.ema_decay) == (6000, 0.999)
  assert (cpu32.optimizer.schedule, cpu32.optimizer.decay_start_frac,
          cpu32.optimizer.final_lr_frac) == ('linear', 0.5, 0.0)
  assert paper.model.resolution == 64 and paper.text.char_cnn_rnn.embed_dim == 1024
  # The text fields and tokenizer fields are a text-encoder run's of the same argument.
  for variant, arg in [('gan_int_cls', 'char_cnn_rnn'), ('gan_cls,paper', 'char_cnn_rnn,paper'),
                       ('tiny', 'tiny'), ('gan,bilstm', 'bilstm'),
                       ('bilstm,tiny', 'bilstm,tiny')]:
    c, t = gic_config.get_config(variant), text_config.get_config(arg)
    assert c.text == t.text, variant
    for key in text_config.TOKENIZER[t.text.encoder]:
      assert c.data[key] == t.data[key], (variant, key)
  with pytest.raises(ValueError, match='accepted: gan, gan_cls'):
    gic_config.get_config('gan_xyz')
  for field, value, match in [
      ('text.encoder', 'gpt',
       "Unknown text.encoder 'gpt'; accepted: char_cnn_rnn, bilstm, precomputed"),
      ('text.char_cnn_rnn.width', 3, r"text.char_cnn_rnn has unknown fields \['width'\]"),
      ('data.tokenizer', 'word', "reads 'char' tokens, but data.tokenizer is 'word'"),
                              ('interp_beta', 1.5, 'interp_beta'),
                              ('wrong_captions', 'hard', 'accepted: roll, nearest'),
                              ('wrong_max_similarity', 2.0, 'wrong_max_similarity'),
                              ('model.resolution', 16, 'must equal data.resolution'),
                              ('batch_size', 1, 'batch_size must be >= 2')]:
    cfg = gic_config.get_config('tiny')
    if field == 'text.char_cnn_rnn.width':
      cfg.text.char_cnn_rnn.width = value  # not a field of the config: added, not set
    else:
      set_fields(cfg, {field: value})
    with pytest.raises(ValueError, match=match):
      gan_int_cls.validate(cfg)
  precomputed = set_fields(gic_config.get_config('tiny'), {'text.encoder': 'precomputed',
                                                           'data.embeddings_dir': '/x'})
  with pytest.raises(ValueError, match=r'data.embedding_dim \(the size .*got 0'):
    gan_int_cls.validate(precomputed)
  variant = gic_config.get_config('gan_int_cls,cpu32,counterfactual')
  gan_int_cls.validate(variant)
  assert variant.data.counterfactual == 'shape,colour'
  with variant.unlocked():
    variant.data.counterfactual = ''
  assert variant == gic_config.get_config('gan_int_cls,cpu32')
  counterfactual = {'data.counterfactual': 'shape'}
  with pytest.raises(ValueError, match='needs cls=True'):
    gan_int_cls.validate(set_fields(gic_config.get_config('gan_int,tiny'), counterfactual))
  with pytest.raises(ValueError, match='needs a text encoder'):
    gan_int_cls.validate(set_fields(precomputed, dict(counterfactual,
                                                      **{'data.embedding_dim': 4})))


def test_counterfactual_captions_are_every_other_wrong_caption():
  """With data.counterfactual, rows 0, 2, ... of the CLS term's wrong captions are the
  batch's counterfactual captions and the others Reed's (the roll); D's wrong term against a
  recomputation from the networks, and without the option the roll alone."""
  def family(counterfactual):
    cfg = set_fields(gic_config.get_config('gan_cls,tiny'),
                     {'data.counterfactual': counterfactual})
    config, module = loop.prepare(cfg)
    return config, module.build(config, with_data=False)
  config, fam = family('shape,colour')
  _, plain = family('')
  assert fam.batch_keys == ('image', 'caption_ids', 'caption_len', 'counterfactual_ids',
                            'counterfactual_len')
  _, discriminator, text = gan_int_cls.networks(config)
  captions = ['a small red circle at the top', 'a big blue square on the left',
              'a tiny green star in the middle', 'a huge pink cross at the bottom']
  changed = ['a small red square at the top', 'a big cyan square on the left',
             'a tiny green cross in the middle', 'a huge yellow cross at the bottom']
  ids, lengths = text.tokenizer.encode_batch(captions)
  cf_ids, cf_lengths = text.tokenizer.encode_batch(changed)
  r = config.model.resolution
  batch = {'image': jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, r, r, 3)),
                                jnp.float32),
           'caption_ids': jnp.asarray(ids), 'caption_len': jnp.asarray(lengths),
           'counterfactual_ids': jnp.asarray(cf_ids),
           'counterfactual_len': jnp.asarray(cf_lengths)}
  state = base.jit_init(fam, config.seed)()
  # D's weights moved off initialisation (where it barely reads the caption), so that the
  # wrong captions' difference shows far above float32 rounding.
  rng = np.random.default_rng(1)
  d_params = jax.tree.map(lambda x: x + 0.3 * jnp.asarray(rng.normal(size=x.shape), x.dtype),
                          state.nets['d']['params'])
  state = state.replace(nets=dict(state.nets, d=dict(state.nets['d'], params=d_params)))
  _, metrics = jax.jit(fam.train_step)(state, batch)
  _, plain_metrics = jax.jit(plain.train_step)(state, {k: batch[k] for k in plain.batch_keys})

  embed = lambda i, n: text.embed(base.variables(state.nets['text']), i, n)
  t, t_cf = embed(batch['caption_ids'], batch['caption_len']), embed(cf_ids, cf_lengths)
  rolled = jnp.roll(t, 1, axis=0)
  d = state.nets['d']

  def wrong_logits(wrong):  # D in training mode: BatchNorm on this pass's batch alone
    return np.asarray(base.apply_train(discriminator, d['params'], d['vars'],
                                       batch['image'], wrong)[0], np.float64)
  mixed = wrong_logits(jnp.stack([t_cf[0], rolled[1], t_cf[2], rolled[3]]))
  # float32 logits and losses in another order: a few ulps (1.2e-7 relative).
  np.testing.assert_allclose(metrics['d_wrong'], _softplus(mixed).mean(), rtol=2e-6)
  np.testing.assert_allclose(metrics['d_counterfactual'], _softplus(mixed[::2]).mean(),
                             rtol=2e-6)
  reed = _softplus(wrong_logits(rolled)).mean()
  np.testing.assert_allclose(plain_metrics['d_wrong'], reed, rtol=2e-6)
  assert 'd_counterfactual' not in plain_metrics
  assert abs(float(metrics['d_wrong']) - reed) > 1e-3  # not vacuous: the captions differ


# ---------------------------------------------------------------------------- training


@pytest.mark.parametrize('variant', [*gic_config.SWITCHES, 'gan_cls,nearest'])
def test_variant_trains_through_the_engine(variant, shapes_dir, tmp_path):
  nearest = variant.endswith(',nearest')
  variant = variant.removesuffix(',nearest')
  cfg = tiny_config(shapes_dir, variant, num_steps=3,
                    wrong_captions='nearest' if nearest else 'roll')
  workdir = str(tmp_path / variant)
  final = loop.train_and_evaluate(cfg, workdir)
  config, module = loop.prepare(cfg)
  init = base.jit_init(module.build(config), cfg.seed)()
  assert 'opt' not in final.nets['text']
  assert_bitwise_equal(final.nets['text'], init.nets['text'])  # frozen: never changes
  for name in ('g', 'd'):
    a, b = leaves(init.nets[name]['params']), leaves(final.nets[name]['params'])
    assert any(not np.array_equal(a[k], b[k]) for k in a), name
  records = [r for r in read_metrics(workdir) if 'finite' in r]
  assert [r['step'] for r in records] == [1, 2, 3]
  for r in records:
    assert r['finite'] == 1.0
    assert (r['d_wrong'] > 0) == cfg.cls and (r['g_interp'] > 0) == cfg.interp
  grid = os.path.join(workdir, 'samples', 'step_0000003.png')
  assert os.path.exists(grid)


def test_samples_follow_the_fixed_captions(shapes_dir, tmp_path):
  cfg = tiny_config(shapes_dir, num_steps=1)
  config, module = loop.prepare(cfg)
  family = module.build(config)
  state = base.jit_init(family, 0)()
  key = jax.random.PRNGKey(1)
  x = np.asarray(family.sample(state, key, 8))
  assert x.shape == (8, 16, 16, 3)
  # Sample i uses caption i mod 4: the same z with caption 0 reproduces sample 0 exactly.
  generator, _, text = gan_int_cls.networks(config)
  cond = gan_int_cls.tc.eval_captions(config, text, 4)
  t = gan_int_cls.tc.embed(text, state.nets['text'],
                           {k: jnp.asarray(v)[jnp.arange(8) % 4] for k, v in cond.items()})
  z = jax.random.normal(key, (8, config.model.latent_dim))
  np.testing.assert_array_equal(x, gan_int_cls.generate(generator, state.nets['g'], z, t))


# Five engine runs: 45 s on the loaded 2-core machine. The default suite keeps the same
# check for the style encoder (tests/test_style_encoder.py), which also imports frozen nets.
@pytest.mark.slow
def test_resume_with_imported_frozen_text_equals_uninterrupted_run(shapes_dir, tmp_path):
  src = str(tmp_path / 'text_src')  # Another run (other seed) whose 'text' is imported.
  source = loop.train_and_evaluate(tiny_config(shapes_dir, num_steps=1, seed=5), src)
  cfg = lambda n: tiny_config(shapes_dir, num_steps=n, checkpoint_every=1, text_from=src)
  full = loop.train_and_evaluate(cfg(2), str(tmp_path / 'full'))
  half = str(tmp_path / 'half')
  loop.train_and_evaluate(cfg(1), half)
  resumed = loop.train_and_evaluate(cfg(2), half)
  assert int(resumed.step) == 2
  assert_bitwise_equal(full, resumed)
  assert_bitwise_equal(resumed.nets['text'], source.nets['text'])  # imported, then frozen


def test_imports_the_text_net_of_a_text_encoder_run(shapes_dir, tmp_path):
  """The contract end to end: a text-encoder run (``text_encoder.py:tiny``) trains ``text``;
  a GAN-INT-CLS run (``gan_int_cls.py:tiny``: the same ``config.text`` and tokenizer) imports
  it with ``text_from=<that workdir>`` and keeps it frozen through its steps."""
  te_cfg = tef.tiny('char_cnn_rnn', shapes_dir, num_steps=2, checkpoint_every=2)
  with te_cfg.data.unlocked():  # the same 16x16 build as the GAN run
    te_cfg.data.builder_config, te_cfg.data.resolution = 'tiny16', 16
  te_dir = str(tmp_path / 'text_encoder')
  encoder = loop.train_and_evaluate(te_cfg, te_dir)
  cfg = tiny_config(shapes_dir, num_steps=2, text_from=te_dir)
  assert cfg.text == te_cfg.text
  config, module = loop.prepare(cfg)
  assert config.init_from.text == f'{te_dir}:text'
  fresh = base.jit_init(module.build(config, with_data=False), cfg.seed)()
  imported = encoder.nets['text']
  # Not vacuous: the GAN run's own (random) text net differs from the trained one.
  a, b = leaves(fresh.nets['text']['params']), leaves(imported['params'])
  assert a.keys() == b.keys() and any(not np.array_equal(a[k], b[k]) for k in a)
  gan = loop.train_and_evaluate(cfg, str(tmp_path / 'gan'))
  assert int(gan.step) == 2 and 'opt' not in gan.nets['text']
  a, b = leaves(fresh.nets['g']['params']), leaves(gan.nets['g']['params'])
  assert any(not np.array_equal(a[k], b[k]) for k in a)  # the GAN did train
  # Imported bit for bit, and unchanged by the GAN's steps (frozen).
  assert_bitwise_equal(gan.nets['text']['params'], imported['params'])
  assert_bitwise_equal(gan.nets['text']['vars'], imported['vars'])


def _flowers_with_embeddings(root, dim):
  """The Oxford-102 fixture of test_captions_data (train: class_00002, 4 images) and
  StackGAN-style pickles of [10, dim] caption embeddings for its train split."""
  manual = root / 'manual'
  n = 0
  for c in ('class_00001', 'class_00002'):
    for _ in range(4):
      n += 1
      tcd._jpeg(str(manual / 'jpg' / f'image_{n:05d}.jpg'), tcd._red_blue(24, 32))
      tcd._caption_file(str(manual / 'text_c10' / c / f'image_{n:05d}.txt'), 10, c)
  (manual / 'trainvalclasses.txt').write_text('class_00002\n')
  (manual / 'testclasses.txt').write_text('class_00001\n')
  names = [f'class_00002/image_{m:05d}' for m in range(5, 9)]
  table = [np.random.default_rng(m).normal(size=(10, dim)).astype(np.float32) for m in range(4)]
  emb = root / 'embeddings' / 'train'
  emb.mkdir(parents=True)
  for obj, name in ((table, embeddings.EMBEDDINGS_FILE), (names, embeddings.FILENAMES_FILE)):
    with open(emb / name, 'wb') as f:
      pickle.dump(obj, f, protocol=2)  # as StackGAN's Python 2 pickles
  return manual, root / 'embeddings'


def test_precomputed_embeddings_replace_the_text_network(tmp_path):
  manual, emb_dir = _flowers_with_embeddings(tmp_path, dim=6)
  cfg = tiny_config(str(tmp_path / 'tfds'), num_steps=2, batch_size=4)
  set_fields(cfg, {'text.encoder': 'precomputed', 'data.embedding_dim': 6,
                   'data.name': 'jaxgen_flowers_captions', 'data.builder_config': None,
                   'data.manual_dir': str(manual)})
  with pytest.raises(ValueError, match='data.embeddings_dir'):
    loop.prepare(cfg)
  cfg.data.embeddings_dir = str(emb_dir)
  config, module = loop.prepare(cfg)
  family = module.build(config)
  assert family.batch_keys == ('image', 'caption_embedding') and family.sample is None
  final = loop.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert set(final.nets) == {'g', 'd'}  # no text network
  records = [r for r in read_metrics(str(tmp_path / 'run')) if 'finite' in r]
  assert [r['finite'] for r in records] == [1.0, 1.0]
  # The step reads the embeddings: other embeddings, another update of D's text projection.
  state = base.jit_init(family, 0)()
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)), jnp.float32),
           'caption_embedding': jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
  step = jax.jit(family.train_step)
  a, _ = step(state, batch)
  b, _ = step(state, dict(batch, caption_embedding=-batch['caption_embedding']))
  key = "['params']['text_proj']['kernel']"
  assert not np.array_equal(leaves(a.nets['d'])[key], leaves(b.nets['d'])[key])
