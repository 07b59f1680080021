"""Reading the published char-CNN-RNN caption embeddings of Reed et al. / StackGAN.

StackGAN (Zhang et al., ICCV 2017) distributes, per split directory (e.g. ``birds/train``),
``char-CNN-RNN-embeddings.pickle`` - for every image, the 1024-d char-CNN-RNN embeddings of
Reed et al. (CVPR 2016) of its ten captions, pickled under Python 2 as a list of [10, 1024]
float arrays (or one [N, 10, 1024] array) - and ``filenames.pickle``, the matching list of
``'<class dir>/<image stem>'`` names. GAN-INT-CLS and StackGAN condition on these.

The pickles are read with a restricted unpickler that only rebuilds numpy arrays, lists and
strings (a pickle can otherwise run arbitrary code) and ``encoding='latin1'`` so Python 2
numpy pickles load.
"""
from __future__ import annotations

import os
import pickle

import numpy as np

EMBEDDINGS_FILE = 'char-CNN-RNN-embeddings.pickle'
FILENAMES_FILE = 'filenames.pickle'

_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'), ('builtins', 'list'), ('__builtin__', 'list'),
    ('copy_reg', '_reconstructor'), ('copyreg', '_reconstructor'),
    ('builtins', 'object'), ('__builtin__', 'object'),
    ('_codecs', 'encode'),  # How protocol-2 pickles written by Python 3 store bytes.
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
}


class _ArrayUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'Refusing to load {module}.{name} from a pickle: only numpy '
                                 'arrays, lists and strings are expected.')


def _load(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path!r} not found. The char-CNN-RNN embeddings come with StackGAN\'s preprocessed '
        'data (https://github.com/hanzhanggit/StackGAN, "birds"/"flowers" char-CNN-RNN '
        'embeddings); extract them so that <dir>/char-CNN-RNN-embeddings.pickle and '
        '<dir>/filenames.pickle exist.')
  with open(path, 'rb') as f:
    return _ArrayUnpickler(f, encoding='latin1').load()


def load_char_cnn_rnn_embeddings(directory: str) -> tuple[np.ndarray, list[str]]:
  """(embeddings float32 [N, captions, dim], filenames [N]) from a StackGAN split directory."""
  raw = _load(os.path.join(directory, EMBEDDINGS_FILE))
  names = _load(os.path.join(directory, FILENAMES_FILE))
  if isinstance(raw, np.ndarray):
    items = list(raw) if raw.ndim == 3 else None
  elif isinstance(raw, list):
    items = raw
  else:
    items = None
  if items is None:
    raise ValueError(f'{EMBEDDINGS_FILE} must hold a list of [captions, dim] arrays or a '
                     f'[N, captions, dim] array; got {type(raw).__name__} '
                     f'{getattr(raw, "shape", "")}.')
  items = [np.asarray(x) for x in items]
  shapes = {x.shape for x in items}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f'{EMBEDDINGS_FILE}: every entry must be [captions, dim] of one shape; '
                     f'found shapes {sorted(shapes)[:5]}.')
  embeddings = np.stack(items).astype(np.float32)
  if not np.isfinite(embeddings).all():
    raise ValueError(f'{EMBEDDINGS_FILE} contains NaN or infinite values.')
  if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
    raise ValueError(f'{FILENAMES_FILE} must hold a list of strings.')
  names = [n.decode('utf-8') if isinstance(n, bytes) else n for n in names]
  if len(names) != len(embeddings):
    raise ValueError(f'{len(embeddings)} embeddings but {len(names)} filenames in '
                     f'{directory!r}.')
  return embeddings, names


def embeddings_by_filename(directory: str) -> dict[str, np.ndarray]:
  """``filename -> [captions, dim]``, to join with ``filename`` of the caption builders."""
  embeddings, names = load_char_cnn_rnn_embeddings(directory)
  return dict(zip(names, embeddings))
