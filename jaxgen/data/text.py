"""Caption tokenisation: Reed et al.'s character vocabulary and a word vocabulary.

Both tokenisers turn a batch of captions into fixed-length int32 id arrays plus lengths,
``encode_batch(texts) -> (ids [B, max_len], lengths [B])``, with id 0 as padding.

* :class:`CharVocab` is the alphabet of Reed, Akata, Lee & Schiele, "Learning Deep
  Representations of Fine-Grained Visual Descriptions" (CVPR 2016), used by their
  char-CNN-RNN: 70 symbols (the string lists ``-`` twice, so 69 distinct characters),
  text lower-cased, at most 201 characters. A character's id is its 1-based position in
  ``REED_ALPHABET`` (the later one for ``-``, as in Reed's Lua dictionary); every other
  character gets ``oov_id`` = 71.
* :class:`WordVocab` is built from a split's captions (AttnGAN-style word tokens: lower-cased
  runs of letters, digits and underscores; punctuation is dropped), keeping words seen at
  least ``min_count`` times, the ``max_size`` most frequent (ties by alphabetical order).
  Id 0 is padding, 1 is out-of-vocabulary, words start at 2.

Bad text is handled, never raised on or turned into NaN:

* an empty caption (or one with no tokens) encodes to all padding with length 0; the text
  encoders in :mod:`jaxgen.models.text_encoders` give it a finite embedding;
* unknown characters / words become the OOV id;
* captions longer than ``max_len`` are truncated to their first ``max_len`` tokens;
* ``bytes`` are decoded as UTF-8 with invalid bytes replaced (then unknown, hence OOV).

Anything that is not ``str`` or ``bytes`` is a programming error and raises TypeError.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Iterable, Sequence

import numpy as np

REED_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
REED_MAX_LEN = 201
PAD_ID = 0
WORD_OOV_ID = 1
_WORD_RE = re.compile(r'\w+')


def as_text(text) -> str:
  """``str`` as is, ``bytes`` decoded as UTF-8 (invalid bytes replaced); else TypeError."""
  if isinstance(text, str):
    return text
  if isinstance(text, (bytes, np.bytes_)):
    return bytes(text).decode('utf-8', errors='replace')
  raise TypeError(f'A caption must be str or bytes; got {type(text).__name__}: {text!r:.80}.')


def _check_max_len(max_len):
  if not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f'max_len must be a positive integer; got {max_len!r}.')
  return int(max_len)


def _pack(sequences: Sequence[list[int]], max_len: int):
  ids = np.full((len(sequences), max_len), PAD_ID, dtype=np.int32)
  lengths = np.zeros((len(sequences),), dtype=np.int32)
  for i, seq in enumerate(sequences):
    seq = seq[:max_len]
    ids[i, :len(seq)] = seq
    lengths[i] = len(seq)
  return ids, lengths


class CharVocab:
  """Reed et al.'s 70-character vocabulary; ids 1..70, OOV 71, padding 0."""

  def __init__(self, max_len: int = REED_MAX_LEN, alphabet: str = REED_ALPHABET):
    self.max_len = _check_max_len(max_len)
    self.alphabet = alphabet
    # Later occurrences win, as in Reed's Lua dictionary (``-`` is listed twice).
    self.char_to_id = {ch: i + 1 for i, ch in enumerate(alphabet)}
    self.oov_id = len(alphabet) + 1
    self.size = len(alphabet) + 2

  def encode(self, text) -> list[int]:
    """Ids of one caption (lower-cased, truncated to ``max_len``)."""
    text = as_text(text).lower()[:self.max_len]
    return [self.char_to_id.get(ch, self.oov_id) for ch in text]

  def encode_batch(self, texts: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [B, max_len], lengths int32 [B]); see the module docstring."""
    return _pack([self.encode(t) for t in texts], self.max_len)

  def decode(self, ids) -> str:
    """The characters of ``ids`` up to the first padding (OOV shown as U+FFFD)."""
    id_to_char = {i: ch for ch, i in self.char_to_id.items()}
    out = []
    for i in np.asarray(ids).tolist():
      if i == PAD_ID:
        break
      out.append(id_to_char.get(i, '\ufffd'))
    return ''.join(out)


def word_tokens(text) -> list[str]:
  """Lower-cased word tokens (runs of letters, digits, underscores) of one caption."""
  return _WORD_RE.findall(as_text(text).lower())


class WordVocab:
  """A word vocabulary: padding 0, OOV 1, then ``words`` in order from id 2."""

  def __init__(self, words: Sequence[str], max_len: int = 18):
    words = list(words)
    if len(set(words)) != len(words) or not all(isinstance(w, str) and w for w in words):
      raise ValueError('words must be distinct non-empty strings.')
    self.words = words
    self.max_len = _check_max_len(max_len)
    self.word_to_id = {w: i + 2 for i, w in enumerate(words)}
    self.oov_id = WORD_OOV_ID
    self.size = len(words) + 2

  @classmethod
  def build(cls, captions: Iterable, *, min_count: int = 1, max_size: int | None = None,
            max_len: int = 18) -> 'WordVocab':
    """Counts the tokens of ``captions`` (e.g. every train caption) into a vocabulary.

    Keeps words seen at least ``min_count`` times; of those the ``max_size`` most frequent
    (ties broken alphabetically, so the result does not depend on caption order).
    """
    if not isinstance(min_count, int) or min_count < 1:
      raise ValueError(f'min_count must be a positive integer; got {min_count!r}.')
    if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
      raise ValueError(f'max_size must be None or a non-negative integer; got {max_size!r}.')
    counts = collections.Counter()
    for caption in captions:
      counts.update(word_tokens(caption))
    kept = sorted((w for w, c in counts.items() if c >= min_count),
                  key=lambda w: (-counts[w], w))
    return cls(kept[:max_size] if max_size is not None else kept, max_len=max_len)

  def encode(self, text) -> list[int]:
    return [self.word_to_id.get(w, self.oov_id) for w in word_tokens(text)][:self.max_len]

  def encode_batch(self, texts: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [B, max_len], lengths int32 [B]); see the module docstring."""
    return _pack([self.encode(t) for t in texts], self.max_len)

  def decode(self, ids) -> str:
    out = []
    for i in np.asarray(ids).tolist():
      if i == PAD_ID:
        break
      out.append(self.words[i - 2] if 2 <= i < self.size else '<unk>')
    return ' '.join(out)

  def to_json(self) -> str:
    return json.dumps({'words': self.words, 'max_len': self.max_len})

  @classmethod
  def from_json(cls, text: str) -> 'WordVocab':
    data = json.loads(text)
    return cls(data['words'], max_len=data['max_len'])
