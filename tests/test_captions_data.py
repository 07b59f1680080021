"""Caption datasets: the embedded shapes set, CUB/Oxford-102 builders on fixtures, batches."""
import glob
import hashlib
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen.data import caption_sets, captions, pipeline, shapes, text

TINY_SIZES = {'train': 48, 'test': 12, 'heldout': 12}


def tiny_shapes_config(data_dir, resolution=32, **kw):
  c = shapes.JaxgenShapesConfig(resolution=resolution, split_sizes=TINY_SIZES,
                                name=f'tiny{resolution}')
  base = dict(name='jaxgen_shapes', resolution=resolution, data_dir=str(data_dir),
              builder_config=c)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('shapes_tfds')
  captions.caption_builder(tiny_shapes_config(path))
  return path


def _read_split(builder, split):
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1))
  return list(ds.as_numpy_iterator())


# ----------------------------------------------------------------------------- rendering

def _word_in(words, caption):
  return any(f' {w} ' in f' {caption} ' for w in words)


def test_attributes_agree_with_pixels_and_captions():
  r = 64
  for i in range(150):
    ex = shapes.sample_example('train', i)
    img = shapes.render(ex, r)
    assert img.shape == (r, r, 3) and img.dtype == np.uint8
    bg = np.array(shapes.BACKGROUND_RGB[ex.background])
    for corner in (img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]):
      np.testing.assert_array_equal(corner, bg)
    yy, xx = np.mgrid[:r, :r] + 0.5  # pixel centres
    allowed = np.zeros((r, r), bool)
    for k, obj in enumerate(ex.objects):
      (fx, fy), fr = ex.centres[k], ex.radii[k]
      colour = np.array(shapes.COLOUR_RGB[obj.colour])
      exact = (img == colour).all(-1)
      near = np.hypot(xx - fx * r, yy - fy * r) <= fr * r
      # The object's colour covers a good part of its disc (the sparsest shapes, triangle
      # and star, fill 41 % and 42 % of it; anti-aliased edge pixels do not match exactly)...
      assert exact[near].mean() > 0.15, (i, k)
      allowed |= np.hypot(xx - fx * r, yy - fy * r) <= fr * r + 1
      # ...its position word matches the quadrant of its centre.
      assert np.allclose((fx, fy), shapes.POSITION_XY[obj.position], atol=shapes.JITTER)
      for c in ex.captions:
        assert _word_in(shapes.COLOUR_WORDS[shapes.COLOURS[obj.colour]], c), c
        assert _word_in(shapes.SHAPE_WORDS[shapes.SHAPES[obj.shape]], c), c
        assert _word_in(shapes.SIZE_WORDS[shapes.SIZES[obj.size]], c), c
        assert any(p in c for p in shapes.POSITION_WORDS[shapes.POSITIONS[obj.position]]), c
    # ...and exact object colours appear nowhere else (within a 1-pixel margin of the disc).
    for obj in ex.objects:
      exact = (img == np.array(shapes.COLOUR_RGB[obj.colour])).all(-1)
      assert not (exact & ~allowed).any(), i
    if len(ex.objects) == 2:  # Objects never overlap.
      (x0, y0), (x1, y1) = ex.centres
      assert np.hypot(x0 - x1, y0 - y1) > sum(ex.radii)
    assert len(ex.captions) == 10 and len(set(ex.captions)) == 10


def test_palette_is_distinct():
  rgb = np.array(shapes.COLOUR_RGB + shapes.BACKGROUND_RGB, float)
  d = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
  assert d[~np.eye(len(rgb), dtype=bool)].min() > 60


def test_background_is_mentioned_only_sometimes():
  mentions = 0
  n = 300
  for i in range(n):
    ex = shapes.sample_example('test', i)
    words = shapes.BACKGROUND_WORDS[shapes.BACKGROUNDS[ex.background]]
    mentions += sum(('background' in c or 'backdrop' in c) and any(w in c for w in words)
                    for c in ex.captions)
  # Binomial(3000, 0.3): mean 900, sd 25; +-5 sd.
  assert 775 < mentions < 1025


def test_heldout_combinations_never_in_train_or_test():
  held = shapes.heldout_pair_ids()
  assert len(held) == 8 and {c for c, _ in held} == set(range(8))
  assert {s for _, s in held} == set(range(len(shapes.SHAPES)))
  seen_colours, seen_shapes = set(), set()
  for split in ('train', 'test'):
    for i in range(shapes.SPLIT_SIZES[split]):
      for o in shapes.sample_example(split, i).objects:
        assert (o.colour, o.shape) not in held
        seen_colours.add(o.colour)
        seen_shapes.add(o.shape)
  # Every colour and every shape is seen, only not in the held-out pairings.
  assert seen_colours == set(range(8)) and seen_shapes == set(range(6))
  for i in range(shapes.SPLIT_SIZES['heldout']):
    o = shapes.sample_example('heldout', i).objects[0]
    assert (o.colour, o.shape) in held


def test_attributes_do_not_depend_on_resolution():
  ex = shapes.sample_example('heldout', 3)
  assert ex == shapes.sample_example('heldout', 3)
  a, b = shapes.render(ex, 32), shapes.render(ex, 256)
  np.testing.assert_array_equal(a[0, 0], b[0, 0])
  with pytest.raises(ValueError, match='split'):
    shapes.sample_example('val', 0)


# ----------------------------------------------------------------------------- shapes builder

def test_shapes_builder_features_and_splits(shapes_dir):
  builder = captions.caption_builder(tiny_shapes_config(shapes_dir))
  data = {s: _read_split(builder, s) for s in TINY_SIZES}
  for split, examples in data.items():
    assert len(examples) == TINY_SIZES[split]
    for ex in examples:
      assert ex['image'].shape == (32, 32, 3) and ex['image'].dtype == np.uint8
      assert ex['captions'].shape == (10,) and ex['captions'].dtype == object
      for key in ('object_shape', 'object_colour', 'object_size', 'object_position'):
        assert ex[key].shape == (2,) and ex[key].dtype == np.int64
      n = ex['num_objects']
      assert n in (1, 2) and (ex['object_shape'][n:] == -1).all()
  # Stored examples are exactly the rendered ones (TFDS may store them in any order).
  for split, examples in data.items():
    by_caption = {tuple(ex['captions']): ex for ex in examples}
    for i in range(TINY_SIZES[split]):
      ref = shapes.example_features(shapes.sample_example(split, i), 32)
      ex = by_caption[tuple(c.encode() for c in ref['captions'])]
      np.testing.assert_array_equal(ex['image'], ref['image'])
      np.testing.assert_array_equal(ex['object_colour'], ref['object_colour'])
      assert ex['background'] == ref['background']
  # Splits are disjoint sets of images.
  keys = {s: {ex['image'].tobytes() for ex in e} for s, e in data.items()}
  assert not keys['train'] & keys['test'] and not keys['train'] & keys['heldout']
  assert not keys['test'] & keys['heldout']
  held = shapes.heldout_pair_ids()
  for ex in data['train'] + data['test']:
    for k in range(ex['num_objects']):
      assert (ex['object_colour'][k], ex['object_shape'][k]) not in held


def test_shapes_build_is_deterministic(tmp_path):
  digests = []
  for run in range(2):
    builder = captions.caption_builder(tiny_shapes_config(tmp_path / str(run), resolution=16))
    files = sorted(glob.glob(os.path.join(builder.data_dir, '*.tfrecord*')))
    assert len(files) == 3
    digests.append([hashlib.sha256(open(f, 'rb').read()).hexdigest() for f in files])
  assert digests[0] == digests[1]


def test_shapes_config_errors():
  with pytest.raises(ValueError, match='split_sizes'):
    shapes.JaxgenShapesConfig(resolution=32, split_sizes={'train': 3})
  with pytest.raises(ValueError, match='resolutions'):
    captions.validate(ml_collections.ConfigDict(dict(name='jaxgen_shapes', resolution=48)))
  with pytest.raises(ValueError, match='jaxgen_shapes, jaxgen_cub_captions'):
    captions.validate(ml_collections.ConfigDict(dict(name='cub', resolution=64)))


# ----------------------------------------------------------------------------- batches

def test_caption_batches_content(shapes_dir):
  cfg = tiny_shapes_config(shapes_dir)
  vocab = text.CharVocab(max_len=120)
  batch = next(captions.make_caption_dataset(cfg, 'train', 8, vocab, seed=1, keep_text=True))
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['image'].min() >= -1 and batch['image'].max() <= 1
  assert batch['caption_ids'].shape == (8, 120) and batch['caption_ids'].dtype == np.int32
  assert batch['caption_len'].dtype == np.int32
  for key in captions.SHAPES_ATTRIBUTES:
    assert batch[key].dtype == np.int32
  assert batch['object_colour'].shape == (8, 2)
  # Each row is a stored example: its image, one of its own captions, its attributes.
  full = captions.load_caption_split(cfg, 'train', vocab)
  assert full['caption_ids'].shape == (48, 10, 120) and (full['num_captions'] == 10).all()
  index = {x.tobytes(): i for i, x in enumerate(full['image'])}
  for b in range(8):
    i = index[batch['image'][b].tobytes()]
    rows = [tuple(r) for r in full['caption_ids'][i]]
    assert tuple(batch['caption_ids'][b]) in rows
    ids, length = vocab.encode_batch([batch['caption'][b]])
    np.testing.assert_array_equal(ids[0], batch['caption_ids'][b])
    assert length[0] == batch['caption_len'][b] == len(batch['caption'][b])
    for key in captions.SHAPES_ATTRIBUTES:
      np.testing.assert_array_equal(batch[key][b], full[key][i])


def test_caption_stream_positioning_and_redraws(shapes_dir):
  cfg = tiny_shapes_config(shapes_dir)
  vocab = text.WordVocab.build(captions.split_captions(cfg, 'train'))
  it = captions.make_caption_dataset(cfg, 'train', 8, vocab, seed=3)
  batches = [next(it) for _ in range(18)]  # 3 epochs of 6 batches
  for start in (0, 5, 7, 13):
    resumed = next(captions.make_caption_dataset(cfg, 'train', 8, vocab, seed=3,
                                                 start_step=start))
    for key in ('image', 'caption_ids', 'caption_len', 'object_shape'):
      np.testing.assert_array_equal(resumed[key], batches[start][key])
  # Each epoch is a permutation of the split; captions are drawn afresh each epoch.
  per_epoch = []
  for e in range(3):
    imgs = np.concatenate([b['image'] for b in batches[6 * e:6 * e + 6]])
    caps = np.concatenate([b['caption_ids'] for b in batches[6 * e:6 * e + 6]])
    assert len({x.tobytes() for x in imgs}) == 48
    per_epoch.append({x.tobytes(): c.tobytes() for x, c in zip(imgs, caps)})
  changed = sum(per_epoch[0][k] != per_epoch[1][k] for k in per_epoch[0])
  assert changed > 30  # P(same caption) = 1/10 per image (or less with repeats)
  assert not all(np.array_equal(a['image'], b['image'])
                 for a, b in zip(batches[:6], batches[6:12]))
  other = next(captions.make_caption_dataset(cfg, 'train', 8, vocab, seed=4))
  assert not np.array_equal(other['image'], batches[0]['image'])
  # Train captions have no out-of-vocabulary words under their own vocabulary.
  assert not any((b['caption_ids'] == text.WORD_OOV_ID).any() for b in batches)


def test_caption_shards_are_disjoint(shapes_dir, monkeypatch):
  cfg = tiny_shapes_config(shapes_dir)
  shards = []
  for pid in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    it = captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(), repeat=False)
    shards.append({x.tobytes() for b in it for x in b['image']})
  assert len(shards[0]) == len(shards[1]) == 24 and not shards[0] & shards[1]
  # whole=True (evaluation) reads every example whatever the process.
  whole = captions.load_caption_split(cfg, 'train', text.CharVocab(), whole=True)
  assert {x.tobytes() for x in whole['image']} == shards[0] | shards[1]


def test_make_dataset_takes_its_tokenizer_from_the_config(shapes_dir):
  cfg = tiny_shapes_config(shapes_dir)
  char = captions.tokenizer_for(cfg)
  assert isinstance(char, text.CharVocab) and char.max_len == 201
  with cfg.unlocked():
    cfg.tokenizer, cfg.max_caption_len, cfg.vocab_min_count = 'word', 12, 2
  word = captions.tokenizer_for(cfg)
  ref = text.WordVocab.build(captions.split_captions(cfg, 'train'), min_count=2, max_len=12)
  assert word.words == ref.words and word.max_len == 12
  a = next(captions.make_dataset(cfg, 'train', 8, seed=2, start_step=3))
  b = next(captions.make_caption_dataset(cfg, 'train', 8, ref, seed=2, start_step=3))
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  with cfg.unlocked():
    cfg.tokenizer = 'bpe'
  with pytest.raises(ValueError, match='char, word'):
    captions.tokenizer_for(cfg)


def test_batch_size_errors(shapes_dir):
  cfg = tiny_shapes_config(shapes_dir)
  with pytest.raises(ValueError, match='fewer than one batch'):
    captions.make_caption_dataset(cfg, 'test', 64, text.CharVocab())
  with pytest.raises(ValueError, match='start_step'):
    captions.make_caption_dataset(cfg, 'test', 4, text.CharVocab(), start_step=-1)


# ----------------------------------------------------------------------------- CUB / Oxford

CUB_CLASSES = ('001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross')


def _jpeg(path, array):
  from PIL import Image
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, quality=95)


def _caption_file(path, n, tag):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write('\n'.join(f'this bird {tag} number {k}, with white wings.' for k in range(n)))
    f.write('\n\n')  # Trailing blank lines are ignored.


def _red_blue(h=40, w=60):
  img = np.zeros((h, w, 3), np.uint8)
  img[:, :w // 2] = (220, 20, 20)
  img[:, w // 2:] = (20, 20, 220)
  return img


def write_cub(root, split_files=True):
  lines, boxes = [], []
  n = 0
  for c in CUB_CLASSES:
    for k in range(2):
      n += 1
      stem = f'{c.split(".")[1]}_{k:04d}_{n}'
      img = _red_blue()
      if n == 2:
        img = img[..., 0]  # A grey image, as a few CUB images are.
      _jpeg(os.path.join(root, 'CUB_200_2011', 'images', c, stem + '.jpg'), img)
      _caption_file(os.path.join(root, 'cvpr2016_cub', 'text_c10', c, stem + '.txt'), 10,
                    f'{c}-{k}')
      lines.append(f'{n} {c}/{stem}.jpg')
      boxes.append(f'{n} 20.0 10.0 20.0 10.0')
  with open(os.path.join(root, 'CUB_200_2011', 'images.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(root, 'CUB_200_2011', 'bounding_boxes.txt'), 'w') as f:
    f.write('\n'.join(boxes) + '\n')
  if split_files:
    with open(os.path.join(root, 'cvpr2016_cub', 'trainvalclasses.txt'), 'w') as f:
      f.write(f'{CUB_CLASSES[0]}\n{CUB_CLASSES[2]}\n')
    with open(os.path.join(root, 'cvpr2016_cub', 'testclasses.txt'), 'w') as f:
      f.write(f'{CUB_CLASSES[1]}\n')


def _build(cls, data_dir, manual_dir, config=None):
  builder = cls(data_dir=str(data_dir), config=config) if config else cls(data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def test_stackgan_crop_by_hand():
  img = np.arange(40 * 60).reshape(40, 60)
  # box x=20, y=10, w=20, h=10: half-side int(0.75 * 20) = 15 around centre (30, 15),
  # rows clipped to [0, 30), columns [15, 45).
  np.testing.assert_array_equal(caption_sets.stackgan_crop(img, (20, 10, 20, 10)),
                                img[0:30, 15:45])
  # x=50, y=30, w=h=10: half-side 7 around (55, 35): rows [28, 42) -> [28, 40), columns
  # [48, 62) -> [48, 60).
  np.testing.assert_array_equal(caption_sets.stackgan_crop(img, (50, 30, 10, 10)),
                                img[28:40, 48:60])


def test_cub_builder_on_fixture(tmp_path):
  manual = tmp_path / 'manual'
  write_cub(str(manual))
  full = _build(caption_sets.JaxgenCubCaptions, tmp_path / 'tfds', manual, 'full')
  train, test = _read_split(full, 'train'), _read_split(full, 'test')
  assert len(train) == 4 and len(test) == 2
  assert {int(e['label']) for e in train} == {0, 2} and {int(e['label']) for e in test} == {1}
  for ex in train + test:
    name = ex['filename'].decode()
    cls_dir = name.split('/')[0]
    assert int(ex['label']) == CUB_CLASSES.index(cls_dir)
    with open(os.path.join(manual, 'cvpr2016_cub', 'text_c10', name + '.txt')) as f:
      expected = [line.strip() for line in f if line.strip()]
    assert [c.decode() for c in ex['captions']] == expected and len(expected) == 10
    assert ex['image'].shape == (40, 60, 3)  # grey images are stored as RGB too
  crop = _build(caption_sets.JaxgenCubCaptions, tmp_path / 'tfds', manual, 'bbox_crop')
  for ex in _read_split(crop, 'train'):
    assert ex['image'].shape == (30, 30, 3)  # see test_stackgan_crop_by_hand
    left, right = ex['image'][15, 4].astype(int), ex['image'][15, 25].astype(int)
    # Far from the red/blue edge; the colours differ by 200 levels, JPEG by a few.
    if ex['filename'].decode().split('_')[-1] != '2':
      assert left[0] - left[2] > 150 and right[2] - right[0] > 150


def test_stackgan_text_layout_and_split_fallback(tmp_path, capsys):
  manual = tmp_path / 'manual'
  write_cub(str(manual))
  os.makedirs(manual / 'birds')
  os.rename(manual / 'cvpr2016_cub' / 'text_c10', manual / 'birds' / 'text')
  for name in ('trainvalclasses.txt', 'testclasses.txt'):
    os.rename(manual / 'cvpr2016_cub' / name, manual / 'birds' / name)
  builder = _build(caption_sets.JaxgenCubCaptions, tmp_path / 'tfds', manual, 'full')
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {'train': 4, 'test': 2}
  # Without split files: the first classes in sorted order, with a warning.
  got = caption_sets.split_classes(str(tmp_path), ['c', 'a', 'b'], 2)
  assert got == {'train': ['a', 'b'], 'test': ['c']}
  assert 'NOT Reed' in capsys.readouterr().out


def test_flowers_builder_and_batches(tmp_path):
  manual = tmp_path / 'manual'
  n = 0
  for c in ('class_00001', 'class_00002'):
    for _ in range(4):
      n += 1
      _jpeg(str(manual / 'jpg' / f'image_{n:05d}.jpg'), _red_blue(24, 32))
      _caption_file(str(manual / 'text_c10' / c / f'image_{n:05d}.txt'), 10, c)
  (manual / 'trainvalclasses.txt').write_text('class_00002\n')
  (manual / 'testclasses.txt').write_text('class_00001\n')
  cfg = ml_collections.ConfigDict(dict(name='jaxgen_flowers_captions', resolution=16,
                                       data_dir=str(tmp_path / 'tfds'),
                                       manual_dir=str(manual)))
  batch = next(captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(), keep_text=True))
  assert batch['image'].shape == (4, 16, 16, 3) and (batch['label'] == 1).all()
  assert all(c.startswith('this bird class_00002') for c in batch['caption'])
  test = _read_split(captions.caption_builder(cfg), 'test')
  assert sorted(e['filename'].decode() for e in test) == [
      f'class_00001/image_{k:05d}' for k in range(1, 5)]
  # Precomputed embeddings (as StackGAN's pickles): row k of image m is the constant m + k/10,
  # so a batch row shows which image and which caption it was looked up for.
  table = {f'class_{1 + (m - 1) // 4:05d}/image_{m:05d}':
           np.tile((m + np.arange(10) / 10)[:, None], (1, 3)).astype(np.float32)
           for m in range(1, 9)}
  seen = set()
  it = captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(), keep_text=True,
                                     embeddings=table)
  for batch in (next(it) for _ in range(5)):
    assert batch['caption_embedding'].shape == (4, 3)
    for b in range(4):
      name, k = batch['filename'][b], int(batch['caption_index'][b])
      np.testing.assert_array_equal(batch['caption_embedding'][b], table[name][k])
      # The drawn caption is line k of the image's caption file.
      assert batch['caption'][b] == f'this bird class_00002 number {k}, with white wings.'
      seen.add(k)
  assert len(seen) > 5  # 20 draws from 10 captions
  with pytest.raises(KeyError, match='No precomputed embedding'):
    next(captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(),
                                       embeddings={'x/y': np.zeros((10, 3))}))


def test_manual_data_errors(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  # An empty manual_dir: TFDS itself stops, quoting the builder's download instructions.
  with pytest.raises(AssertionError, match='CUB_200_2011.tgz.*reedscot'):
    _build(caption_sets.JaxgenCubCaptions, tmp_path / 'a', manual, 'full')
  write_cub(str(manual))
  os.rename(manual / 'cvpr2016_cub', manual / 'elsewhere')
  with pytest.raises(caption_sets.ManualDataError, match='text_c10.*reedscot'):
    _build(caption_sets.JaxgenCubCaptions, tmp_path / 'a', manual, 'full')
  os.rename(manual / 'elsewhere', manual / 'cvpr2016_cub')
  os.remove(manual / 'CUB_200_2011' / 'bounding_boxes.txt')
  with pytest.raises(caption_sets.ManualDataError, match='bounding_boxes'):
    _build(caption_sets.JaxgenCubCaptions, tmp_path / 'b', manual, 'bbox_crop')
  with pytest.raises(caption_sets.ManualDataError, match='102flowers.tgz'):
    (manual / 'text_c10').mkdir()
    _build(caption_sets.JaxgenFlowersCaptions, tmp_path / 'c', manual)
  (manual / 'text_c10').rmdir()
  (manual / 'cvpr2016_cub' / 'testclasses.txt').write_text('004.Groove_billed_Ani\n')
  with pytest.raises(ValueError, match='not directories of text_c10'):
    _build(caption_sets.JaxgenCubCaptions, tmp_path / 'd', manual, 'full')
  cfg = ml_collections.ConfigDict(dict(name='jaxgen_cub_captions', resolution=64,
                                       data_dir=str(tmp_path / 'e')))
  with pytest.raises(pipeline.DatasetNotAvailableError, match='manual_dir'):
    captions.caption_builder(cfg)


def test_coco_captions_name_mapping(tmp_path):
  cfg = ml_collections.ConfigDict(dict(name='coco_captions', resolution=16,
                                       data_dir=str(tmp_path)))
  with tfds.testing.mock_data(num_examples=12):
    batch = next(captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(),
                                               keep_text=True))
  assert batch['image'].shape == (4, 16, 16, 3)
  assert batch['caption_ids'].shape == (4, 201) and len(batch['caption']) == 4
  with pytest.raises(ValueError, match='keyed by filename'):
    captions.make_caption_dataset(cfg, 'train', 4, text.CharVocab(), embeddings={'a': 1})



# ----------------------------------------------------------------------------- counterfactuals

def _parse_objects(caption):
  """(skeleton, [(shape, colour)]) of a jaxgen_shapes caption, read word by word: every object
  phrase is a size word, one colour word and a one- or two-word shape (an independent reader
  of the templates, not the function under test's regular expressions)."""
  size_words = {w for ws in shapes.SIZE_WORDS.values() for w in ws}
  colour_of = {w: shapes.COLOURS.index(c) for c, ws in shapes.COLOUR_WORDS.items() for w in ws}
  shape_of = {w: shapes.SHAPES.index(n) for n, ws in shapes.SHAPE_WORDS.items() for w in ws}
  words, skeleton, objects, t = caption.split(), [], [], 0
  while t < len(words):
    if words[t] in size_words and t + 2 < len(words) and words[t + 1] in colour_of:
      two = ' '.join(words[t + 2:t + 4])
      n = 2 if two in shape_of else 1
      objects.append((shape_of[' '.join(words[t + 2:t + 2 + n])], colour_of[words[t + 1]]))
      skeleton.append(f'{words[t]} <object>')
      t += 2 + n
    else:
      skeleton.append(words[t])
      t += 1
  return ' '.join(skeleton), objects


def test_counterfactual_caption_changes_one_attribute_of_one_object():
  held = shapes.heldout_pair_ids()
  for attr in shapes.COUNTERFACTUAL_ATTRIBUTES:
    slot = shapes.COUNTERFACTUAL_ATTRIBUTES.index(attr)  # 0: shape, 1: colour
    picked, values = set(), set()
    for i in range(80):
      ex = shapes.sample_example('train', i)
      objects = [(o.shape, o.colour) for o in ex.objects]
      for j, caption in enumerate(ex.captions):
        skeleton, parsed = _parse_objects(caption)
        assert parsed == objects  # the reader agrees with the stored attributes
        out = shapes.counterfactual_caption(caption, objects, attr,
                                            np.random.default_rng((i, j)))
        out_skeleton, out_objects = _parse_objects(out)
        assert out_skeleton == skeleton  # every other word as it was
        diff = [k for k in range(len(objects)) if out_objects[k] != objects[k]]
        assert len(diff) == 1, (caption, out)
        k = diff[0]
        assert out_objects[k][1 - slot] == objects[k][1 - slot]  # the other attribute kept
        assert (out_objects[k][1], out_objects[k][0]) not in held  # never a held-out pair
        picked.add((len(objects), k))
        values.add(out_objects[k][slot])
    # Either object of a two-object caption is picked; every value gets written.
    assert {(2, 0), (2, 1), (1, 0)} <= picked
    assert len(values) == len(shapes.SHAPES if attr == 'shape' else shapes.COLOURS)


def test_counterfactual_caption_errors():
  ex = shapes.sample_example('train', 0)
  objects = [(o.shape, o.colour) for o in ex.objects]
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match='accepted: shape, colour'):
    shapes.counterfactual_caption(ex.captions[0], objects, 'size', rng)
  wrong = [((s + 1) % len(shapes.SHAPES), c) for s, c in objects]
  with pytest.raises(ValueError, match='does not name the shapes'):
    shapes.counterfactual_caption(ex.captions[0], wrong, 'shape', rng)
  with pytest.raises(ValueError, match='does not name the colours'):
    shapes.counterfactual_caption('a small square at the top', [(1, 0)], 'colour', rng)
  for value, match in (('size', 'accepted attributes are shape, colour'),
                       ('shape,shape', 'each at most once'), (3, 'comma-separated')):
    with pytest.raises(ValueError, match=match):
      captions.counterfactual_attributes({'name': 'jaxgen_shapes', 'counterfactual': value})
  with pytest.raises(ValueError, match='only jaxgen_shapes'):
    captions.counterfactual_attributes({'name': 'coco_captions', 'counterfactual': 'shape'})
  assert captions.counterfactual_attributes({'name': 'coco_captions'}) == ()
  assert captions.counterfactual_attributes(
      {'name': 'jaxgen_shapes', 'counterfactual': ' colour, shape '}) == ('colour', 'shape')


def test_counterfactual_batches_and_resume(shapes_dir):
  cfg = tiny_shapes_config(shapes_dir, counterfactual='shape,colour')
  vocab = text.CharVocab()  # Reed's 201 characters: no caption here is cut
  kw = dict(seed=5, keep_text=True, counterfactual=captions.counterfactual_attributes(cfg))
  it = captions.make_caption_dataset(cfg, 'train', 8, vocab, **kw)
  batches = [next(it) for _ in range(8)]
  kinds = set()
  for b in batches:
    for r in range(8):
      caption = b['caption'][r]
      objects = [(s, c) for s, c in zip(b['object_shape'][r], b['object_colour'][r]) if s >= 0]
      out = vocab.decode(b['counterfactual_ids'][r][:b['counterfactual_len'][r]])
      skeleton, parsed = _parse_objects(caption)
      assert parsed == objects
      out_skeleton, changed = _parse_objects(out)
      assert out_skeleton == skeleton
      diff = [(int(changed[k][0] != objects[k][0]), int(changed[k][1] != objects[k][1]))
              for k in range(len(objects)) if changed[k] != objects[k]]
      assert len(diff) == 1 and sum(diff[0]) == 1, (caption, out)
      kinds.add('shape' if diff[0][0] else 'colour')
  assert kinds == {'shape', 'colour'}
  # A stream resumed at step k writes the same counterfactual captions as step k of the
  # uninterrupted one (they are drawn from the step, the row and the caption).
  for start in (0, 3, 7):
    resumed = next(captions.make_caption_dataset(cfg, 'train', 8, vocab, start_step=start,
                                                 **kw))
    for key in ('caption_ids', 'counterfactual_ids', 'counterfactual_len'):
      np.testing.assert_array_equal(resumed[key], batches[start][key])
  # make_dataset reads data.counterfactual; off by default.
  a = next(captions.make_dataset(cfg, 'train', 8, seed=5, start_step=2))
  np.testing.assert_array_equal(a['counterfactual_ids'], batches[2]['counterfactual_ids'])
  with cfg.unlocked():
    cfg.counterfactual = ''
  assert 'counterfactual_ids' not in next(captions.make_dataset(cfg, 'train', 8, seed=5))
