"""Learning-rate schedules and Adam, shared by every model family (one meaning per name).

``optimizer.schedule`` is one of :data:`SCHEDULES`:

* ``constant``: the base learning rate throughout.
* ``linear`` / ``cosine``: hold the base rate for the first ``decay_start_frac`` of the
  updates, then decay (linearly, or along a half cosine) to ``final_lr_frac * lr`` at the last
  update, and stay there.
* ``iwae``: Burda et al. (2015)'s schedule for their MNIST VAEs: passes i = 0..7 of 3^i epochs
  each at ``1e-4 * round(10^(1 - i/7), 1)`` (1e-3, 7.2e-4, ..., 1e-4), 3,280 epochs in all.
  It ignores the base rate and needs the number of updates per epoch.
"""
from __future__ import annotations

import numpy as np
import optax

SCHEDULES = ('constant', 'linear', 'cosine', 'iwae')


def learning_rate(base_lr: float, opt_config, num_updates: int, steps_per_epoch: int = 0):
  """``base_lr`` (a float) or an optax schedule over ``num_updates`` optimizer updates."""
  schedule = opt_config.schedule
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown optimizer.schedule {schedule!r}; accepted: '
                     f'{", ".join(SCHEDULES)}.')
  if schedule == 'constant':
    return base_lr
  if schedule == 'iwae':
    if steps_per_epoch <= 0:
      raise ValueError('optimizer.schedule="iwae" needs the number of steps per epoch.')
    values = [1e-4 * round(10.0 ** (1 - i / 7), 1) for i in range(8)]
    ends = np.cumsum([3 ** i * steps_per_epoch for i in range(8)])
    return optax.piecewise_constant_schedule(
        values[0], {int(ends[i]): values[i + 1] / values[i] for i in range(7)})
  start_frac, final_frac = opt_config.decay_start_frac, opt_config.final_lr_frac
  if not 0.0 <= start_frac < 1.0:
    raise ValueError(f'optimizer.decay_start_frac must be in [0, 1); got {start_frac!r}.')
  if not 0.0 <= final_frac <= 1.0:
    raise ValueError(f'optimizer.final_lr_frac must be in [0, 1]; got {final_frac!r}.')
  if num_updates <= 0:
    raise ValueError(f'optimizer.schedule={schedule!r} needs the number of train steps.')
  start = int(start_frac * num_updates)
  length = max(num_updates - start, 1)
  if schedule == 'linear':
    return optax.linear_schedule(base_lr, base_lr * final_frac, length, transition_begin=start)
  decay = optax.cosine_decay_schedule(base_lr, length, alpha=final_frac)
  return optax.join_schedules([optax.constant_schedule(base_lr), decay], [start])


def adam(base_lr: float, opt_config, num_updates: int = 0, steps_per_epoch: int = 0):
  """``optax.adam`` with the config's betas and eps and :func:`learning_rate`."""
  return optax.adam(learning_rate(base_lr, opt_config, num_updates, steps_per_epoch),
                    b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps)


def validate(opt_config, lr_names=('lr',)) -> None:
  """Checks the fields :func:`adam` reads; raises ValueError naming the field."""
  for name in lr_names:
    value = opt_config[name]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
      raise ValueError(f'optimizer.{name} must be positive; got {value!r}.')
  for b in ('b1', 'b2'):
    if not 0.0 <= opt_config[b] < 1.0:
      raise ValueError(f'optimizer.{b} must be in [0, 1); got {opt_config[b]!r}.')
  if not opt_config.eps > 0:
    raise ValueError(f'optimizer.eps must be positive; got {opt_config.eps!r}.')
  if opt_config.schedule != 'iwae':
    learning_rate(1.0, opt_config, 100)  # Checks the schedule's own fields.
