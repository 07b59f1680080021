"""Model registry: ``config.model.name`` -> module exposing ``make_gan(model_config)``.

Modules are imported only when asked for, so adding a model touches its own file plus
one line here.
"""
from __future__ import annotations

from jaxgen import registry

_GAN_MODULES = {
    'mlp_gan': 'jaxgen.models.mlp_gan',
    'dcgan': 'jaxgen.models.dcgan',
    'sngan': 'jaxgen.models.sngan',
    'mlp2d': 'jaxgen.models.mlp2d',
}
GAN_NAMES = tuple(_GAN_MODULES)


def get_gan_module(name: str):
  return registry.lookup_module(_GAN_MODULES, name, 'GAN model')


def get_gan(model_config):
  """Returns ``(generator, discriminator)`` flax modules for ``model_config``.

  Raises ValueError (before anything is built) for unknown names or settings the model
  cannot make, e.g. an unsupported resolution.
  """
  return get_gan_module(model_config.name).make_gan(model_config)
