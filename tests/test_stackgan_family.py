"""The StackGAN family end to end through the engine at widths 2-4: a stage-1 run, a stage-2 run
on it (Stage-I's G imported and frozen), resume, the step against an independent
recomputation of its losses and updates, config errors, and the text-to-image tool."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import stackgan as sg_config
from jaxgen import text_to_image
from jaxgen.engine import loop
from jaxgen.engine.writers import read_metrics
from jaxgen.families import base
from jaxgen.families import stackgan
from jaxgen.families import text_conditioning as tc
from jaxgen.losses import stackgan as losses
from tests.conftest import set_fields
from tests.test_engine import assert_bitwise_equal, leaves

SPLITS = {'train': 16, 'test': 4, 'heldout': 1}  # built once per session at 64 and 128
RED, BLUE = 'a small red circle at the top', 'a large blue square on the left'


def tiny(data_dir, stage, **overrides):
  """``stackgan.py:stage<stage>,tiny`` (Stage-II at 128) on a 21-image build, batch 4."""
  cfg = sg_config.get_config(f'stage{stage},tiny')
  with cfg.data.unlocked():
    cfg.data.data_dir, cfg.data.split_sizes = data_dir, dict(SPLITS)
  cfg.batch_size, cfg.num_grid_samples, cfg.num_sample_captions = 4, 4, 4
  cfg.num_sample_snapshots, cfg.write_figures = 1, False  # one grid, at the last step
  return set_fields(cfg, overrides)


@pytest.fixture(scope='module')
def runs(tfds_dir, tmp_path_factory):
  """A stage-1 run and a stage-2 run on it, 2 steps each."""
  root = tmp_path_factory.mktemp('stackgan_runs')
  s1_dir, s2_dir = str(root / 'stage1'), str(root / 'stage2')
  s1 = loop.train_and_evaluate(tiny(tfds_dir, 1, num_steps=2), s1_dir)
  s2 = loop.train_and_evaluate(tiny(tfds_dir, 2, num_steps=2, stage1_from=s1_dir), s2_dir)
  return {'root': root, 's1_dir': s1_dir, 's2_dir': s2_dir, 's1': s1, 's2': s2,
          'data_dir': tfds_dir}


def test_stage1_and_stage2_train_through_the_engine(runs):
  s1, s2 = runs['s1'], runs['s2']
  assert sorted(s1.nets) == ['d', 'g', 'text'] and sorted(s2.nets) == ['d', 'g', 'g1', 'text']
  for state, workdir, uncond in ((s1, runs['s1_dir'], False), (s2, runs['s2_dir'], True)):
    assert int(state.step) == 2
    records = [r for r in read_metrics(workdir) if 'finite' in r]
    assert [r['step'] for r in records] == [1, 2]
    for r in records:
      assert r['finite'] == 1.0 and r['kl'] > 0
      assert ('g_uncond' in r) == uncond  # Stage-II D's unconditional head
    assert os.path.exists(os.path.join(workdir, 'samples', 'step_0000002.png'))
    assert 'opt' in state.nets['g'] and 'opt' in state.nets['d']


def test_stage2_keeps_stage1_frozen(runs):
  s1, s2 = runs['s1'], runs['s2']
  for name, source in (('g1', 'g'), ('text', 'text')):
    assert 'opt' not in s2.nets[name]
    # Imported from the stage-1 run's last checkpoint, then unchanged by stage 2's steps.
    assert_bitwise_equal(s2.nets[name]['params'], s1.nets[source]['params'])
    assert_bitwise_equal(s2.nets[name]['vars'], s1.nets[source]['vars'])
  with open(os.path.join(runs['s2_dir'], 'config.json')) as f:
    saved = json.load(f)
  assert saved['init_from'] == {'g1': f'{runs["s1_dir"]}:g', 'text': f'{runs["s1_dir"]}:text'}
  assert saved['model']['resolution'] == 128 and saved['data']['resolution'] == 128


def test_stage2_resume_equals_an_uninterrupted_run(runs, tmp_path):
  cfg = lambda n: tiny(runs['data_dir'], 2, num_steps=n, stage1_from=runs['s1_dir'])
  half = str(tmp_path / 'half')
  loop.train_and_evaluate(cfg(1), half)
  resumed = loop.train_and_evaluate(cfg(2), half)
  assert int(resumed.step) == 2
  assert_bitwise_equal(resumed, runs['s2'])


# The reference below recomputes one step from the networks, jaxgen.losses.stackgan and optax
# alone. Tolerances: it is another XLA program over the same float32 values, so fused
# reductions may sum in another order (a few ulp of O(1) losses: rtol 1e-5); the updated
# weights are O(1) values moved by Adam's first step, lr * g / (|g| + eps) ~ lr * sign(g),
# whose rounding differences stay ~1e-11, so they agree to within an ulp or two (atol 3e-7).
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 3e-7


def reference_step(config, nets, state, batch):
  """Metrics and updated g, d weights of one step, recomputed the plain way: G's forward pass
  done again for its gradient, wrong pairs by jnp.roll, Adam from optax."""
  model = config.model
  stage, m = config.stage, batch['image'].shape[0]
  zd, cd = model.latent_dim, model.c_dim
  latent = jax.random.normal(jax.random.fold_in(state.rng, state.step),
                             (m, zd + stage * cd))
  z, eps1, eps2 = latent[:, :zd], latent[:, zd:zd + cd], latent[:, zd + cd:]
  t = tc.embed(nets.text, state.nets['text'], batch)
  g_net, d_net = state.nets['g'], state.nets['d']
  g_in, eps = z, eps1
  if stage == 2:
    g1 = state.nets['g1']
    if config.stage1_batch_stats:
      (g_in, _, _), _ = nets.g1.apply({'params': g1['params'], **g1['vars']}, z, t, train=True,
                                      ca_eps=eps1, mutable=['batch_stats'])
    else:
      g_in = nets.g1.apply({'params': g1['params'], **g1['vars']}, z, t, train=False,
                           ca_eps=eps1)[0]
    eps = eps2

  def g_forward(params):
    return nets.g.apply({'params': params, **g_net['vars']}, g_in, t, train=True, ca_eps=eps,
                        mutable=['batch_stats'])

  def d_pass(params, d_vars, x, cond):
    out, d_vars = nets.d.apply({'params': params, **d_vars}, x, cond, train=True,
                               mutable=['batch_stats'])
    return (out if stage == 2 else (out, None)), d_vars

  (fake, mu, _), g_vars = g_forward(g_net['params'])
  cond = t if model.d_cond_proj else mu

  def d_objective(params):
    (real, u_real), v = d_pass(params, d_net['vars'], batch['image'], cond)
    (fake_l, u_fake), v = d_pass(params, v, fake, cond)
    (wrong, _), v = d_pass(params, v, batch['image'], jnp.roll(cond, 1, axis=0))
    terms = losses.d_loss(real, fake_l, wrong, u_real, u_fake)
    return terms['loss'], (terms, v)

  opt = config.optimizer
  adam = lambda lr: optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)

  def adam_step(lr, params, grads):
    updates, _ = adam(lr).update(grads, adam(lr).init(params), params)
    return optax.apply_updates(params, updates)

  (d_loss, (d_terms, d_vars)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
      d_net['params'])
  d_params = adam_step(opt.d_lr, d_net['params'], d_grads)

  def g_objective(params):
    (fake, mu, logvar), _ = g_forward(params)
    c = t if model.d_cond_proj else jax.lax.stop_gradient(mu)
    (logit, u_logit), _ = d_pass(d_params, d_vars, fake, c)
    adv, kl = losses.g_loss(logit, u_logit), losses.kl_loss(mu, logvar)
    return adv['loss'] + config.kl_weight * kl, (adv, kl)

  (g_loss, (adv, kl)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(g_net['params'])
  metrics = {'d_loss': d_loss, 'd_real': d_terms['real'], 'd_fake': d_terms['fake'],
             'd_wrong': d_terms['wrong'], 'g_loss': g_loss, 'g_adv': adv['loss'], 'kl': kl}
  if stage == 2:
    metrics.update(d_uncond_real=d_terms['uncond_real'], d_uncond_fake=d_terms['uncond_fake'],
                   g_uncond=adv['uncond'])
  weights = {'g': {'params': adam_step(opt.g_lr, g_net['params'], g_grads), 'vars': g_vars},
             'd': {'params': d_params, 'vars': d_vars}}
  return metrics, weights


# Stage 1 with D conditioned on G's CA mean (the authors' code), stage 2 with Stage-I on batch
# statistics (the code): the options the engine runs above leave at their defaults.
@pytest.mark.parametrize('stage,overrides', [(1, {'model.d_cond_proj': False}),
                                             (2, {'stage1_batch_stats': True})])
def test_step_equals_an_independent_recomputation(runs, stage, overrides):
  cfg = tiny(runs['data_dir'], stage, **overrides)
  if stage == 2:
    cfg.stage1_from = runs['s1_dir']
  config, module = loop.prepare(cfg)
  family = module.build(config, with_data=False)
  state = base.jit_init(family, 3)()
  rng = np.random.default_rng(0)
  side = config.data.resolution
  tokens = tc.tokenize(stackgan.networks(config).text, [RED, BLUE, BLUE, RED])
  batch = {'image': jnp.asarray(rng.uniform(-1, 1, (4, side, side, 3)), jnp.float32),
           **{k: jnp.asarray(v) for k, v in tokens.items()}}
  new, metrics = jax.jit(family.train_step)(state, batch)
  ref_metrics, ref_weights = jax.jit(
      lambda s, b: reference_step(config, stackgan.networks(config), s, b))(state, batch)
  assert sorted(metrics) == sorted([*ref_metrics, 'finite']) and metrics['finite'] == 1.0
  for k, v in ref_metrics.items():
    np.testing.assert_allclose(metrics[k], v, rtol=LOSS_RTOL, err_msg=k)
  assert float(metrics['kl']) > 0 and float(metrics['d_wrong']) > 0
  for name in ('g', 'd'):
    ours = leaves({'params': new.nets[name]['params'], 'vars': new.nets[name]['vars']})
    ref = leaves(ref_weights[name])
    assert sorted(ours) == sorted(ref)
    for k in ref:
      np.testing.assert_allclose(ours[k], ref[k], rtol=0, atol=WEIGHT_ATOL, err_msg=name + k)
    before = leaves(state.nets[name]['params'])
    assert any(not np.array_equal(before[k], ours["['params']" + k]) for k in before), name
  for name in ('text', 'g1') if stage == 2 else ('text',):  # frozen: passed through as is
    assert_bitwise_equal(new.nets[name], state.nets[name])


# ---------------------------------------------------------------------------- errors


def test_config_errors(runs, tmp_path):
  data_dir = runs['data_dir']
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'config.json').write_text(json.dumps({'family': 'gan_int_cls'}))
  cases = [
      (dict(tiny(data_dir, 1).to_dict(), stage=3), r'stage must be 1 \(Stage-I.*or 2 .*got 3'),
      (dict(tiny(data_dir, 1).to_dict(), stage=True), 'stage must be 1 .* got True'),
      (tiny(data_dir, 2), 'set --config.stage1_from=<the stage-1 workdir>'),
      (tiny(data_dir, 2, stage1_from=str(tmp_path / 'nowhere')), r'holds no run \(.*missing\)'),
      (tiny(data_dir, 2, stage1_from=str(other)), "holds a 'gan_int_cls' run; stage 2 needs"),
      (tiny(data_dir, 2, stage1_from=runs['s2_dir']), 'holds a stage-2 stackgan run'),
      (tiny(data_dir, 1, stage1_from=runs['s1_dir']), 'this run has stage=1'),
      (tiny(data_dir, 2, stage1_from=runs['s1_dir'], text_from=runs['s1_dir']),
       'text_from is for stage 1'),
      (tiny(data_dir, 1, **{'data.resolution': 128}),
       'Stage 1 draws 64x64 images: data.resolution must be 64; got 128'),
      (tiny(data_dir, 1, kl_weight=-1.0), 'kl_weight .* must be a number >= 0'),
  ]
  for cfg, match in cases:
    with pytest.raises(ValueError, match=match):
      loop.prepare(cfg)
  with pytest.raises(ValueError, match='accepted: stage1, stage2, cpu'):
    sg_config.get_config('stage3')


# ---------------------------------------------------------------------------- sampling tool


def test_text_to_image_draws_stage2_images(runs):
  # A stage-2 checkpoint holds g1 and text: the run loads without its stage-1 workdir.
  away = runs['s1_dir'] + '_moved'
  os.rename(runs['s1_dir'], away)
  try:
    run = text_to_image.load(runs['s2_dir'])
  finally:
    os.rename(away, runs['s1_dir'])
  config = run.config.model
  assert run.model.resolution == 128
  assert run.model.latent_dim == config.latent_dim + 2 * config.c_dim  # [z, eps1, eps2]
  grid = text_to_image.caption_grid(run, [RED, BLUE], num=2)
  assert grid.shape == (2, 2, 128, 128, 3)
  # A fixed latent fixes the image.
  z = run.model.latents(jax.random.PRNGKey(0), 2)
  t = text_to_image.embed_captions(run, [RED, RED])
  np.testing.assert_array_equal(run.generate(run.nets, z, t), grid[0])
  # And every part of it matters: z and g1's eps through the Stage-I image, then g's eps. Shown
  # by the gradient on fresh networks: in evaluation mode these width-2..4 networks have ~1e-5
  # activations, below the +-4e-4 that two Adam steps give the BatchNorm biases, so after
  # training g1's images are all zeros here; fresh ones have zero biases, no closed ReLU.
  fresh = base.jit_init(stackgan.build(run.config, with_data=False), 0)()
  grad = np.asarray(jax.grad(lambda z: jnp.sum(run.model.generate(fresh.nets, z, t)))(z))
  parts = np.split(grad, [config.latent_dim, config.latent_dim + config.c_dim], axis=1)
  assert [p.shape[1] for p in parts] == [config.latent_dim, config.c_dim, config.c_dim]
  for part in parts:
    assert np.any(part != 0)
