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


def with_defaults(model_config, defaults: dict):
  """A copy of ``model_config`` with each optional field it lacks taken from ``defaults``.

  Every model module keeps its optional fields and their defaults in one ``DEFAULTS`` table
  (the experiment configs set them explicitly); the model then reads plain attributes.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  fields = model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config)
  return ml_collections.ConfigDict({**defaults, **fields})


def get_gan_module(name: str):
  return registry.lookup_module(_GAN_MODULES, name, 'GAN model')


def get_gan(model_config):
  """Returns ``(generator, discriminator)`` flax modules for ``model_config``.

  Raises ValueError (before anything is built) for unknown names or settings the model
  cannot make, e.g. an unsupported resolution.
  """
  return get_gan_module(model_config.name).make_gan(model_config)
