"""The GAN-INT-CLS style encoder: its run on top of a tiny GAN-INT-CLS run (g and text imported
frozen), Reed's background-cluster ROC evaluation, and the text-to-image sampling tool."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from experiments.configs import style_encoder as style_config
from jaxgen import text_to_image
from jaxgen.data import shapes
from jaxgen.engine import loop
from jaxgen.families import base
from jaxgen.metrics import style
from tests.conftest import set_fields
from tests.test_engine import ROOT, assert_bitwise_equal, leaves
from tests.test_gan_int_cls import TINY_SHAPES, tiny_config


@pytest.fixture(scope='module')
def runs_dir(tfds_dir, tmp_path_factory):
  """A tiny GAN-INT-CLS run ('gan', 2 steps) and a style-encoder run on it ('style', 3 steps)."""
  root = tmp_path_factory.mktemp('style_runs')
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(shapes.JaxgenShapes.builder_configs, 'tiny16', TINY_SHAPES)
    gan = loop.train_and_evaluate(tiny_config(tfds_dir, num_steps=2), str(root / 'gan'))
    cfg = style_config.get_config('tiny')
    set_fields(cfg, {'gan_workdir': str(root / 'gan'), 'num_steps': 3, 'log_every': 1,
                     'data.data_dir': tfds_dir})
    styled = loop.train_and_evaluate(cfg, str(root / 'style'))
    yield root, gan, styled, cfg


def test_style_encoder_trains_only_s(runs_dir):
  root, gan, styled, cfg = runs_dir
  assert sorted(styled.nets) == ['g', 's', 'text']
  for name in ('g', 'text'):  # imported from the GAN run, frozen: bitwise unchanged
    assert 'opt' not in styled.nets[name]
    assert_bitwise_equal(styled.nets[name]['params'], gan.nets[name]['params'])
    assert_bitwise_equal(styled.nets[name]['vars'], gan.nets[name]['vars'])
  config, module = loop.prepare(cfg)
  init = base.jit_init(module.build(config, with_data=False), cfg.seed)()
  a, b = leaves(init.nets['s']['params']), leaves(styled.nets['s']['params'])
  assert any(not np.array_equal(a[k], b[k]) for k in a)
  with open(os.path.join(root, 'style', 'eval.json')) as f:
    import json  # pylint: disable=g-import-not-at-top
    final = json.load(f)
  assert 0.0 <= final['style/roc_auc'] <= 1.0 and final['step'] == 3
  assert 0.0 <= final['style/roc_auc_pixels'] <= 1.0
  # The untrained reference is S at the run's step 0: recomputed here from the init state.
  with_data = module.build(config)
  start = base.jit_init(with_data, cfg.seed)()
  assert with_data.evaluate(start)['style/roc_auc'] == final['style/roc_auc_untrained']
  for name in ('style_roc.png', 'style_transfer.png'):
    assert os.path.exists(os.path.join(root, 'style', 'figures', name))


def test_style_run_resumes_bitwise_without_reimporting(runs_dir, tmp_path):
  root, gan, _, _ = runs_dir

  def cfg(n):
    c = style_config.get_config('tiny')
    return set_fields(c, {'gan_workdir': str(root / 'gan'), 'num_steps': n, 'log_every': 1,
                          'checkpoint_every': 2, 'write_figures': False})
  full = loop.train_and_evaluate(cfg(4), str(tmp_path / 'full'))
  half = str(tmp_path / 'half')
  loop.train_and_evaluate(cfg(2), half)
  resumed = loop.train_and_evaluate(cfg(4), half)
  assert int(resumed.step) == 4
  assert_bitwise_equal(full, resumed)
  frozen_g = {k: v for k, v in gan.nets['g'].items() if k != 'opt'}
  assert_bitwise_equal(resumed.nets['g'], frozen_g)  # imported once, never changed


def test_style_encoder_needs_a_gan_run(tmp_path):
  cfg = style_config.get_config('tiny')
  with pytest.raises(ValueError, match='gan_workdir'):
    loop.prepare(cfg)
  cfg.gan_workdir = str(tmp_path)
  with pytest.raises(ValueError, match='holds no run'):
    loop.prepare(cfg)


# ---------------------------------------------------------------------------- evaluation


def test_roc_auc_by_hand_and_without_sklearn(monkeypatch):
  # Positive-negative pairs (0.9, 0.8) (0.9, 0.6) (0.7, 0.8) (0.7, 0.6): 3 of 4 ordered right.
  scores, pos = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
  assert style.roc_auc(scores, pos) == 0.75
  rng = np.random.default_rng(0)
  s = np.round(rng.normal(size=300), 1)  # many ties
  p = rng.random(300) < s.clip(-2, 2) / 4 + 0.5
  with_sklearn = style.roc_auc(s, p)
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  fpr, tpr, _ = metrics.roc_curve(p, s, drop_intermediate=False)
  ours = style.roc_curve(s, p)
  np.testing.assert_allclose(ours[0], fpr)  # same counts divided the same way
  np.testing.assert_allclose(ours[1], tpr)
  monkeypatch.setitem(sys.modules, 'sklearn.metrics', None)  # import -> ImportError
  monkeypatch.setitem(sys.modules, 'sklearn.cluster', None)
  # Rank sums of at most 300 ties-averaged ranks: exact in float64 up to ~1e-15 relative.
  np.testing.assert_allclose(style.roc_auc(s, p), with_sklearn, rtol=1e-12)
  points = np.concatenate([rng.normal(c, 0.05, (20, 3)) for c in (0.0, 1.0, 2.0)])
  labels = style.cluster(points, 3)
  truth = np.repeat(np.arange(3), 20)
  assert len({(a, b) for a, b in zip(labels, truth)}) == 3  # the same partition


def test_pair_scores_against_scipy_cosine_distance():
  from scipy.spatial.distance import cosine  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  f = rng.normal(size=(7, 300))
  labels = np.array([0, 1, 0, 2, 1, 0, 2])
  scores, same = style.pair_scores(f, labels)
  pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
  assert len(scores) == len(pairs) == 21
  # float64 dot products of unit vectors, D = 300 terms: |error| <= ~300 * 2^-53 ~ 3e-14.
  np.testing.assert_allclose(scores, [1.0 - cosine(f[i], f[j]) for i, j in pairs], rtol=0,
                             atol=1e-12)
  np.testing.assert_array_equal(same, [labels[i] == labels[j] for i, j in pairs])


def test_background_clusters_of_real_shapes():
  examples = [shapes.sample_example('test', i) for i in range(40)]
  images = np.stack([shapes.render(e, 32) for e in examples]).astype(np.float32) / 127.5 - 1
  truth = np.array([e.background for e in examples])
  colours = style.background_colours(images)
  np.testing.assert_allclose(colours, np.asarray(shapes.BACKGROUND_RGB)[truth] / 127.5 - 1,
                             atol=1e-6)  # the border is background only: exact colours
  labels = style.cluster(colours, len(set(truth)))
  assert len(set(zip(labels, truth))) == len(set(truth))
  perfect = np.eye(4)[truth]  # features that are the background: every pair ordered right
  res = style.style_roc(perfect, images, len(set(truth)))
  assert res['auc'] == 1.0 and res['cos_same'] == 1.0 and res['cos_other'] == 0.0
  noise = np.random.default_rng(1).normal(size=(40, 8))  # unrelated to the background
  assert 0.3 < style.style_roc(noise, images, len(set(truth)))['auc'] < 0.7


# ---------------------------------------------------------------------------- sampling tool


def test_text_to_image_modes(runs_dir, monkeypatch):
  root, _, _, _ = runs_dir
  monkeypatch.setitem(shapes.JaxgenShapes.builder_configs, 'tiny16', TINY_SHAPES)
  red, blue = 'a small red circle at the top', 'a large blue square on the left'
  run = text_to_image.load(str(root / 'gan'))
  grid = text_to_image.caption_grid(run, [red, blue], num=3)
  assert grid.shape == (2, 3, 16, 16, 3)
  assert not np.allclose(grid[0], grid[1])  # the caption matters
  interp = text_to_image.text_interpolation(run, red, blue, num=2, steps=4)
  # The ends are the two captions with the same z (1 * t_a + 0 * t_b = t_a exactly), computed
  # in batches of other sizes: the per-example convolutions may round differently, a few
  # float32 ulp of tanh outputs in [-1, 1].
  np.testing.assert_allclose(interp[:, 0], grid[0, :2], atol=1e-6)
  np.testing.assert_allclose(interp[:, -1], grid[1, :2], atol=1e-6)
  sty = text_to_image.style_interpolation(run, [red], steps=3)
  assert sty.shape == (1, 3, 16, 16, 3)
  for mode, caps, shape in [('captions', [red, blue], (2, 8)), ('transfer', [red], (2, 4)),
                            ('interpolate_style', [red], (1, 8))]:
    workdir = str(root / ('style' if mode == 'transfer' else 'gan'))
    path = text_to_image.run_mode(mode, workdir, caps, num=shape[1] if mode != 'interpolate_style'
                                  else 3, steps=8, out=str(root / 'tool'), scale=1)
    w, h = Image.open(path).size
    assert (h, w) == (shape[0] * 17 + 1, shape[1] * 17 + 1)  # 16 px tiles, 1 px padding
  with pytest.raises(ValueError, match='style_encoder run'):
    text_to_image.run_mode('transfer', str(root / 'gan'), [red])
  with pytest.raises(ValueError, match='exactly 2'):
    text_to_image.run_mode('interpolate_text', str(root / 'gan'), [red])


@pytest.mark.slow
def test_text_to_image_command_line(runs_dir, tfds_dir):
  root, _, _, _ = runs_dir
  out = str(root / 'cli')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  # The tool reads no data for --mode=captions (the tokenizer is the character alphabet), so
  # the test-only dataset config need not exist in the subprocess.
  proc = subprocess.run([sys.executable, '-m', 'jaxgen.text_to_image', f'--workdir={root}/gan',
                         '--caption', 'a small red circle at the top', f'--out={out}',
                         '--num=4'], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.exists(os.path.join(out, 'captions.png'))
