"""Compile time of each model family's init, at XLA's default optimisation and at jaxgen's.

  python -m benchmarks.init_compile                          # every config in CONFIGS
  python -m benchmarks.init_compile --configs='dfgan:tiny;gan_2d:ring,gan' --results=PATH

The engine and every tool compile a family's state at step 0 with
:data:`jaxgen.families.base.INIT_COMPILER_OPTIONS` (on CPU). For each config (``module:arg``
of ``experiments/configs``) this lowers ``family.init(PRNGKey(seed))`` once, compiles it with
XLA's default options and with jaxgen's, runs both and reports the two compile times, the
number of values and whether the two programs give the same bits (if not: how many values
differ, and by how many units in the last place at most). The persistent compilation
cache is off, so every compile is a real one.

Benchmarks are not tests: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import importlib
import time

# Configs whose init needs no other run (the style encoder and StackGAN's Stage-II read the
# config of the run they import from).
CONFIGS = ('gan:digits', 'dcgan:digits', 'dcgan:tiny', 'sngan:digits', 'vae:digits',
           'cvae:digits', 'gan_2d:ring,gan', 'text_encoder:char_cnn_rnn', 'text_encoder:bilstm',
           'gan_int_cls:gan_int_cls,cpu64', 'gan_int_cls:tiny', 'stackgan:stage1',
           'stackgan:stage1,tiny', 'dfgan:cpu', 'dfgan:tiny')


def measure(case: str) -> dict:
  """Compile times (s) of ``case``'s init at the default options and at jaxgen's; same bits?"""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.engine import loop  # pylint: disable=g-import-not-at-top
  from jaxgen.families import base  # pylint: disable=g-import-not-at-top

  module_name, arg = case.split(':', 1)
  cfg = importlib.import_module(f'experiments.configs.{module_name}').get_config(arg)
  config, module = loop.prepare(cfg)
  family = module.build(config, with_data=False)
  lowered = jax.jit(lambda: family.init(jax.random.PRNGKey(config.seed))).lower()
  out = {'config': case}
  values = {}
  for name, options in (('default', None), ('jaxgen', base.INIT_COMPILER_OPTIONS)):
    t0 = time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    out[f'compile_s_{name}'] = time.perf_counter() - t0
    values[name] = [np.asarray(x) for x in jax.tree.leaves(compiled())]
  out['values'] = int(sum(x.size for x in values['default']))
  # Where they differ: how many values, and by how many units in the last place at most.
  differ, max_ulps = 0, 0.0
  for a, b in zip(values['default'], values['jaxgen']):
    if a.dtype.kind == 'f' and not np.array_equal(a, b):
      differ += int((a != b).sum())
      ulp = np.spacing(np.abs(a)).astype(np.float64)
      max_ulps = max(max_ulps, float((np.abs(a.astype(np.float64) - b) / ulp).max()))
    elif not np.array_equal(a, b):
      differ += int((a != b).sum())
      max_ulps = float('inf')  # integer values (keys, steps) that differ
  out['values_differing'], out['max_ulps'] = differ, max_ulps
  out['same_bits'] = differ == 0
  return out


def format_table(rows) -> str:
  lines = ['| config | values | compile, XLA default | compile, jaxgen | same bits |',
           '|---|---|---|---|---|']
  for r in rows:
    same = ('yes' if r['same_bits'] else
            f'no: {r["values_differing"]:,} values, <= {r["max_ulps"]:g} ulps')
    lines.append(f'| `{r["config"]}` | {r["values"]:,} | {r["compile_s_default"]:.1f} s | '
                 f'{r["compile_s_jaxgen"]:.1f} s | {same} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--configs', default=';'.join(CONFIGS),
                 help='configs as module:arg, separated by ";" (an arg may hold commas)')
  p.add_argument('--results', default='', help='write a stamped results file here')
  args = p.parse_args(argv)
  cases = [c for c in args.configs.split(';') if c]
  bad = [c for c in cases if ':' not in c]
  if bad:
    p.error(f'each config is module:arg (e.g. dfgan:tiny); got {bad}.')

  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()  # The XLA:CPU flags the launchers set, before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_compilation_cache', False)
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  rows = []
  for case in tqdm(cases, desc='init compile', unit='config'):
    rows.append(measure(case))
    tqdm.write(format_table(rows[-1:]).splitlines()[-1])
  print(format_table(rows))
  if args.results:
    from jaxgen import results  # pylint: disable=g-import-not-at-top
    results.write(args.results, {'rows': rows},
                  results.command_line('python -m benchmarks.init_compile', argv))
    print(f'Wrote {args.results}')
  return 0


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  raise SystemExit(main(sys.argv[1:]))
