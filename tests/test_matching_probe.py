"""jaxgen.matching_probe: the contrast captions, the preference statistic, and a tiny run."""
import jax
import numpy as np
import pytest

from jaxgen import matching_probe, text_to_image
from jaxgen.data import shapes
from jaxgen.engine import loop
from tests.test_gan_int_cls import shapes_dir, tiny_config  # noqa: F401  (fixture)


def _words(phrases):
  return {w for options in phrases.values() for p in options for w in p.split()}


VOCAB = {'position': _words(shapes.POSITION_WORDS), 'size': _words(shapes.SIZE_WORDS),
         'colour': _words(shapes.COLOUR_WORDS), 'shape': _words(shapes.SHAPE_WORDS)}


@pytest.mark.parametrize('change', ['position', 'size', 'colour', 'shape'])
def test_contrast_captions_change_only_that_attribute(change):
  for index in range(40):
    true, changed = matching_probe.contrast_captions('test', index, change, 500)
    assert true != changed, (index, true)
    a, b = true.split(), changed.split()
    # Same template and word choices: word lists of equal length (every attribute's phrases
    # for one slot have the same length except position and shape phrases, which may not),
    # so compare the words outside the changed attribute's vocabulary, in order.
    keep = lambda ws: [w for w in ws if w.strip('.,') not in VOCAB[change]
                       and w not in ('a', 'an')]
    assert keep(a) == keep(b), (true, changed)
    # The true caption names the example's first object as it is.
    first = shapes.sample_example('test', index).objects[0]
    value = {'position': shapes.POSITIONS, 'size': shapes.SIZES, 'colour': shapes.COLOURS,
             'shape': shapes.SHAPES}[change][getattr(first, change)]
    words = {'position': shapes.POSITION_WORDS, 'size': shapes.SIZE_WORDS,
             'colour': shapes.COLOUR_WORDS, 'shape': shapes.SHAPE_WORDS}[change][value]
    assert any(w in true for w in words)


def test_other_caption_describes_another_image():
  for index in range(20):
    true, other = matching_probe.contrast_captions('test', index, 'other caption', 500)
    assert true != other
  with pytest.raises(ValueError, match='accepted: position, size, colour, shape, other caption'):
    matching_probe.contrast_captions('test', 0, 'background', 500)


def test_preference_counts_ties_as_half():
  assert matching_probe.preference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5
  assert matching_probe.preference([1.0, 2.0], [0.0, 5.0]) == 0.5
  assert matching_probe.preference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 3.0, 9.0]) == 2.5 / 4


def test_probe_on_a_tiny_run(shapes_dir, tmp_path):  # noqa: F811
  cfg = tiny_config(shapes_dir, num_steps=2)
  workdir = str(tmp_path / 'gic')
  loop.train_and_evaluate(cfg, workdir)
  out = matching_probe.probe_run(workdir, num_images=20)
  assert out['workdir'] == workdir and out['step'] == 2 and out['num_images'] == 20
  assert (out['cls'], out['interp'], out['wrong_captions']) == (True, True, 'roll')
  assert list(out['changes']) == list(matching_probe.CHANGES)
  for r in out['changes'].values():
    assert 0.0 <= r['preference'] <= 1.0 and np.isfinite(r['logit_gap'])
  # A D whose caption projection is zero sees no caption: every logit pair is equal, so every
  # preference is exactly 1/2 and every gap exactly 0.
  run = text_to_image.load(workdir)
  d = run.nets['d']
  params = dict(d['params'])
  params['text_proj'] = jax.tree.map(np.zeros_like, params['text_proj'])
  run.nets = dict(run.nets, d=dict(d, params=params))
  blind = matching_probe.probe(run, num_images=20)
  for r in blind['changes'].values():
    assert r['preference'] == 0.5 and r['logit_gap'] == 0.0
  table = matching_probe.table(out).splitlines()
  assert len(table) == 2 + len(matching_probe.CHANGES)
  with pytest.raises(ValueError, match=r'num_images must be in \[2, 500\]'):
    matching_probe.probe(run, num_images=1)
  with pytest.raises(ValueError, match='accepted: test, heldout, train'):
    matching_probe.probe(run, split='validation')
  # The training images: the first ones of the split (the tiny run's build holds them).
  seen = matching_probe.probe(run, split='train', num_images=4)
  assert seen['split'] == 'train' and seen['num_images'] == 4
