"""The DCGAN vs SN-DCGAN comparison command on a tiny setting: runs, curves, plot, results file."""
import json
import os

import numpy as np
from absl import flags

from experiments import compare_sn


def test_compare_sn_tiny(tmp_path, tfds_dir, monkeypatch):
  monkeypatch.setenv('JAXGEN_CACHE_DIR', str(tmp_path / 'cache'))
  out, res = tmp_path / 'out', tmp_path / 'res.json'
  flags.FLAGS(['prog', '--data=tiny', f'--out={out}', f'--results={res}', f'--data_dir={tfds_dir}',
               '--eval_num_samples=40'])
  try:
    assert compare_sn.main([]) == 0
  finally:
    flags.FLAGS.unparse_flags()
  with open(res) as f:
    doc = json.load(f)
  assert doc['command'].startswith('python -m experiments.compare_sn') and 'stamp' in doc
  r = doc['result']
  assert sorted(r['models']) == ['dcgan', 'dcgan_sn'] and r['num_steps'] == 20
  for c in r['models'].values():
    assert c['step'] == [10, 20]  # evaluated every 10 steps, and at the end
    assert all(1.0 <= v <= 10.0 for v in c['is'])  # IS of a 10-class classifier
    assert all(np.isfinite(c['fid'])) and all(v >= 0 for v in c['fid'])
    assert 0 < c['train_seconds'][0] < c['train_seconds'][1]
  # Different models, so different curves (SN replaces D's BatchNorm).
  assert r['models']['dcgan']['fid'] != r['models']['dcgan_sn']['fid']
  assert os.path.getsize(out / 'compare.png') > 10_000
  with open(out / 'dcgan_sn' / 'config.json') as f:
    assert json.load(f)['model']['spectral_norm'] is True
