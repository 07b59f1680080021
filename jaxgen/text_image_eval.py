"""Scores a finished text-to-image run on ``jaxgen_shapes``: does the image show the caption?

  python -m jaxgen.text_image_eval --workdir=runs/gic [--results=PATH] [--figure=PATH] \
      [--resolution=64]

For every image of each split (``test``: colour-shape pairs seen in training; ``heldout``:
the first object of every image is a pair never seen), one of its captions (caption
``(i + seed) mod 10`` of image ``i``) goes through the run's frozen text encoder and G draws
one image from it with its own z (``PRNGKey(seed)``). The generated images are scored by
:func:`jaxgen.metrics.attributes.text_image_scores`:

* attribute accuracies (shape, colour, size, position of every object the caption names, the
  object count) from the attribute classifier of the run's resolution (or ``--resolution``:
  generated images are then resized to it, antialiased, and the real ones rendered at it, so
  runs of different sizes are compared by one classifier), and the same for the
  first object alone (``first/...``: on ``heldout`` exactly the unseen pairs);
* FID in the classifier's feature space against the split's real images;
* the background (:mod:`jaxgen.metrics.background`), which captions name only sometimes:
  the share of each background colour, its total-variation distance from the real images'
  mix, the accuracy where the caption names it, and how often a second image of the same
  caption (latents of ``PRNGKey(seed + 1)``) has the same background (``agreement``; for the
  real images the value two real images of each caption would have);
* R-precision (each image ranks its own caption first among 100) with the text-encoder run
  that the run imported (``init_from.text``; ``--text_encoder`` to name another), using its
  image and text networks and its similarity; images are resized to that run's resolution.

The same scores of the split's real images against the same captions are the ceiling (and
their FID against as many real ``train`` images the floor that the sample size allows). The
result is a dict ``{split: {'generated': ..., 'real': ...}}`` plus the run's step; with
``--results`` a stamped results file (:mod:`jaxgen.results`), with ``--figure`` a grid of
the first test captions (one per column, a different z in each row).
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from jaxgen import images as image_lib
from jaxgen.data import captions
from jaxgen.engine import imports, runs
from jaxgen.families import dfgan
from jaxgen.families import text_conditioning as tc
from jaxgen.families import text_encoder
from jaxgen.metrics import attributes, background, scores

SPLITS = ('test', 'heldout')


def pick_captions(data: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(ids [N, L], lengths [N]): caption ``(i + seed) mod num_captions[i]`` of image ``i``."""
  n = len(data['num_captions'])
  j = (np.arange(n) + seed) % data['num_captions']
  return data['caption_ids'][np.arange(n), j], data['caption_len'][np.arange(n), j]


def generate(run, ids, lengths, seed: int = 0, batch_size: int = 250) -> np.ndarray:
  """One image per caption, z_i the i-th row of the family's ``latents(PRNGKey(seed), N)``
  (for most families ``normal(PRNGKey(seed), [N, latent])``)."""
  z = np.asarray(run.model.latents(jax.random.PRNGKey(seed), len(ids)))

  def draw(i, l, zz):
    t = run.embed(run.nets['text'], {'caption_ids': i, 'caption_len': l})
    return run.generate(run.nets, zz, t)
  return text_encoder.batched(draw, [np.asarray(ids), np.asarray(lengths), z], batch_size)


def resize(images, resolution: int) -> np.ndarray:
  """Square NHWC images at ``resolution`` (antialiased linear resize; unchanged if equal)."""
  images = np.asarray(images)
  if images.shape[1] == resolution:
    return images
  return np.asarray(jax.image.resize(jnp.asarray(images), (len(images), resolution, resolution,
                                                           images.shape[-1]),
                                     'linear', antialias=True))


class Retrieval:
  """A text-encoder run's ``text`` and ``image`` networks, for R-precision."""

  def __init__(self, workdir: str):
    config, _, _, state = runs.restore_run(workdir, family='text_encoder',
                                           build_kwargs={'with_data': False})
    self.workdir, self.config = workdir, config
    self.text = text_encoder.make_text_net(config)
    self.image = text_encoder.make_image_net(config)
    self.nets = state.nets
    self.resolution = config.data.resolution
    self.similarity = config.eval.similarity

  def image_embeddings(self, images) -> np.ndarray:
    return text_encoder.embed_images(self.image, self.nets['image'],
                                     resize(images, self.resolution))

  def caption_embeddings(self, ids, lengths) -> np.ndarray:
    return text_encoder.embed_captions(self.text, self.nets['text'], ids, lengths)


def text_encoder_dir(config) -> str | None:
  """The text-encoder workdir that ``config`` imported its ``text`` network from, if any."""
  source = dict(config.get('init_from', {}) or {}).get('text', '')
  return imports.parse_source(source)[0] if source else None


def score_split(run, clf, retrieval, split: str, *, seed: int = 0, max_examples=None,
                num_candidates: int = 100, data_config=None) -> dict:
  """``{'generated': scores, 'real': scores, 'num_images': N}`` of one split; real images at
  ``data_config``'s resolution (default the run's), generated ones resized to it."""
  config = run.config
  data_config = data_config or config.data
  tokenizer = tc.tokenizer(config, run.text)
  data = captions.load_caption_split(data_config, split, tokenizer,
                                     max_examples=max_examples, whole=True)
  ids, lengths = pick_captions(data, seed)
  # Whether each caption, as the run's encoder reads it, names the image's background.
  named = background.names_background([tokenizer.decode(i) for i in ids])
  fake = resize(generate(run, ids, lengths, seed), data_config.resolution)
  real = data['image']
  labels = {k: data[k] for k in attributes.OBJECT_KEYS}
  caption_emb = None
  if retrieval is not None:
    te_data = captions.load_caption_split(retrieval.config.data, split,
                                          retrieval.text.tokenizer,
                                          max_examples=max_examples, whole=True)
    caption_emb = retrieval.caption_embeddings(*pick_captions(te_data, seed))
  outputs = {'generated': clf(fake), 'real': clf(real)}
  real_features = outputs['real']['features']
  out = {'num_images': len(real)}
  for name, images in (('generated', fake), ('real', real)):
    kwargs = {}
    if retrieval is not None:
      kwargs = dict(image_emb=retrieval.image_embeddings(images), caption_emb=caption_emb,
                    num_candidates=num_candidates, similarity=retrieval.similarity, seed=seed)
    res = attributes.text_image_scores(clf, images, labels, reference=real_features,
                                       outputs=outputs[name], **kwargs)
    first = attributes.attribute_accuracy(outputs[name], attributes.first_object(labels))
    res.update({f'first/{k}': v for k, v in first.items() if k != 'count'})
    res.update(background.background_scores(images, data['background'], named))
    out[name] = res
  # The same captions with other latents: does G's background follow z where the caption
  # leaves it free? (For the real images: the agreement two real images of a caption have.)
  fake_again = resize(generate(run, ids, lengths, seed + 1), data_config.resolution)
  out['generated']['background/agreement'] = background.agreement(fake, fake_again)
  out['real']['background/agreement'] = background.expected_agreement(data['background'], named)
  # Real-vs-real FID at this sample size: as many train images against the split.
  train = attributes.load_split(data_config, 'train', max_examples=len(real))
  out['real']['fid'] = scores.fid_from_stats(
      scores.gaussian_stats(clf(train['image'])['features']),
      scores.gaussian_stats(real_features))
  return out


def train_summary(workdir: str, config) -> dict:
  """What the run trained: its switches and sizes, and the seconds spent in train steps
  (summed from ``metrics.jsonl``'s ``steps_per_sec`` between log points; compile and
  start-up time not included)."""
  from jaxgen import text_to_image  # pylint: disable=g-import-not-at-top
  seconds, last = 0.0, 0
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        rate, step = rec.get('steps_per_sec'), rec.get('step', 0)
        if rate and step > last:
          seconds += (step - last) / rate
        last = step
  model = config.model
  return {'family': config.family, 'cls': bool(config.get('cls', False)),
          'interp': bool(config.get('interp', False)), 'stage': config.get('stage'),
          'num_steps': config.num_steps, 'batch_size': config.batch_size,
          'resolution': model.resolution, 'g_width': model.get('g_width'),
          'd_width': model.get('d_width'), 'text_encoder': config.text.encoder,
          'seed': config.seed, 'wrong_captions': config.get('wrong_captions', 'roll'),
          'd_projection': bool(model.get('d_projection', False)),
          'text_scale': float(config.get('text_scale', 1.0)),
          'ema_decay': float(dfgan.ema_decay(config)),
          'matching_weight': dfgan.matching_weight(config),
          'mode_seeking_weight': dfgan.mode_seeking_weight(config),
          'aux_weight': dfgan.aux_weight(config),
          'counterfactual': config.data.get('counterfactual', ''),
          'text_counterfactual': text_to_image.text_encoder_counterfactual(config),
          'train_seconds': seconds}


def parameter_counts(nets: dict) -> dict:
  """Parameters of each of the run's networks but the caption encoder's, ``text`` and (DF-GAN
  with a matching loss) ``image`` (frozen, from the text-encoder run, and not part of the
  model that draws; a frozen generator stage, such as StackGAN's Stage-I in a Stage-II run,
  is counted)."""
  return {name: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(net['params'])))
          for name, net in nets.items() if name not in ('text', 'image')}


def score_run(workdir: str, *, text_encoder_workdir: str | None = None, splits=SPLITS,
              seed: int = 0, max_examples=None, num_candidates: int = 100,
              figure: str | None = None, resolution: int | None = None) -> dict:
  """Scores the newest checkpoint of the text-to-image run in ``workdir`` (module doc);
  ``resolution``: score at this size (real images rendered at it, generated ones resized),
  default the run's own."""
  from jaxgen import text_to_image  # pylint: disable=g-import-not-at-top
  run = text_to_image.load(workdir)
  config = run.config
  if config.data.name != 'jaxgen_shapes':
    raise ValueError(f'The text-image scores need jaxgen_shapes (its attribute labels); '
                     f'{workdir!r} trained on {config.data.name!r}.')
  if run.text is None:
    raise ValueError(f'{workdir!r} conditions on precomputed embeddings; the scores need the '
                     'run\'s text encoder to embed the test captions.')
  te_dir = text_encoder_workdir or text_encoder_dir(config)
  retrieval = Retrieval(te_dir) if te_dir else None
  if retrieval is None:
    logging.warning('No text-encoder run named (--text_encoder) or imported by %s: '
                    'R-precision is left out.', workdir)
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  if resolution and resolution != config.data.resolution:
    build = data_config.get('builder_config')
    if build not in (None, str(config.data.resolution)):
      raise ValueError(f'--resolution={resolution} renders jaxgen_shapes at another size, which '
                       f'needs its standard builds; {workdir!r} uses the builder config '
                       f'{build!r}. Score it at its own resolution.')
    data_config.resolution, data_config.builder_config = resolution, None
  clf = attributes.get_attribute_classifier(data_config)
  start = time.time()
  out = {'workdir': workdir, 'step': run.step, 'score_resolution': data_config.resolution,
         'text_encoder': te_dir, 'seed': seed, 'num_candidates': num_candidates,
         'train': train_summary(workdir, config), 'parameters': parameter_counts(run.nets)}
  for split in splits:
    out[split] = score_split(run, clf, retrieval, split, seed=seed, max_examples=max_examples,
                             num_candidates=num_candidates, data_config=data_config)
  out['score_seconds'] = time.time() - start
  if figure:
    data = captions.load_caption_split(config.data, 'test', tc.tokenizer(config, run.text),
                                       max_examples=8, whole=True)
    ids, lengths = pick_captions(data, seed)
    rows = [generate(run, ids, lengths, seed + 1 + r, batch_size=len(ids)) for r in range(8)]
    os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
    image_lib.save_grid(figure, np.concatenate(rows), ncol=len(ids), scale=1)
    out['figure'] = figure
  return out


def main(argv):
  del argv
  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  out = score_run(f.workdir, text_encoder_workdir=f.text_encoder, splits=f.split, seed=f.seed,
                  max_examples=f.max_examples, figure=f.figure, resolution=f.resolution)
  print(json.dumps(out, indent=1))
  if f.results:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(f.results, out, results.command_line('python -m jaxgen.text_image_eval'))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A finished text-to-image run on jaxgen_shapes.',
                      required=True)
  flags.DEFINE_integer('resolution', None, 'Score at this resolution (generated images '
                       'resized, real ones rendered at it); default: the run\'s own.')
  flags.DEFINE_string('text_encoder', None, 'Text-encoder run for R-precision (default: the '
                      'one the run imported).')
  flags.DEFINE_multi_enum('split', list(SPLITS), SPLITS, 'Splits to score.')
  flags.DEFINE_integer('seed', 0, 'Caption choice and latents.')
  flags.DEFINE_integer('max_examples', None, 'Score only the first N images of each split.')
  flags.DEFINE_string('figure', None, 'Also write a grid of 8 test captions x 8 latents here.')
  flags.DEFINE_string('results', '', 'Also write a stamped results file here (jaxgen.results).')
  app.run(main)
