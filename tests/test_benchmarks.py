"""The step-throughput benchmark runs and writes its results (a smoke test; no timing asserted)."""
import json

import pytest

from benchmarks import step_throughput


def test_benchmark_writes_a_row_per_model(tmp_path):
  out = str(tmp_path / 'bench')
  assert step_throughput.main(['--models=vae', '--warmup=0', '--blocks=2', '--steps=1',
                               '--torch=no', f'--out={out}']) == 0
  with open(out + '.json') as f:
    result = json.load(f)
  (row,) = result['rows']
  assert row['model'] == 'vae' and row['impl'] == 'jaxgen'
  assert row['ms_min'] <= row['ms_per_step'] <= row['ms_max']
  assert row['images_per_s'] == pytest.approx(row['images_per_step'] / row['ms_per_step'] * 1e3)
  assert row['gflop_per_step'] > 0 and row['params'] > 0
  assert result['machine']['jax_backend'] == 'cpu' and 'xla_flags' in result['machine']
  assert '| vae | jaxgen |' in open(out + '.md').read()


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
