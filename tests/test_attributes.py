"""The jaxgen_shapes attribute classifier and the text-image scores built on it.

Fast tests check the scoring on exact, hand-made classifier outputs and the cache. The slow
ones train a classifier with a short recipe (300 steps on a 1,000-image build at 32x32, about
2 minutes on a loaded 2-core CPU): well above chance on the real test renders, its scores fall
to chance for shuffled captions and count an edited attribute wrong.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen.data import shapes
from jaxgen.metrics import attributes, retrieval

SIZES = {'train': 1000, 'test': 200, 'heldout': 8}
RECIPE = attributes.TrainRecipe(num_steps=300)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp('attributes')
  cfg = ml_collections.ConfigDict(dict(name='jaxgen_shapes', resolution=32,
                                       data_dir=str(root / 'tfds'), split_sizes=SIZES))
  clf = attributes.get_attribute_classifier(cfg, str(root / 'cache'), recipe=RECIPE)
  return cfg, clf, attributes.load_split(cfg, 'test'), str(root / 'cache')


def _independent_expectation(outputs, labels):
  """Expected accuracies when each caption is scored against an unrelated image: for each
  caption object (position p, value v), the fraction of all images whose prediction at p
  is v (averaged over every image, so its own image counts with weight 1 / N)."""
  pred = {h: np.asarray(outputs[h]).argmax(-1) for h in attributes.HEADS}
  there = pred['shape'] != attributes.EMPTY
  pos = labels['object_position']
  rows, slots = np.nonzero(pos >= 0)
  p = pos[rows, slots]
  out = {'position': there[:, p].mean(0).mean()}
  for h in attributes.HEADS:
    v = labels[f'object_{h}'][rows, slots]
    out[h] = (there[:, p] & (pred[h][:, p] == v[None, :])).mean(0).mean()
  return out, len(rows)


@pytest.mark.slow
def test_real_renders_well_above_chance_and_shuffled_captions_at_chance(trained):
  _, clf, test, _ = trained
  outputs = clf(test['image'])
  real = attributes.attribute_accuracy(outputs, test)
  # Chance at a known position: colour 1/8, size 1/2. Measured with this recipe: position
  # and count 1.0, colour and size 0.98.
  for key, floor in (('position', 0.9), ('colour', 0.9), ('size', 0.85), ('count', 0.8)):
    assert real[key] > floor, (key, real)
  # Shape is the slow attribute (small objects are 4-5 px wide at 32x32): 0.30 after this
  # recipe, 0.68 after 1,500 steps. Chance is 1/6; 0.30 over ~300 objects is 5 standard
  # errors above it, the threshold 3.
  n = real['num_objects']
  assert real['shape'] > 1 / 6 + 3 * np.sqrt(1 / 6 * 5 / 6 / n), real
  shuffled_labels = {k: np.roll(v, 1, axis=0) for k, v in test.items() if k != 'image'}
  shuffled = attributes.attribute_accuracy(outputs, shuffled_labels)
  expected, n = _independent_expectation(outputs, shuffled_labels)
  for key in ('position', 'shape', 'colour', 'size'):
    # A shuffle pairs images and captions (almost) independently: the accuracy is a mean of
    # n ~Bernoulli(expected) outcomes, within 4 standard errors (+ the 1/N self-pairing).
    se = np.sqrt(expected[key] * (1 - expected[key]) / n)
    assert abs(shuffled[key] - expected[key]) < 4 * se + 1 / len(test['image']), key
    if key != 'shape':
      assert real[key] - shuffled[key] > 0.3, key


@pytest.mark.slow
def test_a_wrong_attribute_is_counted_wrong(trained):
  _, clf, test, _ = trained
  outputs = clf(test['image'])
  real = attributes.attribute_accuracy(outputs, test)
  edited = dict(test)
  colour = test['object_colour']
  edited['object_colour'] = np.where(colour >= 0, (colour + 1) % 8, -1)
  got = attributes.attribute_accuracy(outputs, edited)
  # An object now scores a right colour only where the classifier got the true colour
  # wrong: at most (objects found) - (objects found with the true colour).
  assert got['colour'] <= real['position'] - real['colour'] + 1e-12
  for key in ('position', 'shape', 'size', 'count'):
    assert got[key] == real[key]


@pytest.mark.slow
def test_fid_and_r_precision(trained):
  cfg, clf, test, _ = trained
  train = attributes.load_split(cfg, 'train')
  ref = clf(train['image'])['features']
  same = attributes.text_image_scores(clf, test['image'], test, reference=ref)
  # Colours swapped (RGB -> BGR): shapes and positions stay, colours change.
  swapped = attributes.text_image_scores(clf, test['image'][..., ::-1], test, reference=ref)
  assert swapped['colour'] < same['colour'] - 0.3
  assert swapped['fid'] > 2 * same['fid']
  emb = np.random.default_rng(0).normal(size=(100, 16))
  both = attributes.text_image_scores(clf, test['image'][:100], {
      k: v[:100] for k, v in test.items()}, image_emb=emb[:100], caption_emb=emb[:100])
  assert both['r_precision'] == 1.0


def test_classifier_is_cached(tmp_path, monkeypatch):
  """Trained once per (resolution, split sizes, recipe), then loaded from the cache."""
  cfg = ml_collections.ConfigDict(dict(name='jaxgen_shapes', resolution=32, data_dir='unused',
                                       split_sizes=SIZES))
  calls = []

  def fake_train(data_config, recipe, progress=False):
    del progress
    calls.append(recipe)
    params = attributes.AttributeNet().init(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 3)))
    return params, {'recipe': dataclasses.asdict(recipe), 'resolution': data_config.resolution}

  monkeypatch.setattr(attributes, 'train', fake_train)
  first = attributes.get_attribute_classifier(cfg, str(tmp_path), recipe=RECIPE)
  again = attributes.get_attribute_classifier(cfg, str(tmp_path), recipe=RECIPE)
  assert len(calls) == 1 and again.cache_id == first.cache_id and again.meta == first.meta
  x = np.linspace(-1, 1, 2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3)
  out = again(x)
  np.testing.assert_array_equal(out['shape'], first(x)['shape'])
  assert out['shape'].shape == (2, 5, 7) and out['features'].shape == (2, 160)
  attributes.get_attribute_classifier(cfg, str(tmp_path), recipe=attributes.TrainRecipe(
      num_steps=301))
  assert len(calls) == 2  # another recipe: trained anew


def _perfect_outputs(labels):
  """Logits that predict exactly the labelled objects (one-hot per head)."""
  targets = attributes.position_targets(labels)
  out = {}
  for head, n in attributes.HEADS.items():
    out[head] = np.eye(n)[np.maximum(targets[head], 0)]
  return out


def test_scoring_on_exact_outputs():
  labels = {'object_shape': np.array([[0, 3], [5, -1], [2, -1]]),
            'object_colour': np.array([[1, 7], [0, -1], [4, -1]]),
            'object_size': np.array([[0, 1], [1, -1], [0, -1]]),
            'object_position': np.array([[4, 0], [2, -1], [3, -1]])}
  outputs = _perfect_outputs(labels)
  got = attributes.attribute_accuracy(outputs, labels)
  assert got == {'position': 1.0, 'shape': 1.0, 'colour': 1.0, 'size': 1.0, 'object': 1.0,
                 'count': 1.0, 'num_objects': 4}
  # The image of row 0 scored against row 1's caption etc. (roll by one).
  rolled = {k: np.roll(v, 1, axis=0) for k, v in labels.items()}
  got = attributes.attribute_accuracy(outputs, rolled)
  # Image 0 (objects at centre, top) gets row 2's caption (right), image 1 (left) row 0's
  # (centre, top), image 2 (right) row 1's (left): no caption object is where the image
  # has one; only image 2 holds as many objects as its caption names.
  assert got['position'] == 0.0 and got['count'] == pytest.approx(1 / 3)
  edited = dict(labels, object_size=np.where(labels['object_size'] >= 0,
                                             1 - labels['object_size'], -1))
  got = attributes.attribute_accuracy(outputs, edited)
  assert got['size'] == 0.0 and got['object'] == 0.0
  assert got['position'] == got['shape'] == got['colour'] == 1.0
  # Nothing predicted anywhere: every per-object score is 0, and so is count.
  empty = dict(outputs, shape=np.eye(7)[np.full((3, 5), attributes.EMPTY)])
  got = attributes.attribute_accuracy(empty, labels)
  assert all(got[k] == 0.0 for k in ('position', 'shape', 'colour', 'size', 'object', 'count'))


def test_first_object_keeps_only_slot_zero():
  labels = {'object_position': np.array([[2, 4], [0, -1]]), 'object_shape': np.zeros((2, 2))}
  out = attributes.first_object(labels)
  np.testing.assert_array_equal(out['object_position'], [[2, -1], [0, -1]])
  np.testing.assert_array_equal(labels['object_position'], [[2, 4], [0, -1]])  # not in place


def test_instrument_renders_cover_every_pair_and_match_the_renderer():
  out = attributes.render_instrument(32, 400)
  pos = out['object_position']
  there = pos >= 0
  pairs = set(zip(out['object_colour'][there], out['object_shape'][there]))
  # ~600 objects over 48 equally likely pairs: a given pair is missing with probability
  # (47/48)^600 ~ 3e-6, so all 48 appear, the 8 held-out ones included.
  assert len(pairs) == 48 and shapes.heldout_pair_ids() <= pairs
  np.testing.assert_array_equal(out['num_objects'], there.sum(1))
  # The pixels are the renderer's, scaled as the input pipeline scales them (x / 127.5 - 1).
  ex = shapes.sample_example(shapes.INSTRUMENT, 7)
  np.testing.assert_allclose(out['image'][7], shapes.render(ex, 32) / 127.5 - 1.0, atol=1e-6)
  # Not any split's example: the seeds differ.
  assert all(ex != shapes.sample_example(s, 7) for s in shapes.SPLIT_IDS)


def test_r_precision():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(200, 16))
  assert retrieval.r_precision(emb, emb) == 1.0
  assert retrieval.r_precision(emb, np.roll(emb, 1, axis=0)) < 0.1  # chance: 0.01


def test_errors():
  with pytest.raises(ValueError, match='for jaxgen_shapes'):
    attributes.get_attribute_classifier(ml_collections.ConfigDict(
        dict(name='jaxgen_digits', resolution=32)))
