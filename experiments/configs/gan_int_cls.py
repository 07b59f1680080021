"""GAN-INT-CLS (Reed et al., ICML 2016): text-to-image GAN on the embedded ``jaxgen_shapes``.

  python -m experiments.gan_int_cls --config=experiments/configs/gan_int_cls.py --workdir=runs/gic
  python -m experiments.gan_int_cls --config=experiments/configs/gan_int_cls.py:gan_cls \
      --workdir=runs/gan_cls --config.text_from=runs/text_encoder

Variants (``:<name>``, comma-separated, the later ones overriding):
  gan_int_cls  (default) matching-aware D and interpolated captions: cls=True, interp=True.
  gan_cls      the matching-aware D alone (cls=True, interp=False).
  gan_int      interpolated captions alone (cls=False, interp=True).
  gan          the plain conditional GAN (both off).
  bilstm       the caption encoder is AttnGAN's bi-LSTM (words) instead of the char-CNN-RNN.
  counterfactual  not Reed's, ``jaxgen_shapes`` only, with ``cls``: every other wrong caption
               is the image's own caption with one object's shape or colour changed
               (``data.counterfactual='shape,colour'``), e.g. ``gan_int_cls,cpu32,counterfactual``.
  cpu64        64x64 at widths 16 (ngf = ndf = 16), 2,000 steps: the size of the measured
               four-variant table (about 20 minutes per run on a 2-core CPU; 64x64 because the
               attribute classifier reads shapes reliably only there).
  cpu32        the default 32x32 size, widths 32, for 6,000 steps with an EMA of G (decay
               0.999, what sampling and scoring use) and both learning rates decayed linearly
               to 0 over the second half: 11-16 minutes a variant on a 2-core CPU, colour and
               R-precision well above cpu64's; the measured four-variant table uses it, with
               the text encoder of ``text_encoder.py:char_cnn_rnn,cpu_long``
               (docs/text_to_image.md).
  paper        Reed's sizes: 64x64, widths 64 (ngf = ndf = 64), the 1024-d char-CNN-RNN,
               batch 64, 600 epochs of the 4,000 training images.
  tiny         a seconds-long smoke run (widths 8, the tiny text encoder, 4 steps).
e.g. ``gan_cls,paper``. Default sizes fit a CPU: 32x32, widths 32, the CPU char-CNN-RNN
(128-d).

The caption encoder ``text`` is the text-encoder family's (``config.text.encoder``,
``config.text.<encoder>`` and the tokenizer fields of ``config.data``), set by
``experiments.configs.text_encoder.set_text`` with the argument ``<encoder>,<size>``:
``char_cnn_rnn`` (or ``bilstm`` with the ``bilstm`` variant) and ``cpu`` (default),
``paper`` or ``tiny`` -- so ``gan_int_cls.py:<variant>`` builds the same ``text`` network as
``text_encoder.py:<encoder>,<size>`` (``tiny``: ``text_encoder.py:tiny``). It is frozen.
Import a trained one with ``--config.text_from=<text-encoder workdir>[:net]`` (it sets
``init_from.text``; the net defaults to ``text``); without it phi is a random encoder (a
fixed random projection of the caption). With precomputed sentence embeddings (StackGAN's
char-CNN-RNN pickles for CUB / Oxford-102): ``--config.text.encoder=precomputed
--config.data.embedding_dim=1024 --config.data.embeddings_dir=<dir>``.
"""
import ml_collections

from experiments.configs import text_encoder as text_config
from jaxgen.engine import config as engine_config

SWITCHES = {'gan': (False, False), 'gan_cls': (True, False), 'gan_int': (False, True),
            'gan_int_cls': (True, True)}
VARIANTS = (*SWITCHES, 'bilstm', 'counterfactual', 'cpu32', 'cpu64', 'paper', 'tiny')


def gan_int_cls_defaults() -> ml_collections.ConfigDict:
  c = engine_config.defaults()
  c.family = 'gan_int_cls'
  c.model = ml_collections.ConfigDict(dict(
      resolution=32, channels=3, latent_dim=100, proj_dim=128, g_width=32, d_width=32,
      conv_impl='fast', d_projection=False))  # d_projection: not Reed's (models docstring)
  # manual_dir: CUB / Oxford-102 sources. embeddings_dir, embedding_dim: precomputed caption
  # embeddings and their size (text.encoder='precomputed').
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_shapes', split='train', eval_split='test', resolution=32, channels=3,
      data_dir='', cache=True, shuffle_buffer=10_000, manual_dir='', embeddings_dir='',
      embedding_dim=0,
      # Not Reed's (jaxgen_shapes only, with cls): e.g. 'shape,colour' makes every other
      # wrong caption the image's own caption with one object's shape or colour changed.
      counterfactual=''))
  # The caption encoder phi and its tokenizer (config.text, data.tokenizer, ...): set_text.
  text_config.set_text(c, 'char_cnn_rnn')
  c.cls = True               # matching-aware discriminator (real image, wrong caption = fake)
  c.interp = True            # GAN-INT: G also on interpolated caption embeddings
  # The CLS term's wrong captions: 'roll' (Reed: another caption of the batch, at random) or
  # 'nearest' (the batch's most similar other caption with cosine similarity at most
  # wrong_max_similarity; see jaxgen.losses.matching.nearest_mismatched).
  c.wrong_captions = 'roll'
  c.wrong_max_similarity = 0.8
  c.interp_beta = 0.5
  c.interp_weight = 1.0
  c.optimizer = ml_collections.ConfigDict(dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999,
                                               eps=1e-8, schedule='constant',
                                               decay_start_frac=0.0, final_lr_frac=0.0))
  c.ema_decay = 0.0
  c.text_from = ''           # '<text-encoder workdir>[:net]': import phi from that run (frozen)
  c.batch_size = 64
  c.num_steps = 3000
  c.checkpoint_every = 500
  c.num_sample_captions = 8  # sample grids: 8 fixed test captions, one per column
  return c


def get_config(arg: str = 'gan_int_cls'):
  c = gan_int_cls_defaults()
  names = (arg or 'gan_int_cls').split(',')
  for name in names:
    if name not in VARIANTS:
      raise ValueError(f'Unknown gan_int_cls variant {name!r}; accepted: {", ".join(VARIANTS)}.')
  # The text encoder of text_encoder.py:<encoder>,<size> (same fields, same tokenizer).
  encoder = 'bilstm' if 'bilstm' in names else 'char_cnn_rnn'
  size = ([n for n in names if n in ('paper', 'tiny')] or ['cpu'])[-1]  # the later one
  text_config.set_text(c, f'{encoder},{size}')
  for name in names:
    if name in SWITCHES:
      c.cls, c.interp = SWITCHES[name]
    elif name == 'counterfactual':
      c.data.counterfactual = 'shape,colour'
    elif name == 'cpu64':
      c.model.resolution = c.data.resolution = 64
      c.model.g_width = c.model.d_width = 16
      c.num_steps = 2000
    elif name == 'cpu32':
      c.num_steps = 6000
      c.checkpoint_every = 1000
      c.ema_decay = 0.999
      c.optimizer.schedule = 'linear'
      c.optimizer.decay_start_frac = 0.5
    elif name == 'paper':
      c.model.resolution = c.data.resolution = 64
      c.model.g_width = c.model.d_width = 64
      c.num_steps = 600 * 4000 // c.batch_size
      c.checkpoint_every = 2000
      c.log_every = 100
    elif name == 'tiny':  # 32x32: jaxgen_shapes' smallest build (the tests use 16x16)
      c.model.g_width = c.model.d_width = 8
      c.model.latent_dim, c.model.proj_dim = 8, 8
      c.batch_size = 8
      c.num_steps = 4
      c.log_every = 1
      c.checkpoint_every = 2
      c.num_grid_samples = 8
      c.num_sample_captions = 4
  return c
