"""One registry style for everything chosen by name in a config.

Models, losses, penalties, datasets, evaluators and families are plain dicts from name to
value (or to a module path, imported on first use); :func:`lookup` is the one way to read
them, so a wrong name always fails the same way: ``Unknown <what> 'name'; accepted: a, b.``
"""
from __future__ import annotations

import importlib
from typing import Mapping, TypeVar

T = TypeVar('T')


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
  """``table[name]``, or ValueError naming ``what`` and the accepted names."""
  if name not in table:
    raise ValueError(f'Unknown {what} {name!r}; accepted: {", ".join(table)}.')
  return table[name]


def lookup_module(table: Mapping[str, str], name: str, what: str):
  """The module whose path ``table[name]`` holds, imported only when asked for."""
  return importlib.import_module(lookup(table, name, what))
