"""Conditional VAE: ``python -m experiments.cvae --config=experiments/configs/cvae.py[:variant] --workdir=...``.

Encoder and decoder both see the one-hot label (Sohn et al. 2015; Kingma et al. 2014 M2
with the label observed), so z keeps what the label does not say: the style of the
handwriting. Variants as in ``experiments/configs/vae.py`` for labelled data: digits
(default), digits_soft, digits_2d, digits_conv, digits_gaussian, tiny, mnist, mnist_dynamic,
fashion_mnist. After training, ``python -m jaxgen.vae_tools generate --workdir=... --label=7``
draws a chosen class and ``... rerender --workdir=...`` re-renders test images as every class.
"""
from experiments.configs import vae

CVAE_VARIANTS = ('digits', 'digits_soft', 'digits_2d', 'digits_conv', 'digits_gaussian', 'tiny',
                 'mnist', 'mnist_dynamic', 'fashion_mnist')


def get_config(arg: str = 'digits'):
  arg = arg or 'digits'
  if arg not in CVAE_VARIANTS:
    raise ValueError(f'Unknown cvae variant {arg!r}; accepted: {", ".join(CVAE_VARIANTS)} '
                     '(the datasets with class labels).')
  c = vae.vae_defaults('cvae')
  c.model.num_classes = 10
  return vae.apply_variant(c, arg, 'cvae')
