"""Train-step throughput of jaxgen's models, and the same DCGAN-64 step in PyTorch.

  python -m benchmarks.step_throughput                       # every model, PyTorch if installed
  python -m benchmarks.step_throughput --models=dcgan64,dcgan64_plain --blocks=5 --steps=3
  pip install torch==2.13.0                                  # benchmark-only dependency

For each model: the jitted train step exactly as the trainer runs it (state donated, one D and
one G update per step for the GANs), timed on random batches already on the device:

* compile time: ``jit(...).lower(...).compile()``;
* ms/step: median over ``--blocks`` timed blocks of ``--steps`` steps each, after ``--warmup``
  steps (each block ends with ``block_until_ready``); the spread (min-max over blocks) too;
* images/s: batch size / (s/step) (real images consumed per step: batch x n_dis);
* FLOP/s: XLA's cost analysis of the compiled step (``flops``) / (s/step);
* memory: XLA's buffer plan for the step (arguments + outputs + temporaries - aliased); on
  a GPU/TPU the JSON also keeps the device's peak bytes in use so far
  (``process_device_peak_mib``: the whole process's, compilation included, since JAX cannot
  reset it between rows); a PyTorch row on CUDA gives CUDA's peak allocation, reset before
  the row; and the process's peak resident set size;
* share of matmul: the step's FLOP/s divided by the FLOP/s of a jitted float32
  ``--matmul_n`` x ``--matmul_n`` matrix product (2 n^3 FLOPs) timed the same way in the
  same run, before the models - how much of what this machine's XLA reaches on a plain
  matmul the step gets. The matmul is timed again after the models (``matmul_end``), which
  shows how much the machine's speed drifted during the run.

PyTorch: ``benchmarks.torch_dcgan`` (pytorch/examples' DCGAN, nz=100, ngf=ndf=64, batch 64,
Adam) timed the same way in both step orders (``--torch_orders``): 'fresh', D then G update
with a fresh z for G (jaxgen's order, the same arithmetic as jaxgen's step), and 'shared',
pytorch/examples ``main.py``'s order that reuses the D step's fake for the G update (one G
forward per step instead of two). The ratios jaxgen / PyTorch of ms/step for DCGAN-64 at the
same batch are reported against each. Every DF-GAN row (``dfgan64``, ``dfgan256``,
``dfgan_cpu``) gets a PyTorch row beside it: ``benchmarks.torch_dfgan`` (the released DF-GAN
code's networks and step: D on real / mismatched / fake pairs + MA-GP, then G) at the same
resolution, widths, noise and sentence sizes and batch, and the ratio of the two. The PyTorch
step takes random sentence vectors; jaxgen's step also runs its frozen caption encoder on the
batch's captions (as the released training loop does outside its step), so the comparison is,
if anything, tilted towards PyTorch.
Results go to ``--out`` (markdown and JSON) with the machine they were measured on (CPU,
versions, git commit, load average before and after).
Benchmarks are not tests: nothing here asserts a time.
"""
from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time

import numpy as np

# name -> (config module, config argument, field overrides, what it is)
MODELS = {
    'mlp_gan': ('gan', 'digits', {'batch_size': 64},
                'Goodfellow MLP GAN, 16x16 digits (maxout D)'),
    'dcgan32': ('dcgan', 'cifar10', {'batch_size': 64, 'model.conv_impl': 'fast'},
                'DCGAN 32x32x3, widths 64, fast conv'),
    'dcgan64': ('dcgan', 'celeba64', {'batch_size': 64, 'model.conv_impl': 'fast'},
                'DCGAN-64 (nz 100, ngf=ndf=64), fast conv'),
    'dcgan64_shared': ('dcgan', 'celeba64', {'batch_size': 64, 'model.conv_impl': 'fast',
                                             'g_step': 'shared'},
                       'DCGAN-64, fast conv, one G forward per step (pytorch/examples order)'),
    'dcgan64_plain': ('dcgan', 'celeba64', {'batch_size': 64, 'model.conv_impl': 'plain'},
                      'DCGAN-64, flax nn.Conv/nn.ConvTranspose'),
    'dcgan64_b128': ('dcgan', 'celeba64', {'batch_size': 128, 'model.conv_impl': 'fast'},
                     'DCGAN-64, fast conv, batch 128'),
    'sngan': ('sngan', 'cifar10', {'batch_size': 64},
              'SN-DCGAN standard CNN 32x32x3, hinge, n_dis 1'),
    'sngan_plain': ('sngan', 'cifar10', {'batch_size': 64, 'model.conv_impl': 'plain'},
                    'SN-DCGAN 32x32x3, flax nn.Conv/nn.ConvTranspose'),
    'dcgan_digits': ('dcgan', 'digits', {}, 'the quickstart DCGAN: 32x32x1 digits, widths 32'),
    'sngan_digits': ('sngan', 'digits', {}, 'SN-DCGAN on 32x32x1 digits, widths 32'),
    'gan_int_cls': ('gan_int_cls', 'gan_int_cls', {},
                    'GAN-INT-CLS 32x32 (CPU default): widths 32, char-CNN-RNN 128-d, frozen'),
    'gan_int_cls64': ('gan_int_cls', 'gan_int_cls,paper', {},
                      "GAN-INT-CLS 64x64 at Reed's sizes: ngf=ndf=64, char-CNN-RNN 1024-d"),
    'dfgan64': ('dfgan', 'paper,r64', {},
                'DF-GAN 64x64 at the paper\'s width (ngf=ndf=32), bi-LSTM 256-d frozen, MA-GP'),
    'dfgan256': ('dfgan', 'paper', {},
                 'DF-GAN 256x256, the paper\'s networks (ngf=ndf=32), bi-LSTM 256-d frozen'),
    'dfgan64_fast': ('dfgan', 'paper,r64', {'model.conv_impl': 'fast'},
                     'DF-GAN 64x64 at the paper\'s width, D\'s strided convs by fast conv'),
    'dfgan256_fast': ('dfgan', 'paper', {'model.conv_impl': 'fast'},
                      'DF-GAN 256x256, the paper\'s networks, D\'s strided convs by fast conv'),
    'dfgan_cpu': ('dfgan', 'cpu', {}, 'DF-GAN 64x64 as trained here (ngf=ndf=8, fast conv), '
                  'batch 32'),
    'dfgan_cpu_plain': ('dfgan', 'cpu', {'model.conv_impl': 'plain'},
                        'DF-GAN 64x64 as trained here, flax nn.Conv'),
    'stackgan1': ('stackgan', 'stage1,paper', {},
                  "StackGAN Stage-I 64x64 at the paper's sizes, char-CNN-RNN 1024-d frozen"),
    'stackgan2': ('stackgan', 'stage2,paper', {},
                  "StackGAN Stage-II 64->256 at the paper's sizes (Stage-I G frozen)"),
    'stackgan1_cpu': ('stackgan', 'stage1,cpu', {}, 'StackGAN Stage-I 64x64 as trained here'),
    'stackgan2_cpu': ('stackgan', 'stage2,cpu', {},
                      'StackGAN Stage-II 64->128 as trained here'),
    'vae': ('vae', 'digits', {}, 'VAE (MLP), 16x16 digits'),
    'vae_conv': ('vae', 'digits_conv', {}, 'VAE (conv encoder/decoder), digits'),
    'cvae': ('cvae', 'digits', {}, 'conditional VAE (MLP), digits'),
}
DEFAULT_MODELS = ('mlp_gan', 'dcgan32', 'dcgan64', 'sngan', 'vae', 'cvae')
GAN_CONFIGS = ('gan', 'dcgan', 'sngan')


def machine_info() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  dev = jax.devices()[0]
  info = {'date': datetime.datetime.now().isoformat(timespec='seconds'),
          'host': platform.node(), 'cpu': cpu, 'vector_isa': results.cpu_vector_isa(),
          'cpu_cores': os.cpu_count(),
          'usable_cores': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                          else os.cpu_count(),
          'jax_backend': jax.default_backend(), 'device': dev.device_kind,
          'device_count': jax.device_count(), 'python': platform.python_version(),
          'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', '')}
  import jaxlib  # pylint: disable=g-import-not-at-top
  info['jaxlib'] = jaxlib.__version__
  info['platform'] = platform.platform()
  for name in ('flax', 'optax', 'numpy'):
    try:
      info[name] = __import__(name).__version__
    except ImportError:
      info[name] = None
  info.update(git_info())
  info['load_avg_start'] = load_average()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
  except ImportError:
    info['torch'] = None
  return info


def load_average():
  """The 1, 5 and 15 minute load averages (None where the OS has none): other processes
  on the machine slow every row, so the results say how busy it was."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


def git_info() -> dict:
  """The commit the benchmark ran from, and whether the tree had uncommitted changes."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args):
    return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    return {'git_commit': git('rev-parse', 'HEAD'),
            'git_dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.SubprocessError):
    return {'git_commit': None, 'git_dirty': None}


def get_config(name: str, batch_size: int | None = None):
  import importlib  # pylint: disable=g-import-not-at-top
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; accepted: {", ".join(MODELS)}.')
  module, arg, overrides, _ = MODELS[name]
  config = importlib.import_module(f'experiments.configs.{module}').get_config(arg)
  config.lock()  # A locked ConfigDict refuses fields it does not have.
  config.update_from_flattened_dict(overrides)
  config.unlock()
  if batch_size:
    config.batch_size = batch_size
  if config.family == 'stackgan' and config.stage == 2 and not config.stage1_from:
    config.stage1_from = _stage1_stand_in(arg)
  return config


def _stage1_stand_in(arg: str) -> str:
  """A folder holding only the ``config.json`` of the Stage-I run that a Stage-II ``arg``
  refines: Stage-II reads Stage-I's sizes from it. The step is timed on freshly initialised
  networks, so no checkpoint is needed."""
  import atexit  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import workdir  # pylint: disable=g-import-not-at-top
  stage1 = importlib.import_module('experiments.configs.stackgan').get_config(
      arg.replace('stage2', 'stage1'))
  folder = tempfile.mkdtemp(prefix='stackgan_stage1_')
  atexit.register(shutil.rmtree, folder, True)
  workdir.write_json(os.path.join(folder, 'config.json'), stage1.to_dict())
  return folder


def _timed_blocks(run_block, warmup: int, blocks: int, steps: int) -> list[float]:
  """Seconds per step of each timed block (run_block(n) runs n steps and waits for them)."""
  if warmup:
    run_block(warmup)
  out = []
  for _ in range(blocks):
    t0 = time.perf_counter()
    run_block(steps)
    out.append((time.perf_counter() - t0) / steps)
  return out


def _finish_times(times) -> dict:
  """The timing fields of a row from its blocks' seconds per step."""
  sec = statistics.median(times)
  return {'ms_per_step': sec * 1e3, 'ms_min': min(times) * 1e3, 'ms_max': max(times) * 1e3,
          'block_ms': [t * 1e3 for t in times]}


INTERLEAVE_PAUSE_S = 0.5


def run_jobs(prepared, warmup: int, blocks: int, steps: int, interleave: bool = False,
             progress=None) -> list[dict]:
  """Times every ``(run_block, finish)`` of ``prepared`` and returns ``finish(times)`` each.

  In turn (default): one job's warm-up and blocks, then the next's. ``interleave``: every
  job warmed up first, then round k times block k of each job in turn (each after an idle
  ``INTERLEAVE_PAUSE_S``), so a change of the
  machine's speed during the run (seen here: the matmul reference moving 114 -> 161 GFLOP/s
  within one run) falls on every job alike, and block k of two jobs can be compared as a pair
  (:func:`paired_ratio`).
  """
  if not interleave:
    rows = []
    for run_block, finish in prepared:
      rows.append(finish(_timed_blocks(run_block, warmup, blocks, steps)))
      if progress:
        progress(rows[-1])
    return rows
  if warmup:
    for run_block, _ in prepared:
      run_block(warmup)
  times = [[] for _ in prepared]
  for _ in range(blocks):
    for i, (run_block, _) in enumerate(prepared):
      # Idle first, so that the worker threads of the job timed just before (XLA's and
      # PyTorch's pools spin a while after their work) are asleep when this block starts.
      time.sleep(INTERLEAVE_PAUSE_S)
      t0 = time.perf_counter()
      run_block(steps)
      times[i].append((time.perf_counter() - t0) / steps)
  rows = [dict(finish(t), interleaved=True) for (_, finish), t in zip(prepared, times)]
  for row in rows:
    if progress:
      progress(row)
  return rows


def paired_ratio(row, ref) -> float:
  """ms/step of ``row`` over ``ref``: the median of block-by-block ratios when both were
  timed interleaved (the blocks of one round ran back to back), else the ratio of medians."""
  if row.get('interleaved') and ref.get('interleaved') and row.get('block_ms') and (
      len(row['block_ms']) == len(ref.get('block_ms', []))):
    return statistics.median(a / b for a, b in zip(row['block_ms'], ref['block_ms']))
  return row['ms_per_step'] / ref['ms_per_step']


def _memory(compiled) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  out = {}
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:  # The process's peak so far: JAX has no reset.
    out['process_device_peak_mib'] = stats['peak_bytes_in_use'] / 2**20
  try:
    m = compiled.memory_analysis()
    planned = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
    out['xla_planned_mib'] = planned / 2**20
  except (AttributeError, NotImplementedError, TypeError):
    pass
  return out


def _captions(config, module, num: int) -> dict:
  """Tokenised jaxgen_shapes-style captions for a text-conditioned family's batch."""
  from jaxgen.data import shapes  # pylint: disable=g-import-not-at-top
  from jaxgen.families import text_conditioning as tc  # pylint: disable=g-import-not-at-top
  text = module.text_to_image(config).text
  texts = [shapes.sample_example('train', i).captions[0] for i in range(num)]  # no pixels
  return tc.tokenize(text, texts)


def bench_jax(name: str, warmup: int, blocks: int, steps: int, batch_size=None) -> dict:
  """Compile and time one model's train step; returns one result row."""
  return run_jobs([prepare_jax(name, batch_size)], warmup, blocks, steps)[0]


def prepare_jax(name: str, batch_size=None):
  """``(run_block, finish)`` of one model's compiled train step (:func:`run_jobs`)."""
  import jax  # pylint: disable=g-import-not-at-top
  config = get_config(name, batch_size)
  kind = MODELS[name][0]
  rng = np.random.default_rng(0)
  del kind
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top
  config, module = loop.prepare(config)
  family = module.build(config, with_data=False)
  shape = base.data_shape(config)
  per_step = family.examples_per_step
  batch = {'image': np.tanh(rng.normal(size=(per_step, *shape))).astype(np.float32),
           'label': rng.integers(0, 10, size=(per_step,)).astype(np.int32)}
  if 'caption_ids' in family.batch_keys:
    batch.update(_captions(config, module, per_step))
  batch = {k: batch[k] for k in family.batch_keys}
  train_step = family.train_step
  state = base.jit_init(family, config.seed)()
  batch = jax.device_put(batch)
  step = jax.jit(train_step, donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  holder = [state]

  def run_block(n):
    s = holder[0]
    for _ in range(n):
      s, metrics = compiled(s, batch)
    jax.block_until_ready((s, metrics))
    holder[0] = s

  params = int(sum(x.size for n in state.nets.values() for x in jax.tree.leaves(n['params'])))
  memory = _memory(compiled)

  def finish(times):
    row = {'model': name, 'impl': 'jaxgen', 'what': MODELS[name][3],
           'batch': config.batch_size, 'images_per_step': per_step,
           'resolution': 'x'.join(map(str, shape)), 'compile_s': compile_s,
           **_finish_times(times), 'params': params}
    sec = row['ms_per_step'] / 1e3
    row.update(images_per_s=per_step / sec, gflop_per_step=flops / 1e9,
               gflop_per_s=flops / sec / 1e9, **memory)
    holder.clear()  # the state's buffers go with the job
    return row
  return run_block, finish


def bench_matmul(warmup: int, blocks: int, steps: int, n: int = 2048) -> dict:
  """FLOP/s of a jitted float32 n x n matrix product (2 n^3 FLOPs), timed like the steps."""
  import jax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a, b = (jax.device_put(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
  compiled = jax.jit(lambda x, y: x @ y).lower(a, b).compile()

  def run_block(k):
    jax.block_until_ready([compiled(a, b) for _ in range(k)])

  times = _timed_blocks(run_block, warmup, blocks, steps)
  sec = statistics.median(times)
  flops = 2.0 * n ** 3
  return {'n': n, 'dtype': 'float32', 'gflop': flops / 1e9, 'ms': sec * 1e3,
          'ms_min': min(times) * 1e3, 'ms_max': max(times) * 1e3,
          'gflop_per_s': flops / sec / 1e9,
          'gflop_per_s_best': flops / min(times) / 1e9}


TORCH_IMPL = {False: 'pytorch', True: 'pytorch (reuse fake)'}
TORCH_ORDERS = {'fresh': False, 'shared': True}


def bench_torch(warmup: int, blocks: int, steps: int, batch_size: int = 64,
                device: str = 'cpu', reuse_fake: bool = False) -> dict:
  return run_jobs([prepare_torch(batch_size, device, reuse_fake)], warmup, blocks, steps)[0]


def prepare_torch(batch_size: int = 64, device: str = 'cpu', reuse_fake: bool = False):
  """``(run_block, finish)`` of pytorch/examples' DCGAN-64 step in either order."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  if device == 'cuda':
    torch.backends.cudnn.benchmark = True
  model = torch_dcgan.TorchDCGAN(batch_size=batch_size, device=device, reuse_fake=reuse_fake)
  real = torch.tanh(torch.randn(batch_size, 3, 64, 64, device=model.device))
  if device == 'cuda':
    torch.cuda.reset_peak_memory_stats()

  def run_block(n):
    for _ in range(n):
      model.step(real)
    model.synchronize()

  def finish(times):
    row = {'model': 'dcgan64', 'impl': TORCH_IMPL[reuse_fake],
           'order': 'shared' if reuse_fake else 'fresh',
           'what': ('pytorch/examples DCGAN-64, eager, '
                    + ('fake reused for G (main.py)' if reuse_fake else 'fresh z for G')),
           'batch': batch_size,
           'images_per_step': batch_size, 'resolution': '64x64x3', 'compile_s': None,
           **_finish_times(times),
           'params': torch_dcgan.count_params(model.g) + torch_dcgan.count_params(model.d)}
    row['images_per_s'] = batch_size / (row['ms_per_step'] / 1e3)
    if device == 'cuda':  # the process's peak so far: with interleaving, of every job
      row['device_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    return row
  return run_block, finish


def bench_torch_dfgan(warmup: int, blocks: int, steps: int, batch_size: int = 32,
                      resolution: int = 256, width: int = 32, device: str = 'cpu',
                      nz: int = 100, cond_dim: int = 256, name: str = '') -> dict:
  """Times one ``torch_dfgan.train_step`` (the released DF-GAN step) like ``bench_torch``."""
  return run_jobs([prepare_torch_dfgan(batch_size, resolution, width, device, nz, cond_dim,
                                       name)], warmup, blocks, steps)[0]


def prepare_torch_dfgan(batch_size: int = 32, resolution: int = 256, width: int = 32,
                        device: str = 'cpu', nz: int = 100, cond_dim: int = 256,
                        name: str = ''):
  """``(run_block, finish)`` of one ``torch_dfgan.train_step`` (the released DF-GAN step).

  ngf = ndf = ``width``, the paper's nz and sentence size by default; fresh noise and random
  sentence vectors every step (no text encoder), one fixed real batch. Eager, on torch's
  default threads (as the DCGAN rows; ``torch_threads`` in the machine info and the row).
  """
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_dfgan  # pylint: disable=g-import-not-at-top
  if device == 'cuda':
    torch.backends.cudnn.benchmark = True
  model = torch_dfgan.TorchDFGAN(resolution, batch_size, width, width, nz, cond_dim, device)
  real = torch.tanh(torch.randn(batch_size, 3, resolution, resolution, device=model.device))
  if device == 'cuda':
    torch.cuda.reset_peak_memory_stats()

  def run_block(n):
    for _ in range(n):
      model.step(real)
    model.synchronize()

  def finish(times):
    row = {'model': name or f'dfgan{resolution}', 'impl': 'pytorch',
           'what': (f'DF-GAN {resolution}x{resolution} (released code), ngf=ndf={width}, '
                    'MA-GP, eager'),
           'batch': batch_size, 'images_per_step': batch_size,
           'resolution': f'{resolution}x{resolution}x3', 'compile_s': None,
           **_finish_times(times), 'params': model.params(),
           'torch_threads': torch.get_num_threads()}
    row['images_per_s'] = batch_size / (row['ms_per_step'] / 1e3)
    if device == 'cuda':
      row['device_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    return row
  return run_block, finish


def _fmt(v, spec):
  return '' if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def dcgan_ratios(rows) -> dict:
  """ms/step of each jaxgen DCGAN-64 row / each PyTorch order's at the same batch."""
  labels = {TORCH_IMPL[False]: 'PyTorch DCGAN-64',  # Same order as jaxgen: the old key.
            TORCH_IMPL[True]: 'PyTorch DCGAN-64 reusing the fake (pytorch/examples main.py)'}
  ratios = {}
  for r in rows:
    if r['impl'] != 'jaxgen' or not r['model'].startswith('dcgan64'):
      continue
    for impl, label in labels.items():
      ref = [t for t in rows if t['impl'] == impl and t['batch'] == r['batch']]
      if ref:
        ratios[f'{r["model"]} / {label}, batch {r["batch"]}'] = paired_ratio(r, ref[0])
  return ratios


def dfgan_sizes(name: str, batch_size: int | None = None) -> list[int]:
  """[resolution, ngf, ndf, batch, nz, cond_dim] of a DF-GAN benchmark model: the sizes that
  the released PyTorch step is built at (one PyTorch row serves every jaxgen row of them)."""
  c = get_config(name, batch_size)
  m = c.model
  return [m.resolution, m.g_width, m.d_width, c.batch_size, m.latent_dim, m.cond_dim]


def dfgan_ratios(rows) -> dict:
  """ms/step of each jaxgen DF-GAN row / the PyTorch (released code) row of the same sizes
  (``dfgan_sizes``; rows without sizes pair by model name)."""
  ratios = {}
  for r in rows:
    ref = [t for t in rows if t['impl'] == 'pytorch' and (
        t['model'] == r['model'] if 'sizes' not in r else t.get('sizes') == r['sizes'])]
    if r['impl'] == 'jaxgen' and r['model'].startswith('dfgan') and ref:
      ratios[f'{r["model"]} / PyTorch DF-GAN (released code), batch {r["batch"]}'] = (
          paired_ratio(r, ref[0]))
  return ratios


def format_table(rows, info, ratios, matmul=None, load_end=None, matmul_end=None) -> str:
  isa = f', {info["vector_isa"]}' if info.get('vector_isa') else ''
  lines = [f'Measured {info["date"]} on {info["cpu"]}{isa} '
           f'({info["usable_cores"]} usable cores), '
           f'JAX {info["jax"]} backend {info["jax_backend"]} ({info["device"]}), '
           f'PyTorch {info["torch"] or "not installed"}, '
           f'XLA_FLAGS={info.get("xla_flags") or "(none)"}, '
           f'git {(info.get("git_commit") or "unknown")[:12]}'
           f'{" (uncommitted changes)" if info.get("git_dirty") else ""}, '
           f'load average {info.get("load_avg_start")} at the start, {load_end} at the end.',
           '']
  if matmul:
    lines += [f'Matmul reference: jitted float32 {matmul["n"]}x{matmul["n"]} product, '
              f'{matmul["ms"]:.1f} ms ({matmul["ms_min"]:.1f}-{matmul["ms_max"]:.1f}), '
              f'**{matmul["gflop_per_s"]:.1f} GFLOP/s** (best block '
              f'{matmul["gflop_per_s_best"]:.1f}); "share of matmul" is a row\'s GFLOP/s '
              'over this.'
              + (f' Timed again after the models: {matmul_end["gflop_per_s"]:.1f} GFLOP/s.'
                 if matmul_end else ''), '']
  lines += ['| model | impl | batch | compile (s) | ms/step (min-max) | images/s | GFLOP/step '
            '| GFLOP/s | share of matmul | memory (MiB) | params |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    mem = r.get('xla_planned_mib', r.get('device_peak_mib'))
    mem_s = _fmt(mem, '.0f') + (' (XLA plan)' if 'xla_planned_mib' in r else
                                ' (CUDA peak)' if mem else '')
    lines.append(
        f'| {r["model"]} | {r["impl"]} | {r["batch"]} | {_fmt(r["compile_s"], ".1f")} | '
        f'{r["ms_per_step"]:.1f} ({r["ms_min"]:.1f}-{r["ms_max"]:.1f}) | '
        f'{r["images_per_s"]:.0f} | {_fmt(r.get("gflop_per_step"), ".2f")} | '
        f'{_fmt(r.get("gflop_per_s"), ".1f")} | {_fmt(r.get("matmul_share"), ".0%")} | '
        f'{mem_s} | {r["params"]:,} |')
  lines.append(f'\nPeak resident set size of the process: '
               f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.')
  if any(r.get('interleaved') for r in rows):
    lines.append(f'\nTimed interleaved (--interleave): round k timed block k of every row in '
                 f'turn; each ratio below is the median over the '
                 f'{len(rows[0]["block_ms"])} rounds of the two rows\' block-by-block ratio.')
  for k, v in ratios.items():
    lines.append(f'\n**{k}: {v:.2f}** (ms/step jaxgen / PyTorch; below 1 means jaxgen is faster)')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default=','.join(DEFAULT_MODELS),
                 help=f'comma-separated, from: {", ".join(MODELS)}')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--blocks', type=int, default=5)
  p.add_argument('--steps', type=int, default=5, help='steps per timed block')
  p.add_argument('--batch_size', type=int, default=0, help='override every model\'s batch')
  p.add_argument('--torch', choices=('auto', 'yes', 'no'), default='auto',
                 help='time the PyTorch DCGAN-64 (auto: when torch is installed)')
  p.add_argument('--torch_device', default='', help='cpu or cuda (default: cuda if JAX is on '
                 'a GPU)')
  p.add_argument('--torch_orders', default='fresh,shared',
                 help='PyTorch step orders to time: fresh (a fresh z for G, as jaxgen) and/or '
                 'shared (pytorch/examples main.py reuses the D step\'s fake)')
  p.add_argument('--matmul_n', type=int, default=2048,
                 help='size of the float32 matmul whose FLOP/s the rows are compared with '
                 '(0: skip)')
  p.add_argument('--interleave', action='store_true',
                 help='build every model first, then time block k of each in turn (round k), '
                 'so that drift of the machine\'s speed falls on every row alike and ratios '
                 'are medians of block-by-block ratios; needs all models in memory at once')
  p.add_argument('--out', default='', help='results file stem (default '
                 'benchmarks/results/step_throughput_<backend>); .md and .json are written')
  args = p.parse_args(argv)
  models = [m for m in args.models.split(',') if m]
  unknown = [m for m in models if m not in MODELS]
  if unknown or not models:
    p.error(f'unknown model(s) {unknown}; accepted: {", ".join(MODELS)}.')
  if args.blocks < 1 or args.steps < 1 or args.warmup < 0:
    p.error('--blocks and --steps must be at least 1 and --warmup at least 0.')
  torch_orders = [o for o in args.torch_orders.split(',') if o]
  if not torch_orders or any(o not in TORCH_ORDERS for o in torch_orders):
    p.error(f'--torch_orders takes a comma-separated subset of {", ".join(TORCH_ORDERS)}; '
            f'got {args.torch_orders!r}.')
  if args.matmul_n < 0:
    p.error('--matmul_n must be 0 (skip) or positive.')
  use_torch = args.torch == 'yes'
  if args.torch == 'auto':
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      use_torch = True
    except ImportError:
      print('PyTorch not installed: its DCGAN-64 is not timed (pip install torch==2.13.0).')

  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()  # The XLA:CPU flags the launchers set, before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  info = machine_info()
  out = args.out or os.path.join('benchmarks', 'results',
                                 f'step_throughput_{info["jax_backend"]}')
  os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
  rows = []
  jobs = [('jax', m) for m in models]
  torch_device = args.torch_device or ('cuda' if jax.default_backend() == 'gpu' else 'cpu')
  dcgan64 = [m for m in models if m.startswith('dcgan64')]
  if use_torch and dcgan64:
    batches = sorted({get_config(m, args.batch_size).batch_size for m in dcgan64})
    jobs += [('torch', (b, o)) for b in batches for o in torch_orders]
  sizes = {m: dfgan_sizes(m, args.batch_size or None) for m in models
           if MODELS[m][0] == 'dfgan'}
  if use_torch:  # The released DF-GAN step once at the sizes of each jaxgen DF-GAN row.
    first = {}
    for m, size in sizes.items():
      first.setdefault(tuple(size), m)
    jobs += [('torch_dfgan', m) for m in first.values()]
  matmul = None
  if args.matmul_n:
    matmul = bench_matmul(args.warmup, args.blocks, args.steps, args.matmul_n)
    tqdm.write(f'{"matmul":>14} float32 {args.matmul_n}: {matmul["ms"]:8.1f} ms, '
               f'{matmul["gflop_per_s"]:8.1f} GFLOP/s')
  def prepare(kind, what):
    """The job's (run_block, finish), finish also adding the row's sizes and matmul share."""
    if kind == 'jax':
      run_block, finish = prepare_jax(what, args.batch_size or None)
    elif kind == 'torch_dfgan':
      c = get_config(what, args.batch_size or None)
      run_block, finish = prepare_torch_dfgan(
          c.batch_size, c.model.resolution, c.model.g_width, torch_device, c.model.latent_dim,
          c.model.cond_dim, name=what.removesuffix('_fast').removesuffix('_plain'))
    else:
      batch, order = what
      run_block, finish = prepare_torch(batch, torch_device, reuse_fake=TORCH_ORDERS[order])

    def finish_row(times):
      row = finish(times)
      if kind != 'torch' and what in sizes:
        row['sizes'] = sizes[what]
      if kind == 'jax' and matmul:
        row['matmul_share'] = row['gflop_per_s'] / matmul['gflop_per_s']
      return row
    return run_block, finish_row

  def report(row):
    tqdm.write(f'{row["model"]:>14} {row["impl"]:<8} batch {row["batch"]:>4}: '
               f'{row["ms_per_step"]:8.1f} ms/step, {row["images_per_s"]:8.0f} images/s')

  if args.interleave:  # every job built first (all in memory at once), then timed in rounds
    prepared = [prepare(*job) for job in tqdm(jobs, desc='compile', unit='model')]
    rows = run_jobs(prepared, args.warmup, args.blocks, args.steps, interleave=True,
                    progress=report)
  else:
    for job in tqdm(jobs, desc='benchmark', unit='model'):
      rows += run_jobs([prepare(*job)], args.warmup, args.blocks, args.steps, progress=report)
  ratios = {**dcgan_ratios(rows), **dfgan_ratios(rows)}
  matmul_end = None
  if args.matmul_n:  # Again after the models: how much the machine's speed drifted.
    matmul_end = bench_matmul(args.warmup, args.blocks, args.steps, args.matmul_n)
  load_end = load_average()
  table = format_table(rows, info, ratios, matmul, load_end, matmul_end)
  print(table)
  with open(out + '.md', 'w') as f:
    f.write(f'Command: python -m benchmarks.step_throughput '
            f'{" ".join(argv) if argv else ""}'.rstrip() + '\n\n' + table)
  from jaxgen import results  # pylint: disable=g-import-not-at-top
  results.write(out + '.json', {'machine': info, 'rows': rows, 'ratios': ratios,
                                'matmul': matmul, 'matmul_end': matmul_end,
                                'load_avg_end': load_end, 'settings': vars(args)},
                results.command_line('python -m benchmarks.step_throughput', argv))
  print(f'Wrote {out}.md and {out}.json')
  return 0


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  raise SystemExit(main(sys.argv[1:]))
