"""2-D mixtures, the 2-D MLP GAN, the gan_2d experiment and the multi-seed report."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments import gan_2d, gan_2d_report
from experiments.configs import gan_2d as gan_2d_cfg
from jaxgen import models
from jaxgen.data import pipeline, toy2d
from jaxgen.families import gan
from jaxgen.losses import penalties

TINY = ['model.g_hidden=(8, 8)', 'model.d_hidden=(8, 8)', 'model.maxout_pieces=2',
        'batch_size=16', 'num_steps=6', 'log_every=3', 'checkpoint_every=3',
        'steps_per_dispatch=1', 'num_eval_samples=200']


def tiny(dataset='ring', method='gan', *extra):
  return gan_2d_report.make_config(dataset, method, TINY + list(extra))


# ---------------------------------------------------------------------------- data


@pytest.mark.parametrize('name, k, std', [('toy2d_ring', 8, 0.01), ('toy2d_grid', 25, 0.05)])
def test_batches_come_from_the_mixture(name, k, std):
  cfg = ml_collections.ConfigDict({'name': name})
  x = np.concatenate([toy2d.batch_at(cfg, 'train', 500, seed=0, step=s)['image']
                      for s in range(20)])
  assert x.dtype == np.float32 and x.shape == (10_000, 2)
  modes, _ = toy2d.mixture(cfg)
  d = np.linalg.norm(x[:, None] - modes[None], axis=-1)
  idx = d.argmin(1)
  resid = x - modes[idx]
  # Per-coordinate noise std and mean match N(0, std^2) within sampling error.
  assert np.std(resid) == pytest.approx(std, rel=0.03)
  assert abs(np.mean(resid)) < 4 * std / np.sqrt(resid.size)
  # Modes equally likely: a chi-square test at a generous level.
  counts = np.bincount(idx, minlength=k)
  expected = len(x) / k
  chi2 = np.sum((counts - expected) ** 2 / expected)
  from scipy import stats
  assert stats.chi2.sf(chi2, k - 1) > 1e-4


def test_stream_is_positioned_and_deterministic():
  cfg = ml_collections.ConfigDict({'name': 'toy2d_grid'})
  full = toy2d.make_dataset(cfg, 'train', 32, seed=3)
  first = [next(full)['image'] for _ in range(5)]
  resumed = toy2d.make_dataset(cfg, 'train', 32, seed=3, start_step=3)
  np.testing.assert_array_equal(next(resumed)['image'], first[3])
  np.testing.assert_array_equal(next(resumed)['image'], first[4])
  other_seed = next(toy2d.make_dataset(cfg, 'train', 32, seed=4))['image']
  test_split = next(toy2d.make_dataset(cfg, 'test', 32, seed=3))['image']
  assert not np.array_equal(other_seed, first[0])
  assert not np.array_equal(test_split, first[0])
  # The lead's pipeline dispatches the toy2d names here.
  via_pipeline = pipeline.make_dataset(cfg, 'train', 32, seed=3, start_step=2)
  np.testing.assert_array_equal(next(via_pipeline)['image'], first[2])


def test_geometry_overrides_and_bad_values():
  ring = ml_collections.ConfigDict({'name': 'toy2d_ring', 'num_modes': 3, 'radius': 2.0,
                                    'std': 0.1})
  modes, std = toy2d.mixture(ring)
  assert modes.shape == (3, 2) and std == 0.1
  np.testing.assert_allclose(np.linalg.norm(modes, axis=1), 2.0)
  for bad, match in [({'name': 'toy2d_ring', 'std': 0.0}, 'std'),
                     ({'name': 'toy2d_grid', 'grid_size': 0}, 'grid_size'),
                     ({'name': 'toy2d_spiral'}, 'accepted: toy2d_ring, toy2d_grid')]:
    with pytest.raises(ValueError, match=match):
      toy2d.mixture(ml_collections.ConfigDict(bad))
  with pytest.raises(ValueError, match='splits train, test'):
    toy2d.make_dataset(ml_collections.ConfigDict({'name': 'toy2d_ring'}), 'validation', 4)


# ---------------------------------------------------------------------------- model


def test_mlp2d_defaults_are_pacgans_networks():
  cfg = gan_2d_cfg.get_config('grid,pacgan_arch')
  g, d = models.get_gan(cfg.model)
  z = np.zeros((3, cfg.model.latent_dim), np.float32)
  gv = g.init(jax.random.PRNGKey(0), z, train=False)
  x = g.apply(gv, z, train=False)
  assert x.shape == (3, 2)
  dv = d.init(jax.random.PRNGKey(1), x, train=False)
  assert d.apply(dv, x, train=False).shape == (3,)
  g_dense = [v['kernel'].shape for k, v in sorted(gv['params'].items()) if 'Dense' in k]
  d_dense = [v['kernel'].shape for k, v in sorted(dv['params'].items()) if 'Dense' in k]
  assert g_dense == [(cfg.model.latent_dim, 400), (400, 400), (400, 400), (400, 400), (400, 2)]
  assert d_dense == [(2, 1000), (200, 1000), (200, 1000), (200, 1)]  # maxout: 5 x 200
  assert 'batch_stats' in gv and 'batch_stats' not in dv


def test_mlp2d_maxout_and_spectral_norm_options():
  cfg = tiny('ring', 'sn').model
  g, d = models.get_gan(cfg)
  x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
  dv = d.init(jax.random.PRNGKey(1), x, train=False)
  assert len(jax.tree.leaves(dv['batch_stats'])) == 2 * 3  # (u, sigma) for 3 layers
  # Maxout by hand for the first layer (no SN): max over 2 pieces of a Dense.
  cfg_plain = tiny('ring', 'gan').model
  _, d_plain = models.get_gan(cfg_plain)
  pv = d_plain.init(jax.random.PRNGKey(2), x, train=False)
  k, b = pv['params']['Dense_0']['kernel'], pv['params']['Dense_0']['bias']
  h = np.max((x @ np.asarray(k) + np.asarray(b)).reshape(5, 8, 2), axis=-1)
  k1, b1 = pv['params']['Dense_1']['kernel'], pv['params']['Dense_1']['bias']
  h = np.max((h @ np.asarray(k1) + np.asarray(b1)).reshape(5, 8, 2), axis=-1)
  k2, b2 = pv['params']['Dense_2']['kernel'], pv['params']['Dense_2']['bias']
  np.testing.assert_allclose(d_plain.apply(pv, x, train=False), (h @ np.asarray(k2))[:, 0] + b2,
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='d_activation'):
    models.get_gan(ml_collections.ConfigDict(dict(cfg_plain.to_dict(), d_activation='elu')))


# ---------------------------------------------------------------------------- training


def test_config_argument_parsing():
  for method in gan_2d_cfg.METHODS:
    c = gan_2d_cfg.get_config(f'grid,{method}')
    assert c.data.name == 'toy2d_grid' and c.method == method
  assert gan_2d_cfg.get_config('ring,wgan_gp').penalty.name == 'wgan_gp'
  with pytest.raises(ValueError, match='dataset in ring, grid'):
    gan_2d_cfg.get_config('spiral,gan')
  with pytest.raises(ValueError, match='no such config field'):
    gan_2d_report.make_config('ring', 'gan', ['model.nonexistent=3'])


@pytest.mark.parametrize('method', ['r1', 'wgan_gp'])
def test_train_step_adds_the_configured_penalty(method):
  cfg = tiny('ring', method)
  family = gan.build(cfg)
  _, d = models.get_gan(cfg.model)
  state = jax.jit(family.init)(jax.random.PRNGKey(cfg.seed))
  batch = toy2d.batch_at(cfg.data, 'train', cfg.batch_size * cfg.n_dis, seed=0, step=0)
  _, metrics = jax.jit(family.train_step)(state, batch)
  assert float(metrics['d_penalty']) > 0
  if method == 'r1' and cfg.n_dis == 1:  # recompute R1 on the same D and real batch
    d_net = state.nets['d']
    d_fn = lambda x: d.apply({'params': d_net['params'], **d_net['vars']}, x, train=True,
                             mutable=list(d_net['vars']))[0]
    want = penalties.r1(d_fn, batch['image'], None, None)
    assert float(metrics['d_penalty']) == pytest.approx(float(want), rel=1e-4)


def test_weight_clipping_is_applied_after_each_d_update():
  cfg = tiny('ring', 'wgan_clip')
  family = gan.build(cfg)
  state = jax.jit(family.init)(jax.random.PRNGKey(cfg.seed))
  d_params = lambda s: s.nets['d']['params']
  assert max(float(np.abs(p).max()) for p in jax.tree.leaves(d_params(state))) > 0.01
  batch = toy2d.batch_at(cfg.data, 'train', cfg.batch_size * cfg.n_dis, seed=0, step=0)
  state, _ = jax.jit(family.train_step)(state, batch)
  assert max(float(np.abs(p).max()) for p in jax.tree.leaves(d_params(state))) <= 0.01 + 1e-7


def test_experiment_writes_scores_and_plot_and_matches_the_report(tmp_path):
  """One trainer run of experiments.gan_2d, and the same seed inside the vmapped report."""
  cfg = tiny('grid', 'sn_r1')
  cfg.seed = 5
  state = gan_2d.train_and_report(cfg, str(tmp_path))
  out = json.loads((tmp_path / 'mode_coverage.json').read_text())
  assert out['num_modes'] == 25 and out['num_samples'] == 200 and out['step'] == 6
  samples = np.load(tmp_path / 'samples.npy')
  from jaxgen.metrics import mode_coverage as mc
  assert out['modes'] == mc.evaluate(samples, cfg.data).modes_covered
  from PIL import Image
  assert Image.open(tmp_path / 'samples.png').size[0] == 480
  assert (tmp_path / 'checkpoints').exists()

  # Seed 5 of the report (vmapped over seeds 0 and 5) is the same GAN: same init, data
  # stream and per-step keys, including D's spectral-norm vectors.
  states, info = gan_2d_report.train_seeds(cfg, [0, 5], chunk=4, log=None)
  assert info['nonfinite_steps'] == [0, 0]
  mine = jax.tree.map(lambda x: x[1], states)
  nets = lambda s: (s.nets['g']['params'], s.nets['d']['params'], s.nets['d']['vars'])
  assert jax.tree.leaves(state.nets['d']['vars'])  # D's spectral-norm vectors are compared.
  for a, b in zip(jax.tree.leaves(nets(mine)), jax.tree.leaves(nets(state)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  other = jax.tree.map(lambda x: x[0], states)
  assert not np.allclose(jax.tree.leaves(other.nets['g']['params'])[0],
                         jax.tree.leaves(state.nets['g']['params'])[0])


def test_report_table_and_outputs(tmp_path):
  table = gan_2d_report.run_report(['ring'], ['gan'], [0, 1], str(tmp_path), TINY, chunk=3,
                                   log=None)
  assert '| ring | gan |' in table and 'PacGAN4 (PacGAN Table 1) | 7.8 | 95.9' in table
  runs = json.loads((tmp_path / 'results.json').read_text())
  assert len(runs) == 1 and len(runs[0]['runs']) == 2
  modes = [r['modes'] for r in runs[0]['runs']]
  assert runs[0]['summary']['modes'][0] == pytest.approx(np.mean(modes))
  assert (tmp_path / 'ring_gan.png').exists() and (tmp_path / 'table.md').exists()
  # Earlier reports can be merged into one table without training.
  merged = gan_2d_report.tabulate([str(tmp_path), str(tmp_path)])
  assert merged.count('| ring | gan |') == 2 and merged.count('PacGAN4') == 1
  with pytest.raises(ValueError, match='No results.json'):
    gan_2d_report.tabulate([str(tmp_path / 'missing')])
