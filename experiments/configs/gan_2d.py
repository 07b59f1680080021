"""GANs on 2-D Gaussian mixtures: the PacGAN mode-coverage benchmark.

  python -m experiments.gan_2d --config=experiments/configs/gan_2d.py:ring,gan --workdir=runs/ring_gan

The config argument is ``<dataset>,<method>``:
  dataset  ring (8 Gaussians, radius 1, std 0.01) | grid (25 Gaussians on {-4..4}^2, std 0.05)
  method   a row of METHODS below: the loss, regulariser and normalisation it trains with.
Anything can still be overridden, e.g. ``--config.loss.name=hinge --config.model.spectral_norm=True
--config.penalty.name=r1 --config.penalty.weight=0.1 --config.weight_clip=0``.

All methods share the networks, batch size (100), number of generator steps (20,000) and the
2,500-sample evaluation unless their row says otherwise. The default networks are small
(G: 2-d Gaussian z -> 3 x 128 ReLU -> linear 2-d output; D: 3 x 128 LeakyReLU(0.2) -> logit,
no normalisation layers) so ten seeds of a row train in minutes on a 2-core CPU; the
``pacgan_arch`` row uses PacGAN/VEEGAN's larger networks (G 4 x 400 ReLU + BatchNorm; D
3 x 200 maxout with 5 pieces).
"""
import ml_collections

from experiments.configs import common

DATASETS = {'ring': 'toy2d_ring', 'grid': 'toy2d_grid'}

PACGAN_ARCH = {'model.g_hidden': (400,) * 4, 'model.d_hidden': (200,) * 3,
               'model.maxout_pieces': 5, 'model.g_batch_norm': True,
               'optimizer.g_lr': 1e-4, 'optimizer.d_lr': 1e-4}

# method -> overrides. Keys are dotted config paths.
METHODS = {
    # Goodfellow et al.'s GAN with the non-saturating G loss; nothing else.
    'gan': {},
    # The same with Goodfellow's saturating (minimax) G loss.
    'gan_minimax': {'loss.name': 'minimax'},
    # The plain GAN, sampled from an exponential moving average of G's weights.
    'gan_ema': {'ema_decay': 0.999},
    # The plain GAN on PacGAN/VEEGAN's networks (BatchNorm G, maxout D), Adam(1e-4).
    'pacgan_arch': dict(PACGAN_ARCH),
    # WGAN with weight clipping (Arjovsky et al. 2017: c = 0.01, n_critic = 5; Adam, not RMSProp).
    'wgan_clip': {'loss.name': 'wasserstein', 'weight_clip': 0.01, 'n_dis': 5,
                  'optimizer.g_lr': 5e-5, 'optimizer.d_lr': 5e-5, 'optimizer.b1': 0.0},
    # WGAN-GP (Gulrajani et al. 2017: lambda = 10, n_critic = 5, Adam(1e-4, 0.5, 0.9)).
    'wgan_gp': {'loss.name': 'wasserstein', 'penalty.name': 'wgan_gp', 'penalty.weight': 10.0,
                'n_dis': 5, 'optimizer.g_lr': 1e-4, 'optimizer.d_lr': 1e-4,
                'optimizer.b1': 0.5, 'optimizer.b2': 0.9},
    # Spectral normalisation on every D layer with the hinge loss (Miyato et al. 2018).
    'sn_hinge': {'loss.name': 'hinge', 'model.spectral_norm': True},
    # Spectral normalisation with the non-saturating loss.
    'sn': {'model.spectral_norm': True},
    # R1 zero-centred gradient penalty on real data (Mescheder et al. 2018), gamma = 0.1.
    'r1': {'penalty.name': 'r1', 'penalty.weight': 0.1},
    # R1 and an EMA of G's weights (decay 0.999) for sampling.
    'r1_ema': {'penalty.name': 'r1', 'penalty.weight': 0.1, 'ema_decay': 0.999},
    # R1 + EMA with a larger batch and budget (256 x 30,000 steps;
    # EMA decay 0.9995, i.e. an average over the last ~2,000 steps).
    'r1_ema_long': {'penalty.name': 'r1', 'penalty.weight': 0.1, 'ema_decay': 0.9995,
                    'batch_size': 256, 'num_steps': 30_000},
    # r1_ema_long with a wider, deeper G (4 x 256): a continuous G must spend some latent mass
    # between modes, and a more expressive one can make those transitions steeper.
    'r1_ema_wide': {'penalty.name': 'r1', 'penalty.weight': 0.1, 'ema_decay': 0.9995,
                    'batch_size': 256, 'num_steps': 30_000, 'model.g_hidden': (256,) * 4},
    # jaxgen's best configuration: r1_ema_long with both learning rates held for the first
    # half of training and then decayed linearly to 0: the late, small steps sharpen G's
    # transitions between modes (fewer samples on the bridges between them).
    'r1_ema_decay': {'penalty.name': 'r1', 'penalty.weight': 0.1, 'ema_decay': 0.9995,
                     'batch_size': 256, 'num_steps': 30_000, 'optimizer.schedule': 'linear',
                     'optimizer.decay_start_frac': 0.5, 'optimizer.final_lr_frac': 0.0},
    # Spectral normalisation plus R1.
    'sn_r1': {'model.spectral_norm': True, 'penalty.name': 'r1', 'penalty.weight': 0.1},
}


def get_config(arg: str = 'ring,gan'):
  arg = arg or 'ring,gan'
  parts = arg.split(',')
  if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in METHODS:
    raise ValueError(f'gan_2d config argument must be "<dataset>,<method>" with dataset in '
                     f'{", ".join(DATASETS)} and method in {", ".join(METHODS)}; got {arg!r}.')
  dataset, method = parts
  c = common.gan_defaults()
  c.model = ml_collections.ConfigDict(dict(
      name='mlp2d', latent_dim=2, latent_prior='normal', g_hidden=(128,) * 3,
      d_hidden=(128,) * 3, maxout_pieces=1, d_activation='leaky_relu', g_batch_norm=False,
      spectral_norm=False, g_spectral_norm=False, data_dim=2, d_output_scale=1.0))
  c.data = ml_collections.ConfigDict(dict(name=DATASETS[dataset], split='train'))
  c.loss.name = 'non_saturating'
  c.optimizer.g_lr = c.optimizer.d_lr = 1e-3
  c.optimizer.b1, c.optimizer.b2 = 0.5, 0.999
  c.batch_size = 100
  c.num_steps = 20_000
  c.ema_decay = 0.0
  c.log_every = 1000
  c.steps_per_dispatch = 100
  c.checkpoint_every = 5000
  c.keep_checkpoints = 2
  c.num_sample_snapshots = 1
  c.num_eval_samples = 2500
  c.method = method
  c.dataset = dataset
  c.lock()  # A method may only set fields the config has.
  c.update_from_flattened_dict(METHODS[method])
  c.unlock()
  return c
