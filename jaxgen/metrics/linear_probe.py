"""Linear probes: how much of a label a frozen embedding carries in linearly readable form.

A probe is a multinomial logistic regression (scikit-learn's ``LogisticRegression`` on
standardised features) fitted on one set of embeddings and scored on another. Its test
accuracy against the majority-class rate (``chance``) says whether an attribute (an object's
shape, colour, size, position in ``jaxgen_shapes``; a class in CUB) can be read from the
embedding by one linear layer, which is how GAN-INT-CLS's generator and discriminator read
the caption embedding (a linear projection and a leaky ReLU).

* :func:`probe` - one fitted probe: ``{'accuracy', 'chance', 'train_accuracy'}``.
* :func:`attribute_labels` - the per-image labels of a caption split read by
  :func:`jaxgen.data.captions.load_caption_split` (the first object's attributes).
"""
from __future__ import annotations

import numpy as np

# Label name -> (field of a caption split, slot): slot 0 of the per-object fields is the first
# object the caption names; ``background`` and ``label`` are per image.
ATTRIBUTES = {'shape': ('object_shape', 0), 'colour': ('object_colour', 0),
              'size': ('object_size', 0), 'position': ('object_position', 0),
              'background': ('background', None), 'class': ('label', None)}


def attribute_labels(data: dict) -> dict[str, np.ndarray]:
  """``{name: int labels [N]}`` for every attribute of :data:`ATTRIBUTES` the split has."""
  out = {}
  for name, (field, slot) in ATTRIBUTES.items():
    if field in data:
      values = np.asarray(data[field])
      out[name] = (values[:, slot] if slot is not None else values).astype(np.int64)
  if not out:
    raise ValueError(f'The split has no attribute labels to probe (fields: '
                     f'{", ".join(sorted(data))}); accepted: '
                     f'{", ".join(f for f, _ in ATTRIBUTES.values())}.')
  return out


def probe(train_x, train_y, test_x, test_y, *, max_iter: int = 2000) -> dict:
  """Fits a linear probe on (``train_x`` [N, D], ``train_y`` [N]) and scores ``test_x``.

  Returns ``accuracy`` (test), ``train_accuracy`` and ``chance``: the test frequency of the
  most common train label (what a probe that ignores the features scores).
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f'Embeddings must be [N, D] with one D; got {train_x.shape} and '
                     f'{test_x.shape}.')
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise ValueError(f'One label per embedding: {len(train_x)} vs {len(train_y)} (train), '
                     f'{len(test_x)} vs {len(test_y)} (test).')
  classes, counts = np.unique(train_y, return_counts=True)
  if len(classes) < 2:
    raise ValueError(f'A probe needs at least 2 classes in the train labels; got {classes}.')
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
  model.fit(train_x, train_y)
  return {'accuracy': float(model.score(test_x, test_y)),
          'train_accuracy': float(model.score(train_x, train_y)),
          'chance': float(np.mean(test_y == classes[np.argmax(counts)]))}
