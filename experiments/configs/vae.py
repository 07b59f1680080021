"""VAE (Kingma & Welling 2013): ``python -m experiments.vae --config=experiments/configs/vae.py[:variant] --workdir=...``.

Variants
- digits (default): embedded 16x16 digits, MLP 256-256 encoder/decoder, 16-d latent,
  Bernoulli likelihood with dynamic binarization (fixed binarization of the test split).
- digits_soft: the same with grey levels as soft Bernoulli targets (cross-entropy).
- digits_2d: 2-d latent, for the decoded grid over the latent plane.
- digits_conv: convolutional encoder/decoder.
- digits_gaussian: Gaussian likelihood with a learned scalar variance on dequantized pixels.
- tiny: a seconds-long smoke run.
- mnist: TFDS mnist 28x28, soft targets. mnist_dynamic: TFDS mnist, dynamic binarization.
- binarized_mnist: the static binarization of Larochelle & Murray (TFDS binarized_mnist).
- fashion_mnist: TFDS fashion_mnist, soft targets.
- celeb_a: TFDS celeb_a 64x64 RGB, conv networks, Gaussian likelihood (learned variance).
- iwae: the one-stochastic-layer VAE of Burda et al. (2015), table 1 (k = 1): MNIST with
  dynamic binarization, 784-200-200-50 tanh networks, batch 20, Adam (0.9, 0.999, eps 1e-4),
  learning rate 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7 (3,280 epochs), output bias set to
  the logit of the mean training image, test log p(x) by IWAE with k = 5,000. Their
  reported test NLL is 86.76 nats.
"""
import ml_collections

from jaxgen.engine import config as engine_config

VARIANTS = ('digits', 'digits_soft', 'digits_2d', 'digits_conv', 'digits_gaussian', 'tiny',
            'mnist', 'mnist_dynamic', 'binarized_mnist', 'fashion_mnist', 'celeb_a', 'iwae')


def vae_defaults(name: str = 'vae') -> ml_collections.ConfigDict:
  c = engine_config.defaults()
  c.family = 'vae'
  c.model = ml_collections.ConfigDict(dict(
      name=name, encoder='mlp', decoder='mlp', hidden=(256, 256), conv_widths=(32, 64),
      conv_hidden=0, latent_dim=16, activation='relu', likelihood='bernoulli',
      gaussian_variance='fixed', gaussian_std=0.1, min_std=1e-3, resolution=16, channels=1,
      num_classes=0, init_output_bias=True, bias_examples=10_000))
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_digits', split='train', eval_split='test', resolution=16, channels=1,
      data_dir='', shuffle_buffer=10_000, cache=True))
  c.binarize = 'dynamic'     # 'none': grey levels as soft targets; 'dynamic': resample each step.
  c.dequantize = False       # Gaussian likelihood: uniform dequantization of 8-bit pixels.
  # schedule: constant | linear | cosine (decay to final_lr_frac * lr after decay_start_frac of
  # the steps) | iwae (Burda et al.'s 3^i-epoch passes); see jaxgen.optim.
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, schedule='constant', decay_start_frac=0.0,
      final_lr_frac=0.1))
  c.train_samples = 1        # Reparameterized samples per example in the training ELBO.
  c.kl_warmup_steps = 0      # Linear KL weight 0 -> 1 over these steps (0: off).
  c.batch_size = 64
  c.num_steps = 6000
  c.num_epochs = 0           # > 0 overrides num_steps with epochs of the training split.
  c.log_every = 100
  c.checkpoint_every = 1000
  c.eval_every = 2000        # test ELBO / IWAE (eval.iwae_k) every eval_every steps.
  c.eval = ml_collections.ConfigDict(dict(
      elbo_samples=10, iwae_k=100, final_iwae_k=5000, iwae_chunk=500, batch_size=100,
      max_examples=0, binarize_seed=0))
  return c


def apply_variant(c, arg: str, kind: str = 'vae'):
  """Dataset / architecture variants shared by the VAE and CVAE configs."""
  if arg == 'digits':
    pass
  elif arg == 'digits_soft':
    c.binarize = 'none'
  elif arg == 'digits_2d':
    c.model.latent_dim = 2
  elif arg == 'digits_conv':
    c.model.encoder = c.model.decoder = 'conv'
    c.model.conv_widths = (16, 32)
    c.model.conv_hidden = 256
  elif arg == 'digits_gaussian':
    c.model.likelihood = 'gaussian'
    c.model.gaussian_variance = 'scalar'
    c.model.min_std = 1e-2
    c.binarize = 'none'
    c.dequantize = True
  elif arg == 'tiny':
    c.model.hidden = (32,)
    c.model.conv_widths = (8, 16)
    c.model.latent_dim = 4
    c.batch_size = 16
    c.num_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10
    c.eval_every = 10
    c.eval.update(dict(elbo_samples=2, iwae_k=8, final_iwae_k=16, iwae_chunk=8, batch_size=50,
                       max_examples=100))
  elif arg in ('mnist', 'mnist_dynamic', 'fashion_mnist'):
    c.data.name = 'fashion_mnist' if arg == 'fashion_mnist' else 'mnist'
    c.model.resolution = c.data.resolution = 28
    c.model.hidden = (512, 256)
    c.model.latent_dim = 32
    c.binarize = 'dynamic' if arg == 'mnist_dynamic' else 'none'
    c.batch_size = 128
    c.num_epochs = 100
    c.eval_every = 10_000
  elif arg == 'binarized_mnist':
    c.data.name = 'binarized_mnist'
    c.model.resolution = c.data.resolution = 28
    c.model.hidden = (512, 256)
    c.model.latent_dim = 32
    c.binarize = 'none'  # Already binary.
    c.batch_size = 128
    c.num_epochs = 100
    c.eval_every = 10_000
  elif arg == 'celeb_a':
    c.data.name = 'celeb_a'
    c.model.resolution = c.data.resolution = 64
    c.model.channels = c.data.channels = 3
    c.model.encoder = c.model.decoder = 'conv'
    c.model.conv_widths = (32, 64, 128, 256)
    c.model.conv_hidden = 512
    c.model.latent_dim = 128
    c.model.likelihood = 'gaussian'
    c.model.gaussian_variance = 'scalar'
    c.model.min_std = 1e-2
    c.binarize = 'none'
    c.dequantize = True
    c.batch_size = 128
    c.num_epochs = 20
    c.eval_every = 10_000
    c.eval.update(dict(final_iwae_k=1000, iwae_chunk=100, batch_size=50, max_examples=2000))
  elif arg == 'iwae' and kind == 'vae':
    c.data.name = 'mnist'
    c.model.resolution = c.data.resolution = 28
    c.model.hidden = (200, 200)
    c.model.latent_dim = 50
    c.model.activation = 'tanh'
    c.model.init_output_bias = True
    c.model.bias_examples = 60_000
    c.binarize = 'dynamic'
    c.batch_size = 20
    c.optimizer.update(dict(b1=0.9, b2=0.999, eps=1e-4, schedule='iwae'))
    c.num_epochs = 3280      # Sum of 3^i, i = 0..7.
    c.steps_per_dispatch = 100
    c.log_every = 3000
    c.checkpoint_every = 60_000
    c.eval_every = 500_000
    c.eval.update(dict(elbo_samples=1, iwae_k=100, final_iwae_k=5000, iwae_chunk=500,
                       batch_size=20))
  else:
    raise ValueError(f'Unknown {kind} variant {arg!r}; accepted: '
                     f'{", ".join(v for v in VARIANTS if kind == "vae" or v != "iwae")}.')
  return c


def get_config(arg: str = 'digits'):
  return apply_variant(vae_defaults('vae'), arg or 'digits', 'vae')
