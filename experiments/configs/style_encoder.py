"""The style encoder S of GAN-INT-CLS (Reed et al. 2016), trained on a finished GAN-INT-CLS run.

  python -m experiments.style_encoder --config=experiments/configs/style_encoder.py \
      --workdir=runs/gic_style --config.gan_workdir=runs/gic

G and the caption encoder are imported frozen from ``gan_workdir`` (its model, text and data
fields are copied from that run's config.json); only S is trained, on ||z - S(G(z, t))||^2.
Evaluation: Reed's ROC of S's cosine similarities within / across background-colour clusters
of real test images (``eval.*``); figures: ``figures/style_roc.png``, ``figures/style_transfer.png``.

Variants: ``default``; ``tiny`` (a seconds-long smoke run, for a tiny GAN run).
"""
import ml_collections

from experiments.configs import gan_int_cls


def get_config(arg: str = 'default'):
  base = gan_int_cls.get_config('tiny' if arg == 'tiny' else 'gan_int_cls')
  dropped = ('family', 'cls', 'interp', 'interp_beta', 'interp_weight', 'optimizer',
             'init_from', 'text_from')
  # The engine's fields, and model/text/data (replaced by the GAN run's at resolve).
  c = ml_collections.ConfigDict({k: v for k, v in base.to_dict().items() if k not in dropped})
  c.family = 'style_encoder'
  c.gan_workdir = ''                      # the GAN-INT-CLS run whose g and text are used
  c.init_from = ml_collections.ConfigDict()  # filled from gan_workdir
  c.style = ml_collections.ConfigDict(dict(width=32))
  c.optimizer = ml_collections.ConfigDict(dict(lr=2e-4, b1=0.5, b2=0.999, eps=1e-8,
                                               schedule='constant', decay_start_frac=0.0,
                                               final_lr_frac=0.0))
  # Reed et al. clustered 100 backgrounds of birds; jaxgen_shapes has 4 background colours.
  c.eval = ml_collections.ConfigDict(dict(num_images=500, num_clusters=4, batch_size=100,
                                          seed=0))
  if arg == 'tiny':
    c.num_steps = 4
    c.style.width = 8
    c.eval.num_images, c.eval.batch_size = 16, 8
  elif arg == 'default':
    c.num_steps = 2000
  else:
    raise ValueError(f'Unknown style_encoder variant {arg!r}; accepted: default, tiny.')
  return c
