"""GAN-INT-CLS (Reed et al., ICML 2016): text-to-image GAN on the embedded ``jaxgen_shapes``.

  python -m experiments.gan_int_cls --config=experiments/configs/gan_int_cls.py --workdir=runs/gic
  python -m experiments.gan_int_cls --config=experiments/configs/gan_int_cls.py:gan_cls \
      --workdir=runs/gan_cls --config.text_from=runs/text_encoder

Variants (``:<name>``, comma-separated, the later ones overriding):
  gan_int_cls  (default) matching-aware D and interpolated captions: cls=True, interp=True.
  gan_cls      the matching-aware D alone (cls=True, interp=False).
  gan_int      interpolated captions alone (cls=False, interp=True).
  gan          the plain conditional GAN (both off).
  paper        Reed's sizes: 64x64, widths 64 (ngf = ndf = 64), a 1024-d char-CNN-RNN,
               batch 64, 600 epochs of the 4,000 training images.
  tiny         a seconds-long smoke run (widths 8, a small char-CNN-RNN, 4 steps).
e.g. ``gan_cls,paper``. Default sizes fit a CPU: 32x32, widths 32, a 256-d char-CNN-RNN.

The caption encoder ``text`` is frozen. Import a trained one (the text-encoder family, same
``config.text`` fields) with ``--config.text_from=<workdir>[:net]`` (it sets
``init_from.text``; the net defaults to ``text``); without it phi is a
random char-CNN-RNN (a fixed random projection of the characters). With precomputed
sentence embeddings (StackGAN's char-CNN-RNN pickles for CUB / Oxford-102),
``--config.text.name=precomputed --config.text.embed_dim=1024 --config.data.embeddings_dir=<dir>``.
"""
import ml_collections

from jaxgen.engine import config as engine_config

SWITCHES = {'gan': (False, False), 'gan_cls': (True, False), 'gan_int': (False, True),
            'gan_int_cls': (True, True)}
VARIANTS = (*SWITCHES, 'paper', 'tiny')


def gan_int_cls_defaults() -> ml_collections.ConfigDict:
  c = engine_config.defaults()
  c.family = 'gan_int_cls'
  c.model = ml_collections.ConfigDict(dict(
      resolution=32, channels=3, latent_dim=100, proj_dim=128, g_width=32, d_width=32,
      conv_impl='fast'))
  # The caption encoder phi (jaxgen.models.text_encoders; 'precomputed': embeddings in the batch).
  c.text = ml_collections.ConfigDict(dict(
      name='char_cnn_rnn', vocab_size=72, conv_features=(128, 128, 128), kernel_size=4,
      pool_size=3, rnn_features=128, cell='rnn', embed_dim=256))
  # max_caption_len 0: the tokenizer's default. manual_dir: CUB / Oxford-102 sources.
  # embeddings_dir: precomputed caption embeddings (text.name='precomputed').
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_shapes', split='train', eval_split='test', resolution=32, channels=3,
      data_dir='', tokenizer='char', max_caption_len=0, cache=True,
      shuffle_buffer=10_000, manual_dir='', embeddings_dir=''))
  c.cls = True               # matching-aware discriminator (real image, wrong caption = fake)
  c.interp = True            # GAN-INT: G also on interpolated caption embeddings
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
  for name in (arg or 'gan_int_cls').split(','):
    if name in SWITCHES:
      c.cls, c.interp = SWITCHES[name]
    elif name == 'paper':
      c.model.resolution = c.data.resolution = 64
      c.model.g_width = c.model.d_width = 64
      c.text.update(dict(conv_features=(384, 512, 256), rnn_features=256, embed_dim=1024))
      c.num_steps = 600 * 4000 // c.batch_size
      c.checkpoint_every = 2000
      c.log_every = 100
    elif name == 'tiny':  # 32x32: jaxgen_shapes' smallest build (the tests use 16x16)
      c.model.g_width = c.model.d_width = 8
      c.model.latent_dim, c.model.proj_dim = 8, 8
      c.text.update(dict(conv_features=(8, 8), rnn_features=8, embed_dim=16))
      c.data.max_caption_len = 96
      c.batch_size = 8
      c.num_steps = 4
      c.log_every = 1
      c.checkpoint_every = 2
      c.num_grid_samples = 8
      c.num_sample_captions = 4
    else:
      raise ValueError(f'Unknown gan_int_cls variant {name!r}; accepted: {", ".join(VARIANTS)}.')
  return c
