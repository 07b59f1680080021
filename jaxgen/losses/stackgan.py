"""StackGAN losses (Zhang et al., ICCV 2017): the CA regulariser and the adversarial terms.

* :func:`kl_loss` - KL( N(mu, sigma^2) || N(0, I) ) of conditioning augmentation, the
  closed form 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2) per dimension, **averaged over batch
  and dimensions** as the authors' PyTorch code does (``torch.mean`` of the element-wise
  terms), not summed per example as :func:`jaxgen.losses.vae.kl_to_standard_normal`. The
  generator adds it with weight lambda (``TRAIN.COEFF.KL = 2.0`` in their configs), so the
  convention fixes what that weight means: summing over the 128 dimensions would make it
  128 times stronger.
* :func:`d_loss` - the matching-aware D loss on logits: real/right -> real; fake/right and
  real/wrong -> fake, ``real + (fake + wrong) / 2``. With the Stage-II unconditional logits
  it is the code's ``(real + u_real) / 2 + (fake + wrong + u_fake) / 3``. How the wrong
  pairs are made is the caller's: the code pairs image i with condition i + 1 (B - 1 pairs);
  :func:`jaxgen.losses.matching.mismatched` rolls the batch (B pairs).
* :func:`g_loss` - non-saturating ``-log D(G(z, t), t)``, plus the unconditional term when
  given (added, as in the code).

Cross-entropies are computed on raw logits (log-sigmoid), averaged over the batch; the
authors' D ends in a sigmoid followed by ``BCELoss``, which is the same value without its
clamping at saturated logits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.losses import vae
from jaxgen.losses.matching import sigmoid_ce

Array = jax.Array


def kl_loss(mu: Array, logvar: Array) -> Array:
  """Mean over every element of KL( N(mu, e^logvar) || N(0, 1) ): a scalar."""
  return jnp.mean(vae.kl_diag_gaussians(mu, logvar))


def d_loss(real_right: Array, fake_right: Array, real_wrong: Array,
           uncond_real: Array | None = None, uncond_fake: Array | None = None) -> dict:
  """D's loss and its terms: ``{'loss', 'real', 'fake', 'wrong'}`` (+ ``'uncond_real'``,
  ``'uncond_fake'`` when the unconditional logits are given; both or neither)."""
  if (uncond_real is None) != (uncond_fake is None):
    raise ValueError('Give both unconditional logits (real and fake) or neither.')
  real, fake = sigmoid_ce(real_right, 1.0), sigmoid_ce(fake_right, 0.0)
  wrong = sigmoid_ce(real_wrong, 0.0)
  if uncond_real is None:
    return {'loss': real + 0.5 * (fake + wrong), 'real': real, 'fake': fake, 'wrong': wrong}
  u_real, u_fake = sigmoid_ce(uncond_real, 1.0), sigmoid_ce(uncond_fake, 0.0)
  return {'loss': (real + u_real) / 2.0 + (fake + wrong + u_fake) / 3.0, 'real': real,
          'fake': fake, 'wrong': wrong, 'uncond_real': u_real, 'uncond_fake': u_fake}


def g_loss(fake_right: Array, uncond_fake: Array | None = None) -> dict:
  """G's adversarial loss ``{'loss', 'cond', 'uncond'}`` (add ``kl_coeff * kl_loss``)."""
  cond = sigmoid_ce(fake_right, 1.0)
  uncond = jnp.zeros_like(cond) if uncond_fake is None else sigmoid_ce(uncond_fake, 1.0)
  return {'loss': cond + uncond, 'cond': cond, 'uncond': uncond}
