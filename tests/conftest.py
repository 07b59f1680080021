"""Shared fixtures: a session-wide TFDS data_dir holding the embedded digits, never the network."""
import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """A data_dir with jaxgen_digits prepared (8, 16 and 32) once per test session/worker."""
  path = str(tmp_path_factory.mktemp('tfds'))
  return path


@pytest.fixture
def tiny_config(tfds_dir):
  """Returns a factory for small, fast GAN configs on the embedded digits."""
  from experiments.configs import dcgan, gan

  def make(model='dcgan', **overrides):
    cfg = (dcgan if model == 'dcgan' else gan).get_config('tiny')
    cfg.data.data_dir = tfds_dir
    cfg.log_every = 1
    for key, value in overrides.items():
      node = cfg
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
    return cfg
  return make
