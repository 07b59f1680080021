"""The original MLP GAN (Goodfellow et al. 2014): ReLU generator, maxout discriminator.

  python -m experiments.gan --config=experiments/configs/gan.py --workdir=runs/gan

Variants: digits (default: 16x16 embedded digits), tiny (smoke run), mnist (TFDS mnist 28x28).
"""
from experiments.configs import common


def get_config(arg: str = 'digits'):
  c = common.gan_defaults()
  c.model.name = 'mlp_gan'
  c.model.g_width = c.model.d_width = 256
  c.model.maxout_pieces = 2
  c.model.resolution = c.data.resolution = 16
  c.num_steps = 3000
  c.batch_size = 64
  c.optimizer.g_lr = c.optimizer.d_lr = 2e-4
  arg = arg or 'digits'
  if arg == 'digits':
    pass
  elif arg == 'tiny':
    c.model.g_width = c.model.d_width = 16
    c.num_steps = 20
    c.batch_size = 16
    c.log_every = 5
    c.checkpoint_every = 10
  elif arg == 'mnist':
    c.data.name = 'mnist'
    c.model.resolution = c.data.resolution = 28
    c.model.g_width = c.model.d_width = 512
    c.num_steps = 30_000
  else:
    raise ValueError(f'Unknown gan variant {arg!r}; accepted: digits, tiny, mnist.')
  return c
