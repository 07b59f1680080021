"""2-D mixtures, the 2-D MLP GAN, the gan_2d experiment and the multi-seed report."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats

from experiments import gan_2d, gan_2d_report
from experiments.configs import gan_2d as gan_2d_cfg
from jaxgen import models
from jaxgen.data import pipeline, toy2d
from jaxgen.families import base, gan

TINY = ['model.g_hidden=(8, 8)', 'model.d_hidden=(8, 8)', 'model.maxout_pieces=2',
        'batch_size=16', 'num_steps=6', 'log_every=3', 'checkpoint_every=3',
        'steps_per_dispatch=1', 'num_eval_samples=200']


# False-failure probability of each statistical check on a correct implementation.
P_FALSE = 1e-6
U32 = np.finfo(np.float32).eps / 2  # Unit roundoff of float32 (2^-24).


def gamma32(k):
  """gamma_k = k u / (1 - k u): relative error bound of k float32 roundings (Higham)."""
  return k * U32 / (1 - k * U32)


def maxout_d_reference(params, x, pieces):
  """The maxout MLP D (Dense layers named Dense_i, the last one linear) in float64 numpy.

  Returns (logits, input gradients, logit error bound, gradient error bound, smallest gap
  between the two largest pieces of any maxout unit) where the bounds are those of a
  float32 evaluation of the same network: each n-input Dense rounds n products, n - 1 sums
  and the bias add, gamma(n + 1) of sum |w| |h| + |b|, and carries the error of its inputs
  through |W|; the max is 1-Lipschitz. The backward pass (the gradient of the logit through
  the selected pieces) costs gamma(n) of sum |W| |g| per layer and carries its errors
  through |W|, provided no selection flips, i.e. every gap exceeds twice the forward bound.
  """
  ws = [np.asarray(params[f'Dense_{i}']['kernel'], np.float64) for i in range(len(params))]
  bs = [np.asarray(params[f'Dense_{i}']['bias'], np.float64) for i in range(len(params))]
  h, e = np.asarray(x, np.float64), np.zeros(np.shape(x))
  masks, gap = [], np.inf
  for w, b in zip(ws[:-1], bs[:-1]):
    y = (h @ w + b).reshape(len(h), -1, pieces)
    ey = (e @ np.abs(w) + gamma32(w.shape[0] + 1) * (np.abs(h) @ np.abs(w) + np.abs(b)))
    ey = ey.reshape(y.shape).max(-1)
    top2 = np.sort(y, -1)[..., -2:]
    gap = min(gap, float(np.min((top2[..., 1] - top2[..., 0]) / ey)))
    masks.append(y == y.max(-1, keepdims=True))
    h, e = y.max(-1), ey
  logits = h @ ws[-1][:, 0] + bs[-1][0]
  e_logit = e @ np.abs(ws[-1][:, 0]) + gamma32(ws[-1].shape[0] + 1) * (
      np.abs(h) @ np.abs(ws[-1][:, 0]) + abs(bs[-1][0]))
  g = np.broadcast_to(ws[-1][:, 0], h.shape)
  eg = np.zeros(h.shape)
  for w, mask in zip(ws[-2::-1], masks[::-1]):
    gy = (mask * g[..., None]).reshape(len(g), -1)  # The gradient goes to the selected piece.
    egy = (mask * eg[..., None]).reshape(len(g), -1)
    g, eg = gy @ w.T, egy @ np.abs(w).T + gamma32(w.shape[1]) * (np.abs(gy) @ np.abs(w).T)
  return logits, g, e_logit, eg, gap / 2


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
  resid = (x - modes[idx]).astype(np.float64).ravel()
  # The modes are >= 15 std apart, so nearest-mode assignment is right for every sample,
  # and the residual coordinates are n iid N(0, std^2) draws (seeds fixed). Two-sided
  # tests, each at false-failure probability P_FALSE for a correct sampler:
  n = resid.size
  # sum(resid^2) / std^2 ~ chi^2_n (the mean is known to be 0; sd sqrt(2 n) = 200). A std off
  # by 5 % shifts it by 10 sd, twice the ~4.9 sd the interval allows.
  lo, hi = stats.chi2.isf([1 - P_FALSE / 2, P_FALSE / 2], n)
  assert lo < np.sum(resid ** 2) / std ** 2 < hi, (np.sum(resid ** 2) / std ** 2, lo, hi)
  # mean(resid) ~ N(0, std^2 / n).
  assert abs(np.mean(resid)) < stats.norm.isf(P_FALSE / 2) * std / np.sqrt(n)
  # Modes equally likely: Pearson's chi-square statistic (k - 1 dof) at the same level.
  counts = np.bincount(idx, minlength=k)
  expected = len(x) / k
  chi2 = np.sum((counts - expected) ** 2 / expected)
  assert stats.chi2.sf(chi2, k - 1) > P_FALSE


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
  assert set(pv['params']) == {'Dense_0', 'Dense_1', 'Dense_2'}
  assert pv['params']['Dense_0']['kernel'].shape == (2, 8 * 2)  # 8 units of 2 pieces.
  logits, _, bound, _, _ = maxout_d_reference(pv['params'], x, pieces=2)
  got = np.asarray(d_plain.apply(pv, x, train=False), np.float64)
  # float32 rounding of the three Dense layers, bounded as maxout_d_reference says.
  assert np.all(np.abs(got - logits) <= bound), (np.abs(got - logits), bound)
  # A Dense in place of the maxout (first piece only) is far outside the bound.
  ks = [np.asarray(pv['params'][f'Dense_{i}']['kernel'], np.float64) for i in range(3)]
  bs = [np.asarray(pv['params'][f'Dense_{i}']['bias'], np.float64) for i in range(3)]
  h = (x @ ks[0] + bs[0])[:, ::2]
  wrong = (((h @ ks[1] + bs[1])[:, ::2]) @ ks[2] + bs[2])[:, 0]
  assert np.max(np.abs(wrong - logits)) > 100 * np.max(bound)
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
  state = base.jit_init(family, cfg.seed)()
  batch = toy2d.batch_at(cfg.data, 'train', cfg.batch_size * cfg.n_dis, seed=0, step=0)
  _, metrics = jax.jit(family.train_step)(state, batch)
  assert float(metrics['d_penalty']) > 0
  if method == 'r1':  # R1 = 0.5 mean ||grad_x D||^2 on the same D and real batch, float64.
    assert cfg.n_dis == 1 and not cfg.model.spectral_norm and cfg.model.maxout_pieces == 2
    _, grads, _, grad_err, gap = maxout_d_reference(state.nets['d']['params'],
                                                    batch['image'], pieces=2)
    assert gap > 1  # No maxout selection is within float32 rounding of flipping.
    sq = np.sum(grads ** 2, 1)
    want = 0.5 * np.mean(sq)
    # float32: each |g|^2 moves by <= 2 |g| . err(g) + gamma(3) |g|^2 (squares, 2-term sum),
    # the mean over the batch by gamma(batch) of its value, and the halving is exact.
    tol = 0.5 * np.mean(2 * np.sum(np.abs(grads) * grad_err, 1) + gamma32(3) * sq) + (
        gamma32(len(sq)) * want)
    assert abs(float(metrics['d_penalty']) - want) <= tol, (float(metrics['d_penalty']), want, tol)
    assert tol < 1e-4 * want  # So a penalty off by any factor (0.5, a square) is caught.


def test_weight_clipping_is_applied_after_each_d_update():
  cfg = tiny('ring', 'wgan_clip')
  family = gan.build(cfg)
  state = base.jit_init(family, cfg.seed)()
  d_params = lambda s: s.nets['d']['params']
  assert max(float(np.abs(p).max()) for p in jax.tree.leaves(d_params(state))) > 0.01
  batch = toy2d.batch_at(cfg.data, 'train', cfg.batch_size * cfg.n_dis, seed=0, step=0)
  state, _ = jax.jit(family.train_step)(state, batch)
  # jnp.clip returns the bound itself (float32(0.01)) for every clipped entry: exact.
  bound = np.float32(cfg.weight_clip)
  assert max(np.abs(p).max() for p in jax.tree.leaves(d_params(state))) == bound


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
  # Not bitwise: the vmapped program sums in other orders, so gradients differ by float32
  # roundings (measured: <= 2.4e-7 after 6 steps, 2 ulp of the weights). No closed-form bound
  # exists through 6 Adam steps (a gradient within rounding of 0 can flip the sign of its
  # normalised update), so the tolerance is set by what it must reject: any difference in
  # init, data, keys or SN vectors changes gradients by O(1) relative, and Adam's normalised
  # steps (|update| ~ lr = 1e-3 each) then move weights by ~lr; atol = lr / 100 rejects that.
  lr = min(cfg.optimizer.g_lr, cfg.optimizer.d_lr)
  for a, b in zip(jax.tree.leaves(nets(mine)), jax.tree.leaves(nets(state)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=lr / 100)
  other = jax.tree.map(lambda x: x[0], states)
  assert np.max(np.abs(jax.tree.leaves(other.nets['g']['params'])[0]
                       - jax.tree.leaves(state.nets['g']['params'])[0])) > lr


def test_report_table_and_outputs(tmp_path):
  table = gan_2d_report.run_report(['ring'], ['gan'], [0, 1], str(tmp_path), TINY, chunk=3,
                                   log=None)
  assert '| ring | `gan` |' in table and 'PacGAN4 (PacGAN Table 1) | 7.8 | 95.9' in table
  runs = json.loads((tmp_path / 'results.json').read_text())
  assert len(runs) == 1 and len(runs[0]['runs']) == 2
  modes = [r['modes'] for r in runs[0]['runs']]
  assert runs[0]['summary']['modes'][0] == np.mean(modes)  # Mean of integers: exact.
  assert (tmp_path / 'ring_gan.png').exists() and (tmp_path / 'table.md').exists()
  # Earlier reports can be merged into one table without training.
  merged = gan_2d_report.tabulate([str(tmp_path), str(tmp_path)])
  assert merged.count('| ring | `gan` |') == 2 and merged.count('PacGAN4') == 1
  assert [line.split(' | ')[-1] for line in merged.splitlines() if '`gan`' in line] == [
      '1 |', '2 |']  # Each report's rows say which report they came from.
  with pytest.raises(ValueError, match='No results.json'):
    gan_2d_report.tabulate([str(tmp_path / 'missing')])
