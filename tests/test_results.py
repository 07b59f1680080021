"""Results files (stamp, write), the README/docs results blocks and their check."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxgen import results

ROOT = results.ROOT


def _git_head():
  out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  if out.returncode:
    pytest.skip('not a git checkout')
  return out.stdout.strip()


# --------------------------------------------------------------------------- the repository


def test_repository_pages_match_their_results_files_and_have_no_dead_links():
  """README.md and docs/*.md: every results block equals what its files give; no dead links.

  A block whose file is missing is reported with the command that produces it.
  """
  problems = results.check(ROOT)
  assert not problems, 'python -m jaxgen.results check:\n' + '\n'.join(problems)


def test_quickstart_test_command_line_is_unchanged():
  with open(os.path.join(ROOT, 'README.md')) as f:
    lines = f.read().splitlines()
  i = lines.index('<!-- test-command -->')
  assert lines[i + 1] == '```bash'
  assert lines[i + 2] == ("python3 -m venv .venv && . .venv/bin/activate && "
                          "pip install -e '.[test]' && python -m pytest -n auto")


def test_every_registered_block_appears_on_a_page():
  text = ''
  for page in results.pages(ROOT):
    with open(os.path.join(ROOT, page)) as f:
      text += f.read()
  for name in results.BLOCKS:
    assert f'<!-- results:{name} -->' in text, name


# --------------------------------------------------------------------------- stamp and write


def test_stamp_reads_machine_versions_and_commit():
  s = results.stamp()
  assert s['date'].endswith('Z') and s['date'][:2] == '20'
  assert s['machine']['cores'] == os.cpu_count() and s['machine']['cpu']
  assert s['python'] == '.'.join(map(str, sys.version_info[:3]))
  import jax  # pylint: disable=g-import-not-at-top
  assert s['versions']['jax'] == jax.__version__
  assert set(s['versions']) == set(results.PACKAGES)
  assert s['jax']['backend'] == jax.default_backend()
  assert s['git']['commit'] == _git_head()
  assert isinstance(s['git']['dirty'], bool)


def test_vector_isa_is_the_widest_flag_and_is_shown_only_when_known(monkeypatch):
  cpuinfo = {
      'processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 avx512f\n': 'AVX-512',
      'model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n': 'AVX2',
      'model name\t: Neoverse\nFeatures\t: fp asimd sve\n': 'SVE',
      'model name\t: old\nflags\t\t: fpu sse2\n': None, '': None}
  for text, want in cpuinfo.items():
    monkeypatch.setattr(results, '_read', lambda path, text=text: text)
    assert results.cpu_vector_isa() == want
  doc = {'stamp': {'date': '2026-12-05T00:00:00Z', 'python': '3.11.7',
                   'machine': {'cpu': 'AMD EPYC', 'cores': 2, 'vector_isa': 'AVX-512'},
                   'versions': {}, 'jax': {'backend': 'cpu'}, 'git': {}}}
  assert 'on AMD EPYC, AVX-512 (2 cores)' in results.caption(doc)
  del doc['stamp']['machine']['vector_isa']  # files written before the field: as they were
  assert 'on AMD EPYC (2 cores)' in results.caption(doc)


def test_write_is_atomic_json_with_command_stamp_and_result(tmp_path):
  path = tmp_path / 'sub' / 'r.json'
  results.write(str(path), {'x': np.float32(1.5), 'n': np.int64(3), 'a': np.arange(2)},
                'python -m something --flag=1')
  assert sorted(os.listdir(path.parent)) == ['r.json']  # no temporary file left
  doc = json.loads(path.read_text())
  assert doc['command'] == 'python -m something --flag=1'
  assert doc['result'] == {'x': 1.5, 'n': 3, 'a': [0, 1]}
  assert doc['stamp']['git']['commit'] == _git_head()
  assert results.load(str(path)) == doc
  path.write_text(json.dumps({'rows': []}))  # unstamped files do not count
  assert results.load(str(path)) is None


def test_command_line_quotes_arguments():
  assert (results.command_line('python -m x', ['--a=1', '--b=two words'])
          == "python -m x --a=1 '--b=two words'")


# --------------------------------------------------------------------------- blocks and check


def _render_value(docs, paths):
  return '\n'.join(f'value {results.payload(d)["value"]} ({p})' for d, p in zip(docs, paths))


BLOCKS = {'demo': results.Block(_render_value, (
    results.Source('docs/results/demo.json', 'python -m demo --results=docs/results/demo.json'),))}

PAGE = """# Demo

[guide](docs/guide.md) and ![picture](docs/images/pic.png)

<!-- results:demo -->
<!-- /results:demo -->
"""


@pytest.fixture
def repo(tmp_path):
  (tmp_path / 'docs' / 'images').mkdir(parents=True)
  (tmp_path / 'docs' / 'images' / 'pic.png').write_bytes(b'png')
  (tmp_path / 'docs' / 'guide.md').write_text('Back to the [README](../README.md).\n')
  (tmp_path / 'README.md').write_text(PAGE)
  return tmp_path


def test_missing_file_is_reported_with_its_command(repo):
  problems = results.check(str(repo), BLOCKS)
  assert len(problems) == 1
  assert 'docs/results/demo.json is missing' in problems[0]
  assert 'run `python -m demo --results=docs/results/demo.json`' in problems[0]
  assert results.check(str(repo), BLOCKS, allow_missing=True) == []
  (repo / 'docs' / 'results').mkdir()
  (repo / 'docs' / 'results' / 'demo.json').write_text('{"value": 3}')
  assert 'has no stamp' in results.check(str(repo), BLOCKS)[0]


def test_render_fills_blocks_and_check_detects_a_changed_number(repo):
  results.write(str(repo / 'docs' / 'results' / 'demo.json'), {'value': 41.5}, 'python -m demo')
  assert results.check(str(repo), BLOCKS)[0].endswith('run `python -m jaxgen.results render`')
  changed, problems = results.render(str(repo), BLOCKS)
  assert changed == ['README.md'] and problems == []
  text = (repo / 'README.md').read_text()
  assert ('<!-- results:demo -->\nvalue 41.5 (docs/results/demo.json)\n<!-- /results:demo -->'
          in text)
  assert results.check(str(repo), BLOCKS) == []
  assert results.render(str(repo), BLOCKS) == ([], [])  # idempotent
  (repo / 'README.md').write_text(text.replace('41.5', '41.6'))
  problems = results.check(str(repo), BLOCKS)
  assert len(problems) == 1 and "block 'demo' differs" in problems[0]
  # A new result in the file is also a difference.
  (repo / 'README.md').write_text(text)
  results.write(str(repo / 'docs' / 'results' / 'demo.json'), {'value': 40.0}, 'python -m demo')
  assert "block 'demo' differs" in results.check(str(repo), BLOCKS)[0]


def test_unknown_block_and_dead_links_are_reported(repo):
  (repo / 'docs' / 'other.md').write_text(
      '<!-- results:nope -->\n<!-- /results:nope -->\n[x](missing.md) [y](../README.md#top) '
      '[web](https://example.com) `jaxgen/train/trainer.py` `docs/guide.md` '
      '`docs/guide.md::section` `tests/*.py`\n')
  problems = results.check(str(repo), BLOCKS, allow_missing=True)
  assert any("unknown results block 'nope'" in p for p in problems)
  assert any("dead link 'missing.md'" in p for p in problems)
  assert any("'jaxgen/train/trainer.py', which does not exist" in p for p in problems)
  assert len(problems) == 3, problems


def test_cli_check_exit_codes(repo):
  (repo / 'README.md').write_text(PAGE.replace('demo', 'vae_bounds'))  # the real registry
  assert results.main(['check', f'--root={repo}', '--allow-missing']) == 0
  assert results.main(['check', f'--root={repo}']) == 1  # its files are missing
  assert results.main(['render', f'--root={repo}']) == 0  # nothing to render is no error


def test_time_writes_wall_time_and_command(tmp_path):
  path = tmp_path / 't.json'
  assert results.main(['time', f'--results={path}', '--', sys.executable, '-c', 'pass']) == 0
  doc = results.load(str(path))
  assert doc['command'].startswith('python -m jaxgen.results time --results=')
  assert doc['result']['seconds'] > 0 and doc['result']['returncode'] == 0
  assert results.main(['time', f'--results={tmp_path / "f.json"}', '--', sys.executable,
                       '-c', 'raise SystemExit(3)']) == 3
  assert not (tmp_path / 'f.json').exists()


# --------------------------------------------------------------------------- every renderer


def _fake_results(source: results.Source, i: int, background: bool = False) -> dict:
  """A result of the format each registered block's command writes (``background``: a
  text_image_eval file written since the scores had the background's)."""
  cmd = source.command
  if 'jaxgen.results time' in cmd:
    return {'command': cmd.split(' -- ', 1)[1], 'seconds': 100.0 + i, 'returncode': 0}
  if 'jaxgen.evaluate' in cmd:
    real = '--real_split' in cmd
    return {'time': '2026-12-03T00:00:00', 'source': 'real:test' if real else 'generated',
            'num_samples': 359 if real else 1000, 'step': 0 if real else 2000, 'seed': 0,
            'metrics': {'digits_is': 7.0 + i, 'digits_is_std': 0.1, 'digits_fid': 30.0 + i,
                        'digits_kid': 0.01, 'digits_kid_std': 0.001},
            'dataset': 'jaxgen_digits', 'resolution': 32, 'reference_split': 'train',
            'feature_spaces': {'digits': 'classifier:jaxgen_digits:32:v1:sha256=abc'},
            'classifier_test_accuracy': 0.986, 'workdir': None if real else 'runs/x'}
  if 'gan_2d_report' in cmd:
    summary = {'modes': [8.0, 0.0], 'hq_percent': [98.0, 0.3], 'reverse_kl': [0.001, 0.0],
               'all_modes_runs': 10, 'diverged_runs': 0, 'num_seeds': 10}
    return {'runs': [{'dataset': 'grid', 'method': f'm{i}', 'summary': summary,
                      'train_seconds': 1000.0, 'config': {}, 'runs': []}],
            'published': [{'dataset': 'grid', 'method': 'GAN (PacGAN Table 1)', 'modes': 17.3,
                           'hq_percent': 94.8, 'source': 'Lin et al. 2018, Table 1'}]}
  if 'class-accuracy' in cmd:
    return {'accuracy': 0.99, 'per_class': {str(c): 0.99 for c in range(10)},
            'num_samples': 1000, 'classifier_test_accuracy': 0.98, 'classifier': 'clf',
            'step': 6000, 'workdir': 'runs/cvae', 'config': {}}
  if 'vae_tools evaluate' in cmd:
    k = int(cmd.split('--k=')[1].split()[0])
    return {'elbo': -88.0, 'log_lik': -80.0, 'kl': 8.0, 'iwae': -87.0 + 1 / k,
            'num_examples': 359, 'iwae_k': k, 'step': 6000, 'split': 'test',
            'workdir': 'runs/vae', 'config': {
                'model': {'num_classes': 0, 'encoder': 'mlp', 'hidden': [256, 256],
                          'latent_dim': 16}, 'binarize': 'dynamic', 'num_steps': 6000}}
  if 'compare_sn' in cmd:
    curve = lambda d: {'step': [250, 500], 'is': [5.0 + d, 6.0 + d], 'fid': [60.0 - d, 40.0 - d],
                       'train_seconds': [30.0, 60.0]}
    return {'data': 'digits', 'space': 'digits', 'num_samples': 1000, 'num_steps': 500,
            'eval_every': 250, 'plot': None,
            'models': {'dcgan': curve(0), 'dcgan_sn': curve(i)}}
  if 'step_throughput' in cmd:
    row = {'model': 'dcgan64', 'impl': 'jaxgen', 'batch': 64, 'compile_s': 11.0,
           'ms_per_step': 2000.0, 'ms_min': 1900.0, 'ms_max': 2100.0, 'images_per_s': 32.0,
           'gflop_per_step': 139.6, 'gflop_per_s': 69.7, 'params': 6342272,
           'xla_planned_mib': 313.4}
    torch_row = dict(row, impl='pytorch', compile_s=None, gflop_per_step=None,
                     gflop_per_s=None, xla_planned_mib=None)
    if '--interleave' in cmd:
      row, torch_row = (dict(r, interleaved=True, block_ms=[2000.0, 1900.0, 2100.0])
                        for r in (row, torch_row))
    return {'machine': {}, 'rows': [row, torch_row],
            'ratios': {'dcgan64 / PyTorch DCGAN-64, batch 64': 0.87}, 'settings': {}}
  if 'conv_layers' in cmd:
    return {'batch': 64, 'repeats': 5, 'jaxgen_flags': '--no-jaxgen_flags' not in cmd,
            'rows': [{'layer': '32x32 -> 16x16, 64 -> 128', 'forward_ms': 44.0,
                      'kernel_grad_xla_ms': 68.0, 'kernel_grad_s2d_ms': 100.0,
                      'gflop': 4.4}]}
  if 'experiments.text_encoder' in cmd:
    enc = 'bilstm' if 'bilstm' in cmd else 'char_cnn_rnn'
    res = 64 if 'cpu64' in cmd else 32
    ev = {'step': 1500}
    for split in ('test', 'heldout'):
      ev.update({f'{split}/top1': 0.8 + i / 100, f'{split}/top5': 0.99,
                 f'{split}/r_precision': 0.85})
    data = {'resolution': res, **({'counterfactual': 'shape'} if 'counterfactual' in cmd
                                  else {})}
    return {'eval': ev, 'wall_seconds_this_call': 400.0, 'workdir': 'runs/x',
            'config': {'text': {'encoder': enc}, 'loss': {'name': 'damsm'},
                       'data': data, 'eval': {'num_candidates': 100}}}
  if 'text_image_eval' in cmd:
    acc = {'shape': 0.5, 'colour': 0.9, 'size': 0.8, 'position': 0.95, 'r_precision': 0.4,
           'fid': 900.0}
    acc.update({f'first/{k}': v for k, v in acc.items()})
    real = dict(acc, shape=0.94)
    if background:
      acc = dict(acc, **{'background/tv': 0.25 + i / 100, 'background/named_accuracy': 0.5,
                         'background/agreement': 0.75})
      real.update({'background/tv': 0.0, 'background/named_accuracy': 1.0,
                   'background/agreement': 0.45})
    split = {'generated': acc, 'real': real}
    return {'step': 2000, 'test': split, 'heldout': split,
            'train': {'cls': i % 2 == 1, 'interp': i >= 2, 'train_seconds': 1200.0,
                      'resolution': 64,
                      **({'seed': 1} if i == 2 and 'dfgan/' not in cmd else {}),
                      # the bi-LSTM DF-GAN runs (scored with --text_encoder): scaled sentences
                      **({'family': 'dfgan', 'text_encoder': 'bilstm', 'text_scale': 6.4}
                         if '--text_encoder=' in cmd and 'dfgan/cpu32_bilstm' in cmd else {}),
                      **({'family': 'dfgan', 'counterfactual': 'shape,colour'}
                         if 'counterfactual' in cmd else {}),
                      # its text encoder was trained with counterfactual captions too
                      **({'text_counterfactual': 'shape'} if '_text ' in cmd else {}),
                      # DF-GAN's G options that are not the paper's
                      **({'family': 'dfgan', 'ema_decay': 0.999} if '_ema ' in cmd else {}),
                      **({'matching_weight': 0.1} if '_matching' in cmd else {}),
                      **({'mode_seeking_weight': 1.0} if '_mode_seeking' in cmd else {}),
                      **({'aux_weight': 1.0} if '_aux' in cmd else {})}}
  if 'experiments.style_encoder' in cmd:
    ev = {'step': 2000, 'style/roc_auc': 0.95, 'style/roc_auc_pixels': 0.99,
          'style/cos_same': 0.6, 'style/cos_other': 0.1}
    if i:  # files written before the untrained reference existed lack it (rendered '–')
      ev['style/roc_auc_untrained'] = 0.77
    return {'eval': ev, 'wall_seconds_this_call': 300.0,
            'config': {'gan_workdir': 'runs/gan_int_cls/gan_int_cls'}}
  if 'jaxgen.text_probe' in cmd:
    probe = lambda acc: {'accuracy': acc, 'train_accuracy': acc, 'chance': 0.2}
    return {'workdir': 'runs/text_encoder/x', 'step': 1500 * (i + 1), 'split': 'test',
            'text': {'shape': probe(0.4 + i / 10), 'colour': probe(0.97)},
            'image': {'shape': probe(0.35), 'colour': probe(0.78)},
            # files written before the lengths were recorded lack them (rendered '–')
            **({'length': {'text': 1.5 + i, 'image': 3.0}} if i else {})}
  if 'jaxgen.matching_probe' in cmd and 'runs/text_encoder/' in cmd:  # a text-encoder run
    ch = lambda p, g: {'preference': p, 'logit_gap': g}
    return {'workdir': 'runs/text_encoder/x', 'step': 6000, 'split': 'test',
            'num_images': 500, 'family': 'text_encoder', 'text_encoder': 'char_cnn_rnn',
            'similarity': 'dot', 'resolution': 32,
            'counterfactual': 'shape' if 'counterfactual' in cmd else '',
            'changes': {'position': ch(0.99, 13.0), 'shape': ch(0.74 + i / 10, 2.6)}}
  if 'jaxgen.matching_probe' in cmd:
    ch = lambda p, g: {'preference': p, 'logit_gap': g}
    return {'workdir': 'runs/gan_int_cls/x', 'step': 6000, 'split': 'test', 'num_images': 500,
            'cls': True, 'interp': True, 'seed': 0,
            'wrong_captions': ('roll', 'nearest')[i % 2], 'g_width': 32, 'd_width': 32 * (i + 1),
            'd_projection': i == 4,
            **({'family': 'dfgan', 'counterfactual': 'shape'} if 'counterfactual' in cmd
               else {}),
            **({'split': 'train'} if '--split=train' in cmd else {}),
            **({'text_counterfactual': 'shape'} if '_text ' in cmd else {}),
            **({'family': 'dfgan', 'aux_weight': 1.0} if '_aux' in cmd else {}),
            'changes': {'position': ch(1.0, 4.1), 'colour': ch(0.8 + i / 10, 0.66)}}
  if 'metrics.attributes' in cmd:
    scores = {'shape': 0.9, 'colour': 0.99, 'size': 0.99, 'position': 1.0, 'count': 1.0,
              'fid': 383.0 + i}
    return {'resolution': 32 * (i + 1), 'real_test_scores': scores, 'num_test': 500,
            'num_train': 4000}
  if 'init_compile' in cmd:
    row = {'config': 'dfgan:tiny', 'values': 351_795, 'compile_s_default': 40.6,
           'compile_s_jaxgen': 23.3, 'same_bits': True, 'values_differing': 0, 'max_ulps': 0.0}
    return {'rows': [row, dict(row, config='sngan:digits', same_bits=False,
                               values_differing=16_334, max_ulps=2.0)]}
  raise AssertionError(f'no fake result for {cmd}')


def test_every_registered_renderer_makes_a_table_from_its_format(tmp_path):
  (tmp_path / 'docs').mkdir()
  page = '\n\n'.join(f'<!-- results:{n} -->\n<!-- /results:{n} -->' for n in results.BLOCKS)
  (tmp_path / 'docs' / 'all.md').write_text(page + '\n')
  # The files of these blocks were scored since the scores had the background's.
  with_background = {src.path for name in ('text_to_image_dfgan_g', 'text_to_image_dfgan_aux')
                     for src in results.BLOCKS[name].sources}
  for name, block in results.BLOCKS.items():
    for i, src in enumerate(block.sources):
      if (tmp_path / src.path).exists():  # a file two blocks show: written once, by the first
        continue
      fake = _fake_results(src, i, background=src.path in with_background)
      results.write(str(tmp_path / src.path), fake, src.command)
  changed, problems = results.render(str(tmp_path))
  assert changed == ['docs/all.md'] and problems == []
  assert results.check(str(tmp_path)) == []
  text = (tmp_path / 'docs' / 'all.md').read_text()
  for block in results.BLOCKS.values():
    for src in block.sources:  # each file is listed with its command, linked from the page
      assert f'`{src.command}`' in text
      assert f'({os.path.relpath(src.path, "docs")})' in text
  assert '| `dcgan_sn` | 500 | 6.00 | 40.00 |' in text  # compare_sn: the last point of a curve
  assert '| `bilstm` + damsm | 32x32 | 1,500 | 0.820 | 0.990 | 0.850 | 0.820 |' in text  # i = 2
  assert '| `bilstm` + damsm | 64x64 | 1,500 | 0.840 |' in text  # the 5th file: cpu64
  # text_to_image: a DF-GAN run on the bi-LSTM with scaled sentences says both.
  assert '| DF-GAN, bi-LSTM text, text x6.4 | 64 |' in text
  # text_to_image and matching_probe: a run with counterfactual captions says so.
  assert '| DF-GAN, counterfactual captions | 64 |' in text
  assert 'counterfactual captions [2]' in text
  assert 'counterfactual captions, train images [3]' in text  # not the test split: says so
  # ... and one whose text encoder was trained with them says that too.
  assert ('| DF-GAN, counterfactual captions, encoder trained on counterfactual captions '
          '| 64 |') in text
  # DF-GAN's G options that are not the paper's say so.
  assert '| DF-GAN, G EMA 0.999 | 64 |' in text
  # Background columns only in the tables whose files all have them (i = 1: TV 0.26).
  assert text.count('| background TV | named background | background agreement, 2 latents |') == 2
  assert ('| DF-GAN, G EMA 0.999 | 64 | 2,000 | 0.500 | 0.900 | 0.800 | 0.950 | 0.400 | 900 '
          '| 0.500 | 0.900 | 0.400 | 0.260 | 0.500 | 0.750 |') in text
  assert '| 0.400 | 0.000 | 1.000 | 0.450 |  |  |  |' in text  # the real images' row
  assert '| DF-GAN, G matching loss x0.1, counterfactual captions | 64 |' in text
  assert '| DF-GAN, G EMA 0.999, attribute classifier x1 | 64 |' in text
  assert ('| DF-GAN, G EMA 0.999, G matching loss x0.1, G mode seeking x1, counterfactual '
          'captions | 64 |') in text
  # A text encoder trained with counterfactual negatives, in retrieval and the probe.
  assert '| `char_cnn_rnn` + damsm + counterfactual shape negatives | 32x32 |' in text
  assert ('| shape | 0.740 (+2.60) | 0.840 (+2.60) |') in text
  assert 'char-CNN-RNN encoder, 6,000 steps, counterfactual shape negatives [2]' in text
  # text_to_image: a run trained with another seed says so (files without a seed: seed 0).
  assert '| GAN-INT, seed 1 | 64 | 2,000 |' in text and '| GAN-INT | 64 | 2,000 |' in text
  # text_probe: one row per attribute, (text, image) of each file side by side, then chance.
  assert ('| shape | 0.400 | 0.350 | 0.500 | 0.350 | 0.600 | 0.350 | 0.700 | 0.350 | 0.800 '
          '| 0.350 | 0.200 |') in text
  assert 'text, x (3,000 steps) [2]' in text
  assert '| mean length (L2) | – | – | 2.50 | 3.00 | 3.50 | 3.00 |' in text
  # conv_layers: each time with its rate (4.4 GFLOP in 44 ms: 100 GFLOP/s).
  assert '| 44.0 ms (100 GFLOP/s) | 68.0 ms (65 GFLOP/s) | 100.0 ms (44 GFLOP/s) |' in text
  # step_throughput: an interleaved file says how its ratios were taken; the others do not.
  assert text.count('Timed interleaved: round k timed block k of every row in turn') == 2
  assert 'median over the 3 rounds' in text
  # matching_probe: one row per change, each run's preference (logit gap) side by side.
  assert '| colour | 0.800 (+0.66) | 0.900 (+0.66) |' in text
  assert 'GAN-INT-CLS, nearest wrong captions, ngf 32, ndf 64 [2]' in text
  assert 'GAN-INT-CLS, ngf 32, ndf 160, projection D [5]' in text
  assert ', attribute classifier x1 [2]' in text  # DF-GAN's D with the attribute head
  # style_encoder: the untrained reference where the file has it, '–' where it does not.
  assert '| 2,000 | 0.950 | – | 0.990 |' in text and '| 2,000 | 0.950 | 0.770 | 0.990 |' in text
  assert '| 64x64 | 0.900 | 0.990 | 0.990 | 1.000 | 1.000 | 384.0 | 500 / 4,000 | 2 |' in text
  assert '| `sngan:digits` | 351,795 | 40.6 s | 23.3 s | no: 16,334 values, <= 2 ulps | 1 |' in text


# --------------------------------------------------------------------------- the commands' flag


def test_evaluate_results_flag_writes_the_record(tmp_path, monkeypatch):
  from jaxgen import evaluate  # pylint: disable=g-import-not-at-top
  record = {'metrics': {'digits_is': 7.5}, 'source': 'real:test', 'num_samples': 3,
            'dataset': 'jaxgen_digits', 'resolution': 32, 'reference_split': 'train'}
  monkeypatch.setattr(evaluate, 'evaluate', lambda args: dict(record))
  path = tmp_path / 'e.json'
  argv = ['--real_split=test', '--dataset=jaxgen_digits', '--resolution=32',
          f'--results={path}']
  assert evaluate.main(argv) == 0
  doc = results.load(str(path))
  assert doc['command'] == 'python -m jaxgen.evaluate ' + ' '.join(argv)
  assert doc['result'] == dict(record, workdir=None)


def test_vae_tools_results_flag(tmp_path, monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxgen import vae_tools  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({'data': {'eval_split': 'test'}, 'model': {}})
  monkeypatch.setattr(vae_tools, 'load_run', lambda workdir, step: (config, None, None, 7))
  monkeypatch.setattr(vae_tools, '_load_eval_split', lambda *a: (np.zeros((2, 4, 4, 1)), None))
  monkeypatch.setattr(vae_tools.vae_family, 'evaluate_params',
                      lambda *a, **k: {'elbo': -1.0, 'iwae': -0.5, 'iwae_k': k['iwae_k']})
  monkeypatch.setattr(vae_tools, 'class_accuracy', lambda *a: {'accuracy': 0.9})
  path = tmp_path / 'v.json'
  assert vae_tools.main(['evaluate', '--workdir=runs/v', '--k=10', f'--results={path}']) == 0
  doc = results.load(str(path))
  assert doc['command'] == f'python -m jaxgen.vae_tools evaluate --workdir=runs/v --k=10 --results={path}'
  assert doc['result']['iwae_k'] == 10 and doc['result']['step'] == 7
  assert doc['result']['workdir'] == 'runs/v' and doc['result']['config'] == config.to_dict()
  assert vae_tools.main(['class-accuracy', '--workdir=runs/c', f'--results={path}']) == 0
  assert results.load(str(path))['result']['accuracy'] == 0.9


def test_gan_2d_report_results_flag(tmp_path, monkeypatch):
  from experiments import gan_2d_report as report  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  summary = {'modes': (8.0, 0.0), 'hq_percent': (90.0, 1.0), 'reverse_kl': (0.01, 0.0),
             'all_modes_runs': 1, 'diverged_runs': 0, 'num_seeds': 1}
  monkeypatch.setattr(report, 'make_config', lambda d, m, o: ml_collections.ConfigDict(
      {'num_steps': 1}))
  monkeypatch.setattr(report, 'train_seeds', lambda *a, **k: (None, {
      'train_seconds': 1.0, 'nonfinite_steps': [0]}))
  monkeypatch.setattr(report, 'evaluate_seeds', lambda *a: ([{'seed': 0}], [None], [None]))
  monkeypatch.setattr(report, 'summarize', lambda records: summary)
  monkeypatch.setattr(report, 'scatter_grid', lambda *a: np.zeros((4, 4, 3), np.uint8))
  path = tmp_path / 'r.json'
  report.run_report(['ring'], ['gan'], [0], str(tmp_path / 'out'), log=None,
                    results_path=str(path), command='python -m experiments.gan_2d_report x')
  doc = results.load(str(path))
  assert doc['command'] == 'python -m experiments.gan_2d_report x'
  with open(tmp_path / 'out' / 'results.json') as f:
    assert doc['result']['runs'] == json.load(f)
  assert {p['method'] for p in doc['result']['published']} == {
      'GAN (PacGAN Table 1)', 'PacGAN4 (PacGAN Table 1)'}
  assert all(p['dataset'] == 'ring' for p in doc['result']['published'])
