"""The input pipeline: digits builder, mock TFDS data, per-process shards, whole-split reads,
exact positioning."""
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import digits, pipeline


def cfg(tfds_dir, **kw):
  base = dict(name='jaxgen_digits', resolution=16, channels=1, data_dir=tfds_dir)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_digit_arrays_are_sklearn_digits():
  from sklearn.datasets import load_digits
  images, labels, split = digits.digit_arrays(8)
  raw = load_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, raw.target)
  np.testing.assert_allclose(images[..., 0], np.round(raw.images * 255 / 16), atol=0)
  # Stratified 20 % test split.
  for c in range(10):
    n_c = (labels == c).sum()
    assert abs((split[labels == c] == 'test').sum() - 0.2 * n_c) <= 1


def test_digits_builder_splits_and_range(tfds_dir):
  c = cfg(tfds_dir)
  x_tr, y_tr = pipeline.load_split_arrays(c, 'train')
  x_te, y_te = pipeline.load_split_arrays(c, 'test')
  assert x_tr.shape[1:] == (16, 16, 1) and len(x_tr) + len(x_te) == 1797
  assert x_tr.dtype == np.float32 and x_tr.min() >= -1.0 and x_tr.max() <= 1.0
  assert set(np.unique(y_tr)) == set(range(10))
  # Train and test are disjoint sets of images.
  tr = {x.tobytes() for x in x_tr}
  assert not any(x.tobytes() in tr for x in x_te)


def test_training_stream_positioning_is_exact(tfds_dir):
  c = cfg(tfds_dir)
  it = pipeline.make_dataset(c, 'train', 100, seed=3)
  batches = [next(it) for _ in range(20)]  # Crosses epochs (1438 examples / 100 per batch).
  for start in (0, 7, 14, 19):
    resumed = next(pipeline.make_dataset(c, 'train', 100, seed=3, start_step=start))
    np.testing.assert_array_equal(resumed['image'], batches[start]['image'])
  # Another seed gives another order; each epoch is a permutation.
  other = next(pipeline.make_dataset(c, 'train', 100, seed=4))
  assert not np.array_equal(other['label'], batches[0]['label'])
  first_epoch = np.concatenate([b['label'] for b in batches])[:1438]
  _, y = pipeline.load_split_arrays(c, 'train')
  np.testing.assert_array_equal(np.bincount(first_epoch, minlength=10), np.bincount(y, minlength=10))


def _read_once(c, split):
  """Every example make_dataset gives this process in one ordered pass."""
  return np.concatenate([b['image'] for b in pipeline.make_dataset(c, split, 256, repeat=False)])


def test_per_process_shards_are_disjoint(tfds_dir, monkeypatch):
  """make_dataset (training input) reads this process's share of the split."""
  c = cfg(tfds_dir)
  full, _ = pipeline.load_split_arrays(c, 'train')
  assert len(full) == pipeline.split_size(c, 'train') == 1438
  shards = []
  for pid in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    shards.append({a.tobytes() for a in _read_once(c, 'train')})
    # The training stream of process pid draws from its own share only.
    batch = next(pipeline.make_dataset(c, 'train', 100, seed=0))
    assert {a.tobytes() for a in batch['image']} <= shards[pid]
  assert len(shards[0]) > 600 and len(shards[1]) > 600
  assert not shards[0] & shards[1]
  assert len(shards[0] | shards[1]) >= len(full) - 1


def test_load_split_arrays_reads_the_whole_split_on_every_process(tfds_dir, monkeypatch):
  """Evaluation data do not depend on the number of processes: each one gets every example."""
  c = cfg(tfds_dir)
  full_x, full_y = pipeline.load_split_arrays(c, 'test')
  assert len(full_x) == pipeline.split_size(c, 'test') == 1797 - 1438
  for pid in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    assert len(_read_once(c, 'test')) < len(full_x)  # make_dataset: this process's share.
    x, y = pipeline.load_split_arrays(c, 'test')
    np.testing.assert_array_equal(x, full_x)
    np.testing.assert_array_equal(y, full_y)
    assert pipeline.split_size(c, 'test') == len(full_x)
    x, y = pipeline.load_split_arrays(c, 'test', max_examples=100)
    np.testing.assert_array_equal(x, full_x[:100])
    np.testing.assert_array_equal(y, full_y[:100])


@pytest.mark.parametrize('name,res,ch', [('mnist', 32, 1), ('cifar10', 32, 3),
                                         ('celeb_a', 64, 3), ('oxford_flowers102', 16, 3)])
def test_mock_tfds_datasets(name, res, ch, tmp_path):
  c = ml_collections.ConfigDict(dict(name=name, resolution=res, channels=ch,
                                     data_dir=str(tmp_path)))
  with tfds.testing.mock_data(num_examples=24):
    batch = next(pipeline.make_dataset(c, 'train', 8, seed=0))
  assert batch['image'].shape == (8, res, res, ch)
  assert batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
  c = ml_collections.ConfigDict(dict(name='mnist', resolution=32, channels=1,
                                     data_dir=str(tmp_path)))
  t = time.time()
  with pytest.raises(pipeline.DatasetNotAvailableError, match=r"'mnist'.*tfds build mnist"):
    pipeline.make_dataset(c, 'train', 8)
  assert time.time() - t < 20


def test_image_folder(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for i in range(10):
    sub = tmp_path / f'class{i % 2}'
    sub.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(sub / f'{i}.png')
  (tmp_path / 'notes.txt').write_text('not an image')
  c = ml_collections.ConfigDict(dict(name='folder', path=str(tmp_path), resolution=16,
                                     channels=3))
  x, labels = pipeline.load_split_arrays(c, 'train')
  assert x.shape == (10, 16, 16, 3) and labels is None


@pytest.mark.parametrize('bad,match', [
    (dict(name='imagenet_typo'), 'accepted: jaxgen_digits'),
    (dict(resolution=12), 'resolutions'),
    (dict(channels=2), 'channels must be 1 or 3'),
    (dict(name='folder', path='/nonexistent'), 'directory of images'),
])
def test_bad_data_config(tfds_dir, bad, match):
  with pytest.raises(ValueError, match=match):
    pipeline.validate(cfg(tfds_dir, **bad))
