"""Which reader serves ``config.data``: image sets (:mod:`jaxgen.data.pipeline`) or caption sets
(:mod:`jaxgen.data.captions`). Both expose ``validate(data_config)`` and
``make_dataset(data_config, split, batch_size, *, seed, start_step, repeat, whole)``.

A caption set with ``data_config.embeddings_dir`` also yields ``caption_embedding`` (see
:func:`jaxgen.data.captions.make_dataset`).
"""
from __future__ import annotations


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


def make_dataset(data_config, split: str, batch_size: int, **kwargs):
  return reader(data_config).make_dataset(data_config, split, batch_size, **kwargs)
