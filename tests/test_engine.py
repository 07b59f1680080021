"""Every behaviour of the engine, for every model family (one parametrized test each).

Families: ``gan`` (the tiny DCGAN), ``vae`` and ``cvae`` (the tiny VAE / conditional VAE),
all on the embedded 16x16 digits. Checked for each: resume equals an uninterrupted run bit
for bit (in process, and after SIGKILL at a random moment in a real launcher process), a
signal checkpoints the current step, the three divergence policies, sample grids and the
evaluation hooks, 8 devices equal 1, and 2 processes equal 1. Imports of networks from other
runs (trainable and frozen) are checked on a small test family defined here.
"""
import json
import os
import signal
import subprocess
import sys
import time
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import families
from jaxgen.data import pipeline
from jaxgen.engine import checkpoint, loop, runs
from jaxgen.engine.writers import read_metrics
from jaxgen.families import base
from tests import multihost_worker as mw
from tests.conftest import set_fields

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ('gan', 'vae', 'cvae')
LAUNCHERS = {'gan': 'experiments.dcgan', 'vae': 'experiments.vae', 'cvae': 'experiments.cvae'}
# Equality of runs on 8 vs 1 devices, or 2 processes vs 1: the two compute the same function
# and differ only in the order of floating-point reductions (batch sums split over devices,
# all-reduces). Each such reduction in float32 is off by a few ulp (~1e-7 relative); through 4
# Adam steps, whose update is lr * m / (sqrt(v) + eps) with |m / sqrt(v)| <= 1, a weight can
# differ by at most a few lr-relative ulps plus the forward/backward reduction errors, which
# stay far below 1e-5 for these tiny networks (fan-ins <= 1024: ~1e-7 * sqrt(1024) ~ 3e-6).
# A real bug (per-device BatchNorm statistics, another split of the examples, other noise)
# changes update directions and moves weights by up to lr = 2e-4 (GAN) or 1e-3 (VAE) per step:
# assert_trained_far checks that the typical weight moved more than 10x the tolerance.
RTOL = ATOL = 1e-5


def family_config(family, tfds_dir, **overrides):
  from experiments.configs import cvae, dcgan, vae  # pylint: disable=g-import-not-at-top
  cfg = {'gan': dcgan, 'vae': vae, 'cvae': cvae}[family].get_config('tiny')
  cfg.data.data_dir = tfds_dir
  cfg.log_every = 1
  cfg.write_figures = False
  cfg.eval_every = 0
  return set_fields(cfg, overrides)


def leaves(state):
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def assert_bitwise_equal(a, b):
  a, b = leaves(a), leaves(b)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------------------- in process


def test_jit_init_is_the_family_init():
  """``base.jit_init``: the family's state at ``PRNGKey(seed)``, the same on every call. Its
  CPU compile options change only how LLVM optimises the program, so every value equals the
  default compile's up to the rounding of the few float operations that turn random bits
  into a draw (a normal is an erfinv of a uniform): at most a few ulps, 4 allowed."""
  from experiments.configs import gan as gan_config  # pylint: disable=g-import-not-at-top
  config, module = loop.prepare(gan_config.get_config('tiny'))
  family = module.build(config)
  got = base.jit_init(family, 3)()
  assert_bitwise_equal(got, base.jit_init(family, 3)())
  want = jax.jit(lambda: family.init(jax.random.PRNGKey(3)))()
  got, want = leaves(got), leaves(want)
  assert sorted(got) == sorted(want)
  for k in got:
    if got[k].dtype.kind == 'f':
      np.testing.assert_array_max_ulp(got[k], want[k], maxulp=4)
    else:  # keys, steps
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  kernel = ".nets['g']['params']['Dense_0']['kernel']"
  assert not np.array_equal(leaves(base.jit_init(family, 4)())[kernel], got[kernel])



@pytest.mark.parametrize('family', FAMILIES)
def test_resume_equals_uninterrupted_run(family, tfds_dir, tmp_path):
  extra = {'ema_decay': 0.9} if family == 'gan' else {}
  cfg = lambda n: family_config(family, tfds_dir, num_steps=n, checkpoint_every=8, **extra)
  full = loop.train_and_evaluate(cfg(8), str(tmp_path / 'full'))
  half = str(tmp_path / 'half')
  loop.train_and_evaluate(cfg(4), half)
  resumed = loop.train_and_evaluate(cfg(8), half)
  assert int(resumed.step) == 8
  assert_bitwise_equal(full, resumed)
  assert [r['step'] for r in read_metrics(half) if 'finite' in r] == list(range(1, 9))


_MAKE_DATASET = pipeline.make_dataset


def nan_data(monkeypatch, nan_steps):
  """The batches at the given (0-based) stream positions get a NaN pixel."""
  real = _MAKE_DATASET

  def fake(data_config, split, batch_size, *, start_step=0, repeat=True, **kwargs):
    stream = real(data_config, split, batch_size, start_step=start_step, repeat=repeat,
                  **kwargs)
    if not repeat:
      return stream

    def gen():
      for i, batch in enumerate(stream, start=start_step):
        if i in nan_steps:
          batch = dict(batch, image=batch['image'].copy())
          batch['image'][0, 0, 0, 0] = np.nan
        yield batch
    return gen()
  monkeypatch.setattr(pipeline, 'make_dataset', fake)


@pytest.mark.parametrize('family', FAMILIES)
def test_divergence_policies(family, tfds_dir, tmp_path, monkeypatch, capsys):
  # The VAEs on soft targets: a NaN pixel then reaches the loss (dynamic binarization would
  # turn it into a 0 pixel, since a uniform draw is never below NaN).
  extra = {} if family == 'gan' else {'binarize': 'none'}
  cfg = lambda **kw: family_config(family, tfds_dir, **extra, **kw)
  nan_data(monkeypatch, {6})
  # stop: the error names the step; the diverged state was never written.
  stop = str(tmp_path / 'stop')
  with pytest.raises(loop.DivergenceError, match=r'step 7 \('):
    loop.train_and_evaluate(cfg(num_steps=12, checkpoint_every=4), stop)
  manager = checkpoint.make_manager(stop, 3, create=False)
  assert manager.all_steps() == [4]
  manager.close()
  # rollback: back to step 4, steps 5..7 redone on the batches after the bad one.
  rb = str(tmp_path / 'rollback')
  state = loop.train_and_evaluate(
      cfg(num_steps=10, checkpoint_every=4, divergence_policy='rollback'), rb)
  assert int(state.step) == 10 and int(state.data_offset) == 3
  assert all(np.all(np.isfinite(x)) for x in leaves(state).values())
  out = capsys.readouterr()
  assert 'rollback 1: back to step 4' in out.out + out.err
  assert [r['step'] for r in read_metrics(rb) if 'finite' in r] == list(range(1, 11))
  # skip: every network is left as it was, the step counter advances.
  nan_data(monkeypatch, {2, 5})
  skip = str(tmp_path / 'skip')
  state = loop.train_and_evaluate(cfg(num_steps=8, divergence_policy='skip'), skip)
  assert int(state.step) == 8
  assert all(np.all(np.isfinite(x)) for x in leaves(state).values())
  flags = {r['step']: r['finite'] for r in read_metrics(skip) if 'finite' in r}
  assert [s for s, f in flags.items() if f < 1] == [3, 6]


@pytest.mark.parametrize('family', FAMILIES)
def test_sample_grids_and_evaluation_hooks(family, tfds_dir, tmp_path):
  cache = str(tmp_path / 'cache')
  cfg = family_config(family, tfds_dir, num_steps=10, eval_every=5,
                      evaluators=('digits_is',), eval_num_samples=40, eval_cache_dir=cache)
  cfg.eval_classifier_steps = 60  # a quick classifier: this checks the plumbing
  workdir = str(tmp_path / 'w')
  loop.train_and_evaluate(cfg, workdir)
  assert len(os.listdir(os.path.join(workdir, 'samples'))) == 10
  assert os.path.exists(os.path.join(workdir, 'progress.png'))
  evals = {r['step']: r for r in read_metrics(workdir) if 'eval/digits_is' in r}
  assert sorted(evals) == [5, 10]
  for r in evals.values():
    assert 1.0 <= r['eval/digits_is'] <= 10.0  # IS lies in [1, number of classes].
  with open(os.path.join(workdir, 'eval.json')) as f:
    final = json.load(f)
  assert final['step'] == 10 and final['eval/digits_is'] == evals[10]['eval/digits_is']
  if family != 'gan':  # The family's own evaluation: test ELBO <= IWAE bound <= 0 nats.
    assert final['test/elbo'] <= final['test/iwae'] + 1e-3 and final['test/iwae'] < 0
    assert sorted(r['step'] for r in read_metrics(workdir) if 'test/elbo' in r) == [5, 10]


# ---------------------------------------------------------------------------- processes


def launch(family, workdir, tfds_dir, num_steps, extra=()):
  cmd = [sys.executable, '-m', LAUNCHERS[family], f'--config={mw.FAMILY_CONFIGS[family]}',
         f'--workdir={workdir}', f'--config.num_steps={num_steps}',
         '--config.checkpoint_every=3', '--config.log_every=1', '--config.eval_every=0',
         '--config.write_figures=False', f'--config.data.data_dir={tfds_dir}', *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def logged_steps(workdir):
  try:
    return [r['step'] for r in read_metrics(workdir) if 'finite' in r]
  except (OSError, ValueError):
    return []


def wait_for_step(proc, workdir, step, timeout=240):
  t = time.time()
  while time.time() - t < timeout:
    if proc.poll() is not None:
      return False
    if any(s >= step for s in logged_steps(workdir)):
      return True
    time.sleep(0.05)
  raise TimeoutError(f'no step {step} after {timeout}s')


def finish(proc):
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return out


@pytest.mark.multiprocess
@pytest.mark.parametrize('family', FAMILIES)
def test_sigkill_at_a_random_moment_then_resume_is_bitwise_exact(family, tfds_dir, tmp_path):
  mw_prepare(tfds_dir)
  ref, killed = str(tmp_path / 'ref'), str(tmp_path / 'killed')
  # Only the killed run needs a process of its own. The reference and the resumption run in
  # this one, with the config the launcher builds from its flags (the engine refuses to resume
  # a workdir whose config.json differs), which saves two interpreter starts per family.
  cfg = lambda: family_config(family, tfds_dir, num_steps=10, checkpoint_every=3)
  loop.train_and_evaluate(cfg(), ref)
  proc = launch(family, killed, tfds_dir, 10)
  try:
    if wait_for_step(proc, killed, 5):
      # Any moment: mid-step or mid-checkpoint-write (checkpoints every 3 steps).
      time.sleep(np.random.default_rng(FAMILIES.index(family)).uniform(0.0, 0.3))
      proc.send_signal(signal.SIGKILL)
    proc.wait(60)
  finally:
    proc.kill()
  loop.train_and_evaluate(cfg(), killed)
  assert_bitwise_equal(runs.restore_run(ref)[3], runs.restore_run(killed)[3])
  assert logged_steps(killed) == list(range(1, 11))


@pytest.mark.multiprocess
@pytest.mark.parametrize('family,sig', [('gan', signal.SIGTERM), ('gan', signal.SIGINT),
                                        ('vae', signal.SIGTERM), ('cvae', signal.SIGTERM)])
def test_signal_checkpoints_the_current_step(family, sig, tfds_dir, tmp_path):
  mw_prepare(tfds_dir)
  workdir = str(tmp_path / 'w')
  proc = launch(family, workdir, tfds_dir, 100_000, extra=['--config.checkpoint_every=1000'])
  try:
    assert wait_for_step(proc, workdir, 4)
    proc.send_signal(sig)
    out = finish(proc)
  finally:
    proc.kill()
  line = [l for l in out.splitlines() if l.startswith('Stopped by')]
  assert line and f'Stopped by {signal.Signals(sig).name}' in line[0], out
  stopped_at = int(line[0].split(' at step ')[1].split('/')[0])
  assert stopped_at >= 4
  manager = checkpoint.make_manager(workdir, 3, create=False)
  assert manager.latest_step() == stopped_at  # checkpoint_every=1000: written by the signal.
  manager.close()
  assert max(logged_steps(workdir)) == stopped_at


def mw_prepare(data_dir):
  """Builds jaxgen_digits/16 here, so parallel worker processes never prepare it at once."""
  from jaxgen.data import digits  # pylint: disable=g-import-not-at-top
  builder = digits.JaxgenDigits(config='16', data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare()


def compare_states(a, b, what):
  """Same leaves; floats within RTOL/ATOL, integers (step, rng key) equal."""
  assert sorted(a) == sorted(b), what
  assert any('/params/' in k for k in a), what
  for name in a:
    x, y = a[name], b[name]
    assert x.shape == y.shape and x.dtype == y.dtype, (what, name)
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f'{what}: {name}')
    else:
      np.testing.assert_array_equal(x, y, err_msg=f'{what}: {name}')


def assert_trained_far(init, final, min_change):
  """The typical weight moved by more than ``min_change``, so a tolerance well below it tells
  runs that computed different updates apart."""
  names = [k for k in init if '/params/' in k]
  moved = np.median(np.concatenate([np.abs(final[k] - init[k]).ravel() for k in names]))
  assert moved > min_change, moved


def dump_in_process(family, workdir, tfds_dir, env, **overrides):
  """The worker's run (``mw.command``'s config, its ``train_and_dump``) in this process, with
  the worker's test switches ``env`` set for its duration.

  It is compiled at XLA's default optimisation level, the worker processes at level 0 (see
  ``mw.worker_env``): both compute the same function, and every comparison of such runs
  allows the float32 reordering tolerance (RTOL, ATOL) anyway.
  """
  config = family_config(family, tfds_dir, **{**mw.base_overrides(), **overrides})
  with pytest.MonkeyPatch.context() as patch:
    for key, value in env.items():
      patch.setenv(key, value)
    mw.train_and_dump(config, workdir)


def compare_metrics(a, b, logged_steps=(1, 2, 3, 4)):
  ra = [r for r in read_metrics(a) if 'finite' in r]
  rb = [r for r in read_metrics(b) if 'finite' in r]
  assert [r['step'] for r in ra] == [r['step'] for r in rb] == list(logged_steps)
  for x, y in zip(ra, rb):
    for key in x:
      if key not in ('step', 'steps_per_sec'):
        np.testing.assert_allclose(y[key], x[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.multiprocess
@pytest.mark.parametrize('family', FAMILIES)
def test_eight_devices_match_one_device(family, tfds_dir, tmp_path):
  mw_prepare(tfds_dir)
  # GAN: k=2 D updates per step (the sharded batch split between them), two steps per
  # dispatch (a lax.scan over a stacked, sharded block) and EMA.
  extra = ({'n_dis': 2, 'steps_per_dispatch': 2, 'ema_decay': 0.9} if family == 'gan'
           else {'steps_per_dispatch': 2})
  dirs = {n: str(tmp_path / f'{n}dev') for n in (1, 8)}
  # 8 devices need a process started with them; the 1-device run is this process.
  dump_in_process(family, dirs[1], tfds_dir, {mw.FLOPS_ENV: '1'}, **extra)
  mw.run_group([('8dev', mw.command(dirs[8], tfds_dir, *mw.flags(extra), family=family),
                 mw.worker_env(8, **{mw.FLOPS_ENV: 1}))], 480, str(tmp_path))
  info = {}
  for n in (1, 8):
    with open(os.path.join(dirs[n], 'final_p0.json')) as f:
      info[n] = json.load(f)
    assert info[n]['device_count'] == n and info[n]['step'] == 4
  one, eight = (mw.load_leaves(os.path.join(dirs[n], 'final_p0.npz')) for n in (1, 8))
  compare_states(one, eight, f'{family}: 8 devices vs 1')
  assert_trained_far(mw.load_leaves(os.path.join(dirs[1], 'init_p0.npz')), one, 10 * ATOL)
  compare_metrics(dirs[1], dirs[8], logged_steps=(2, 4))  # logged at every 2-step dispatch
  # Data parallel all the way: per device, the 8-device step does a fraction of the
  # 1-device step's work (GAN measured 0.18: the replicated optimizer update is a fixed cost
  # at this tiny width; G or D-on-fakes replicated on every device gave about 0.84).
  ratio = info[8]['step_flops'] / info[1]['step_flops']
  assert ratio < 0.5, ratio


@pytest.mark.multiprocess
@pytest.mark.parametrize('family', FAMILIES)
def test_two_processes_match_one_process(family, tfds_dir, tmp_path):
  mw_prepare(tfds_dir)
  two, ref = str(tmp_path / 'two'), str(tmp_path / 'ref')
  for attempt in range(2):
    port = mw.free_port()
    jobs = [(f'proc{i}', mw.command(two, tfds_dir, f'--coordinator_address=127.0.0.1:{port}',
                                    '--num_processes=2', f'--process_id={i}', family=family),
             mw.worker_env(2)) for i in range(2)]
    try:
      mw.run_group(jobs, 540, str(tmp_path))
      break
    except mw.WorkerError as e:  # A port taken between free_port() and the bind.
      if attempt or 'address already in use' not in str(e).lower():
        raise
  # One process (this one) reading the global batches the two read together.
  dump_in_process(family, ref, tfds_dir, {mw.EMULATE_ENV: '2'})
  p0, p1 = (mw.load_leaves(os.path.join(two, f'final_p{p}.npz')) for p in range(2))
  for name in p0:  # One replicated state: every process holds the same bits.
    np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
  one = mw.load_leaves(os.path.join(ref, 'final_p0.npz'))
  compare_states(one, p0, f'{family}: 2 processes x 2 devices vs 1 process')
  assert_trained_far(mw.load_leaves(os.path.join(ref, 'init_p0.npz')), one, 10 * ATOL)
  compare_metrics(ref, two)  # process 0 alone writes: each step exactly once.
  assert os.listdir(os.path.join(two, 'samples')) == ['step_0000004.png']
  events = [f for f in os.listdir(os.path.join(two, 'tensorboard')) if 'tfevents' in f]
  assert len(events) == 1, events
  if family != 'gan':  # Evaluated on the whole test split by every process: same numbers.
    with open(os.path.join(two, 'eval.json')) as f, open(os.path.join(ref, 'eval.json')) as g:
      e2, e1 = json.load(f), json.load(g)
    for key in ('test/elbo', 'test/iwae'):
      np.testing.assert_allclose(e2[key], e1[key], rtol=RTOL, err_msg=key)
  # The checkpoint the two processes wrote together, opened here (one process, one device):
  # it holds step 4 and exactly what they had in memory.
  state = runs.restore_run(two)[3]
  assert int(state.step) == 4
  back = mw.named_leaves(state)
  assert sorted(back) == sorted(p0)
  for name in p0:
    np.testing.assert_array_equal(back[name], p0[name], err_msg=name)


# ---------------------------------------------------------------------------- imports


class _Encoder(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.tanh(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))


def _toy_module():
  """A two-network family: ``enc`` (frozen when config.freeze_enc) feeds a linear ``head``
  regressing each image's mean pixel."""

  def build(config, with_data=True):
    del with_data
    enc, head = _Encoder(config.width), nn.Dense(1)
    tx = optax.adam(1e-2)
    n_pix = config.data.resolution ** 2 * config.data.channels

    def init(key):
      k1, k2, k3 = jax.random.split(key, 3)
      return base.new_state(k3, {
          'enc': base.make_net(enc.init(k1, jnp.zeros((1, n_pix))),
                               None if config.freeze_enc else tx),
          'head': base.make_net(head.init(k2, jnp.zeros((1, config.width))), tx)})

    def train_step(state, batch):
      x = batch['image']
      target = x.reshape((x.shape[0], -1)).mean(axis=1)

      def loss_fn(ep, hp):
        feats = enc.apply({'params': ep}, x)
        return jnp.mean((head.apply({'params': hp}, feats)[:, 0] - target) ** 2)
      nets = state.nets
      loss, (ge, gh) = jax.value_and_grad(loss_fn, argnums=(0, 1))(nets['enc']['params'],
                                                                   nets['head']['params'])
      new = {'head': base.apply_gradients(nets['head'], gh, tx), 'enc': nets['enc']}
      if 'opt' in nets['enc']:
        new['enc'] = base.apply_gradients(nets['enc'], ge, tx)
      return state.replace(step=state.step + 1, nets=new), {
          'loss': loss, 'finite': base.all_finite(loss, ge, gh).astype(jnp.float32)}

    return base.Family(init=init, train_step=train_step, examples_per_step=config.batch_size)

  return types.SimpleNamespace(validate=lambda c: None, build=build,
                               structure=lambda c: {'width': c.width})


@pytest.fixture
def toy(monkeypatch, tfds_dir):
  real_get, module = families.get, _toy_module()
  monkeypatch.setattr(families, 'get', lambda name: module if name == 'toy' else real_get(name))

  def make(width=8, freeze_enc=False, **kw):
    cfg = family_config('gan', tfds_dir, **kw)
    cfg.family, cfg.width, cfg.freeze_enc = 'toy', width, freeze_enc
    return cfg
  return make


def test_import_frozen_network_then_resume_without_reimporting(toy, tmp_path):
  src = str(tmp_path / 'src')
  trained = loop.train_and_evaluate(toy(num_steps=4, checkpoint_every=4), src)
  enc_at_4 = leaves(trained.nets['enc']['params'])
  dst = str(tmp_path / 'dst')
  cfg = lambda n: toy(num_steps=n, checkpoint_every=2, freeze_enc=True,
                      init_from={'enc': src})
  first = loop.train_and_evaluate(cfg(2), dst)
  assert 'opt' not in first.nets['enc']  # Frozen: no optimizer state.
  for k, v in leaves(first.nets['enc']).items():  # Imported, and untouched by training.
    np.testing.assert_array_equal(v, enc_at_4[k.replace("['params']", '', 1)], err_msg=k)
  # The source run trains on; the resumed run restores its own checkpoint, not a new import.
  loop.train_and_evaluate(toy(num_steps=8, checkpoint_every=4), src)
  resumed = loop.train_and_evaluate(cfg(6), dst)
  assert int(resumed.step) == 6
  assert_bitwise_equal(resumed.nets['enc'], first.nets['enc'])
  assert not np.array_equal(leaves(resumed.nets['head'])["['params']['kernel']"],
                            leaves(first.nets['head'])["['params']['kernel']"])


def test_import_trainable_network_starts_from_the_imported_weights(toy, tmp_path):
  src = str(tmp_path / 'src')
  trained = loop.train_and_evaluate(toy(num_steps=4, checkpoint_every=4), src)
  cfg = toy(num_steps=1, init_from={'enc': f'{src}:enc'})
  init_state = jax.jit(lambda: loop.prepare(cfg)[1].build(cfg).init(jax.random.PRNGKey(0)))()
  # Reproduce the engine's import on the fresh state, then check one step of training from it.
  from jaxgen.engine import imports  # pylint: disable=g-import-not-at-top
  imported = imports.import_nets(init_state, cfg.init_from, None)
  assert_bitwise_equal(imported.nets['enc']['params'], trained.nets['enc']['params'])
  assert_bitwise_equal(imported.nets['enc']['opt'], init_state.nets['enc']['opt'])  # fresh
  state = loop.train_and_evaluate(cfg, str(tmp_path / 'dst'))
  assert not np.array_equal(leaves(state.nets['enc'])["['params']['Dense_0']['kernel']"],
                            leaves(trained.nets['enc'])["['params']['Dense_0']['kernel']"])


@pytest.mark.parametrize('source,match', [
    ('{src}:nothing', "has no network 'nothing'; it has: enc, head"),
    ('{tmp}/empty', 'has no finished checkpoint'),
])
def test_import_errors_name_the_problem(toy, tmp_path, source, match):
  src = str(tmp_path / 'src')
  loop.train_and_evaluate(toy(num_steps=2, checkpoint_every=2), src)
  cfg = toy(num_steps=2, init_from={'enc': source.format(src=src, tmp=tmp_path)})
  with pytest.raises(ValueError, match=match):
    loop.train_and_evaluate(cfg, str(tmp_path / 'dst'))


def test_import_with_other_shapes_is_refused(toy, tmp_path):
  src = str(tmp_path / 'src')
  loop.train_and_evaluate(toy(num_steps=2, checkpoint_every=2, width=4), src)
  with pytest.raises(ValueError, match=r"init_from enc.params\['Dense_0'\]\['bias'\].*"
                                       r"float32\[4\], this run needs float32\[8\]"):
    loop.train_and_evaluate(toy(num_steps=2, init_from={'enc': src}), str(tmp_path / 'dst'))
