"""Defaults shared by the GAN experiment configs (each config overrides what it needs)."""
import ml_collections


def gan_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
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
  # decay_start_frac of the steps (jaxgen.train.state.learning_rate).
  c.optimizer = ml_collections.ConfigDict(dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999,
                                               schedule='constant', decay_start_frac=0.0,
                                               final_lr_frac=0.0))
  c.n_dis = 1                # k discriminator updates per generator update.
  c.d_joint_batch = False    # one D pass on concat(real, fake) instead of two.
  c.batch_size = 64          # global batch (m) per D/G update, across all devices/processes.
  c.num_steps = 1000
  c.ema_decay = 0.0
  c.divergence_policy = 'stop'
  c.steps_per_dispatch = 1
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.num_sample_snapshots = 10
  c.num_grid_samples = 64
  c.evaluators = ()
  c.eval_every = 0
  c.eval_num_samples = 1000
  # Evaluation protocol (jaxgen.metrics.evaluators): sampling seed, FID/KID reference split,
  # cache of classifiers and reference statistics (default ~/.cache/jaxgen), Inception weights.
  c.eval_seed = 0
  c.eval_reference_split = 'train'
  c.eval_cache_dir = ''
  c.inception_weights = ''
  return c
