"""Results files, and the README/docs tables made from them.

Every number the documentation shows comes from a *results file*: a JSON object

    {"command": "<the command line that produced it>",
     "stamp":   {date, machine, versions, JAX backend, git commit, ...},   # stamp()
     "result":  {...}}                                                   # the command's own

written by :func:`write` (commands take ``--results=PATH``). A page (README.md, docs/*.md)
holds *results blocks*::

    <!-- results:NAME -->
    ...generated markdown...
    <!-- /results:NAME -->

whose content a registered renderer (:data:`BLOCKS`) makes from the files named there.

    python -m jaxgen.results render   # rewrites every block from its files
    python -m jaxgen.results check    # exits 1 listing blocks that differ from their files,
                                      # blocks whose files are missing or unstamped, and links
                                      # to files that do not exist
    python -m jaxgen.results time --results=PATH -- COMMAND ...
                                      # runs COMMAND, writes its wall time as a results file

This module imports only the standard library at import time (``time`` can wrap
``pip install -e .`` in a fresh environment).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')

# ------------------------------------------------------------------------------ the stamp


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ''


def _cpu_model() -> str:
  for line in _read('/proc/cpuinfo').splitlines():
    if line.lower().startswith(('model name', 'hardware', 'cpu model')):
      return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine() or 'unknown'


def cpu_vector_isa() -> str | None:
  """The widest vector instruction set the CPU reports (/proc/cpuinfo flags), or None.

  Two machines sold under one name ("AMD EPYC") can differ here, and CPU timings with them:
  XLA's and PyTorch's kernels pick their code by it.
  """
  flags = set()
  for line in _read('/proc/cpuinfo').splitlines():
    if line.lower().startswith(('flags', 'features')):
      flags = set(line.split(':', 1)[1].split())
      break
  for flag, name in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('avx', 'AVX'),
                     ('sve', 'SVE'), ('asimd', 'NEON')):
    if flag in flags:
      return name
  return None


def _memory_gib() -> float | None:
  match = re.search(r'^MemTotal:\s+(\d+) kB', _read('/proc/meminfo'), re.M)
  if match:
    return round(int(match.group(1)) / 2**20, 1)
  try:
    return round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1)
  except (ValueError, OSError, AttributeError):
    return None


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(*args: str, cwd: str = ROOT) -> str | None:
  try:
    out = subprocess.run(('git',) + args, cwd=cwd, capture_output=True, text=True, timeout=30,
                         check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout


def _backend() -> dict:
  """JAX's backend and devices; None values when JAX is not installed."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.devices()
    return {'backend': jax.default_backend(), 'device_kind': devices[0].device_kind,
            'device_count': len(devices), 'process_count': jax.process_count()}
  except Exception:  # pylint: disable=broad-except
    return {'backend': None, 'device_kind': None, 'device_count': None, 'process_count': None}


def stamp(repo: str = ROOT) -> dict:
  """Where and with what a result was made, all read now."""
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  head = _git('rev-parse', 'HEAD', cwd=repo)
  status = _git('status', '--porcelain', '--untracked-files=no', cwd=repo)
  changed = [l[3:] for l in (status or '').splitlines() if l.strip()]
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
      'machine': {'cpu': _cpu_model(), 'vector_isa': cpu_vector_isa(),
                  'cores': os.cpu_count(), 'usable_cores': usable,
                  'memory_gib': _memory_gib(), 'system': platform.platform()},
      'python': platform.python_version(),
      'versions': {p: _version(p) for p in PACKAGES},
      'jax': _backend(),
      'git': {'commit': head.strip() if head else None,
              'dirty': bool(changed) if status is not None else None,
              'changed_files': changed[:50]},
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def _json_default(obj):
  if hasattr(obj, 'tolist'):  # numpy scalars and arrays
    return obj.tolist()
  if isinstance(obj, (set, tuple)):
    return list(obj)
  raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


def _process_index() -> int:
  if 'jax' not in sys.modules:
    return 0
  try:
    return sys.modules['jax'].process_index()
  except Exception:  # pylint: disable=broad-except
    return 0


def write(path: str, result: dict, command: str) -> str | None:
  """Writes ``{"command", "stamp", "result"}`` to ``path`` atomically (process 0 only)."""
  if _process_index() != 0:
    return None
  doc = {'command': command, 'stamp': stamp(), 'result': result}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(doc, f, indent=1, default=_json_default)
    f.write('\n')
  os.replace(tmp, path)
  return path


def run_tool(compute: Callable, table: Callable, prog: str) -> dict:
  """The body of an absl measuring tool's ``main``: applies :mod:`jaxgen.cpu_flags` (before
  JAX starts), quiets absl's logging, computes ``result = compute(FLAGS)``, prints it as JSON
  and as ``table(result)``, and with ``--results`` writes the stamped results file, the
  command being ``prog`` and this process's arguments."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  from jaxgen import cpu_flags  # pylint: disable=g-import-not-at-top
  cpu_flags.configure()
  logging.set_verbosity(logging.WARNING)
  result = compute(flags.FLAGS)
  print(json.dumps(result, indent=1))
  print(table(result))
  if flags.FLAGS.results:
    write(flags.FLAGS.results, result, command_line(prog))
  return result


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
  """``prog`` followed by the arguments (default: this process's), quoted for a shell."""
  args = list(sys.argv[1:] if argv is None else argv)
  return ' '.join([prog] + [shlex.quote(a) for a in args])


def load(path: str) -> dict | None:
  """A stamped results file, or None when it is missing, unreadable or has no stamp."""
  try:
    with open(path) as f:
      doc = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(doc, dict) or not isinstance(doc.get('stamp'), dict) or 'command' not in doc:
    return None
  return doc


def payload(doc: dict) -> dict:
  """The command's own result (files that keep it at top level next to the stamp too)."""
  if 'result' in doc:
    return doc['result']
  return {k: v for k, v in doc.items() if k not in ('stamp', 'command')}


# ------------------------------------------------------------------------------ formatting


def _num(x, digits: int = 2) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '–'
  return f'{x:,.{digits}f}'


def _auto(x) -> str:
  """Two decimals, or three significant digits for values below 1 (KID, small losses)."""
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '–'
  return f'{x:,.2f}' if x == 0 or abs(x) >= 1 else f'{x:.3g}'


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60} min'


def caption(doc: dict) -> str:
  """One line: when, on what, with which versions and commit."""
  s = doc['stamp']
  m = s.get('machine', {})
  v = s.get('versions', {})
  j = s.get('jax', {})
  cores = m.get('usable_cores') or m.get('cores')
  mem = f', {m["memory_gib"]} GiB' if m.get('memory_gib') else ''
  backend = j.get('backend') or '?'
  if j.get('device_kind') and backend != 'cpu':
    backend += f', {j.get("device_count")} x {j["device_kind"]}'
  git = s.get('git', {})
  commit = (git.get('commit') or 'unknown')[:10]
  if git.get('dirty'):
    commit += ' + uncommitted changes'
  date = s.get('date', '?').replace('T', ' ').replace('Z', ' UTC')
  isa = f', {m["vector_isa"]}' if m.get('vector_isa') else ''  # absent from older files
  return (f'{date} on {m.get("cpu", "?")}{isa} ({cores} cores{mem}), Python {s.get("python")}, '
          f'JAX {v.get("jax")} ({backend}), flax {v.get("flax")}, commit {commit}')


def sources(docs: Sequence[dict], paths: Sequence[str]) -> str:
  """The numbered list under a table: each file, its command and its stamp."""
  lines = []
  for i, (doc, path) in enumerate(zip(docs, paths), 1):
    lines.append(f'{i}. `{doc["command"]}`  \n   [{path}]({_link(path)}): {caption(doc)}')
  return '\n'.join(lines)


_PAGE_DIR = ['']  # Directory of the page being rendered, relative to the root (for links).


def _link(path: str) -> str:
  return os.path.relpath(path, _PAGE_DIR[0] or '.').replace(os.sep, '/')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return '\n'.join(out)


# ------------------------------------------------------------------------------ renderers
# Each renderer takes the loaded files (in the order of the block's sources) and their paths.


def render_digits_scores(docs, paths) -> str:
  """``python -m jaxgen.evaluate --results``: IS, FID, KID (digits classifier or Inception)."""
  rows, notes = [], set()
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    m = r.get('metrics', {})
    space = next((k[:-len('_fid')] for k in m if k.endswith('_fid')), None) or next(
        (k[:-len('_is')] for k in m if k.endswith('_is')), 'digits')
    what = (f'real `{r["source"][5:]}` split (N = {r.get("num_samples"):,})'
            if str(r.get('source', '')).startswith('real:') else
            f'`{r.get("workdir", "?")}` at step {r.get("step", 0):,} (N = {r.get("num_samples"):,})')
    pm = lambda name: (f'{_auto(m.get(name))} ± {_auto(m.get(name + "_std"))}'
                       if name + '_std' in m else _auto(m.get(name)))
    rows.append([what, pm(f'{space}_is'), _auto(m.get(f'{space}_fid')), pm(f'{space}_kid'),
                 str(i)])
    acc = r.get('classifier_test_accuracy')
    for sp, cid in (r.get('feature_spaces') or {}).items():
      extra = f', {100 * acc:.1f} % test accuracy' if sp == 'digits' and acc else ''
      notes.add(f'`{sp}` features: `{cid}`{extra}; reference split `{r.get("reference_split")}`')
  out = _table(['what', 'IS', 'FID', 'KID', 'from'], rows)
  return '\n'.join([out, '', *sorted(f'- {n}' for n in notes), '', sources(docs, paths)])


def render_mode_coverage(docs, paths) -> str:
  """``python -m experiments.gan_2d_report --results``: PacGAN's 2-D mode-coverage table."""
  rows, published = [], {}
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    for run in r.get('runs', []):
      rows.append((run['dataset'], run, i))
    for p in r.get('published', []):
      published[(p['dataset'], p['method'])] = p
  order = {'ring': 0, 'grid': 1}
  datasets = sorted({d for d, _, _ in rows} | {d for d, _ in published},
                    key=lambda d: (order.get(d, 2), d))
  lines = []
  for dataset in datasets:
    for _, run, i in (x for x in rows if x[0] == dataset):
      s = run['summary']
      pm = lambda key, d: f'{s[key][0]:.{d}f} ± {s[key][1]:.{d}f}'
      div = f' ({s["diverged_runs"]} diverged)' if s.get('diverged_runs') else ''
      lines.append([dataset, f'`{run["method"]}`', pm('modes', 1), pm('hq_percent', 1),
                    pm('reverse_kl', 3), f'{s["all_modes_runs"]}/{s["num_seeds"]}{div}',
                    _num(run.get('train_seconds'), 0), str(i)])
    for (d, name), p in published.items():
      if d == dataset:
        lines.append([dataset, name, _num(p['modes'], 1), _num(p['hq_percent'], 1), '', '', '',
                      p.get('source', '')])
  head = ['dataset', 'method', 'modes', 'HQ samples (%)', 'reverse KL', 'runs with all modes',
          'train time (s)', 'from']
  return '\n'.join([_table(head, lines), '', sources(docs, paths)])


def _vae_label(r: dict) -> str:
  c = r.get('config') or {}
  model = c.get('model', {})
  if not model:
    return f'`{r.get("workdir", "?")}`'
  kind = 'CVAE' if model.get('num_classes') else 'VAE'
  nets = (f'MLP {"-".join(str(h) for h in model.get("hidden", ()))}'
          if model.get('encoder') == 'mlp' else f'{model.get("encoder")} encoder')
  targets = {'dynamic': 'dynamic binarization', 'none': 'soft targets'}.get(
      c.get('binarize'), str(c.get('binarize')))
  return (f'`{r.get("workdir", "?")}`: {kind}, {nets}, {model.get("latent_dim")}-d latent, '
          f'{targets}, {c.get("num_steps", 0):,} steps')


def render_vae_bounds(docs, paths) -> str:
  """``python -m jaxgen.vae_tools evaluate --results``: test ELBO, IWAE log p(x), KL."""
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    rows.append([_vae_label(r), f'`{r.get("split")}` ({r.get("num_examples")})', _num(r['elbo']),
                 f'{_num(r.get("iwae"))} (k = {r.get("iwae_k", 0):,})', _num(r.get('kl')),
                 str(i)])
  head = ['run', 'split (examples)', 'ELBO', 'IWAE bound on log p(x)', 'KL', 'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_iwae_k(docs, paths) -> str:
  """Several ``vae_tools evaluate --k=K --results`` files of one run: the bound against k."""
  results = sorted((payload(d) for d in docs), key=lambda r: r.get('iwae_k', 0))
  head = ['k'] + [f'{r.get("iwae_k", 0):,}' for r in results]
  row = ['IWAE bound (nats)'] + [_num(r.get('iwae')) for r in results]
  ordered = sorted(zip(docs, paths), key=lambda dp: payload(dp[0]).get('iwae_k', 0))
  return '\n'.join([_table(head, [row]), '',
                    sources([d for d, _ in ordered], [p for _, p in ordered])])


def render_class_accuracy(docs, paths) -> str:
  """``python -m jaxgen.vae_tools class-accuracy --results``."""
  r = payload(docs[0])
  per = r.get('per_class', {})
  head = ['class'] + list(per) + ['all']
  row = ['samples classified as asked (%)'] + [_num(100 * v, 1) for v in per.values()]
  row.append(f'**{_num(100 * r["accuracy"], 1)}**')
  ceiling = r.get('classifier_test_accuracy')
  note = (f'The same classifier (`{r.get("classifier")}`) is right on '
          f'{_num(100 * ceiling, 1)} % of the real test digits; {r.get("num_samples"):,} '
          f'samples in all.' if ceiling is not None else '')
  return '\n'.join([_table(head, [row]), '', note, '', sources(docs, paths)])


def render_compare_sn(docs, paths) -> str:
  """``python -m experiments.compare_sn --results``: IS/FID over training of each model."""
  r = payload(docs[0])
  rows = []
  for name, c in r['models'].items():
    best = min(range(len(c['fid'])), key=lambda i: c['fid'][i])
    rows.append([f'`{name}`', f'{c["step"][-1]:,}', _num(c['is'][-1]), _num(c['fid'][-1]),
                 f'{_num(max(c["is"]))} (step {c["step"][c["is"].index(max(c["is"]))]:,})',
                 f'{_num(c["fid"][best])} (step {c["step"][best]:,})',
                 _duration(c['train_seconds'][-1])])
  head = ['model', 'steps', f'final {r["space"]} IS', f'final {r["space"]} FID', 'best IS',
          'best FID', 'training time']
  picture = (f'![IS and FID over training]({_link(r["plot"])})'
             if r.get('plot') and os.path.exists(os.path.join(ROOT, r['plot'])) else '')
  note = (f'Evaluated every {r["eval_every"]:,} steps on {r["num_samples"]:,} samples from a '
          'fixed seed; training time excludes the evaluations.')
  return '\n'.join([_table(head, rows), '', note, '', picture, '', sources(docs, paths)])


def render_text_retrieval(docs, paths) -> str:
  """``python -m experiments.text_encoder --results``: caption -> image retrieval per encoder."""
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    e, c = r['eval'], r['config']
    res = c['data']['resolution']
    name = f'`{c["text"]["encoder"]}` + {c["loss"]["name"]}'
    if c['data'].get('counterfactual'):  # not the papers': hard negatives with a word changed
      name += f' + counterfactual {c["data"]["counterfactual"]} negatives'
    row = [name, f'{res}x{res}', f'{e["step"]:,}']
    for split in ('test', 'heldout'):
      row += [_num(e.get(f'{split}/top1'), 3), _num(e.get(f'{split}/top5'), 3),
              _num(e.get(f'{split}/r_precision'), 3)]
    rows.append(row + [_duration(r.get('wall_seconds_this_call')), str(i)])
  head = ['encoder + loss', 'images', 'steps', 'test top-1', 'test top-5', 'test R-precision',
          'held-out top-1', 'held-out top-5', 'held-out R-precision', 'wall time', 'from']
  cands = payload(docs[0])['config']['eval']['num_candidates'] if docs else 100
  note = (f'Every caption of every image is a query; the true image is ranked among {cands} '
          f'images (chance: top-1 {1 / cands:.2f}, top-5 {5 / cands:.2f}).')
  return '\n'.join([_table(head, rows), '', note, '', sources(docs, paths)])


def _run_label(t: dict) -> str:
  """A text-to-image run's name in a table, from what its results file records of it: the
  model (Reed's variant for GAN-INT-CLS), then whatever sets it apart from the defaults."""
  family = t.get('family', 'gan_int_cls')
  if family == 'gan_int_cls':
    name = {(False, False): 'GAN', (True, False): 'GAN-CLS', (False, True): 'GAN-INT',
            (True, True): 'GAN-INT-CLS'}[t['cls'], t['interp']]
  elif family == 'stackgan':
    name = f'StackGAN Stage-{"I" * t.get("stage", 1)}'
  elif family == 'text_encoder':  # a text-encoder run asked by jaxgen.matching_probe
    name = {'char_cnn_rnn': 'char-CNN-RNN', 'bilstm': 'bi-LSTM'}.get(
        t['text_encoder'], t['text_encoder']) + f' encoder, {t["step"]:,} steps'
    if t.get('counterfactual'):
      name += f', counterfactual {t["counterfactual"]} negatives'
    return name
  else:
    name = {'dfgan': 'DF-GAN'}.get(family, family)
  if t.get('wrong_captions', 'roll') != 'roll':  # not Reed's random wrong captions
    name += f', {t["wrong_captions"]} wrong captions'
  if t.get('d_width') and t.get('d_width') != t.get('g_width'):
    name += f', ngf {t["g_width"]}, ndf {t["d_width"]}'
  if t.get('d_projection'):  # not Reed's D (jaxgen.models.gan_int_cls)
    name += ', projection D'
  if t.get('text_encoder') == 'bilstm':  # the CPU tables' runs read the char-CNN-RNN
    name += ', bi-LSTM text'
  if t.get('text_scale', 1.0) != 1.0:  # not the paper's: sentences scaled (DF-GAN)
    name += f', text x{t["text_scale"]:g}'
  if family == 'dfgan' and t.get('ema_decay'):  # not the paper's: G's weights averaged
    name += f', G EMA {t["ema_decay"]:g}'
  if t.get('matching_weight'):  # not DF-GAN's: G also trained on the encoder's matching loss
    name += f', G matching loss x{t["matching_weight"]:g}'
  if t.get('mode_seeking_weight'):  # not DF-GAN's: MSGAN's term in G's loss
    name += f', G mode seeking x{t["mode_seeking_weight"]:g}'
  if t.get('aux_weight'):  # not DF-GAN's: AC-GAN's attribute classifier in D and G's losses
    name += f', attribute classifier x{t["aux_weight"]:g}'
  if t.get('counterfactual'):  # not the papers': D also sees captions with words changed
    name += ', counterfactual captions'
  if t.get('text_counterfactual'):  # its text encoder was trained with them (files without
    name += ', encoder trained on counterfactual captions'  # the field: a plain encoder)
  if t.get('seed'):  # another training seed of the same run (files without it: seed 0)
    name += f', seed {t["seed"]}'
  return name


def render_text_to_image(docs, paths) -> str:
  """``python -m jaxgen.text_image_eval --results``: one row per run, the real images' row
  (the ceiling) last. Seen: the ``test`` split, every object; held-out: the first object of
  the ``heldout`` split (the unseen colour-shape pair). When every file has them (files
  written since the scores had them), three columns of the test split's backgrounds: the
  total-variation distance of their mix from the real images', the accuracy where the
  caption names the background, and how often two latents give one caption the same
  background."""
  with_background = all('background/tv' in payload(d)['test']['generated'] for d in docs)

  def cells(seen, held):
    out = [_num(seen['shape'], 3), _num(seen['colour'], 3), _num(seen['size'], 3),
           _num(seen['position'], 3), _num(seen.get('r_precision'), 3), _num(seen['fid'], 0),
           _num(held['first/shape'], 3), _num(held['first/colour'], 3),
           _num(held.get('r_precision'), 3)]
    if with_background:
      out += [_num(seen['background/tv'], 3), _num(seen['background/named_accuracy'], 3),
              _num(seen['background/agreement'], 3)]
    return out
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    t = r['train']
    name = _run_label(t)
    params = r.get('parameters')
    rows.append([name, f'{t["resolution"]}', f'{r["step"]:,}',
                 *cells(r['test']['generated'], r['heldout']['generated']),
                 f'{sum(params.values()):,}' if params else '',
                 _duration(t['train_seconds']), str(i)])
  last = payload(docs[-1])
  rows.append(['real images (ceiling; FID: real train vs test, the floor)', '', '',
               *cells(last['test']['real'], last['heldout']['real']), '', '', ''])
  head = ['model', 'resolution', 'steps', 'shape', 'colour', 'size', 'position',
          'R-precision', 'FID', 'held-out shape', 'held-out colour', 'held-out R-precision',
          *(('background TV', 'named background', 'background agreement, 2 latents')
            if with_background else ()),
          'parameters (all but the text encoder)', 'train time', 'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_style_encoder(docs, paths) -> str:
  """``python -m experiments.style_encoder --results``: ROC AUC of S against raw pixels."""
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    e = r['eval']
    rows.append([r['config']['gan_workdir'], f'{e["step"]:,}', _num(e['style/roc_auc'], 3),
                 _num(e.get('style/roc_auc_untrained'), 3),
                 _num(e['style/roc_auc_pixels'], 3), _num(e['style/cos_same'], 3),
                 _num(e['style/cos_other'], 3), _duration(r['wall_seconds_this_call']),
                 str(i)])
  head = ['generator run', 'S steps', 'ROC AUC of S(x)', 'ROC AUC of S untrained',
          'ROC AUC of raw pixels',
          'cosine, same background', 'cosine, other background', 'wall time', 'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_text_probe(docs, paths) -> str:
  """``python -m jaxgen.text_probe --results``: one row per attribute, text and image probe
  accuracies of each run side by side, the chance rate last."""
  results = [payload(doc) for doc in docs]
  head = ['attribute']
  for i, r in enumerate(results, 1):
    name = f'{os.path.basename(r["workdir"].rstrip("/"))} ({r["step"]:,} steps)'
    head += [f'text, {name} [{i}]', f'image, {name} [{i}]']
  rows = []
  for attr in results[0]['text']:
    row = [attr]
    for r in results:
      row += [_num(r['text'][attr]['accuracy'], 3), _num(r['image'][attr]['accuracy'], 3)]
    rows.append(row + [_num(results[0]['text'][attr]['chance'], 3)])
  row = ['mean length (L2)']
  for r in results:  # files written before the lengths were recorded: '–'
    length = r.get('length', {})
    row += [_num(length.get('text'), 2), _num(length.get('image'), 2)]
  rows.append(row + [''])
  return '\n'.join([_table(head + ['chance'], rows), '', sources(docs, paths)])


def render_matching_probe(docs, paths) -> str:
  """``python -m jaxgen.matching_probe --results``: one row per caption change, each run's
  preference for the true caption (and mean logit gap) side by side."""
  results = [payload(doc) for doc in docs]
  head = ['caption change']
  for i, r in enumerate(results, 1):
    where = f', {r["split"]} images' if r.get('split', 'test') != 'test' else ''
    head.append(f'{_run_label(r)}{where} [{i}]')
  rows = []
  for change in results[0]['changes']:
    rows.append([change] + [f'{_num(r["changes"][change]["preference"], 3)} '
                            f'({r["changes"][change]["logit_gap"]:+.2f})' for r in results])
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_attribute_ceiling(docs, paths) -> str:
  """``python -m jaxgen.metrics.attributes --results``: the classifier on real test renders."""
  keys = ('shape', 'colour', 'size', 'position', 'count')
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    s = r['real_test_scores']
    rows.append([f'{r["resolution"]}x{r["resolution"]}', *(_num(s[k], 3) for k in keys),
                 _num(s.get('fid'), 1), f'{r["num_test"]:,} / {r["num_train"]:,}', str(i)])
  head = ['resolution', *keys, 'FID test vs train', 'images (test / train)', 'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_step_throughput(docs, paths) -> str:
  """``python -m benchmarks.step_throughput``'s JSON (rows, ratios, machine), stamped."""
  out = []
  for doc in docs:
    r = payload(doc)
    rows = []
    for x in r.get('rows', []):
      # A jaxgen row's own memory is XLA's plan for its step: JAX's device peak counts the
      # whole process (compilation's autotuning included) and cannot be reset between rows.
      # A PyTorch row's is CUDA's peak allocation, reset before the row.
      mem = x.get('peak_mib') or x.get('memory_mib')
      mem_cell = (_num(mem, 0) if mem is not None else
                  f'{_num(x["xla_planned_mib"], 0)} (XLA plan)' if x.get('xla_planned_mib')
                  else f'{_num(x["device_peak_mib"], 0)} (CUDA peak)'
                  if x.get('device_peak_mib') and x['impl'] != 'jaxgen' else '')
      rows.append([f'`{x["model"]}`', x['impl'], x['batch'],
                   _num(x.get('compile_s'), 1) if x.get('compile_s') is not None else '',
                   f'{_num(x["ms_per_step"], 1)} ({_num(x.get("ms_min"), 1)}-'
                   f'{_num(x.get("ms_max"), 1)})', _num(x.get('images_per_s'), 0),
                   _num(x.get('gflop_per_step'), 2) if x.get('gflop_per_step') else '',
                   _num(x.get('gflop_per_s'), 1) if x.get('gflop_per_s') else '',
                   f'{100 * x["matmul_share"]:.0f} %' if x.get('matmul_share') else '',
                   mem_cell, f'{x.get("params", 0):,}'])
    head = ['model', 'impl', 'batch', 'compile (s)', 'ms/step (min-max)', 'images/s',
            'GFLOP/step', 'GFLOP/s', 'share of matmul', 'memory (MiB)', 'params']
    out.append(('\n' if out else '') + _table(head, rows))
    m, m_end = r.get('matmul') or {}, r.get('matmul_end') or {}
    if m:
      out.append(f'\nA jitted float32 {m["n"]}x{m["n"]} matmul: {_num(m["gflop_per_s"], 1)} '
                 'GFLOP/s at the start' + (f', {_num(m_end["gflop_per_s"], 1)} at the end'
                                           if m_end else '')
                 + '; "share of matmul" is a row\'s GFLOP/s over the start figure. Load average '
                 f'{(r.get("machine") or {}).get("load_avg_start")} at the start, '
                 f'{r.get("load_avg_end")} at the end.')
    timed = r.get('rows', [])
    if timed and all(x.get('interleaved') for x in timed):
      out.append(f'\nTimed interleaved: round k timed block k of every row in turn, and each '
                 f'ratio is the median over the {len(timed[0]["block_ms"])} rounds of the '
                 'block-by-block ratio.')
    for name, ratio in r.get('ratios', {}).items():
      out.append(f'\n**{name}: {ratio:.2f}** (ms/step of jaxgen over PyTorch; below 1 means '
                 'jaxgen is faster)')
  return '\n'.join(out + ['', sources(docs, paths)])


def render_conv_layers(docs, paths) -> str:
  """``python -m benchmarks.conv_layers --results``: per-layer times under each flag set."""
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    flags = 'jaxgen' if r.get('jaxgen_flags') else 'XLA default'
    for x in r.get('rows', []):
      def cell(ms, gflop=x.get('gflop')):
        rate = f' ({_num(gflop / ms * 1e3, 0)} GFLOP/s)' if gflop else ''
        return f'{_num(ms, 1)} ms{rate}'
      rows.append([x['layer'], flags, cell(x['forward_ms']), cell(x['kernel_grad_xla_ms']),
                   cell(x['kernel_grad_s2d_ms']), str(i)])
  head = ['layer', 'flags', 'forward', 'kernel-grad (XLA)', 'kernel-grad (space-to-depth)',
          'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_init_compile(docs, paths) -> str:
  """``python -m benchmarks.init_compile --results``: init compile times under both options."""
  rows = []
  for i, doc in enumerate(docs, 1):
    for x in payload(doc).get('rows', []):
      rows.append([f'`{x["config"]}`', f'{x["values"]:,}', f'{_num(x["compile_s_default"], 1)} s',
                   f'{_num(x["compile_s_jaxgen"], 1)} s',
                   'yes' if x['same_bits'] else
                   f'no: {x["values_differing"]:,} values, <= {x["max_ulps"]:g} ulps', str(i)])
  head = ['config', 'values', 'compile, XLA default', 'compile, jaxgen (level 1)', 'same bits',
          'from']
  return '\n'.join([_table(head, rows), '', sources(docs, paths)])


def render_timings(docs, paths) -> str:
  """``python -m jaxgen.results time --results``: wall time of each wrapped command."""
  rows = []
  for i, doc in enumerate(docs, 1):
    r = payload(doc)
    rows.append([f'`{r["command"]}`', _duration(r['seconds']), str(i)])
  return '\n'.join([_table(['command', 'wall time', 'from'], rows), '', sources(docs, paths)])


def render_index(docs, paths) -> str:
  """No files: the list of every registered block, its files and their commands."""
  del docs, paths
  rows = []
  for name, block in BLOCKS.items():
    for src in block.sources:
      rows.append([f'`{name}`', src.path, f'`{src.command}`'])
  return _table(['block', 'file', 'command that writes it'], rows)


# ------------------------------------------------------------------------------ the registry


@dataclasses.dataclass(frozen=True)
class Source:
  path: str      # relative to the repository root
  command: str   # the command that writes it


@dataclasses.dataclass(frozen=True)
class Block:
  render: Callable[[list, list], str]
  sources: tuple


def _evaluate(name: str, args: str) -> Source:
  path = f'docs/results/digits/{name}.json'
  return Source(path, f'python -m jaxgen.evaluate {args} --results={path}')


def _report(name: str, args: str) -> Source:
  path = f'docs/results/gan_2d/{name}.json'
  return Source(path, f'python -m experiments.gan_2d_report {args} --seeds=10 '
                      f'--out=runs/gan_2d_report/{name} --results={path}')


def _scored(run: str, figure: str, options: str = '') -> Source:
  """A text-to-image run under ``runs/<run>``, scored into ``docs/results/<run>.json`` with its
  sample grid ``docs/images/text_to_image_<figure>.png``."""
  return Source(f'docs/results/{run}.json',
                f'python -m jaxgen.text_image_eval --workdir=runs/{run} {options}'
                f'--results=docs/results/{run}.json '
                f'--figure=docs/images/text_to_image_{figure}.png')


def _vae(name: str, workdir: str, k: int = 5000) -> Source:
  path = f'docs/results/vae/{name}.json'
  return Source(path, f'python -m jaxgen.vae_tools evaluate --workdir={workdir} --k={k} '
                      f'--results={path}')


def _timed(name: str, command: str, prefix: str = '') -> Source:
  path = f'docs/results/quickstart/{name}.json'
  return Source(path, f'{prefix}python -m jaxgen.results time --results={path} -- {command}')


_STEP_MODELS = 'dcgan64,dcgan64_plain,dcgan32,sngan,mlp_gan,vae,cvae'

BLOCKS: dict[str, Block] = {
    'quickstart': Block(render_timings, (
        _timed('install', 'pip install -e .',
               prefix='python3 -m venv .venv && . .venv/bin/activate && '),
        _timed('train_dcgan', 'python -m experiments.dcgan '
               '--config=experiments/configs/dcgan.py --workdir=runs/dcgan'),
    )),
    'digits_scores': Block(render_digits_scores, (
        _evaluate('real_test', '--real_split=test --dataset=jaxgen_digits --resolution=32 '
                  '--metrics=is,fid,kid'),
        _evaluate('dcgan', '--workdir=runs/dcgan --metrics=is,fid,kid --num_samples=1000'),
        _evaluate('sngan', '--workdir=runs/sngan --metrics=is,fid,kid --num_samples=1000'),
    )),
    'gan_2d': Block(render_mode_coverage, (
        _report('r1_ema_decay_ring', '--datasets=ring --methods=r1_ema_decay'),
        _report('r1_ema_decay_grid', '--datasets=grid --methods=r1_ema_decay'),
    )),
    'vae_bounds': Block(render_vae_bounds, (
        _vae('vae', 'runs/vae'),
        _vae('vae2d', 'runs/vae2d'),
        _vae('cvae', 'runs/cvae'),
        _vae('vaesoft', 'runs/vaesoft'),
    )),
    'vae_iwae_k': Block(render_iwae_k, tuple(
        _vae(f'iwae_k{k}', 'runs/vae', k) for k in (1, 10, 100, 1000)) + (
            _vae('vae', 'runs/vae'),)),  # k = 5,000: the file of the vae_bounds row
    'cvae_class_accuracy': Block(render_class_accuracy, (
        Source('docs/results/vae/cvae_class_accuracy.json',
               'python -m jaxgen.vae_tools class-accuracy --workdir=runs/cvae --num=1000 '
               '--results=docs/results/vae/cvae_class_accuracy.json'),
    )),
    'step_throughput': Block(render_step_throughput, (
        Source('benchmarks/results/step_throughput_cpu.json',
               'python -m benchmarks.step_throughput --models=dcgan64,dcgan64_shared,dcgan32,'
               'sngan,mlp_gan,vae,cvae --warmup=2 --blocks=5 --steps=3'),
        Source('benchmarks/results/step_throughput_text_to_image_cpu.json',
               'python -m benchmarks.step_throughput --models=gan_int_cls,gan_int_cls64 '
               '--torch=no --warmup=2 --blocks=5 --steps=3 '
               '--out=benchmarks/results/step_throughput_text_to_image_cpu'),
        Source('benchmarks/results/step_throughput_text_to_image_ii_cpu.json',
               'python -m benchmarks.step_throughput --models=dfgan_cpu,stackgan1_cpu,'
               'stackgan2_cpu,dfgan64,stackgan1,dfgan256,stackgan2 --warmup=1 --blocks=2 '
               '--steps=1 --out=benchmarks/results/step_throughput_text_to_image_ii_cpu'),
        Source('benchmarks/results/step_throughput_dfgan_cpu.json',
               'python -m benchmarks.step_throughput --models=dfgan_cpu,dfgan_cpu_plain,'
               'dfgan64_fast,dfgan64,dfgan256_fast --warmup=1 --blocks=3 --steps=1 '
               '--out=benchmarks/results/step_throughput_dfgan_cpu'),
        Source('benchmarks/results/step_throughput_dcgan64_interleaved_cpu.json',
               'python -m benchmarks.step_throughput --models=dcgan64,dcgan64_shared '
               '--interleave --warmup=2 --blocks=7 --steps=3 '
               '--out=benchmarks/results/step_throughput_dcgan64_interleaved_cpu'),
        # The same command on another machine sold as "AMD EPYC", one with AVX-512.
        Source('benchmarks/results/step_throughput_dcgan64_interleaved_avx512_cpu.json',
               'python -m benchmarks.step_throughput --models=dcgan64,dcgan64_shared '
               '--interleave --warmup=2 --blocks=7 --steps=3 '
               '--out=benchmarks/results/step_throughput_dcgan64_interleaved_avx512_cpu'),
    )),
    'conv_layers': Block(render_conv_layers, (
        Source('benchmarks/results/conv_layers_cpu.json',
               'python -m benchmarks.conv_layers '
               '--results=benchmarks/results/conv_layers_cpu.json'),
    )),
    'init_compile': Block(render_init_compile, (
        Source('benchmarks/results/init_compile_cpu.json',
               'python -m benchmarks.init_compile '
               '--results=benchmarks/results/init_compile_cpu.json'),
    )),
    'step_throughput_gpu': Block(render_step_throughput, (
        Source('benchmarks/results/step_throughput_gpu.json',
               'python -m benchmarks.step_throughput --models=dcgan64,dcgan64_shared,sngan,'
               'dcgan32 --warmup=3 --blocks=5 --steps=10 --matmul_n=8192 '
               '--out=benchmarks/results/step_throughput_gpu'),
        Source('benchmarks/results/step_throughput_text_to_image_gpu.json',
               'python -m benchmarks.step_throughput --models=gan_int_cls64,dfgan64,dfgan256,'
               'stackgan1,stackgan2 --warmup=3 --blocks=5 --steps=10 --matmul_n=8192 '
               '--out=benchmarks/results/step_throughput_text_to_image_gpu'),
    )),
    'compare_sn': Block(render_compare_sn, (
        Source('docs/results/compare_sn/digits.json',
               'python -m experiments.compare_sn --data=digits --num_steps=5000 '
               '--out=runs/compare_sn --results=docs/results/compare_sn/digits.json '
               '--plot=docs/images/compare_sn_digits.png'),
    )),
    'text_retrieval': Block(render_text_retrieval, tuple(
        Source(f'docs/results/text_encoder/{name}.json',
               f'python -m experiments.text_encoder --config=experiments/configs/'
               f'text_encoder.py:{arg} --workdir=runs/text_encoder/{name} '
               f'--results=docs/results/text_encoder/{name}.json')
        for name, arg in (('char_cnn_rnn', 'char_cnn_rnn'),
                          ('char_cnn_rnn_long', 'char_cnn_rnn,cpu_long'),
                          ('bilstm', 'bilstm'),
                          ('char_cnn_rnn_cpu64', 'char_cnn_rnn,cpu64'),
                          ('bilstm_cpu64', 'bilstm,cpu64'),
                          ('char_cnn_rnn_long_counterfactual',
                           'char_cnn_rnn,cpu_long,counterfactual')))),
    # What each encoder's own similarity checks, both runs trained on the same machine.
    'matching_probe_text_encoder': Block(render_matching_probe, tuple(
        Source(f'docs/results/text_encoder/matching_{name}.json',
               f'python -m jaxgen.matching_probe --workdir=runs/text_encoder/{name} '
               f'--results=docs/results/text_encoder/matching_{name}.json')
        for name in ('char_cnn_rnn_long', 'char_cnn_rnn_long_counterfactual'))),
    'text_probe': Block(render_text_probe, tuple(
        Source(f'docs/results/text_encoder/probe_{name}.json',
               f'python -m jaxgen.text_probe --workdir=runs/text_encoder/{name} '
               f'--results=docs/results/text_encoder/probe_{name}.json')
        for name in ('char_cnn_rnn', 'char_cnn_rnn_long', 'char_cnn_rnn_cpu64', 'bilstm',
                     'bilstm_cpu64'))),
    'matching_probe': Block(render_matching_probe, tuple(
        Source(f'docs/results/{family}/matching_{run}.json',
               f'python -m jaxgen.matching_probe --workdir=runs/{family}/{run} '
               f'--results=docs/results/{family}/matching_{run}.json')
        for family, names in (('gan_int_cls', ('cpu32_gan_cls', 'cpu32', 'cpu32_nearest',
                                               'cpu32_d64', 'cpu32_proj', 'cpu32_g64')),
                              ('dfgan', ('cpu32_20k', 'cpu32_bilstm_x6')))
        for run in names)),
    'attribute_ceiling': Block(render_attribute_ceiling, tuple(
        Source(f'docs/results/text_encoder/attributes_ceiling_{res}.json',
               f'python -m jaxgen.metrics.attributes --resolution={res} '
               f'--results=docs/results/text_encoder/attributes_ceiling_{res}.json')
        for res in (32, 64))),
    'text_to_image': Block(render_text_to_image, tuple(
        _scored(f'gan_int_cls/{v}', v) for v in ('gan', 'gan_cls', 'gan_int', 'gan_int_cls'))),
    'text_to_image_cpu32': Block(render_text_to_image, tuple(
        _scored(f'gan_int_cls/{run}', figure)
        for run, figure in (('cpu32_gan', 'gan_cpu32'), ('cpu32_gan_cls', 'gan_cls_cpu32'),
                            ('cpu32_gan_cls_seed1', 'gan_cls_cpu32_seed1'),
                            ('cpu32_gan_int', 'gan_int_cpu32'),
                            ('cpu32_seed1', 'gan_int_cls_cpu32_seed1'),
                            ('cpu32_nearest', 'gan_int_cls_cpu32_nearest'),
                            ('cpu32_d64', 'gan_int_cls_cpu32_d64'),
                            ('cpu32_proj', 'gan_int_cls_cpu32_proj'),
                            ('cpu32_g64', 'gan_int_cls_cpu32_g64'),
                            ('cpu32', 'gan_int_cls_cpu32')))),
    'text_to_image_models_cpu32': Block(render_text_to_image, (
        _scored('gan_int_cls/cpu32', 'gan_int_cls_cpu32'),
        *(_scored(f'dfgan/{run}', f'dfgan_{run}')
          for run in ('cpu32_6k', 'cpu32', 'cpu32_20k', 'cpu32_28k')),
        # R-precision with the char-CNN-RNN of the other rows, not the run's own bi-LSTM.
        *(_scored(f'dfgan/{run}', f'dfgan_{run}',
                  '--text_encoder=runs/text_encoder/char_cnn_rnn_long ')
          for run in ('cpu32_bilstm', 'cpu32_bilstm_x6')))),
    # One char-CNN-RNN for every row, retrained on the machine that trained these runs.
    # The *_text runs import the text encoder trained with counterfactual captions too.
    # R-precision with the other rows' encoder, not the run's own.
    'text_to_image_counterfactual': Block(render_text_to_image, tuple(
        _scored(f'{family}/{run}', f'{family}_{run}',
                '--text_encoder=runs/text_encoder/char_cnn_rnn_long ' if run.endswith('_text')
                else '')
        for family in ('gan_int_cls', 'dfgan')
        for run in ('cpu32_baseline', 'cpu32_counterfactual', 'cpu32_counterfactual_text'))),
    # DF-GAN with G's options that are not the paper's: a weight average (the same training
    # trajectory as cpu32_baseline), the caption encoder's matching loss (on the encoder
    # trained with counterfactual captions, as cpu32_counterfactual_text) and MSGAN's
    # mode-seeking term beside it.
    'text_to_image_dfgan_g': Block(render_text_to_image, tuple(
        _scored(f'dfgan/{run}', f'dfgan_{run}',
                '--text_encoder=runs/text_encoder/char_cnn_rnn_long '
                if run.startswith('cpu32_counterfactual') else '')
        for run in ('cpu32_baseline', 'cpu32_ema', 'cpu32_counterfactual_text',
                    'cpu32_counterfactual_matching', 'cpu32_counterfactual_matching_ema',
                    'cpu32_counterfactual_matching003_ema',
                    'cpu32_counterfactual_matching_mode_seeking_ema'))),
    # DF-GAN with an attribute classifier in D (not the paper), beside the same recipe
    # without it (both keep G's weight average).
    'text_to_image_dfgan_aux': Block(render_text_to_image, tuple(
        _scored(f'dfgan/{run}', f'dfgan_{run}')
        for run in ('cpu32_ema', 'cpu32_aux_ema', 'cpu32_aux4_ema'))),
    'matching_probe_counterfactual': Block(render_matching_probe, tuple(
        Source(f'docs/results/{family}/matching_{run}{suffix}.json',
               f'python -m jaxgen.matching_probe --workdir=runs/{family}/{run} {option}'
               f'--results=docs/results/{family}/matching_{run}{suffix}.json')
        for family in ('gan_int_cls', 'dfgan')
        for run, option, suffix in (('cpu32_baseline', '', ''),
                                    ('cpu32_counterfactual', '', ''),
                                    # the images D was trained on
                                    ('cpu32_counterfactual', '--split=train ', '_train'),
                                    ('cpu32_counterfactual_text', '', '')))),
    # What D checks with and without its attribute classifier.
    'matching_probe_dfgan_aux': Block(render_matching_probe, tuple(
        Source(f'docs/results/dfgan/matching_{run}.json',
               f'python -m jaxgen.matching_probe --workdir=runs/dfgan/{run} '
               f'--results=docs/results/dfgan/matching_{run}.json')
        for run in ('cpu32_baseline', 'cpu32_aux_ema', 'cpu32_aux4_ema'))),
    'text_to_image_models': Block(render_text_to_image, (
        _scored('gan_int_cls/gan_int_cls', 'gan_int_cls'),
        _scored('stackgan/stage1', 'stackgan1', '--resolution=64 '),
        _scored('stackgan/stage2', 'stackgan2',
                '--resolution=64 --text_encoder=runs/text_encoder/char_cnn_rnn '),
        _scored('dfgan/cpu', 'dfgan', '--resolution=64 '))),
    'style_encoder': Block(render_style_encoder, tuple(
        Source(f'docs/results/gan_int_cls/{name}.json',
               'python -m experiments.style_encoder --config=experiments/configs/'
               f'style_encoder.py --workdir=runs/gan_int_cls/{style} '
               f'--config.gan_workdir=runs/gan_int_cls/{gan} '
               f'--results=docs/results/gan_int_cls/{name}.json')
        for name, style, gan in (('style_encoder', 'style', 'gan_int_cls'),
                                 ('style_encoder_cpu32', 'style_cpu32', 'cpu32')))),
    'index': Block(render_index, ()),
}

# ------------------------------------------------------------------------------ pages

BLOCK_RE = re.compile(r'<!-- results:(?P<name>[\w.-]+) -->\n?(?P<body>.*?)'
                      r'<!-- /results:(?P=name) -->', re.S)
LINK_RE = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
CODE_RE = re.compile(r'`([^`\n]+)`')
CODE_BLOCK_RE = re.compile(r'^```.*?^```', re.S | re.M)
REPO_DIRS = ('jaxgen/', 'experiments/', 'tests/', 'benchmarks/', 'docs/')


def pages(root: str = ROOT) -> list[str]:
  """README.md and docs/*.md, relative to ``root``."""
  found = ['README.md'] if os.path.exists(os.path.join(root, 'README.md')) else []
  found += sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, 'docs', '*.md')))
  return found


def _body(text: str) -> str:
  return '\n' + text.strip('\n') + '\n' if text.strip() else '\n'


def render_block(name: str, page: str, root: str = ROOT, blocks=None):
  """(markdown, problems) for block ``name`` on ``page``; markdown is None when it cannot be made."""
  blocks = BLOCKS if blocks is None else blocks
  if name not in blocks:
    return None, [f'{page}: unknown results block {name!r} (registered: '
                  f'{", ".join(sorted(blocks))})']
  block = blocks[name]
  docs, problems = [], []
  for src in block.sources:
    full = os.path.join(root, src.path)
    doc = load(full)
    if doc is None:
      why = 'has no stamp' if os.path.exists(full) else 'is missing'
      problems.append(f'{page}: block {name!r}: {src.path} {why}; run `{src.command}` to '
                      f'produce it')
    docs.append(doc)
  if problems:
    return None, problems
  _PAGE_DIR[0] = os.path.dirname(page)
  try:
    return _body(block.render(docs, [s.path for s in block.sources])), []
  except (KeyError, TypeError, ValueError, IndexError) as e:
    return None, [f'{page}: block {name!r}: its files do not have the expected contents '
                  f'({type(e).__name__}: {e})']
  finally:
    _PAGE_DIR[0] = ''


def _process(root: str, blocks, write_pages: bool, allow_missing: bool):
  problems, changed = [], []
  for page in pages(root):
    path = os.path.join(root, page)
    with open(path) as f:
      text = f.read()
    page_problems = []

    def replace(match, page=page, page_problems=page_problems):
      name, body = match.group('name'), match.group('body')
      new, probs = render_block(name, page, root, blocks)
      if new is None:
        missing_only = probs and all(_is_missing(p) for p in probs)
        if not (allow_missing and missing_only):
          page_problems.extend(probs)
        return match.group(0)
      if _body(body) != new:
        page_problems.append(f'{page}: block {name!r} differs from what its files give; run '
                             '`python -m jaxgen.results render`')
      return f'<!-- results:{name} -->{new}<!-- /results:{name} -->'

    # Blocks are looked for outside fenced code (where the syntax may be shown as an example).
    parts, last = [], 0
    for fence in CODE_BLOCK_RE.finditer(text):
      parts += [BLOCK_RE.sub(replace, text[last:fence.start()]), fence.group(0)]
      last = fence.end()
    new_text = ''.join(parts + [BLOCK_RE.sub(replace, text[last:])])
    if write_pages:
      page_problems = [p for p in page_problems if 'differs from' not in p]
      if new_text != text:
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
          f.write(new_text)
        os.replace(tmp, path)
        changed.append(page)
    problems += page_problems
    problems += dead_links(page, new_text, root)
  return problems, changed


def dead_links(page: str, text: str, root: str = ROOT) -> list[str]:
  """Links (and code spans naming repository files) on ``page`` that point nowhere."""
  problems = []
  base = os.path.dirname(page)
  for target in LINK_RE.findall(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):
      continue  # http:, mailto:, in-page anchors
    rel = target.split('#', 1)[0]
    if rel and not os.path.exists(os.path.join(root, base, rel)):
      problems.append(f'{page}: dead link {target!r}')
  prose = CODE_BLOCK_RE.sub('', text)
  for span in CODE_RE.findall(prose):
    span = span.strip()
    if not span.startswith(REPO_DIRS) or re.search(r'[\s*{}<>$|]|\.\.\.', span):
      continue
    rel = span.split('::', 1)[0]
    rel = re.sub(r'(\.py):[\w,.-]*$', r'\1', rel)  # config file:variant
    if not os.path.exists(os.path.join(root, rel.rstrip('/'))):
      problems.append(f'{page}: names {span!r}, which does not exist')
  return problems


def check(root: str = ROOT, blocks=None, allow_missing: bool = False) -> list[str]:
  """Every problem with the pages under ``root`` (empty when all is well)."""
  return _process(root, BLOCKS if blocks is None else blocks, False, allow_missing)[0]


def render(root: str = ROOT, blocks=None) -> tuple[list[str], list[str]]:
  """Rewrites every block that its files can make; returns (changed pages, problems).

  Blocks whose files are missing are left as they are and listed among the problems.
  """
  problems, changed = _process(root, BLOCKS if blocks is None else blocks, True, False)
  return changed, problems


def _is_missing(problem: str) -> bool:
  return problem.endswith('to produce it')


# ------------------------------------------------------------------------------ commands


def time_command(argv: Sequence[str], results: str, command: str) -> int:
  """Runs ``argv``; when it succeeds, writes its wall time to ``results`` (made by ``command``)."""
  t0 = time.perf_counter()
  rc = subprocess.call(list(argv))
  seconds = time.perf_counter() - t0
  if rc != 0:
    print(f'{shlex.join(argv)} exited with {rc}; nothing written.', file=sys.stderr)
    return rc
  inner = shlex.join(argv)
  path = write(results, {'command': inner, 'seconds': seconds, 'returncode': rc}, command)
  print(f'{inner}: {_duration(seconds)}; wrote {path}')
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  command = command_line('python -m jaxgen.results', argv)
  inner = []
  if '--' in argv:
    i = argv.index('--')
    argv, inner = argv[:i], argv[i + 1:]
  p = argparse.ArgumentParser(prog='python -m jaxgen.results', description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  for name, text in (('render', 'rewrite the results blocks of README.md and docs/*.md'),
                     ('check', 'exit 1 when a block, a file or a link is wrong')):
    s = sub.add_parser(name, help=text)
    s.add_argument('--root', default=ROOT, help='repository root')
    if name == 'check':
      s.add_argument('--allow-missing', action='store_true',
                     help='do not report blocks whose files are missing (while developing)')
  s = sub.add_parser('list', help='every block, its files and the commands that make them')
  s = sub.add_parser('time', help='run the command after -- and write its wall time')
  s.add_argument('--results', required=True, help='results file to write')
  args = p.parse_args(argv)
  if args.cmd == 'time':
    if not inner:
      p.error('time needs a command after --')
    return time_command(inner, args.results, command)
  if args.cmd == 'list':
    for name, block in BLOCKS.items():
      for src in block.sources:
        print(f'{name}\t{src.path}\t{src.command}')
    return 0
  if args.cmd == 'render':
    changed, problems = render(args.root)
    for page in changed:
      print(f'rewrote {page}')
  else:
    problems = check(args.root, allow_missing=args.allow_missing)
  for problem in problems:
    print(problem, file=sys.stderr)
  if args.cmd == 'render':  # Blocks waiting for their files are no error here; check says so.
    return 1 if any(not _is_missing(p) for p in problems) else 0
  if not problems:
    print(f'ok: {len(pages(args.root))} pages, every results block matches its files, no dead '
          'links')
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main())
