"""Caption datasets for text-to-image training: images, one tokenised caption each, labels.

``make_caption_dataset`` yields dicts of numpy arrays:

* ``image`` float32 [B, r, r, 3] in [-1, 1] (the same decoding, crop and resize as
  :mod:`jaxgen.data.pipeline`, whose ``_base_dataset`` it reuses),
* ``caption_ids`` int32 [B, max_len] and ``caption_len`` int32 [B]: one of the image's
  captions, drawn afresh every epoch, tokenised by the given vocabulary
  (:mod:`jaxgen.data.text`),
* ``label`` int32 [B] for class-labelled sets (CUB, Oxford-102), and for ``jaxgen_shapes``
  its attributes: ``object_shape``, ``object_colour``, ``object_size``, ``object_position``
  int32 [B, 2] (-1 in the second slot of one-object images), ``num_objects``, ``background``
  int32 [B],
* ``caption_index`` int32 [B]: which of its image's captions each row got; with
  precomputed ``embeddings`` (CUB/Oxford-102) also ``caption_embedding`` float32 [B, dim].

Positioning follows :func:`jaxgen.data.pipeline.make_dataset`: with ``repeat`` the stream
is a pure function of (seed, process, step): epoch ``e`` is this process's share of the split
shuffled with seed ``seed * 1_000_003 + e``, and the caption of the image at position ``i`` of
the (unshuffled) share is drawn by a stateless generator keyed by (that seed, i), so
``start_step`` resumes at exactly the batch, images and captions, a run stopped at.

Names (``data_config.name``): ``jaxgen_shapes`` (embedded, built on first use),
``jaxgen_cub_captions`` and ``jaxgen_flowers_captions`` (Reed et al.'s captions; built from
``data_config.manual_dir`` on first use, see :mod:`jaxgen.data.caption_sets`), and
``coco_captions`` (TFDS's MS-COCO 2014 captions with Karpathy's splits, prepared with
``tfds build coco_captions``; 5-7 captions per image).

``data_config`` fields: ``name``, ``resolution`` (images are cropped/resized to it),
``data_dir`` (TFDS data dir; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``),
``builder_config`` (optional: ``'full'``/``'bbox_crop'`` for CUB; for ``jaxgen_shapes`` the
resolution by default, or a :class:`jaxgen.data.shapes.JaxgenShapesConfig`), ``split_sizes``
(``jaxgen_shapes`` only, optional: ``{'train': n, 'test': n, 'heldout': n}`` builds a smaller
set, e.g. for tests, under its own name; plain values, so it fits in a run's config.json),
``manual_dir``
(CUB/Oxford-102 sources), and as in pipeline.py ``cache`` (default True: the decoded split
is kept in memory) and ``shuffle_buffer`` (default 10,000).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

from jaxgen import registry
from jaxgen.data import pipeline

SHAPES_ATTRIBUTES = ('object_shape', 'object_colour', 'object_size', 'object_position',
                     'num_objects', 'background')


@dataclasses.dataclass(frozen=True)
class CaptionSet:
  """How to read one caption dataset."""
  crop: str                            # pipeline's crop: 'resize' or 'center'
  captions: tuple[str, ...]            # path to the caption strings in a TFDS example
  attributes: tuple[str, ...] = ()     # integer features passed through as int32
  filename: str | None = None          # feature naming the image ('<class dir>/<stem>')
  module: str | None = None            # jaxgen module with the builder (None: TFDS's own)
  builder_class: str | None = None
  manual: bool = False                 # built from data_config.manual_dir


CAPTION_SETS = {
    'jaxgen_shapes': CaptionSet('resize', ('captions',), SHAPES_ATTRIBUTES,
                                module='jaxgen.data.shapes', builder_class='JaxgenShapes'),
    'jaxgen_cub_captions': CaptionSet('center', ('captions',), (), 'filename',
                                      'jaxgen.data.caption_sets', 'JaxgenCubCaptions',
                                      manual=True),
    'jaxgen_flowers_captions': CaptionSet('center', ('captions',), (), 'filename',
                                          'jaxgen.data.caption_sets', 'JaxgenFlowersCaptions',
                                          manual=True),
    'coco_captions': CaptionSet('center', ('captions', 'text')),
}


def known_names() -> tuple[str, ...]:
  return tuple(CAPTION_SETS)


def validate(data_config):
  """Checks the name and resolution before anything is read; raises ValueError."""
  name = data_config.get('name')
  registry.lookup(CAPTION_SETS, name, 'caption dataset')
  res = data_config.get('resolution')
  if not isinstance(res, int) or res < 1:
    raise ValueError(f'data.resolution must be a positive integer; got {res!r}.')
  if name == 'jaxgen_shapes' and data_config.get('builder_config') is None:
    from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
    if res not in shapes.RESOLUTIONS:
      raise ValueError(f'jaxgen_shapes comes in resolutions {shapes.RESOLUTIONS} (images are '
                       f'rendered at that size); got {res}.')
  counterfactual_attributes(data_config)
  if data_config.get('channels', 3) != 3:
    raise ValueError(f'Caption datasets are RGB: data.channels must be 3; got '
                     f'{data_config.get("channels")!r}.')


# The batch keys of the counterfactual captions (:func:`counterfactual_attributes`).
COUNTERFACTUAL_KEYS = ('counterfactual_ids', 'counterfactual_len')


def counterfactual_attributes(data_config) -> tuple[str, ...]:
  """``data.counterfactual`` ('' by default; e.g. 'shape,colour') as a tuple; checked.

  When set, every training batch also carries ``counterfactual_ids`` / ``counterfactual_len``:
  each row's caption with one object's shape or colour changed (an attribute of the list
  drawn uniformly per row; :func:`jaxgen.data.shapes.counterfactual_caption`). Only
  ``jaxgen_shapes`` stores the attributes this needs.
  """
  text = data_config.get('counterfactual', '') or ''
  if not isinstance(text, str):
    raise ValueError(f'data.counterfactual must be a comma-separated string; got {text!r}.')
  attrs = tuple(a.strip() for a in text.split(',') if a.strip())
  if not attrs:
    return ()
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  bad = [a for a in attrs if a not in shapes.COUNTERFACTUAL_ATTRIBUTES]
  if bad or len(set(attrs)) != len(attrs):
    raise ValueError(f'data.counterfactual={text!r}: accepted attributes are '
                     f'{", ".join(shapes.COUNTERFACTUAL_ATTRIBUTES)}, each at most once.')
  if data_config.get('name') != 'jaxgen_shapes':
    raise ValueError(f'data.counterfactual needs the object attributes that only jaxgen_shapes '
                     f'stores; data.name={data_config.get("name")!r}.')
  return attrs


def _counterfactuals(batch, text, attrs, seed, step):
  """Each row's caption with one attribute changed (:func:`counterfactual_attributes`).

  Row i of the batch of ``step`` draws from ``np.random.default_rng((seed, step, i,
  crc32(caption)))``, so a resumed stream writes the same captions.
  """
  import zlib  # pylint: disable=g-import-not-at-top
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  out = []
  for i, raw in enumerate(text):
    caption = raw.decode('utf-8')
    rng = np.random.default_rng((seed, step, i, zlib.crc32(raw)))
    objects = [(s, c) for s, c in zip(batch['object_shape'][i], batch['object_colour'][i])
               if s >= 0]
    attr = attrs[int(rng.integers(len(attrs)))]
    out.append(shapes.counterfactual_caption(caption, objects, attr, rng))
  return out


def _builder_config(data_config):
  config = data_config.get('builder_config')
  if config is not None:
    return config
  if data_config.name == 'jaxgen_shapes':
    sizes = data_config.get('split_sizes')
    if not sizes:
      return str(data_config.resolution)
    from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
    sizes = dict(sizes.to_dict() if hasattr(sizes, 'to_dict') else sizes)
    tag = '_'.join(f'{k}{sizes.get(k)}' for k in sorted(sizes))
    return shapes.JaxgenShapesConfig(resolution=data_config.resolution, split_sizes=sizes,
                                     name=f'{data_config.resolution}_{tag}')
  return None


def caption_builder(data_config):
  """The prepared TFDS builder of ``data_config`` (building embedded/manual sets once)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  validate(data_config)
  pipeline._tf()  # pylint: disable=protected-access
  spec = CAPTION_SETS[data_config.name]
  data_dir = pipeline.default_data_dir(data_config.get('data_dir'))
  config = _builder_config(data_config)
  if spec.module is None:  # TFDS's own set: pipeline says how to prepare it when absent.
    return tfds.builder(data_config.name if config is None else
                        f'{data_config.name}/{config}', data_dir=data_dir)
  cls = getattr(importlib.import_module(spec.module), spec.builder_class)
  builder = cls(config=config, data_dir=data_dir) if config is not None else cls(
      data_dir=data_dir)
  if builder.is_prepared():
    return builder
  download_config = None
  if spec.manual:
    manual_dir = data_config.get('manual_dir')
    if not manual_dir:
      raise pipeline.DatasetNotAvailableError(
          f'{data_config.name} is not prepared under data_dir={data_dir!r}. It is built from '
          f'files you download yourself: {cls.MANUAL_DOWNLOAD_INSTRUCTIONS} Then pass '
          '--config.data.manual_dir=<that folder>.')
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  variant = f'/{builder.builder_config.name}' if builder.builder_config else ''
  print(f'Preparing {data_config.name}{variant} in {data_dir} (once).')
  tfds.display_progress_bar(False)
  try:
    builder.download_and_prepare(download_config=download_config)
  finally:
    tfds.display_progress_bar(True)
  return builder


def _get(example, path):
  for key in path:
    example = example[key]
  return example


def _base(data_config, split, whole=False):
  """(tf.data of images, caption strings (ragged per example), attributes; num_examples)."""
  tf = pipeline._tf()  # pylint: disable=protected-access
  spec = CAPTION_SETS[data_config.name]
  builder = caption_builder(data_config)
  config = data_config.copy_and_resolve_references()
  with config.unlocked():
    config.crop = spec.crop
    config.channels = 3

  def extra(ex):
    out = {'captions': _get(ex, spec.captions)}
    for key in spec.attributes:
      out[key] = tf.cast(ex[key], tf.int32)
    if spec.filename:
      out['filename'] = ex[spec.filename]
    return out

  # pylint: disable-next=protected-access
  return pipeline._base_dataset(config, split, whole=whole, builder=builder, extra=extra)


def _choose_caption(tf, seed_value):
  def choose(index, ex):
    ex = dict(ex)
    captions = ex.pop('captions')
    n = tf.shape(captions, out_type=tf.int64)[0]
    pick = tf.random.stateless_uniform(
        [], seed=tf.stack([seed_value, index]), minval=0, maxval=tf.int64.max,
        dtype=tf.int64) % tf.maximum(n, 1)
    ex['caption'] = tf.cond(n > 0, lambda: captions[pick], lambda: tf.constant(''))
    ex['caption_index'] = tf.cast(pick, tf.int32)
    return ex
  return choose


def _check_embeddings(embeddings, data_config):
  if embeddings is None:
    return
  if not CAPTION_SETS[data_config.name].filename:
    raise ValueError(f'Precomputed caption embeddings are keyed by filename, which '
                     f'{data_config.name} does not store; accepted with: '
                     f'{", ".join(n for n, s in CAPTION_SETS.items() if s.filename)}.')
  if not isinstance(embeddings, dict) or not embeddings:
    raise ValueError('embeddings must be a non-empty dict filename -> [captions, dim] array '
                     '(see jaxgen.data.embeddings.embeddings_by_filename).')


def _tokenised(ds, tokenizer, keep_text, embeddings=None, counterfactual=(), seed=0,
               start_step=0):
  for k, batch in enumerate(ds.as_numpy_iterator()):
    text = batch.pop('caption')
    names = batch.pop('filename', None)
    batch['caption_ids'], batch['caption_len'] = tokenizer.encode_batch(text)
    if counterfactual:
      batch[COUNTERFACTUAL_KEYS[0]], batch[COUNTERFACTUAL_KEYS[1]] = tokenizer.encode_batch(
          _counterfactuals(batch, text, counterfactual, seed, start_step + k))
    if embeddings is not None:
      rows = []
      for name, k in zip(names, batch['caption_index']):
        name = name.decode('utf-8')
        if name not in embeddings:
          raise KeyError(f'No precomputed embedding for {name!r} (the table has '
                         f'{len(embeddings)} entries, e.g. {next(iter(embeddings))!r}).')
        table = embeddings[name]
        if k >= len(table):
          raise ValueError(f'{name!r} has {len(table)} precomputed embeddings; caption {k} '
                           'was drawn. Captions and embeddings must come in the same order.')
        rows.append(table[k])
      batch['caption_embedding'] = np.stack(rows).astype(np.float32)
    if keep_text:
      batch['caption'] = np.array([t.decode('utf-8', errors='replace') for t in text],
                                  dtype=object)
      if names is not None:
        batch['filename'] = np.array([n.decode('utf-8') for n in names], dtype=object)
    yield batch


def make_caption_dataset(data_config, split: str, batch_size: int, tokenizer, *,
                         seed: int = 0, start_step: int = 0, repeat: bool = True,
                         whole: bool = False, keep_text: bool = False,
                         embeddings: dict | None = None,
                         counterfactual: tuple[str, ...] = ()) -> Iterator[dict]:
  """Yields numpy batches of this process's share of ``split`` (see the module docstring).

  ``tokenizer`` is a :class:`jaxgen.data.text.CharVocab` or ``WordVocab`` (anything with
  ``encode_batch(texts) -> (ids, lengths)``). With ``repeat`` (training) batches never end
  and ``start_step`` positions the stream; without it the split is read once in order with
  the epoch-0 caption choice and the last batch may be short; ``whole`` then reads every
  example of the split rather than this process's share (evaluation). ``keep_text`` adds the chosen
  captions as ``caption`` (an object array of str, for logging; not for the device), and
  ``filename`` where the set has one. ``caption_index`` int32 [B] says which caption of its
  image each row got. ``embeddings`` (``filename -> [captions, dim]``, e.g. StackGAN's
  char-CNN-RNN pickles via :func:`jaxgen.data.embeddings.embeddings_by_filename`) adds
  ``caption_embedding`` float32 [B, dim], the precomputed embedding of the drawn caption; it
  assumes the table lists an image's captions in the order of its caption file.
  ``counterfactual`` (attribute names, ``jaxgen_shapes`` only; see
  :func:`counterfactual_attributes`) adds ``counterfactual_ids`` and ``counterfactual_len``.
  """
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer; got {batch_size!r}.')
  if not isinstance(start_step, int) or start_step < 0:
    raise ValueError(f'start_step must be a non-negative integer; got {start_step!r}.')
  tf = pipeline._tf()  # pylint: disable=protected-access
  _check_embeddings(embeddings, data_config)
  if counterfactual:
    counterfactual_attributes(
        {'name': data_config.get('name'), 'counterfactual': ','.join(counterfactual)})
  if whole and repeat:
    raise ValueError('whole=True reads a split once for evaluation; it needs repeat=False.')
  base, num = _base(data_config, split, whole)
  if data_config.get('cache', True):
    base = base.cache()
  base = base.enumerate()
  if not repeat:
    ds = base.map(_choose_caption(tf, tf.constant(pipeline.epoch_seed(seed, 0), tf.int64)))
    return _tokenised(ds.batch(batch_size).prefetch(2), tokenizer, keep_text, embeddings,
                      counterfactual, seed)
  ds = pipeline.positioned_batches(
      base, num, data_config, split, batch_size, seed=seed, start_step=start_step,
      per_epoch=lambda shuffled, epoch_seed: shuffled.map(_choose_caption(tf, epoch_seed)))
  return _tokenised(ds, tokenizer, keep_text, embeddings, counterfactual, seed, start_step)


def split_captions(data_config, split: str = 'train') -> Iterator[str]:
  """Every caption of ``split`` (all processes' examples, in order), e.g. for a vocabulary."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = CAPTION_SETS[data_config.name]
  builder = caption_builder(data_config)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1),
                          decoders={'image': tfds.decode.SkipDecoding()})
  for ex in ds.map(lambda ex: _get(ex, spec.captions)).as_numpy_iterator():
    for caption in ex:
      yield caption.decode('utf-8', errors='replace')


def build_word_vocab(data_config, *, min_count: int = 1, max_size: int | None = None,
                     max_len: int = 18):
  """A :class:`jaxgen.data.text.WordVocab` of the train split's captions."""
  from jaxgen.data import text  # pylint: disable=g-import-not-at-top
  return text.WordVocab.build(_vocab_captions(data_config, 'train'), min_count=min_count,
                              max_size=max_size, max_len=max_len)


def _vocab_captions(data_config, split: str) -> Iterator[str]:
  """The captions of ``split`` for a vocabulary. The embedded set's come straight from its
  generator (no rendering and no TFDS build, so no TensorFlow): the captions its builder
  stores, in index order rather than the stored order, which a vocabulary does not depend on."""
  validate(data_config)
  if data_config.name != 'jaxgen_shapes' or data_config.get('builder_config') is not None:
    yield from split_captions(data_config, split)
    return
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  sizes = data_config.get('split_sizes') or shapes.SPLIT_SIZES
  for i in range(sizes[split]):
    yield from shapes.sample_example(split, i).captions


def load_caption_split(data_config, split: str, tokenizer, max_examples: int | None = None,
                       *, whole: bool = False):
  """Reads (a prefix of) this process's share of a split with *all* its captions, in order.

  For retrieval evaluation and for embedding every caption once (``whole``: every example
  of the split, whatever the number of processes). Returns a dict: ``image``
  float32 [N, r, r, 3] in [-1, 1], ``caption_ids`` int32 [N, C, max_len] and ``caption_len`` int32 [N, C] with C the largest caption count (missing
  captions have length 0), ``num_captions`` int32 [N], plus the set's labels/attributes.
  """
  base, _ = _base(data_config, split, whole)
  if max_examples is not None:
    base = base.take(max_examples)
  rows = []
  for ex in base.as_numpy_iterator():
    captions = [c.decode('utf-8', errors='replace') for c in ex.pop('captions')]
    if 'filename' in ex:
      ex['filename'] = ex['filename'].decode('utf-8')
    ex['caption_ids'], ex['caption_len'] = tokenizer.encode_batch(captions)
    rows.append(ex)
  if not rows:
    raise ValueError(f'{data_config.name}:{split} is empty on this process.')
  c = max(len(r['caption_len']) for r in rows)
  out = {'num_captions': np.array([len(r['caption_len']) for r in rows], np.int32)}
  for r in rows:
    pad = c - len(r['caption_len'])
    r['caption_ids'] = np.pad(r['caption_ids'], ((0, pad), (0, 0)))
    r['caption_len'] = np.pad(r['caption_len'], (0, pad))
  for key in rows[0]:
    out[key] = np.stack([r[key] for r in rows])
  return out


TOKENIZERS = ('char', 'word')
_VOCAB_CACHE: dict = {}


def tokenizer_for(data_config):
  """The tokenizer ``data_config`` asks for (built once per process; deterministic).

  ``data_config.tokenizer``: ``'char'`` (default; Reed's alphabet, ``max_caption_len``
  default 201) or ``'word'`` (a :class:`jaxgen.data.text.WordVocab` of the train split's
  captions with ``vocab_min_count`` (default 1) and ``vocab_max_size`` (default None),
  ``max_caption_len`` default 18). The word vocabulary depends only on the data, so a
  resumed run gets the same ids.
  """
  from jaxgen.data import text  # pylint: disable=g-import-not-at-top
  kind = data_config.get('tokenizer', 'char')
  max_len = data_config.get('max_caption_len')
  if kind == 'char':
    return text.CharVocab(max_len or text.REED_MAX_LEN)
  if kind != 'word':
    raise ValueError(f'Unknown data.tokenizer {kind!r}; accepted: {", ".join(TOKENIZERS)}.')
  config = _builder_config(data_config)
  key = (data_config.name, pipeline.default_data_dir(data_config.get('data_dir')),
         getattr(config, 'name', config), data_config.get('resolution'),
         data_config.get('vocab_min_count', 1), data_config.get('vocab_max_size'),
         max_len or 18)
  if key not in _VOCAB_CACHE:
    _VOCAB_CACHE[key] = build_word_vocab(
        data_config, min_count=data_config.get('vocab_min_count', 1),
        max_size=data_config.get('vocab_max_size'), max_len=max_len or 18)
  return _VOCAB_CACHE[key]


def make_dataset(data_config, split: str, batch_size: int, *, seed: int = 0,
                 start_step: int = 0, repeat: bool = True, whole: bool = False
                 ) -> Iterator[dict]:
  """:func:`make_caption_dataset` with the signature of ``pipeline.make_dataset``.

  The tokenizer comes from ``data_config`` (:func:`tokenizer_for`), so a training loop can
  open a caption set exactly as it opens an image set. With ``data_config.embeddings_dir``
  batches also carry ``caption_embedding``, the precomputed embedding of each drawn caption
  (StackGAN's char-CNN-RNN pickles, read by :mod:`jaxgen.data.embeddings`): from
  ``<embeddings_dir>/<split>`` when that folder exists (StackGAN's ``birds/train``,
  ``birds/test`` layout), else from ``embeddings_dir`` itself.
  """
  embeddings = None
  if data_config.get('embeddings_dir'):
    from jaxgen.data import embeddings as embeddings_lib  # pylint: disable=g-import-not-at-top
    root = data_config.embeddings_dir
    path = os.path.join(root, split)
    embeddings = embeddings_lib.embeddings_by_filename(path if os.path.isdir(path) else root)
  return make_caption_dataset(data_config, split, batch_size, tokenizer_for(data_config),
                              seed=seed, start_step=start_step, repeat=repeat, whole=whole,
                              embeddings=embeddings,
                              counterfactual=counterfactual_attributes(data_config))
