"""SN-DCGAN: Miyato et al. 2018's "standard CNN" with spectral normalisation and hinge loss.

  python -m experiments.sngan --config=experiments/configs/sngan.py --workdir=runs/sngan

The config argument is ``<data>[,<adam setting>]``:
  data     digits (default: 32x32 embedded digits, a few minutes on a 2-core CPU),
           tiny (a seconds-long smoke run), cifar10 (TFDS cifar10 32x32, the paper's set).
  setting  A-F, Table 1 of Miyato et al. (Adam alpha, beta1, beta2 and n_dis):
           A (1e-4, 0.5, 0.9, 5)   B (1e-4, 0.5, 0.999, 1)   C (2e-4, 0.5, 0.999, 1)
           D (1e-3, 0.5, 0.9, 5)   E (1e-3, 0.5, 0.999, 5)   F (1e-3, 0.9, 0.999, 5)
           Default C: DCGAN's optimiser, and the one pfnet's chainer-gan-lib runs its
           SN-DCGAN with (n_dis 1, Adam(2e-4, 0.5, 0.999)); B and C are the cheapest (n_dis 1).
e.g. ``--config=experiments/configs/sngan.py:cifar10,B``.

D computes real and fake logits in one pass (``d_joint_batch``), so each D update advances
every layer's power iteration by exactly one step, as in the paper's Algorithm 1.
"""
from experiments.configs import common

ADAM_SETTINGS = {  # name: (alpha, beta1, beta2, n_dis), Miyato et al. 2018 Table 1.
    'A': (1e-4, 0.5, 0.9, 5),
    'B': (1e-4, 0.5, 0.999, 1),
    'C': (2e-4, 0.5, 0.999, 1),
    'D': (1e-3, 0.5, 0.9, 5),
    'E': (1e-3, 0.5, 0.999, 5),
    'F': (1e-3, 0.9, 0.999, 5),
}
DATA = ('digits', 'tiny', 'cifar10')


def get_config(arg: str = 'digits'):
  arg = arg or 'digits'
  parts = arg.split(',')
  data = parts[0]
  setting = parts[1] if len(parts) > 1 else 'C'
  if len(parts) > 2 or data not in DATA or setting not in ADAM_SETTINGS:
    raise ValueError(f'sngan config argument must be "<data>[,<setting>]" with data in '
                     f'{", ".join(DATA)} and setting in {", ".join(ADAM_SETTINGS)}; got {arg!r}.')
  c = common.gan_defaults()
  c.model.name = 'sngan'
  c.model.latent_dim = 128
  c.model.g_width = c.model.d_width = 64
  c.model.spectral_norm = True
  c.model.g_spectral_norm = False
  c.model.leaky_slope = 0.1
  c.model.conv_impl = 'fast'  # jaxgen.nn.fast_conv: same numbers as 'plain', faster on CPU.
  c.loss.name = 'hinge'
  c.d_joint_batch = True
  c.adam_setting = setting
  alpha, b1, b2, n_dis = ADAM_SETTINGS[setting]
  c.optimizer.g_lr = c.optimizer.d_lr = alpha
  c.optimizer.b1, c.optimizer.b2 = b1, b2
  c.n_dis = n_dis
  c.batch_size = 64
  if data == 'digits':
    c.model.resolution = c.data.resolution = 32
    c.model.channels = c.data.channels = 1
    c.model.g_width = c.model.d_width = 32
    c.num_steps = 1500
  elif data == 'tiny':
    c.model.resolution = c.data.resolution = 16
    c.model.channels = c.data.channels = 1
    c.model.g_width = c.model.d_width = 4
    c.model.latent_dim = 16
    c.batch_size = 8
    c.num_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10
  elif data == 'cifar10':
    c.data.name = 'cifar10'
    c.model.resolution = c.data.resolution = 32
    c.model.channels = c.data.channels = 3
    c.num_steps = 100_000
    c.checkpoint_every = 5000
    c.log_every = 500
  return c
