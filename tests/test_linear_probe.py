"""Linear probes (jaxgen.metrics.linear_probe) and the text-encoder probe tool."""
import numpy as np
import pytest

from experiments.configs import text_encoder as text_config
from jaxgen import text_probe
from jaxgen.data import captions
from jaxgen.engine import loop, runs
from jaxgen.families import text_encoder
from jaxgen.metrics import linear_probe


def test_linearly_coded_labels_are_read_exactly():
  # Each label is a direction in the embedding (one-hot x 5 plus N(0, 0.1) noise and 6
  # distractor dimensions): the classes are separated by a margin of 5 against noise of 0.1
  # per dimension (50 standard deviations), so a fitted probe makes no error on fresh points.
  rng = np.random.default_rng(0)
  def sample(n):
    y = rng.integers(0, 4, n)
    x = np.concatenate([5.0 * np.eye(4)[y], rng.normal(size=(n, 6))], axis=1)
    return x + rng.normal(scale=0.1, size=x.shape), y
  out = linear_probe.probe(*sample(400), *sample(400))
  assert out['accuracy'] == out['train_accuracy'] == 1.0
  assert 0.15 < out['chance'] < 0.35  # the most common of 4 balanced classes


def test_labels_independent_of_the_embedding_score_chance():
  # Labels drawn independently of the features: the test accuracy is a binomial proportion
  # around the class rate 1/4 (the probe cannot do better on fresh points). n = 4000 gives a
  # standard deviation sqrt(0.25 * 0.75 / 4000) = 0.0068; 6 of them is 0.041.
  rng = np.random.default_rng(1)
  x_tr, x_te = rng.normal(size=(2000, 8)), rng.normal(size=(4000, 8))
  y_tr, y_te = rng.integers(0, 4, 2000), rng.integers(0, 4, 4000)
  out = linear_probe.probe(x_tr, y_tr, x_te, y_te)
  assert abs(out['accuracy'] - 0.25) < 0.041
  # Chance: the test frequency of the most common *train* label, counted by hand.
  common = np.bincount(y_tr).argmax()
  assert out['chance'] == pytest.approx(np.mean(y_te == common), abs=0)


def test_attribute_labels_take_the_first_object():
  data = {'object_shape': np.array([[3, 1], [0, 5]]), 'object_colour': np.array([[7, 0],
                                                                                 [2, 2]]),
          'background': np.array([1, 3]), 'image': np.zeros((2, 4, 4, 3))}
  labels = linear_probe.attribute_labels(data)
  assert sorted(labels) == ['background', 'colour', 'shape']
  np.testing.assert_array_equal(labels['shape'], [3, 0])
  np.testing.assert_array_equal(labels['colour'], [7, 2])
  np.testing.assert_array_equal(labels['background'], [1, 3])
  assert sorted(linear_probe.attribute_labels({'label': np.array([4, 9])})) == ['class']


@pytest.mark.parametrize('args, match', [
    ((np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((3, 3)), [0, 1, 0]), 'one D'),
    ((np.zeros((4, 2)), [0, 1, 0], np.zeros((3, 2)), [0, 1, 0]), 'One label per embedding'),
    ((np.zeros((4, 2)), [1, 1, 1, 1], np.zeros((3, 2)), [0, 1, 0]), 'at least 2 classes'),
])
def test_bad_inputs_name_the_problem(args, match):
  with pytest.raises(ValueError, match=match):
    linear_probe.probe(*args)


def test_no_labels_names_the_accepted_fields():
  with pytest.raises(ValueError, match='no attribute labels.*object_shape'):
    linear_probe.attribute_labels({'image': np.zeros((2, 4, 4, 3))})


def test_probe_run_on_a_tiny_text_encoder_run(tmp_path):
  c = text_config.get_config('char_cnn_rnn,tiny')
  c.data.data_dir = str(tmp_path / 'tfds')
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(c, workdir)
  out = text_probe.probe_run(workdir, train_images=40, test_images=20)
  assert out['step'] == c.num_steps
  assert (out['num_train_images'], out['num_test_images']) == (40, 20)
  names = ['shape', 'colour', 'size', 'position', 'background']
  for kind in ('text', 'image'):
    assert list(out[kind]) == names
    for r in out[kind].values():
      assert 0.0 <= r['accuracy'] <= 1.0 and 0.0 < r['chance'] <= 1.0
  table = text_probe.table(out).splitlines()
  assert len(table) == 3 + len(names) and table[2].startswith('| shape |')
  assert table[-1].startswith('| mean length (L2) |')
  # The lengths: the mean over the test captions (images) of each embedding's L2 norm.
  config, _, _, state = runs.restore_run(workdir, family='text_encoder')
  text, image = text_encoder.make_text_net(config), text_encoder.make_image_net(config)
  data = captions.load_caption_split(config.data, 'test', text.tokenizer, max_examples=20,
                                     whole=True)
  cap, _, img = text_encoder.embed_split(text, image, state.nets, data, 250)
  cap, img = np.asarray(cap, np.float64), np.asarray(img, np.float64)
  # float32 embeddings of O(1) entries: the float32 norm and mean agree with float64 to
  # ~1e-6 relative.
  np.testing.assert_allclose(out['length']['text'], np.sqrt((cap ** 2).sum(1)).mean(), rtol=1e-5)
  np.testing.assert_allclose(out['length']['image'], np.sqrt((img ** 2).sum(1)).mean(),
                             rtol=1e-5)
  assert len(cap) == 20 * 10 and out['length']['text'] > 0
  with pytest.raises(ValueError, match='holds no trained run'):
    text_probe.probe_run(str(tmp_path / 'nothing'))
  with pytest.raises(ValueError, match='fitted on the train split'):
    text_probe.probe_run(workdir, split='train')
