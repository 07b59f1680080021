"""Which reader serves ``config.data``: image sets (:mod:`jaxgen.data.pipeline`) or caption sets
(:mod:`jaxgen.data.captions`). Both expose ``validate(data_config)`` and
``make_dataset(data_config, split, batch_size, *, seed, start_step, repeat, whole)``.
"""
from __future__ import annotations


def reader(data_config):
  """The module that reads ``data_config.name``."""
  from jaxgen.data import captions, pipeline  # pylint: disable=g-import-not-at-top
  return captions if data_config.name in captions.CAPTION_SETS else pipeline


def validate(data_config) -> None:
  reader(data_config).validate(data_config)


def make_dataset(data_config, split: str, batch_size: int, **kwargs):
  return reader(data_config).make_dataset(data_config, split, batch_size, **kwargs)
