"""Text encoders for text-to-image models, pretrained on image-text matching.

  python -m experiments.text_encoder --config=experiments/configs/text_encoder.py:bilstm \
      --workdir=runs/text_bilstm
  python -m experiments.text_encoder --config=experiments/configs/text_encoder.py:char_cnn_rnn \
      --workdir=runs/text_char

The config argument is ``<encoder>[,<size>][,counterfactual]``:
  encoder  char_cnn_rnn  Reed et al. (CVPR 2016): characters, Reed's joint embedding loss
                         (inner products), retrieval by inner product.
           bilstm        AttnGAN's DAMSM text encoder (DF-GAN's): words, the DAMSM sentence
                         loss (cosine x gamma3 = 10), retrieval by cosine.
  size     cpu (default) small widths on the embedded 32x32 jaxgen_shapes: a few minutes on
                         a 2-core CPU.
           cpu_long      the cpu encoder trained 4x longer (6,000 steps, about 7 minutes):
                         retrieval top-1 0.91 where cpu reaches 0.86, and the shape word,
                         which the cpu encoder barely separates, read far better (what
                         GAN-INT-CLS's cpu32 recipe conditions on; docs/text_to_image.md).
           cpu64         the cpu text network matched against 64x64 images by a deeper
                         image encoder (32-64-128-256), 3,000 steps (about 9 minutes): the
                         larger objects make shape matter to the matching loss (bi-LSTM:
                         the linear probe reads shape 0.69 from its sentences against 0.53
                         at 32x32; docs/text_to_image.md). Its text network is the cpu one,
                         so 32x32 text-to-image configs can import it.
           paper         the papers' text encoders (char-CNN-RNN 384-512-256 convolutions,
                         256 RNN units, 1024-d; bi-LSTM 300-d words, 128 units per
                         direction, dropout 0.5, Adam(2e-3, 0.5, 0.999), gradient norm clipped
                         at 0.25 as AttnGAN's DAMSM) on 64x64 jaxgen_shapes.
           tiny          a seconds-long smoke run (a 112-example build of the set).
  counterfactual  not in the papers, ``jaxgen_shapes`` only: each image's own caption with
                  its shape word changed is one more wrong caption of the matching loss
                  (``data.counterfactual='shape'``), so both networks must keep shape, the
                  attribute the plain loss leaves weakest (docs/text_to_image.md). The text
                  network is unchanged: a text-to-image config imports it with the same
                  ``<encoder>,<size>``.
``tiny`` alone is ``char_cnn_rnn,tiny``.

Evaluation (eval.json and every ``eval_every`` steps): caption -> image retrieval top-1 and
top-5 among ``eval.num_candidates`` = 100 images, every caption of every image of the test
split (and of the held-out colour-shape combinations) a query.

A text-to-image config takes the trained ``text`` network with
``init_from = {'text': '<workdir>:text'}`` and must build the same network: call
:func:`set_text` with the same argument (it sets ``config.text`` and the tokenizer fields of
``config.data``), and build it with ``jaxgen.families.text_encoder.make_text_net(config)``.
"""
import ml_collections

from jaxgen.engine import config as engine_config

ENCODERS = ('char_cnn_rnn', 'bilstm')
SIZES = ('cpu', 'cpu_long', 'cpu64', 'paper', 'tiny')
# Sizes whose text network is the cpu one (trained differently).
CPU_TEXT_SIZES = ('cpu', 'cpu_long', 'cpu64')
# Module fields per (encoder, size) (jaxgen.models.text_encoders; vocab_size comes from the
# tokenizer). Sentence size: embed_dim (char-CNN-RNN), 2 * hidden (bi-LSTM).
TEXT = {
    ('char_cnn_rnn', 'cpu'): dict(conv_features=(64, 128, 128), kernel_size=4, pool_size=3,
                                  rnn_features=128, cell='rnn', embed_dim=128),
    ('char_cnn_rnn', 'paper'): dict(conv_features=(384, 512, 256), kernel_size=4, pool_size=3,
                                    rnn_features=256, cell='rnn', embed_dim=1024),
    ('char_cnn_rnn', 'tiny'): dict(conv_features=(8, 8, 8), kernel_size=4, pool_size=3,
                                   rnn_features=8, cell='rnn', embed_dim=16),
    ('bilstm', 'cpu'): dict(embed_features=64, hidden=64, dropout=0.1),
    ('bilstm', 'paper'): dict(embed_features=300, hidden=128, dropout=0.5),
    ('bilstm', 'tiny'): dict(embed_features=8, hidden=8, dropout=0.5),
}
# Tokenizer fields of config.data per encoder. Words: jaxgen_shapes captions have up to 33
# words (two objects and the background), so AttnGAN's 18 would cut the second object off.
TOKENIZER = {'char_cnn_rnn': dict(tokenizer='char', max_caption_len=201),
             'bilstm': dict(tokenizer='word', max_caption_len=36, vocab_min_count=1)}
TINY_SPLITS = {'train': 64, 'test': 24, 'heldout': 24}


def split_counterfactual(arg: str) -> tuple[str, bool]:
  """(``arg`` without a ``counterfactual`` entry, whether it had one)."""
  names = (arg or '').split(',')
  return ','.join(n for n in names if n != 'counterfactual'), 'counterfactual' in names


def parse(arg: str) -> tuple[str, str]:
  """(encoder, size) of ``<encoder>[,<size>][,counterfactual]`` (checked)."""
  plain = split_counterfactual(arg)[0] or 'char_cnn_rnn'
  if plain == 'tiny':
    return 'char_cnn_rnn', 'tiny'
  encoder, _, size = plain.partition(',')
  size = size or 'cpu'
  if encoder not in ENCODERS or size not in SIZES:
    raise ValueError(f'text_encoder config argument must be "<encoder>[,<size>]'
                     f'[,counterfactual]" with encoder in {", ".join(ENCODERS)} and size in '
                     f'{", ".join(SIZES)} (or "tiny"); got {arg!r}.')
  return encoder, size


def set_text(c, arg: str = 'char_cnn_rnn'):
  """Sets ``c.text`` and the tokenizer fields of ``c.data`` as the text-encoder run ``arg``."""
  encoder, size = parse(arg)
  net = 'cpu' if size in CPU_TEXT_SIZES else size  # the same text network, trained otherwise
  c.text = ml_collections.ConfigDict({'encoder': encoder, encoder: dict(TEXT[encoder, net])})
  with c.data.unlocked():
    c.data.update(TOKENIZER[encoder])
  return c


def get_config(arg: str = 'char_cnn_rnn'):
  encoder, size = parse(arg)
  c = engine_config.defaults()
  c.family = 'text_encoder'
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_shapes', split='train', resolution=32, channels=3, data_dir='',
      shuffle_buffer=10_000, cache=True,
      counterfactual='shape' if split_counterfactual(arg)[1] else ''))
  set_text(c, arg)
  c.image = ml_collections.ConfigDict(dict(features=(32, 64, 128)))
  char = encoder == 'char_cnn_rnn'
  c.loss = ml_collections.ConfigDict(dict(
      name='joint_embedding' if char else 'damsm', form='softmax', margin=1.0, gamma3=10.0,
      use_labels=False))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, schedule='constant', decay_start_frac=0.0,
      final_lr_frac=0.0, clip_norm=0.0))
  c.eval = ml_collections.ConfigDict(dict(
      splits=('test', 'heldout'), num_candidates=100, batch_size=250, seed=0,
      similarity='dot' if char else 'cosine', max_examples=0))
  c.batch_size = 64
  c.num_steps = 1500
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 500
  c.write_figures = False
  if size == 'cpu_long':
    c.num_steps = 6000
    c.checkpoint_every = c.eval_every = 1500
  elif size == 'cpu64':
    c.data.resolution = 64
    c.image.features = (32, 64, 128, 256)
    c.num_steps = 3000
    c.checkpoint_every = c.eval_every = 1500
  elif size == 'paper':
    c.data.resolution = 64
    c.image.features = (64, 128, 256, 512)
    c.batch_size = 40 if char else 48   # Reed et al.'s and AttnGAN's DAMSM batches.
    c.num_steps = 20_000
    c.checkpoint_every = 2000
    c.eval_every = 5000
    c.log_every = 100
    if not char:
      c.optimizer.update(dict(b1=0.5, clip_norm=0.25))
  elif size == 'tiny':
    with c.data.unlocked():
      c.data.split_sizes = dict(TINY_SPLITS)
    c.image.features = (8, 8)
    c.batch_size = 8
    c.num_steps = 6
    c.log_every = 1
    c.checkpoint_every = 3
    c.eval_every = 0
    c.eval.num_candidates = 10
    c.eval.splits = ('test',)
    c.eval.batch_size = 32
  return c
