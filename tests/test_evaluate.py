"""Evaluators by name, their caches, the engine's periodic evaluation and `python -m jaxgen.evaluate`."""
import json
import os

import numpy as np
import pytest

from jaxgen import evaluate
from jaxgen.data import pipeline
from jaxgen.metrics import evaluators, inception, scores
from jaxgen.engine import loop
from jaxgen.engine import workdir as workdir_lib
from jaxgen.engine.writers import read_metrics

CLASSIFIER_STEPS = 150  # a quick classifier: these tests check plumbing, not its accuracy


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('eval_cache'))


def eval_config(tfds_dir, cache, family='gan', **overrides):
  from experiments.configs import dcgan, vae
  # 16x16 digits, both families.
  cfg = dcgan.get_config('tiny') if family == 'gan' else vae.get_config('tiny')
  cfg.data.data_dir = tfds_dir
  cfg.eval_cache_dir = cache
  cfg.eval_classifier_steps = CLASSIFIER_STEPS
  cfg.eval_num_samples = 64
  cfg.eval_kid_subsets = 5
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


@pytest.fixture(scope='module')
def digits16(tfds_dir, cache):
  """The config every test uses, with its (quick) classifier trained once."""
  cfg = eval_config(tfds_dir, cache)
  evaluators.shared_extractor('digits', cfg)
  return cfg


@pytest.fixture(scope='module')
def run(tfds_dir, cache, tmp_path_factory, digits16):
  """A 20-step tiny DCGAN run evaluated by the engine at steps 10 and 20."""
  workdir = str(tmp_path_factory.mktemp('runs') / 'tiny')
  cfg = eval_config(tfds_dir, cache, evaluators=('digits_is', 'digits_fid', 'digits_kid'),
                    eval_every=10)
  assert cfg.num_steps == 20
  loop.train_and_evaluate(cfg, workdir)
  return cfg, workdir


@pytest.fixture(scope='module')
def vae_run(tfds_dir, cache, tmp_path_factory, digits16):
  """A 20-step tiny VAE run, its samples scored by the engine at steps 10 and 20."""
  workdir = str(tmp_path_factory.mktemp('runs') / 'tiny_vae')
  cfg = eval_config(tfds_dir, cache, family='vae',
                    evaluators=('digits_is', 'digits_fid', 'digits_kid'), eval_every=10,
                    write_figures=False)
  assert cfg.num_steps == 20 and cfg.data.resolution == 16
  loop.train_and_evaluate(cfg, workdir)
  return cfg, workdir


def test_names_and_refusals(tfds_dir, cache, tmp_path, monkeypatch):
  assert set(evaluators.NAMES) >= {'digits_is', 'digits_fid', 'digits_kid', 'inception_is',
                                   'inception_fid', 'inception_kid'}
  with pytest.raises(ValueError, match='Unknown evaluator'):
    evaluators.check_name('digits_lpips')
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'c'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 't'))
  for name in ('inception_is', 'inception_fid', 'inception_kid'):
    with pytest.raises(inception.InceptionWeightsNotFoundError, match='never scores with random'):
      evaluators.make_evaluator(name, eval_config(tfds_dir, cache))
  cfg = eval_config(tfds_dir, cache)
  cfg.data.name = 'cifar10'
  with pytest.raises(ValueError, match='inception_fid'):
    evaluators.make_evaluator('digits_fid', cfg)


def test_trainer_logs_periodic_evaluations(run):
  _, workdir = run
  evals = [r for r in read_metrics(workdir) if 'eval/digits_fid' in r]
  assert [r['step'] for r in evals] == [10, 20]
  for r in evals:
    assert 1.0 <= r['eval/digits_is'] <= 10.0
    assert r['eval/digits_is_std'] >= 0
    assert r['eval/digits_fid'] > 0 and np.isfinite(r['eval/digits_kid'])
  # eval.json holds the evaluation at the last step (a GAN has no evaluation of its own).
  with open(os.path.join(workdir, loop.EVAL_FILE)) as f:
    final = json.load(f)
  assert final == {'step': 20, **{k: v for k, v in evals[-1].items() if k.startswith('eval/')}}


def test_real_data_scores_match_direct_computation(digits16, tfds_dir, cache):
  real, _ = pipeline.load_split_arrays(digits16.data, 'train')
  calls = []

  def generate(num, seed):  # "generates" the reference set itself
    calls.append((num, seed))
    return real[:num]
  cfg = eval_config(tfds_dir, cache, eval_num_samples=len(real), eval_seed=3)
  results = {}
  for name in ('digits_is', 'digits_fid', 'digits_kid'):
    results.update(evaluators.make_evaluator(name, cfg).run(generate))
  assert calls == [(len(real), 3)]  # one generation shared by the three evaluators
  clf = evaluators.shared_extractor('digits', cfg)
  out = clf(real)
  ref = evaluators.make_evaluator('digits_fid', cfg).reference()
  # The premise of the bounds below: the same images through the same jitted extractor in the
  # same batches give the same float32 features, bit for bit (XLA:CPU is deterministic), and
  # the reference statistics are exactly those of these features.
  np.testing.assert_array_equal(ref['features'], out['features'])
  stats = scores.gaussian_stats(out['features'])
  np.testing.assert_array_equal(ref['stats'].sigma, stats.sigma)
  np.testing.assert_array_equal(ref['stats'].mu, stats.mu)
  # FID of a set with itself: mu1 = mu2 and S1 = S2 = S exactly, so FID = 2 tr S - 2 sum_i
  # sqrt(m_i), m_i the eigenvalues of S^1/2 S S^1/2 = S^2: zero in exact arithmetic. In
  # float64, the symmetric eigensolver returns each m_i with an absolute error up to
  # delta = D eps ||S^2|| = D eps lmax^2 (backward stable; forming S^1/2 and the product adds
  # the same order). sqrt turns an absolute error delta into at most sqrt(delta) = sqrt(D eps)
  # lmax, reached by the eigenvalues at the noise floor - and S is rank-deficient here (ReLU
  # features with dead and collinear units), so many sit there; elsewhere the error is
  # delta / (2 sqrt m_i) < sqrt(delta). Summed over the D eigenvalues and doubled:
  # |FID| <= 2 D sqrt(D eps) lmax. (D = 128: 4.3e-5 lmax. 1e-6, the old tolerance, was what
  # one AVX2 CPU happened to give; an AVX-512 CPU gave 1.65e-6.)
  d = stats.sigma.shape[0]
  lmax = np.linalg.eigvalsh(stats.sigma)[-1]
  fid_bound = 2 * d * np.sqrt(d * np.finfo(np.float64).eps) * lmax
  assert abs(results['digits_fid']) <= fid_bound, (results['digits_fid'], fid_bound)
  # IS and KID: the evaluators call scores.inception_score / scores.kernel_distance on these
  # same features with these same arguments (10 splits; 5 subsets of min(1000, N), seed 3), a
  # deterministic float64 computation, so the results are the same numbers exactly.
  expected = scores.inception_score(out['logits'], num_splits=10)
  assert results['digits_is'] == expected.mean
  assert results['digits_is_std'] == expected.std
  kid = scores.kernel_distance(out['features'], out['features'], num_subsets=5,
                               subset_size=1000, seed=3)
  assert results['digits_kid'] == kid.mean
  assert results['digits_kid_std'] == kid.std


def test_noise_scores_far_worse_than_real(digits16, tfds_dir, cache):
  cfg = eval_config(tfds_dir, cache, eval_num_samples=200)
  rng = np.random.default_rng(0)
  real, _ = pipeline.load_split_arrays(cfg.data, 'test', max_examples=200)

  def noise(num, seed):
    return rng.uniform(-1, 1, size=(num, 16, 16, 1)).astype(np.float32)
  fid = evaluators.make_evaluator('digits_fid', cfg)
  real_fid = dict(fid.run(lambda num, seed: real[:num]))['digits_fid']
  noise_fid = dict(fid.run(noise))['digits_fid']
  assert noise_fid > 10 * real_fid
  with pytest.raises(ValueError, match='must return 200'):
    fid.run(lambda num, seed: real[:10])


def test_reference_statistics_cached_on_disk(digits16, tfds_dir, cache, monkeypatch):
  cfg = eval_config(tfds_dir, cache)
  ev = evaluators.make_evaluator('digits_fid', cfg)
  first = ev.reference()
  files = os.listdir(os.path.join(cache, 'reference'))
  assert any(f.endswith('.npz') for f in files) and any(f.endswith('.json') for f in files)
  evaluators._REFERENCE.clear()  # pylint: disable=protected-access  # as a new process
  monkeypatch.setattr(pipeline, 'load_split_arrays',
                      lambda *a, **k: pytest.fail('reference recomputed'))
  again = ev.reference()
  np.testing.assert_array_equal(again['stats'].sigma, first['stats'].sigma)
  np.testing.assert_array_equal(again['features'], first['features'])


def check_cli_matches_last_evaluation(workdir, capsys):
  rc = evaluate.main(['--workdir', workdir, '--metrics', 'is,fid,kid', '--num_samples', '64',
                      '--no_progress'])
  assert rc == 0
  assert 'digits_fid' in capsys.readouterr().out
  with open(os.path.join(workdir, evaluate.RESULTS_FILE)) as f:
    record = json.loads(f.readlines()[-1])
  assert record['step'] == 20 and record['num_samples'] == 64 and record['source'] == 'generated'
  assert set(record['metrics']) == {'digits_is', 'digits_is_std', 'digits_fid', 'digits_kid',
                                    'digits_kid_std'}
  # Same checkpoint, same z (eval_seed), same protocol: the trainer's last evaluation.
  final = [r for r in read_metrics(workdir) if r['step'] == 20 and 'eval/digits_fid' in r][0]
  for k in ('digits_is', 'digits_fid', 'digits_kid'):
    assert record['metrics'][k] == pytest.approx(final[f'eval/{k}'], rel=1e-4, abs=1e-6)


def test_cli_on_trained_run_matches_trainer(run, capsys):
  check_cli_matches_last_evaluation(run[1], capsys)


def test_cli_on_trained_vae_run_matches_trainer(vae_run, capsys):
  """The CLI samples a VAE through the family's ``sample``, as the engine's evaluation."""
  _, workdir = vae_run
  with open(os.path.join(workdir, loop.EVAL_FILE)) as f:
    final = json.load(f)
  assert final['step'] == 20 and np.isfinite(final['test/elbo'])
  assert 1.0 <= final['eval/digits_is'] <= 10.0 and final['eval/digits_fid'] > 0
  check_cli_matches_last_evaluation(workdir, capsys)


def test_cli_real_split_and_errors(tfds_dir, cache, tmp_path, capsys, monkeypatch, digits16):
  out = str(tmp_path / 'real.json')
  rc = evaluate.main(['--real_split', 'test', '--dataset', 'jaxgen_digits', '--resolution', '16',
                      '--data_dir', tfds_dir, '--cache_dir', cache, '--metrics', 'is,fid',
                      '--classifier_steps', str(CLASSIFIER_STEPS), '--output', out,
                      '--no_progress'])
  assert rc == 0
  with open(out) as f:
    record = json.load(f)
  assert record['source'] == 'real:test' and record['num_samples'] == 359
  assert 1.0 < record['metrics']['digits_is'] <= 10.0 and record['metrics']['digits_fid'] > 0
  assert evaluate.main(['--metrics', 'fid']) == 2
  assert 'Pass --workdir' in capsys.readouterr().err
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'c'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 't'))
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), 'w') as f:
    f.write(digits16.to_json())
  assert evaluate.main(['--workdir', workdir, '--metrics', 'inception_fid']) == 2
  assert 'InceptionV3 FID weights not found' in capsys.readouterr().err
  with pytest.raises(ValueError, match='Unknown evaluator'):
    evaluate.metric_names('is,lpips', 'auto', 'jaxgen_digits')
  assert evaluate.metric_names('fid,inception_is', 'auto', 'jaxgen_digits') == [
      'digits_fid', 'inception_is']
  assert evaluate.metric_names('fid', 'auto', 'cifar10') == ['inception_fid']
