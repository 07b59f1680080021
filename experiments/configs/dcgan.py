"""DCGAN (Radford et al. 2016).

Default: 32x32 digits from the embedded dataset, 2,000 steps: a few minutes on a 2-core CPU
(``conv_impl='fast'``, the phase-decomposed layers of jaxgen.nn.fast_conv).

  python -m experiments.dcgan --config=experiments/configs/dcgan.py --workdir=runs/dcgan

Variants (``--config=experiments/configs/dcgan.py:<variant>``):
  digits    the default above.
  tiny      a seconds-long smoke run (8/8 widths, 16x16, 20 steps).
  mnist     TFDS mnist at 32x32 (prepare it first; see README).
  celeba64  TFDS celeb_a, DCGAN centre crop to 64x64, the reference 64/64 widths.
  bedroom64 TFDS lsun/bedroom at 64x64.
  cifar10   TFDS cifar10 at 32x32.
  sn        DCGAN-with-SN: digits with spectral normalisation on every D layer (no D BatchNorm).
"""
from experiments.configs import common


def get_config(arg: str = 'digits'):
  c = common.gan_defaults()
  c.model.name = 'dcgan'
  arg = arg or 'digits'
  if arg == 'digits':
    c.model.g_width = c.model.d_width = 32
    c.model.conv_impl = 'fast'  # Same numbers as 'plain', ~20x faster on XLA:CPU.
    c.num_steps = 2000
  elif arg == 'sn':
    c.model.g_width = c.model.d_width = 32
    c.model.conv_impl = 'fast'
    c.num_steps = 1500
    c.model.spectral_norm = True
  elif arg == 'tiny':
    c.model.resolution = c.data.resolution = 16
    c.model.g_width = c.model.d_width = 8
    c.batch_size = 16
    c.num_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10
  elif arg == 'mnist':
    c.data.name = 'mnist'
    c.num_steps = 20_000
  elif arg in ('celeba64', 'bedroom64'):
    c.data.name = 'celeb_a' if arg == 'celeba64' else 'lsun/bedroom'
    c.model.resolution = c.data.resolution = 64
    c.model.channels = c.data.channels = 3
    c.batch_size = 128
    c.num_steps = 50_000
    c.checkpoint_every = 2000
    c.log_every = 100
  elif arg == 'cifar10':
    c.data.name = 'cifar10'
    c.model.channels = c.data.channels = 3
    c.num_steps = 50_000
    c.checkpoint_every = 2000
  else:
    raise ValueError(f'Unknown dcgan variant {arg!r}; accepted: digits, tiny, mnist, celeba64, '
                     'bedroom64, cifar10, sn.')
  return c
