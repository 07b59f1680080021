"""Bad input and a hostile disk: corrupt images, read-only and full workdirs, damaged checkpoints.

Signals, SIGKILL, divergence and resume are checked for every family in tests/test_engine.py."""
import os
import shutil

import ml_collections
import numpy as np
import pytest

from jaxgen.data import pipeline
from jaxgen.engine import loop, runs



def make_folder(root, n=12, size=(20, 20), mode='L'):
  from PIL import Image
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    arr = rng.integers(0, 255, (*size, 3) if mode == 'RGB' else size, dtype=np.uint8)
    Image.fromarray(arr, mode).save(os.path.join(root, f'{i:03d}.png'))


def folder_config(tiny_config, root, **kw):
  return tiny_config(**{'data.name': 'folder', 'data.path': str(root), 'batch_size': 4,
                        'num_steps': 2, **kw})


def test_corrupt_images_error_or_skip(tiny_config, tmp_path, capsys):
  root = tmp_path / 'imgs'
  make_folder(root)
  (root / 'truncated.png').write_bytes((root / '000.png').read_bytes()[:40])
  (root / 'garbage.jpg').write_bytes(b'not a jpeg at all')
  with pytest.raises(pipeline.BadImagesError, match=r'2 of 14 files .*skip_bad_images'):
    loop.train_and_evaluate(folder_config(tiny_config, root), str(tmp_path / 'a'))
  assert not (tmp_path / 'a').exists()
  state = loop.train_and_evaluate(
      folder_config(tiny_config, root, **{'data.skip_bad_images': True}), str(tmp_path / 'b'))
  assert int(state.step) == 2
  assert 'skipped 2 unreadable' in capsys.readouterr().out


def test_wrong_channel_count_is_converted_and_counted(tiny_config, tmp_path, capsys):
  root = tmp_path / 'rgb'
  make_folder(root, mode='RGB')  # RGB files for a 1-channel model.
  x, _ = pipeline.load_split_arrays(ml_collections.ConfigDict(dict(
      name='folder', path=str(root), resolution=16, channels=1)), 'train')
  assert x.shape == (12, 16, 16, 1)
  assert 'converted 12 to 1 channel(s)' in capsys.readouterr().out


def test_read_only_workdir(tiny_config):
  with pytest.raises(ValueError, match='is not writable'):
    loop.train_and_evaluate(tiny_config(), '/proc/jaxgen_run')


def test_full_workdir(tiny_config, tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage._replace(free=10 << 20))
  with pytest.raises(ValueError, match='MiB free'):
    loop.train_and_evaluate(tiny_config(), str(tmp_path / 'w'))
  assert not os.listdir(tmp_path / 'w')


def test_damaged_newest_checkpoint_falls_back_to_older(tiny_config, tmp_path):
  workdir = tmp_path / 'w'
  loop.train_and_evaluate(tiny_config(num_steps=6, checkpoint_every=3), str(workdir))
  for f in (workdir / 'checkpoints' / '6').rglob('*'):
    if f.is_file() and 'ocdbt' in str(f.parent) or f.name == 'manifest.ocdbt':
      f.write_bytes(b'\0' * 16)
  state = runs.restore_run(str(workdir))[3]
  assert int(state.step) == 3
  # A step that was never saved: a plain error naming the steps that exist, not orbax's.
  with pytest.raises(ValueError, match=r'no checkpoint at step 4; it has: 3, 6'):
    runs.restore_run(str(workdir), 4)
