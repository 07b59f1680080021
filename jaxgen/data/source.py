"""Which reader serves ``config.data``: image sets (:mod:`jaxgen.data.pipeline`) or caption sets
(:mod:`jaxgen.data.captions`). Both expose ``validate(data_config)`` and
``make_dataset(data_config, split, batch_size, *, seed, start_step, repeat, whole)``.

A caption set with ``data_config.embeddings_dir`` also yields ``caption_embedding``, the
precomputed embedding of each drawn caption (StackGAN's char-CNN-RNN pickles, read by
:mod:`jaxgen.data.embeddings`): from ``<embeddings_dir>/<split>`` when that folder exists
(StackGAN's ``birds/train``, ``birds/test`` layout), else from ``embeddings_dir`` itself.
"""
from __future__ import annotations

import os


def reader(data_config):
  """The module that reads ``data_config.name``."""
  from jaxgen.data import captions, pipeline  # pylint: disable=g-import-not-at-top
  return captions if data_config.name in captions.CAPTION_SETS else pipeline


def validate(data_config) -> None:
  reader(data_config).validate(data_config)
  if data_config.get('embeddings_dir'):
    from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
    if reader(data_config) is not captions:
      raise ValueError(f'data.embeddings_dir is for caption datasets; {data_config.name!r} is '
                       'an image dataset.')


def embeddings_for_split(data_config, split: str) -> dict:
  """``filename -> [captions, dim]`` of ``split`` from ``data_config.embeddings_dir``."""
  from jaxgen.data import embeddings  # pylint: disable=g-import-not-at-top
  root = data_config.embeddings_dir
  path = os.path.join(root, split)
  return embeddings.embeddings_by_filename(path if os.path.isdir(path) else root)


def make_dataset(data_config, split: str, batch_size: int, **kwargs):
  if data_config.get('embeddings_dir'):
    from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
    return captions.make_caption_dataset(
        data_config, split, batch_size, captions.tokenizer_for(data_config),
        embeddings=embeddings_for_split(data_config, split), **kwargs)
  return reader(data_config).make_dataset(data_config, split, batch_size, **kwargs)
