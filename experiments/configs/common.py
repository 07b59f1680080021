"""Defaults shared by the GAN experiment configs (each config overrides what it needs)."""
import ml_collections

from jaxgen.engine import config as engine_config


def gan_defaults() -> ml_collections.ConfigDict:
  c = engine_config.defaults()
  c.family = 'gan'
  c.model = ml_collections.ConfigDict(dict(
      name='dcgan', resolution=32, channels=1, latent_dim=100, latent_prior='normal',
      g_width=64, d_width=64, conv_impl='plain', spectral_norm=False, compute_dtype='float32'))
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_digits', split='train', resolution=32, channels=1, data_dir='',
      shuffle_buffer=10_000, cache=True, path='', skip_bad_images=False))
  c.loss = ml_collections.ConfigDict(dict(name='non_saturating'))
  c.penalty = ml_collections.ConfigDict(dict(name='none', weight=0.0))
  c.weight_clip = 0.0
  # schedule: constant | linear | cosine decay to final_lr_frac * lr, starting after
  # decay_start_frac of the steps (jaxgen.optim).
  c.optimizer = ml_collections.ConfigDict(dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999,
                                               eps=1e-8, schedule='constant',
                                               decay_start_frac=0.0, final_lr_frac=0.0))
  c.n_dis = 1                # k discriminator updates per generator update.
  c.d_joint_batch = False    # one D pass on concat(real, fake) instead of two.
  # 'fresh': the G update on fresh noise (Goodfellow et al.'s Algorithm 1); 'shared': it reuses
  # the D update's G forward (pytorch/examples' DCGAN order; n_dis = 1).
  c.g_step = 'fresh'
  c.batch_size = 64          # global batch (m) per D/G update, across all devices/processes.
  c.ema_decay = 0.0          # > 0: an EMA of G's weights, used for samples and evaluation.
  return c
