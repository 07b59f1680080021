"""Shared fixtures: a session-wide TFDS data_dir holding the embedded digits, never the network."""
import os
import tempfile

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# One persistent XLA compilation cache for the whole run, shared by the xdist workers and the
# subprocesses the tests start (they inherit the environment). Most tests train the same tiny
# configurations, and each run builds new closures that jit cannot reuse in memory, so without
# it every run recompiled identical programs: a tiny DCGAN run went from ~20 s to ~1.6 s when
# its programs were cached (measured on a 2-core CPU). Cached executables are the
# ones a fresh compile produces, so bitwise comparisons between runs are unaffected.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'jaxgen-tests-xla-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

# The XLA:CPU flags jaxgen's launchers set (jaxgen.cpu_flags), so the suite runs what users run;
# subprocesses started by the tests inherit them.
from jaxgen import cpu_flags  # pylint: disable=wrong-import-position

cpu_flags.configure()


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """A data_dir with jaxgen_digits prepared (8, 16 and 32) once per test session/worker."""
  path = str(tmp_path_factory.mktemp('tfds'))
  return path


def set_fields(cfg, overrides: dict):
  """Sets dotted config fields (``{'model.g_width': 16}``); a missing field raises KeyError."""
  cfg.lock()  # A locked ConfigDict refuses fields it does not have.
  cfg.update_from_flattened_dict(overrides)
  cfg.unlock()
  return cfg


@pytest.fixture
def tiny_config(tfds_dir):
  """Returns a factory for small, fast GAN configs on the embedded digits."""
  from experiments.configs import dcgan, gan

  def make(model='dcgan', **overrides):
    cfg = (dcgan if model == 'dcgan' else gan).get_config('tiny')
    cfg.data.data_dir = tfds_dir
    cfg.log_every = 1
    return set_fields(cfg, overrides)
  return make
