"""Train one GAN on a 2-D Gaussian mixture and score its mode coverage (PacGAN protocol).

  python -m experiments.gan_2d --config=experiments/configs/gan_2d.py:ring,sn_hinge \
      --workdir=runs/ring_sn_hinge [--config.seed=3 --config.num_steps=5000 ...]

Training is jaxgen's engine (checkpoints, resume, metrics.jsonl, TensorBoard).
Afterwards 2,500 points are drawn from the final generator (its EMA when ``ema_decay > 0``)
and scored with :mod:`jaxgen.metrics.mode_coverage`; the scores go to
``workdir/mode_coverage.json`` and a scatter plot of the samples over the modes (3-std circles)
to ``workdir/samples.png``. Many seeds and methods at once: ``python -m experiments.gan_2d_report``.
"""
from __future__ import annotations

import json
import os

import numpy as np

NUM_EVAL_SAMPLES = 2500
EVAL_SEED_OFFSET = 1_000_003  # z for evaluation never reuses a training key.


def sample_points(config, generator, g_vars, num: int, seed: int) -> np.ndarray:
  """``num`` points from the generator in evaluation mode, z from ``seed``."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.families import gan  # pylint: disable=g-import-not-at-top
  z = gan.sample_latent(jax.random.PRNGKey(seed + EVAL_SEED_OFFSET), num,
                        config.model.latent_dim, config.model.latent_prior)
  return np.asarray(jax.jit(lambda v, z: generator.apply(v, z, train=False))(g_vars, z))


def view_box(data_config):
  """Square plotting window around the mixture: ``(lo, hi)`` in data coordinates."""
  from jaxgen.data import toy2d  # pylint: disable=g-import-not-at-top
  modes, std = toy2d.mixture(data_config)
  reach = 1.25 * float(np.max(np.abs(modes))) + 10 * std
  return -reach, reach


def scatter_image(samples, data_config, *, title: str = '', size: int = 480):
  """An RGB uint8 scatter plot: 3-std circles around the modes, HQ points blue, others orange.

  Drawn with PIL (already a dependency) rather than adding matplotlib for one plot type.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  from jaxgen.data import toy2d  # pylint: disable=g-import-not-at-top
  from jaxgen.metrics import mode_coverage as mc  # pylint: disable=g-import-not-at-top
  modes, std = toy2d.mixture(data_config)
  lo, hi = view_box(data_config)
  header = 22 if title else 0
  img = Image.new('RGB', (size, size + header), 'white')
  draw = ImageDraw.Draw(img)
  scale = (size - 1) / (hi - lo)

  def to_px(p):
    return (p[..., 0] - lo) * scale, header + (hi - p[..., 1]) * scale

  samples = np.asarray(samples, np.float64)
  finite = np.all(np.isfinite(samples), axis=1)
  pts = samples[finite]
  if len(pts):
    _, dist = mc.nearest_modes(pts, modes)
    hq = dist <= 3 * std
    xs, ys = to_px(pts)
    for x, y, good in zip(xs, ys, hq):
      if 0 <= x < size and header <= y < size + header:
        draw.ellipse([x - 1, y - 1, x + 1, y + 1],
                     fill=(31, 119, 180) if good else (255, 127, 14))
  mx, my = to_px(modes)
  r = max(3 * std * scale, 2.0)
  for x, y in zip(mx, my):
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(214, 39, 40), width=2)
  if title:
    draw.text((6, 4), title, fill='black')
  return np.asarray(img)


def score(config, samples):
  from jaxgen.metrics import mode_coverage as mc  # pylint: disable=g-import-not-at-top
  if not np.all(np.isfinite(samples)):
    return None
  return mc.evaluate(samples, config.data)


def result_dict(result, samples) -> dict:
  if result is None:
    return {'diverged': True, 'modes': 0, 'hq_percent': 0.0, 'reverse_kl': None,
            'num_samples': int(len(samples))}
  return {'diverged': False, 'modes': result.modes_covered, 'num_modes': result.num_modes,
          'hq_percent': 100.0 * result.hq_fraction, 'reverse_kl': result.reverse_kl,
          'counts': result.counts.tolist(), 'hq_counts': result.hq_counts.tolist(),
          'num_samples': int(len(samples))}


def describe(result) -> str:
  if result is None:
    return 'diverged (non-finite samples)'
  return (f'modes {result.modes_covered}/{result.num_modes}, HQ {100 * result.hq_fraction:.1f}%, '
          f'reverse KL {result.reverse_kl:.3f}')


def train_and_report(config, workdir: str):
  """Trains with :func:`jaxgen.engine.loop.train_and_evaluate`, then scores and plots."""
  from jaxgen import images, models  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top
  if config.data.name not in pipeline.TOY2D:
    raise ValueError(f'gan_2d trains on 2-D mixtures ({", ".join(pipeline.TOY2D)}); got '
                     f'data.name={config.data.name!r}.')
  state = loop.train_and_evaluate(config, workdir)
  generator, _ = models.get_gan(config.model)
  num = config.get('num_eval_samples', NUM_EVAL_SAMPLES)
  samples = sample_points(config, generator, base.variables(state.nets['g'], use_ema=True), num,
                          config.seed)
  result = score(config, samples)
  out = dict(result_dict(result, samples), step=int(state.step), seed=config.seed,
             dataset=config.data.name, method=config.get('method', 'custom'))
  with open(os.path.join(workdir, 'mode_coverage.json'), 'w') as f:
    json.dump(out, f, indent=2)
  np.save(os.path.join(workdir, 'samples.npy'), samples)
  images.save_png(os.path.join(workdir, 'samples.png'),
                  scatter_image(samples, config.data, title=describe(result)))
  print(f'{config.data.name} {config.get("method", "custom")} seed {config.seed}: '
        f'{describe(result)}')
  return state


if __name__ == '__main__':
  from experiments import launch  # pylint: disable=g-import-not-at-top
  launch.run('experiments/configs/gan_2d.py', 'experiments.gan_2d:train_and_report')
