"""jaxgen.cpu_flags: which XLA:CPU flags the entry points add, and when they add none."""
import os
import subprocess
import sys

from jaxgen import cpu_flags

FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def test_adds_the_flag_on_a_known_jaxlib():
  assert cpu_flags.flags_to_add({}, (0, 10, 2)) == [FLAG]
  assert cpu_flags.flags_to_add({'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
                                (0, 10, 0)) == [FLAG]


def test_never_overrides_the_users_setting_or_old_jaxlibs():
  own = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'}
  assert cpu_flags.flags_to_add(own, (0, 10, 2)) == []
  assert cpu_flags.flags_to_add({}, (0, 9, 9)) == []  # The flag may not exist there.
  for off in ('0', 'false', 'off', 'NO'):
    assert cpu_flags.flags_to_add({cpu_flags.OPT_OUT_ENV: off}, (0, 10, 2)) == []


def test_configure_in_a_fresh_process_reaches_xla():
  """Before JAX starts, configure() appends the flag and JAX runs with it; after, no-op."""
  code = ('import os\n'
          'from jaxgen import cpu_flags\n'
          'print(cpu_flags.configure())\n'
          'import jax, jax.numpy as jnp\n'
          'x = jnp.ones((1, 5, 2))\n'
          'dn = ("NHC", "HIO", "NHC")\n'
          'w = jnp.ones((3, 2, 4))\n'
          'y = jax.lax.conv_general_dilated(x, w, (1,), "VALID", dimension_numbers=dn)\n'
          'print(float(y.sum()))\n'
          'print(os.environ.get("XLA_FLAGS", ""))\n'
          'print(cpu_flags.configure())\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', cpu_flags.OPT_OUT_ENV)}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=120, check=True).stdout.split('\n')
  version = cpu_flags._jaxlib_version()  # pylint: disable=protected-access
  expected = [FLAG] if version is not None and version[:2] >= cpu_flags.MIN_JAXLIB else []
  assert out[0] == repr(expected)
  assert float(out[1]) == 3 * 3 * 2 * 4  # XLA ran a convolution under the flag.
  assert out[2] == ' '.join(expected)
  assert out[3] == '[]'  # The backend has started: nothing more is added.
