"""What a trained matching-aware discriminator checks: one caption attribute at a time.

  python -m jaxgen.matching_probe --workdir=runs/gan_int_cls/cpu32 [--results=PATH]
  python -m jaxgen.matching_probe --workdir=runs/dfgan/cpu32 [--results=PATH]
  python -m jaxgen.matching_probe --workdir=runs/text_encoder/char_cnn_rnn_long [--results=PATH]

A GAN-INT-CLS or DF-GAN discriminator is trained to call a real image with a wrong caption
fake, and G only learns to draw what D checks. This tool asks the finished run's D (GAN-INT-CLS:
its BatchNorm running statistics, as at sampling; DF-GAN's D has no BatchNorm) about real
``jaxgen_shapes`` images of ``--split``: for each image
it writes the image's caption, and the same caption with one attribute of the first named
object changed (the same template and word choices, so only that attribute's words differ):

* ``position``: another free position; ``size``: the other size;
* ``colour``: another of the 8 colours; ``shape``: another of the 6 shapes (each uniform);
* ``other caption``: the caption of another image of the split, as Reed et al.'s wrong
  captions are drawn.

and reports, per change, how often D scores the true caption higher than the changed one
(ties count one half, so a D that ignores the caption scores exactly 0.5) and the mean logit
gap. A change D cannot see is one the generator gets no gradient for. ``--split=train``
asks about the images D was trained on: a D that checks a change there but not on test images
has memorised its training images rather than learnt the attribute.

A text-encoder run (``python -m experiments.text_encoder``) is asked the same question with
its own score, the similarity of its image and caption embeddings (``eval.similarity``): the
text-to-image models condition on this encoder's sentences, so a change it does not see is
one that no D or G downstream can tell from its embedding either. The gap column is then the
mean similarity gap. Prints the table; ``--results`` also writes a stamped results file
(:mod:`jaxgen.results`).
"""
from __future__ import annotations

import numpy as np
from absl import app, flags

CHANGES = ('position', 'size', 'colour', 'shape', 'other caption')
SPLITS = ('test', 'heldout', 'train')


class _Draws:
  """The two methods of ``np.random.Generator`` that captions use, each taking exactly one
  uniform draw (``Generator.integers(1)`` takes none), so captions whose objects have
  different numbers of synonyms still make the same template and word choices."""

  def __init__(self, seed):
    self._g = np.random.default_rng(seed)

  def integers(self, n: int) -> int:
    return min(int(self._g.random() * n), n - 1)

  def random(self) -> float:
    return self._g.random()


def contrast_captions(split: str, index: int, change: str, num_images: int) -> tuple[str, str]:
  """(true caption, changed caption) of example ``index`` of ``split`` (module doc)."""
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  if change not in CHANGES:
    raise ValueError(f'Unknown change {change!r}; accepted: {", ".join(CHANGES)}.')
  ex = shapes.sample_example(split, index)
  objs = list(ex.objects)
  # One generator per (image, change) for the new value; the captions' own words come from a
  # generator seeded by the image alone, so both captions make the same template choices.
  rng = np.random.default_rng((index, CHANGES.index(change)))
  first = objs[0]
  if change == 'position':
    free = [p for p in range(len(shapes.POSITIONS)) if p not in {o.position for o in objs}]
    objs[0] = first._replace(position=int(rng.choice(free)))
  elif change == 'size':
    objs[0] = first._replace(size=1 - first.size)
  elif change == 'colour':
    n = len(shapes.COLOURS)
    objs[0] = first._replace(colour=int((first.colour + 1 + rng.integers(n - 1)) % n))
  elif change == 'shape':
    n = len(shapes.SHAPES)
    objs[0] = first._replace(shape=int((first.shape + 1 + rng.integers(n - 1)) % n))
  true = shapes.make_caption(_Draws(index), ex.objects, ex.background)
  if change == 'other caption':
    other = (index + 1 + int(rng.integers(num_images - 1))) % num_images
    ox = shapes.sample_example(split, other)
    return true, shapes.make_caption(_Draws(other), ox.objects, ox.background)
  return true, shapes.make_caption(_Draws(index), objs, ex.background)


def preference(right, changed) -> float:
  """P(right > changed) over pairs, ties counting 1/2 (0.5: D does not see the change)."""
  right, changed = np.asarray(right, np.float64), np.asarray(changed, np.float64)
  return float(np.mean((right > changed) + 0.5 * (right == changed)))


def _check_split(split: str, num_images: int) -> None:
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; accepted: {", ".join(SPLITS)}.')
  if not 2 <= num_images <= shapes.SPLIT_SIZES[split]:
    raise ValueError(f'num_images must be in [2, {shapes.SPLIT_SIZES[split]}] for {split!r}; '
                     f'got {num_images}.')


def _real_images(split: str, num_images: int, resolution: int) -> np.ndarray:
  """The first ``num_images`` renders of ``split`` in [-1, 1], float32 NHWC."""
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  return np.stack([shapes.render(shapes.sample_example(split, i), resolution)
                   for i in range(num_images)]).astype(np.float32) / 127.5 - 1.0


def _preferences(score, split: str, num_images: int) -> dict:
  """{change: {preference, logit_gap}} for ``score(captions) -> [num_images]``."""
  out, right = {}, None
  for change in CHANGES:
    pairs = [contrast_captions(split, i, change, num_images) for i in range(num_images)]
    if right is None:
      right = score([p[0] for p in pairs])
    changed = score([p[1] for p in pairs])
    out[change] = {'preference': preference(right, changed),
                   'logit_gap': float(np.mean(right - changed))}
  return out


def probe_run(workdir: str, *, split: str = 'test', num_images: int = 500,
              batch_size: int = 250) -> dict:
  """Per-change preference of a GAN-INT-CLS or DF-GAN run's D, or of a text-encoder run's
  similarity, for true captions (a dict)."""
  from jaxgen import text_to_image  # pylint: disable=g-import-not-at-top
  from jaxgen.engine.workdir import load_config  # pylint: disable=g-import-not-at-top
  if load_config(workdir).family == 'text_encoder':
    return dict(probe_encoder(workdir, split=split, num_images=num_images,
                              batch_size=batch_size), workdir=workdir)
  return dict(probe(text_to_image.load(workdir), split=split, num_images=num_images,
                    batch_size=batch_size), workdir=workdir)


def probe_encoder(workdir: str, *, split: str = 'test', num_images: int = 500,
                  batch_size: int = 250) -> dict:
  """:func:`probe_run` for a text-encoder run: its similarity(image, caption) as the score."""
  from jaxgen.engine import runs  # pylint: disable=g-import-not-at-top
  from jaxgen.families import text_encoder  # pylint: disable=g-import-not-at-top
  from jaxgen.metrics import retrieval  # pylint: disable=g-import-not-at-top
  _check_split(split, num_images)
  config, _, _, state = runs.restore_run(workdir, family='text_encoder',
                                         build_kwargs={'with_data': False})
  if config.data.name != 'jaxgen_shapes':
    raise ValueError(f'The matching probe writes jaxgen_shapes captions; the run trained on '
                     f'{config.data.name!r}.')
  text = text_encoder.make_text_net(config)
  image = text_encoder.make_image_net(config)
  img = text_encoder.embed_images(
      image, state.nets['image'], _real_images(split, num_images, config.data.resolution),
      batch_size)

  def score(texts):
    ids, lengths = text.tokenizer.encode_batch(texts)
    cap = text_encoder.embed_captions(text, state.nets['text'], ids, lengths, batch_size)
    return retrieval.row_similarity(img, cap, config.eval.similarity)

  return {'step': int(state.step), 'split': split, 'num_images': num_images,
          'family': 'text_encoder', 'text_encoder': config.text.encoder,
          'similarity': config.eval.similarity, 'resolution': int(config.data.resolution),
          'counterfactual': config.data.get('counterfactual', ''),
          'changes': _preferences(score, split, num_images)}


def probe(run, *, split: str = 'test', num_images: int = 500, batch_size: int = 250) -> dict:
  """:func:`probe_run` on a loaded run (:func:`jaxgen.text_to_image.load`)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxgen import text_to_image  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base, dfgan, gan_int_cls  # pylint: disable=g-import-not-at-top
  from jaxgen.families import text_conditioning as tc  # pylint: disable=g-import-not-at-top
  _check_split(split, num_images)
  config = run.config
  if config.family not in ('gan_int_cls', 'dfgan'):
    raise ValueError(f'The run is a {config.family!r} run; the matching probe asks a '
                     'discriminator D(image, caption) of a gan_int_cls or dfgan run.')
  if config.data.name != 'jaxgen_shapes' or run.text is None:
    raise ValueError(f'The matching probe writes jaxgen_shapes captions and embeds them with '
                     f'the run\'s text encoder; the run trained on {config.data.name!r}'
                     + (' with precomputed embeddings' if run.text is None else '') + '.')
  d_vars = base.variables(run.nets['d'])
  scale = float(dfgan.text_scale(config))  # DF-GAN's sentence factor (1 for GAN-INT-CLS)
  images = _real_images(split, num_images, config.data.resolution)
  if config.family == 'gan_int_cls':
    _, discriminator, _ = gan_int_cls.networks(config)
    score = jax.jit(lambda v, x, t: discriminator.apply(v, x, t, train=False))
  else:
    _, discriminator, _ = dfgan.networks(config)
    score = jax.jit(lambda v, x, t: discriminator.apply(v, x, scale * t))

  def logits(texts):
    out = []
    for i in range(0, num_images, batch_size):
      t = run.embed(run.nets['text'], tc.tokenize(run.text, texts[i:i + batch_size]))
      out.append(np.asarray(score(d_vars, jnp.asarray(images[i:i + batch_size]), t)))
    return np.concatenate(out)

  # DF-GAN's D always has the mismatched pairs (Reed's CLS term, as a hinge) and no GAN-INT.
  out = {'step': run.step, 'split': split, 'num_images': num_images, 'family': config.family,
         'cls': bool(config.get('cls', True)), 'interp': bool(config.get('interp', False)),
         'wrong_captions': config.get('wrong_captions', 'roll'), 'seed': int(config.seed),
         'g_width': int(config.model.g_width), 'd_width': int(config.model.d_width),
         'd_projection': bool(config.model.get('d_projection', False)),
         'text_encoder': config.text.encoder,
         'text_scale': scale,
         'ema_decay': float(dfgan.ema_decay(config)),
         'matching_weight': dfgan.matching_weight(config),
         'mode_seeking_weight': dfgan.mode_seeking_weight(config),
         'aux_weight': dfgan.aux_weight(config),
         'counterfactual': config.data.get('counterfactual', ''),
         'text_counterfactual': text_to_image.text_encoder_counterfactual(config),
         'changes': _preferences(logits, split, num_images)}
  return out


def table(result: dict) -> str:
  who, gap = (('the encoder', 'similarity') if result.get('family') == 'text_encoder'
              else ('D', 'logit'))
  rows = [f'| change | {who} prefers the true caption | mean {gap} gap |', '|---|---|---|']
  for change, r in result['changes'].items():
    rows.append(f'| {change} | {r["preference"]:.3f} | {r["logit_gap"]:+.2f} |')
  return '\n'.join(rows)


def main(argv):
  del argv
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  results.run_tool(
      lambda f: probe_run(f.workdir, split=f.split, num_images=f.num_images),
      table, 'python -m jaxgen.matching_probe')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A finished GAN-INT-CLS, DF-GAN or text-encoder run '
                      'on jaxgen_shapes.', required=True)
  flags.DEFINE_enum('split', 'test', SPLITS, 'The split whose images and captions are used.')
  flags.DEFINE_integer('num_images', 500, 'The first N images of --split.')
  flags.DEFINE_string('results', '', 'Also write a stamped results file here (jaxgen.results).')
  app.run(main)
