"""Linear probes of a trained text encoder: which attributes do its embeddings carry?

  python -m jaxgen.text_probe --workdir=runs/text_encoder/char_cnn_rnn [--results=PATH]

For a finished text-encoder run (``python -m experiments.text_encoder``) on a caption set with
labels (``jaxgen_shapes``: the first named object's shape, colour, size and position, and the
background colour; CUB / Oxford-102: the class), fits one linear probe per attribute
(:mod:`jaxgen.metrics.linear_probe`) on the embeddings of the first ``--train_images``
training images and scores it on the first ``--test_images`` images of ``--split``:

* ``text``: the sentence embedding phi(t) of every caption of those images, each labelled
  with its image's attributes;
* ``image``: the run's image embedding of each image;

and the mean L2 length of both kinds of test embedding (``length``).

A text-to-image generator reads phi(t) through one linear layer, so an attribute the text
probe reads poorly is one the generator has to decode itself. Prints the table; ``--results``
also writes a stamped results file (:mod:`jaxgen.results`).
"""
from __future__ import annotations

import numpy as np
from absl import app, flags

from jaxgen.data import captions
from jaxgen.engine import runs
from jaxgen.families import text_encoder
from jaxgen.metrics import linear_probe


def probe_run(workdir: str, *, split: str = 'test', train_images: int = 4000,
              test_images: int = 500, batch_size: int = 250) -> dict:
  """Per-attribute probes of a text-encoder run's text and image embeddings (a dict)."""
  if split == 'train':
    raise ValueError('The probes are fitted on the train split; score them on another split '
                     '(e.g. test or heldout), not train.')
  config, _, _, state = runs.restore_run(workdir, family='text_encoder')
  text = text_encoder.make_text_net(config)
  image = text_encoder.make_image_net(config)

  def embedded(name, num):
    """(every caption's embedding, its image's index, every image's embedding, labels)."""
    data = captions.load_caption_split(config.data, name, text.tokenizer, max_examples=num,
                                       whole=True)
    return (*text_encoder.embed_split(text, image, state.nets, data, batch_size),
            linear_probe.attribute_labels(data))

  tr_cap, tr_owner, tr_img, tr_lab = embedded('train', train_images)
  te_cap, te_owner, te_img, te_lab = embedded(split, test_images)
  out = {'workdir': workdir, 'step': int(state.step), 'split': split,
         'num_train_images': len(tr_img), 'num_test_images': len(te_img)}
  # Mean L2 length of the test embeddings: a generator that concatenates phi(t) with its
  # noise (DF-GAN) weighs the two by their lengths, which a cosine-trained encoder leaves free.
  out['length'] = {'text': float(np.linalg.norm(np.asarray(te_cap), axis=-1).mean()),
                   'image': float(np.linalg.norm(np.asarray(te_img), axis=-1).mean())}
  for kind in ('text', 'image'):
    out[kind] = {}
    for attr in tr_lab:
      if kind == 'text':
        args = (tr_cap, tr_lab[attr][tr_owner], te_cap, te_lab[attr][te_owner])
      else:
        args = (tr_img, tr_lab[attr], te_img, te_lab[attr])
      out[kind][attr] = linear_probe.probe(*args)
  return out


def table(result: dict) -> str:
  """The probes as a markdown table: one row per attribute."""
  rows = ['| attribute | text probe | image probe | chance |', '|---|---|---|---|']
  for attr, t in result['text'].items():
    i = result['image'][attr]
    rows.append(f'| {attr} | {t["accuracy"]:.3f} | {i["accuracy"]:.3f} | {t["chance"]:.3f} |')
  length = result['length']
  rows.append(f'| mean length (L2) | {length["text"]:.2f} | {length["image"]:.2f} | |')
  return '\n'.join(rows)


def main(argv):
  del argv
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  results.run_tool(
      lambda f: probe_run(f.workdir, split=f.split, train_images=f.train_images,
                          test_images=f.test_images),
      table, 'python -m jaxgen.text_probe')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A finished text-encoder run.', required=True)
  flags.DEFINE_string('split', 'test', 'The split the probes are scored on.')
  flags.DEFINE_integer('train_images', 4000, 'Fit on the first N training images.')
  flags.DEFINE_integer('test_images', 500, 'Score on the first N images of --split.')
  flags.DEFINE_string('results', '', 'Also write a stamped results file here (jaxgen.results).')
  app.run(main)
