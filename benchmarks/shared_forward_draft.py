"""DRAFT for the GAN family: pytorch/examples' step order with one G forward per step.

Not used by jaxgen yet (the lead moves it into the GAN family of the new engine). The step
that ``jaxgen.train.step`` runs today is Goodfellow's Algorithm 1: a D update on real and
G(z1) (stopped), then a G update on D(G(z2)) with fresh z2 - two G forwards per step.
pytorch/examples' ``dcgan/main.py`` draws one z per step and reuses its fake:

  fake = G(z)                            # the only G forward of the step
  D update on real and stop_gradient(fake)
  G update on g_loss(D'(fake))           # D' = the D just updated, G's gradient flows
                                         # back through the SAME forward

Here the G forward is run once under ``jax.vjp``: its output is fed (stopped) to the D
update, and the cotangent of the G loss with respect to the fake is pulled back through
the saved residuals, so no second G forward is computed (what torch's autograd does with
the graph of ``fake``). G's BatchNorm statistics advance once per step, from that forward.

The nets layout is the new engine's ``state['nets']``: ``{'g': {'params', 'vars', 'opt'},
'd': {...}}`` ('vars' = the mutable collections, e.g. {'batch_stats': ...}); EMA and the
rest of the state are left to the caller. Checked against torch in tests/test_torch_parity.py.
"""
from __future__ import annotations

import jax
import optax


def make_shared_step(generator, discriminator, g_tx, d_tx, gan_loss,
                     d_stats_from_g_pass: bool = True):
  """Returns ``step(nets, real, z) -> (nets, metrics)``, pure (jit it).

  generator / discriminator: flax modules called as ``apply(vars, x, train=True)``.
  gan_loss: a ``jaxgen.losses.gan.GANLoss`` (d_loss(real_logits, fake_logits), g_loss).
  d_stats_from_g_pass: keep D's mutable collections from the G-loss pass (torch runs D in
  train mode there, so its BatchNorm running averages advance a third time per step). The
  current jaxgen step discards them (D's statistics advance only in D's own update); it
  does not change any loss or parameter, only D's running averages.
  """

  def g_apply(params, variables, z):
    return generator.apply({'params': params, **variables}, z, train=True,
                           mutable=list(variables))

  def d_apply(params, variables, x):
    return discriminator.apply({'params': params, **variables}, x, train=True,
                               mutable=list(variables))

  def step(nets, real, z):
    g, d = nets['g'], nets['d']
    # One G forward; g_pullback maps d(loss)/d(fake) to d(loss)/d(G params).
    fake, g_pullback, g_vars = jax.vjp(lambda p: g_apply(p, g['vars'], z), g['params'],
                                       has_aux=True)

    def d_loss_fn(params):
      # Separate passes, as the reference DCGAN: BatchNorm sees pure batches.
      real_logits, v = d_apply(params, d['vars'], real)
      fake_logits, v = d_apply(params, v, jax.lax.stop_gradient(fake))
      return gan_loss.d_loss(real_logits, fake_logits), v

    (d_loss, d_vars), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d['params'])
    d_updates, d_opt = d_tx.update(d_grads, d['opt'], d['params'])
    d_params = optax.apply_updates(d['params'], d_updates)

    def g_loss_of_fake(x):  # Through the UPDATED discriminator.
      logits, v = d_apply(d_params, d_vars, x)
      return gan_loss.g_loss(logits), v

    (g_loss, d_vars_g), d_fake = jax.value_and_grad(g_loss_of_fake, has_aux=True)(fake)
    (g_grads,) = g_pullback(d_fake)
    g_updates, g_opt = g_tx.update(g_grads, g['opt'], g['params'])
    g_params = optax.apply_updates(g['params'], g_updates)
    new = {'g': {**g, 'params': g_params, 'vars': g_vars, 'opt': g_opt},
           'd': {**d, 'params': d_params, 'vars': d_vars_g if d_stats_from_g_pass else d_vars,
                 'opt': d_opt}}
    return new, {'d_loss': d_loss, 'g_loss': g_loss}

  return step
