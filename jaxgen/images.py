"""Image grids as PNG files."""
from __future__ import annotations

import math
import os

import numpy as np


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images -> uint8, rounding to nearest."""
  x = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def grid(images, ncol: int | None = None, pad: int = 1, pad_value: int = 255) -> np.ndarray:
  """NHWC images in [-1, 1] (or uint8) -> one HWC uint8 grid image."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
  for i in range(n):
    r, q = divmod(i, ncol)
    out[pad + r * (h + pad): pad + r * (h + pad) + h,
        pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
  return out


def save_png(path: str, image: np.ndarray, scale: int = 1):
  """Writes an HWC uint8 image atomically (a temporary file renamed into place)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  if image.shape[-1] == 1:
    image = image[..., 0]
  pil = Image.fromarray(image)
  if scale > 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.png'
  pil.save(tmp)
  os.replace(tmp, path)


def save_grid(path: str, images, ncol: int | None = None, scale: int = 1):
  save_png(path, grid(images, ncol), scale)


def hstack(grids, pad: int = 4, pad_value: int = 255) -> np.ndarray:
  """Places HWC uint8 grids side by side (e.g. the 10%..100% progress strip)."""
  h = max(g.shape[0] for g in grids)
  c = grids[0].shape[2]
  cols = []
  for g in grids:
    col = np.full((h, g.shape[1], c), pad_value, np.uint8)
    col[:g.shape[0]] = g
    cols.append(col)
    cols.append(np.full((h, pad, c), pad_value, np.uint8))
  return np.concatenate(cols[:-1], axis=1)
