"""The step-throughput benchmark runs and writes its results (a smoke test; no timing asserted)."""
import json
import os

import pytest

from benchmarks import step_throughput


def test_benchmark_writes_a_row_per_model(tmp_path):
  out = str(tmp_path / 'bench')
  assert step_throughput.main(['--models=vae', '--warmup=0', '--blocks=2', '--steps=1',
                               '--torch=no', '--matmul_n=256', f'--out={out}']) == 0
  with open(out + '.json') as f:
    doc = json.load(f)  # A stamped results file (jaxgen.results.write).
  assert doc['command'].startswith('python -m benchmarks.step_throughput') and doc['stamp']
  result = doc['result']
  (row,) = result['rows']
  assert row['model'] == 'vae' and row['impl'] == 'jaxgen'
  assert row['ms_min'] <= row['ms_per_step'] <= row['ms_max']
  assert row['images_per_s'] == pytest.approx(row['images_per_step'] / row['ms_per_step'] * 1e3)
  assert row['gflop_per_step'] > 0 and row['params'] > 0
  machine = result['machine']
  assert machine['jax_backend'] == 'cpu' and 'xla_flags' in machine
  for key in ('git_commit', 'git_dirty', 'flax', 'optax', 'platform', 'load_avg_start'):
    assert key in machine, key
  assert 'load_avg_end' in result and result['matmul_end']['n'] == 256
  mm = result['matmul']
  assert mm['n'] == 256 and mm['gflop'] == pytest.approx(2 * 256 ** 3 / 1e9)
  assert mm['gflop_per_s'] == pytest.approx(mm['gflop'] / mm['ms'] * 1e3)
  assert row['matmul_share'] == pytest.approx(row['gflop_per_s'] / mm['gflop_per_s'])
  md = open(out + '.md').read()
  assert '| vae | jaxgen |' in md and 'Matmul reference' in md and 'share of matmul' in md


def test_interleaved_benchmark_writes_rows_timed_in_rounds(tmp_path):
  out = str(tmp_path / 'bench')
  assert step_throughput.main(['--models=vae,cvae', '--interleave', '--warmup=0', '--blocks=2',
                               '--steps=1', '--torch=no', '--matmul_n=0', f'--out={out}']) == 0
  with open(out + '.json') as f:
    rows = json.load(f)['result']['rows']
  assert [r['model'] for r in rows] == ['vae', 'cvae']
  assert all(r['interleaved'] and len(r['block_ms']) == 2 for r in rows)
  assert 'Timed interleaved' in open(out + '.md').read()


def test_ratios_against_both_pytorch_orders():
  rows = [{'model': 'dcgan64', 'impl': 'jaxgen', 'batch': 64, 'ms_per_step': 100.0},
          {'model': 'dcgan64', 'impl': step_throughput.TORCH_IMPL[False], 'batch': 64,
           'ms_per_step': 200.0},
          {'model': 'dcgan64', 'impl': step_throughput.TORCH_IMPL[True], 'batch': 64,
           'ms_per_step': 160.0},
          {'model': 'dcgan64', 'impl': step_throughput.TORCH_IMPL[True], 'batch': 128,
           'ms_per_step': 1.0}]
  ratios = step_throughput.dcgan_ratios(rows)
  assert sorted(ratios.values()) == [0.5, 0.625]
  assert 'dcgan64 / PyTorch DCGAN-64, batch 64' in ratios  # The fresh-z order's key.
  assert any('reusing the fake' in k for k in ratios)


def test_paired_ratio_is_the_median_of_block_ratios_when_interleaved():
  a = {'ms_per_step': 100.0, 'block_ms': [100.0, 90.0, 150.0], 'interleaved': True}
  b = {'ms_per_step': 200.0, 'block_ms': [200.0, 100.0, 300.0], 'interleaved': True}
  # Block ratios 0.5, 0.9, 0.5: median 0.5 (the ratio of medians would also be 0.5 here, so
  # check one where they differ too).
  assert step_throughput.paired_ratio(a, b) == 0.5
  c = dict(b, block_ms=[120.0, 100.0, 300.0])  # ratios 0.833, 0.9, 0.5 -> 0.833
  assert step_throughput.paired_ratio(a, c) == pytest.approx(100.0 / 120.0)
  assert step_throughput.paired_ratio(a, dict(c, interleaved=False)) == 0.5  # 100 / 200
  assert step_throughput.paired_ratio(a, dict(c, block_ms=[1.0])) == 0.5  # unequal rounds


def test_interleaved_jobs_run_in_rounds():
  calls = []

  def job(name):
    return (lambda n: calls.append((name, n)),
            lambda times: {'model': name, **step_throughput._finish_times(times)})
  seen = []
  rows = step_throughput.run_jobs([job('a'), job('b')], warmup=1, blocks=3, steps=2,
                                  interleave=True, progress=seen.append)
  assert calls == [('a', 1), ('b', 1)] + [('a', 2), ('b', 2)] * 3
  assert [r['model'] for r in rows] == ['a', 'b'] == [r['model'] for r in seen]
  for r in rows:
    assert r['interleaved'] and len(r['block_ms']) == 3
    assert r['ms_min'] <= r['ms_per_step'] <= r['ms_max']
  calls.clear()
  rows = step_throughput.run_jobs([job('a'), job('b')], warmup=1, blocks=2, steps=1)
  assert calls == [('a', 1), ('a', 1), ('a', 1), ('b', 1), ('b', 1), ('b', 1)]
  assert not any(r.get('interleaved') for r in rows)


def test_torch_rows_time_both_orders():
  pytest.importorskip('torch')
  for reuse in (False, True):  # A tiny batch: this only checks the row is made.
    row = step_throughput.bench_torch(warmup=0, blocks=1, steps=1, batch_size=2,
                                      reuse_fake=reuse)
    assert row['impl'] == step_throughput.TORCH_IMPL[reuse]
    assert row['order'] == ('shared' if reuse else 'fresh') and row['ms_per_step'] > 0


def test_torch_dfgan_row_runs_a_step():
  """The PyTorch DF-GAN step runs at a tiny width; the row counts what jaxgen's networks
  hold at the same sizes (no timing asserted)."""
  pytest.importorskip('torch')
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxgen.models import dfgan  # pylint: disable=g-import-not-at-top
  row = step_throughput.bench_torch_dfgan(warmup=0, blocks=1, steps=1, batch_size=2,
                                          resolution=64, width=2, nz=8, cond_dim=4)
  assert (row['model'], row['impl'], row['batch']) == ('dfgan64', 'pytorch', 2)
  assert row['ms_per_step'] > 0 and row['resolution'] == '64x64x3'
  key, s = jax.random.PRNGKey(0), jnp.zeros((1, 4))
  shapes = [jax.eval_shape(lambda: dfgan.Generator(64, 3, 2).init(key, jnp.zeros((1, 8)), s)),
            jax.eval_shape(lambda: dfgan.MatchingDiscriminator(64, 2).init(
                key, jnp.zeros((1, 64, 64, 3)), s))]
  assert row['params'] == sum(x.size for tree in shapes for x in jax.tree.leaves(tree))


def test_unknown_model_is_refused_with_the_accepted_names(capsys):
  with pytest.raises(SystemExit):
    step_throughput.main(['--models=stylegan9', '--torch=no'])
  assert 'accepted: mlp_gan' in capsys.readouterr().err


def test_conv_layers_prints_a_row_per_layer(capsys):
  from benchmarks import conv_layers  # pylint: disable=g-import-not-at-top
  assert conv_layers.main(['--batch=2', '--repeats=1']) == 0
  rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith('| ') and 'ms' in l]
  assert len(rows) == len(conv_layers.LAYERS)
  assert all(r.count('GFLOP/s') == 3 for r in rows)


def test_text_conditioned_rows_get_caption_batches():
  """GAN-INT-CLS's batch carries tokenised jaxgen_shapes captions (no dataset read)."""
  row = step_throughput.bench_jax('gan_int_cls', warmup=0, blocks=1, steps=1, batch_size=4)
  assert row['model'] == 'gan_int_cls' and row['images_per_step'] == 4
  assert row['gflop_per_step'] > 0 and row['params'] > 0
  config = step_throughput.get_config('gan_int_cls')
  from jaxgen.families import gan_int_cls  # pylint: disable=g-import-not-at-top
  caps = step_throughput._captions(config, gan_int_cls, 3)  # pylint: disable=protected-access
  assert caps['caption_ids'].shape == (3, config.data.max_caption_len)
  assert (caps['caption_len'] > 0).all()  # real captions, not padding


def test_dfgan_ratio_pairs_each_row_with_pytorch_at_the_same_model():
  rows = [{'model': 'dfgan256', 'impl': 'jaxgen', 'batch': 32, 'ms_per_step': 100.0},
          {'model': 'dfgan256', 'impl': 'pytorch', 'batch': 32, 'ms_per_step': 400.0},
          {'model': 'dfgan64', 'impl': 'pytorch', 'batch': 32, 'ms_per_step': 1.0},
          {'model': 'dfgan_cpu', 'impl': 'jaxgen', 'batch': 32, 'ms_per_step': 3.0}]
  assert step_throughput.dfgan_ratios(rows) == {
      'dfgan256 / PyTorch DF-GAN (released code), batch 32': 0.25}


def test_dfgan_rows_of_the_same_sizes_share_one_pytorch_row():
  size64 = step_throughput.dfgan_sizes('dfgan64')
  assert size64 == step_throughput.dfgan_sizes('dfgan64_fast') == [64, 32, 32, 32, 100, 256]
  assert step_throughput.dfgan_sizes('dfgan_cpu') != size64
  rows = [{'model': 'dfgan64', 'impl': 'jaxgen', 'batch': 32, 'ms_per_step': 2.0,
           'sizes': size64},
          {'model': 'dfgan64_fast', 'impl': 'jaxgen', 'batch': 32, 'ms_per_step': 1.0,
           'sizes': size64},
          {'model': 'dfgan64', 'impl': 'pytorch', 'batch': 32, 'ms_per_step': 4.0,
           'sizes': size64}]
  assert step_throughput.dfgan_ratios(rows) == {
      'dfgan64 / PyTorch DF-GAN (released code), batch 32': 0.5,
      'dfgan64_fast / PyTorch DF-GAN (released code), batch 32': 0.25}


def test_dfgan_rows_get_a_pytorch_row_of_the_same_sizes(tmp_path):
  """``--models=dfgan_cpu`` times jaxgen's step and the released code's step at the config's
  resolution, widths and batch, and reports their ratio."""
  pytest.importorskip('torch')
  out = str(tmp_path / 'bench')
  assert step_throughput.main(['--models=dfgan_cpu', '--batch_size=2', '--warmup=0',
                               '--blocks=1', '--steps=1', '--torch=yes', '--matmul_n=0',
                               f'--out={out}']) == 0
  with open(out + '.json') as f:
    result = json.load(f)['result']
  jax_row, torch_row = result['rows']
  assert (jax_row['impl'], torch_row['impl']) == ('jaxgen', 'pytorch')
  assert jax_row['model'] == torch_row['model'] == 'dfgan_cpu'
  assert jax_row['batch'] == torch_row['batch'] == 2
  assert torch_row['resolution'] == jax_row['resolution'] == '64x64x3'
  # The same G and D: jaxgen's row also counts its caption encoder's parameters.
  config = step_throughput.get_config('dfgan_cpu')
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  config, module = loop.prepare(config)
  import jax  # pylint: disable=g-import-not-at-top
  state = jax.eval_shape(lambda: module.build(config, with_data=False).init(jax.random.key(0)))
  text = sum(x.size for x in jax.tree.leaves(state.nets['text']['params']))
  assert jax_row['params'] - text == torch_row['params']
  (ratio,) = result['ratios'].values()
  assert ratio == pytest.approx(jax_row['ms_per_step'] / torch_row['ms_per_step'])


def test_stackgan_stage2_rows_need_no_stage1_run():
  """Stage-II reads Stage-I's sizes from a stand-in config.json (the step is timed on fresh
  networks), so the benchmark runs without a trained Stage-I."""
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  for name, stage1_arg in (('stackgan2_cpu', 'stage1,cpu'), ('stackgan2', 'stage1,paper')):
    config = step_throughput.get_config(name)
    with open(os.path.join(config.stage1_from, 'config.json')) as f:
      stage1 = json.load(f)
    from experiments.configs import stackgan  # pylint: disable=g-import-not-at-top
    assert stage1 == json.loads(stackgan.get_config(stage1_arg).to_json())
    config, _ = loop.prepare(config)
    assert config.model.g1_width == stage1['model']['g1_width']
    assert config.model.resolution == config.model.stage2_resolution
