"""Sampling tool for text-to-image runs (GAN-INT-CLS and the later families) and style encoders.

  python -m jaxgen.text_to_image --workdir=runs/gic --caption="a small red circle at the top"
  python -m jaxgen.text_to_image --workdir=runs/gic --mode=interpolate_text \
      --caption="a large blue square on the left" --caption="a large blue square on the right"
  python -m jaxgen.text_to_image --workdir=runs/gic --mode=interpolate_style \
      --caption="a small green star in the centre"
  python -m jaxgen.text_to_image --workdir=runs/gic_style --mode=transfer \
      --caption="a big yellow diamond at the bottom"

``--workdir`` is a run of a text-to-image family (``gan_int_cls``, ``stackgan``, ``dfgan``) or a
``style_encoder`` run (which holds a GAN-INT-CLS run's G and
text encoder, frozen, and S). Modes, each writing one PNG to ``--out`` (default
``<workdir>/text_to_image``):

* ``captions``: one row per ``--caption``, ``--num`` columns; column j uses the same z in every
  row, so the style (background) stays while the content follows the caption.
* ``interpolate_text``: two captions; each of ``--num`` rows keeps its z while the embedding
  moves from the first caption's to the second's in ``--steps`` steps (content changes).
* ``interpolate_style``: one row per caption; the caption is fixed while z moves linearly
  between two draws (style changes).
* ``transfer`` (a style-encoder run): the first ``--num`` images of ``data.eval_split`` on the
  first row; below, one row per caption, G(S(image), phi(caption)): each image's style with
  the caption's content.
"""
from __future__ import annotations

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxgen import images as image_lib
from jaxgen import families
from jaxgen.engine import imports, runs
from jaxgen.engine import workdir as workdir_lib
from jaxgen.families import gan_int_cls, style_encoder
from jaxgen.families import text_conditioning as tc
from jaxgen.models import gan_int_cls as models

MODES = ('captions', 'interpolate_text', 'interpolate_style', 'transfer')


def load(workdir: str, step: int | None = None):
  """A run's networks: ``config``, ``model`` (the family's
  :class:`~jaxgen.families.text_conditioning.TextToImage`), ``text`` (its TextNet; None for
  precomputed embeddings), ``encoder`` (S or None), ``generator`` (GAN-INT-CLS's G module, None
  for other families), ``nets`` (the restored networks), ``step``."""
  # with_data=False: neither the sampling captions nor the evaluation images are read.
  config, _, _, state = runs.restore_run(workdir, step, build_kwargs={'with_data': False})
  family = families.get(config.family)
  if not hasattr(family, 'text_to_image'):
    raise ValueError(f'{workdir!r} holds a {config.family!r} run; this tool needs a run of a '
                     f'text-to-image family ({", ".join(text_to_image_families())}).')
  model = family.text_to_image(config)
  generator = (gan_int_cls.networks(config)[0]
               if config.family in ('gan_int_cls', 'style_encoder') else None)
  encoder = (models.make_style_encoder(config.model, config.style.width)
             if config.family == 'style_encoder' else None)
  generate = jax.jit(model.generate)
  embed = jax.jit(lambda text_net, batch: tc.embed(model.text, text_net, batch))
  return types.SimpleNamespace(config=config, model=model, generator=generator, text=model.text,
                               encoder=encoder, nets=state.nets, step=int(state.step),
                               generate=generate, embed=embed)


def text_encoder_counterfactual(config) -> str | None:
  """``data.counterfactual`` of the text-encoder run a text-to-image run imported its ``text``
  from (``init_from``): '' for a plain encoder, None when unknown (no import, or that run's
  folder is gone)."""
  source = (config.get('init_from') or {}).get('text')
  if not source:
    return None
  try:
    encoder_config = workdir_lib.load_config(imports.parse_source(source)[0])
  except ValueError:  # the encoder's workdir is not on this machine (any more)
    return None
  return encoder_config.data.get('counterfactual', '') or ''


def text_to_image_families() -> list[str]:
  return [n for n in families.NAMES if hasattr(families.get(n), 'text_to_image')]


def embed_captions(run, texts) -> jax.Array:
  if run.text is None:
    raise ValueError('This run conditions on precomputed embeddings (text.encoder="precomputed"); '
                     'it has no text encoder to embed new captions.')
  batch = {k: jnp.asarray(v) for k, v in tc.tokenize(run.text, texts).items()}
  return run.embed(run.nets['text'], batch)


def _latents(run, num, seed):
  return run.model.latents(jax.random.PRNGKey(seed), num)


def _generate(run, z, t):
  return np.asarray(run.generate(run.nets, z, t))


def caption_grid(run, texts, num: int, seed: int = 0) -> np.ndarray:
  """[captions, num, r, r, C]: the same ``num`` latents under every caption."""
  t, z = embed_captions(run, texts), _latents(run, num, seed)
  return np.stack([_generate(run, z, jnp.broadcast_to(ti, (num, t.shape[1]))) for ti in t])


def text_interpolation(run, text_a: str, text_b: str, num: int, steps: int,
                       seed: int = 0) -> np.ndarray:
  """[num, steps, r, r, C]: row i keeps z_i; the embedding goes from ``text_a`` to ``text_b``."""
  t = embed_captions(run, [text_a, text_b])
  alphas = jnp.linspace(0.0, 1.0, steps)[:, None]
  path = (1.0 - alphas) * t[0] + alphas * t[1]  # [steps, dim]
  z = _latents(run, num, seed)
  return np.stack([_generate(run, jnp.broadcast_to(zi, (steps, zi.shape[0])), path)
                   for zi in z])


def style_interpolation(run, texts, steps: int, seed: int = 0) -> np.ndarray:
  """[captions, steps, r, r, C]: each caption fixed, z linear between two draws."""
  t = embed_captions(run, texts)
  z0, z1 = _latents(run, 2, seed)
  alphas = jnp.linspace(0.0, 1.0, steps)[:, None]
  z = (1.0 - alphas) * z0 + alphas * z1
  return np.stack([_generate(run, z, jnp.broadcast_to(ti, (steps, t.shape[1]))) for ti in t])


def style_transfer(run, texts, real) -> np.ndarray:
  """[1 + captions, N, r, r, C]: real images, then G(S(real), phi(caption)) per caption."""
  if run.encoder is None:
    raise ValueError('Style transfer needs a style_encoder run (--workdir of '
                     'experiments.style_encoder), which holds S.')
  if run.text is None:
    raise ValueError('This run conditions on precomputed embeddings (text.encoder='
                     '"precomputed"); it has no text encoder to embed new captions.')
  cond = tc.tokenize(run.text, texts)
  return style_encoder.transfer(run.generator, run.encoder, run.text, run.nets, real, cond)


def eval_images(run, num: int) -> np.ndarray:
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  config = run.config
  return captions.load_caption_split(config.data, config.data.eval_split,
                                     tc.tokenizer(config, run.text), max_examples=num,
                                     whole=True)['image']


def write(path: str, rows: np.ndarray, scale: int) -> str:
  image_lib.save_grid(path, rows.reshape((-1, *rows.shape[2:])), ncol=rows.shape[1],
                      scale=scale)
  return path


def run_mode(mode: str, workdir: str, texts, *, num: int = 8, steps: int = 8, seed: int = 0,
             out: str | None = None, scale: int = 2) -> str:
  """Writes the figure of ``mode`` and returns its path."""
  if mode not in MODES:
    raise ValueError(f'Unknown mode {mode!r}; accepted: {", ".join(MODES)}.')
  texts = list(texts or ())
  need = 2 if mode == 'interpolate_text' else 1
  if len(texts) < need or (mode == 'interpolate_text' and len(texts) != 2):
    raise ValueError(f'--mode={mode} needs {"exactly 2" if need == 2 else "at least 1"} '
                     f'--caption; got {len(texts)}.')
  run = load(workdir)
  out = out or os.path.join(workdir, 'text_to_image')
  path = os.path.join(out, f'{mode}.png')
  if mode == 'captions':
    rows = caption_grid(run, texts, num, seed)
  elif mode == 'interpolate_text':
    rows = text_interpolation(run, texts[0], texts[1], num, steps, seed)
  elif mode == 'interpolate_style':
    rows = style_interpolation(run, texts, steps, seed)
  else:
    rows = style_transfer(run, texts, eval_images(run, num))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, f'{mode}.txt'), 'w') as f:  # the captions, row by row
    f.write('\n'.join(texts) + '\n')
  return write(path, rows, scale)


def main(argv):
  del argv
  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(run_mode(f.mode, f.workdir, f.caption, num=f.num, steps=f.steps, seed=f.seed,
                 out=f.out, scale=f.scale))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A text-to-image run (gan_int_cls, ...) or a style_encoder run.', required=True)
  flags.DEFINE_enum('mode', 'captions', MODES, 'What to draw.')
  flags.DEFINE_multi_string('caption', [], 'A caption (repeat the flag for several).')
  flags.DEFINE_integer('num', 8, 'Latents (captions, interpolate_text) or real images (transfer).')
  flags.DEFINE_integer('steps', 8, 'Interpolation steps.')
  flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
  flags.DEFINE_string('out', None, 'Output folder (default <workdir>/text_to_image).')
  flags.DEFINE_integer('scale', 2, 'Pixel upscaling of the PNG.')
  app.run(main)
