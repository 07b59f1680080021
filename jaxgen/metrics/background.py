"""The background of ``jaxgen_shapes`` images: the "style" a caption leaves to the generator.

A ``jaxgen_shapes`` caption names the background colour only sometimes
(``shapes.BACKGROUND_MENTION_P``), so a text-to-image model is free to choose it, and a
loss that rewards matching the caption can make the model give up the real images' mix of
backgrounds without any attribute accuracy showing it. These scores make that visible:

* :func:`background_ids`: each image's background colour, read from its border (the
  per-channel median of the one-pixel ring, nearest of ``shapes.BACKGROUND_RGB``). Objects
  never touch the border (``shapes.SIZE_RADIUS`` and the jitters keep them inside the frame),
  so on real renders the median is the exact background colour.
* :func:`names_background`: whether a caption names the background (every mention ends the
  caption with one of ``shapes.BACKGROUND_TEMPLATES``: "... background" / "... backdrop").
* :func:`background_scores`: the share of each background colour, the total-variation
  distance of that mix from the real images' (from their labels), and the accuracy on the
  images whose caption names the background.
* :func:`agreement` and :func:`expected_agreement`: how often two images drawn for one caption
  with two latents share their background, against what two real images of the same caption
  would (the same background when it is named, else two independent draws of the real mix).
  A generator that ignores its latent agrees with itself always.
"""
from __future__ import annotations

import re

import numpy as np

from jaxgen.data import shapes

_NAMED = re.compile(r'\b(background|backdrop)\s*$')


def palette(scale: str = 'signed') -> np.ndarray:
  """``shapes.BACKGROUND_RGB`` [K, 3] as float64 in the images' units: ``'signed'`` ([-1, 1],
  x / 127.5 - 1, the models' and the pipeline's) or ``'uint8'`` (0-255)."""
  rgb = np.asarray(shapes.BACKGROUND_RGB, np.float64)
  if scale == 'signed':
    return rgb / 127.5 - 1.0
  if scale == 'uint8':
    return rgb
  raise ValueError(f'Unknown scale {scale!r}; accepted: signed, uint8.')


def border_colours(images) -> np.ndarray:
  """[N, C] float64: the per-channel median of each image's one-pixel border ring."""
  x = np.asarray(images, np.float64)
  if x.ndim != 4 or min(x.shape[1:3]) < 3:
    raise ValueError(f'Expected images [N, H, W, C] of at least 3x3; got shape {x.shape}.')
  ring = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
  return np.median(ring, axis=1)


def background_ids(images, scale: str = 'signed') -> np.ndarray:
  """[N] int: index into ``shapes.BACKGROUNDS`` of the colour nearest each image's border
  colour (Euclidean over RGB)."""
  colours = border_colours(images)
  ref = palette(scale)
  if colours.shape[1] != ref.shape[1]:
    raise ValueError(f'Expected {ref.shape[1]} channels (RGB); got {colours.shape[1]}.')
  dist = np.sum(np.square(colours[:, None, :] - ref[None, :, :]), axis=-1)
  return np.argmin(dist, axis=1)


def names_background(captions) -> np.ndarray:
  """[N] bool: which captions name the background colour."""
  return np.array([bool(_NAMED.search(str(c).strip())) for c in captions], bool)


def background_scores(images, labels, named, *, scale: str = 'signed') -> dict:
  """Background scores of ``images`` drawn for captions of images with background ``labels``.

  ``labels``: [N] int, the real images' backgrounds (``shapes.BACKGROUNDS`` indices);
  ``named``: [N] bool, whether the caption each image was drawn from names its background.
  Returns ``background/<name>`` (the share of images whose background is that colour, every
  colour of ``shapes.BACKGROUNDS``), ``background/tv`` (the total-variation distance
  ``0.5 * sum_k |share_k - real share_k|`` between that mix and the labels' mix: 0 when equal,
  1 when disjoint), ``background/named_accuracy`` (the share of images with a named
  background that show it; None when no caption names one) and ``background/num_named``.
  """
  labels = np.asarray(labels, np.int64)
  named = np.asarray(named, bool)
  ids = background_ids(images, scale)
  if not len(ids) == len(labels) == len(named):
    raise ValueError(f'images, labels and named must have one entry per image; got '
                     f'{len(ids)}, {len(labels)} and {len(named)}.')
  k = len(shapes.BACKGROUNDS)
  if labels.size and (labels.min() < 0 or labels.max() >= k):
    raise ValueError(f'labels must be background indices in [0, {k}); got values in '
                     f'[{labels.min()}, {labels.max()}].')
  share = np.bincount(ids, minlength=k) / len(ids)
  real_share = np.bincount(labels, minlength=k) / len(labels)
  out = {f'background/{name}': float(share[i]) for i, name in enumerate(shapes.BACKGROUNDS)}
  out['background/tv'] = float(0.5 * np.abs(share - real_share).sum())
  out['background/named_accuracy'] = (float(np.mean(ids[named] == labels[named]))
                                      if named.any() else None)
  out['background/num_named'] = int(named.sum())
  return out


def agreement(images_a, images_b, scale: str = 'signed') -> float:
  """The share of pairs (``images_a[i]``, ``images_b[i]``) with the same background colour."""
  a, b = background_ids(images_a, scale), background_ids(images_b, scale)
  if len(a) != len(b) or not len(a):
    raise ValueError(f'Expected two equal, non-empty sets of images; got {len(a)} and '
                     f'{len(b)}.')
  return float(np.mean(a == b))


def expected_agreement(labels, named) -> float:
  """What :func:`agreement` gives for two real images of each caption: 1 where the caption
  names the background, else the chance that two independent draws from the labels' mix
  match (``sum_k p_k^2``)."""
  labels, named = np.asarray(labels, np.int64), np.asarray(named, bool)
  if len(labels) != len(named) or not len(labels):
    raise ValueError(f'labels and named must have one entry per image; got {len(labels)} and '
                     f'{len(named)}.')
  p = np.bincount(labels, minlength=len(shapes.BACKGROUNDS)) / len(labels)
  return float(named.mean() + (1.0 - named.mean()) * np.sum(p * p))
