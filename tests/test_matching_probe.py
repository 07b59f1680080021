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


def test_probe_on_a_tiny_text_encoder_run(tmp_path):
  """A text-encoder run is asked with its own score, similarity(image, caption): recomputed
  here from the networks for one change, with numpy's cosine."""
  from experiments.configs import text_encoder as text_config  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import runs  # pylint: disable=g-import-not-at-top
  from jaxgen.families import text_encoder  # pylint: disable=g-import-not-at-top
  c = text_config.get_config('bilstm,tiny')
  c.data.data_dir = str(tmp_path / 'tfds')
  c.num_steps = 2
  workdir = str(tmp_path / 'enc')
  loop.train_and_evaluate(c, workdir)
  out = matching_probe.probe_run(workdir, num_images=12, batch_size=8)
  assert (out['family'], out['text_encoder'], out['similarity']) == (
      'text_encoder', 'bilstm', 'cosine')
  assert out['step'] == 2 and out['workdir'] == workdir and out['counterfactual'] == ''
  config, _, _, state = runs.restore_run(workdir)
  text, image = text_encoder.make_text_net(config), text_encoder.make_image_net(config)
  images = np.stack([shapes.render(shapes.sample_example('test', i), 32) for i in range(12)])
  variables = lambda n: {'params': state.nets[n]['params'], **state.nets[n]['vars']}  # noqa
  img = np.asarray(image.apply(variables('image'), images.astype(np.float32) / 127.5 - 1),
                   np.float64)
  pairs = [matching_probe.contrast_captions('test', i, 'colour', 12) for i in range(12)]

  def cosine(texts):
    ids, lens = text.tokenizer.encode_batch(texts)
    cap = np.asarray(text.embed(variables('text'), ids, lens), np.float64)
    return np.sum(img * cap, 1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(cap, axis=1))

  right, changed = cosine([p[0] for p in pairs]), cosine([p[1] for p in pairs])
  got = out['changes']['colour']
  # Different batch sizes and summation orders: float32 cosines (|c| <= 1) agree to a few
  # 1e-7, so a preference can only flip on a near-tie (none of these 12 pairs is within
  # 1e-4) and a mean gap is within 1e-5.
  assert np.min(np.abs(right - changed)) > 1e-4
  assert got['preference'] == matching_probe.preference(right, changed)
  np.testing.assert_allclose(got['logit_gap'], np.mean(right - changed), rtol=0, atol=1e-5)
  assert 'the encoder prefers' in matching_probe.table(out)
