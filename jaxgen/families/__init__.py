"""Model families by name (``config.family``): modules with ``validate``, ``structure``, ``build``.

A family module may also define ``resolve(config)``, which fills derived config fields
(e.g. ``num_steps`` from ``num_epochs``) before anything is checked. Modules are imported only
when asked for, so a new family touches its own file plus one line here.
"""
from __future__ import annotations

from jaxgen import registry

_FAMILIES = {
    'gan': 'jaxgen.families.gan',
    'vae': 'jaxgen.families.vae',
    'text_encoder': 'jaxgen.families.text_encoder',
    'gan_int_cls': 'jaxgen.families.gan_int_cls',
    'style_encoder': 'jaxgen.families.style_encoder',
    'stackgan': 'jaxgen.families.stackgan',
    'dfgan': 'jaxgen.families.dfgan',
}
NAMES = tuple(_FAMILIES)


def get(name: str):
  return registry.lookup_module(_FAMILIES, name, 'family')
