"""The text-encoder family through the engine: both encoders train, evaluate and resume.

Tiny configs (``experiments/configs/text_encoder.py:<encoder>,tiny``: a 112-example
jaxgen_shapes build at 32x32, widths 8-16, 6 steps of 8); retrieval is scored among 10
candidates since the tiny test split has 24 images.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import text_encoder as text_config
from jaxgen.engine import imports, loop
from jaxgen.engine.writers import read_metrics
from jaxgen.families import text_encoder
from jaxgen.losses import text as text_losses
from tests.test_engine import assert_bitwise_equal

ENCODERS = ('char_cnn_rnn', 'bilstm')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('text_encoder_tfds'))


def tiny(encoder, data_dir, **overrides):
  c = text_config.get_config(f'{encoder},tiny')
  c.data.data_dir = data_dir
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.mark.parametrize('encoder', ENCODERS)
def test_trains_evaluates_and_resumes_bitwise(encoder, data_dir, tmp_path):
  cfg = lambda n: tiny(encoder, data_dir, num_steps=n, checkpoint_every=3)
  init = jax.jit(lambda: loop.prepare(cfg(6))[1].build(cfg(6), with_data=False).init(
      jax.random.PRNGKey(0)))()
  full_dir = str(tmp_path / 'full')
  full = loop.train_and_evaluate(cfg(6), full_dir)
  # Both networks trained (every parameter array of each moved).
  for net in ('text', 'image'):
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.nets[net]['params']),
                                                      jax.tree.leaves(full.nets[net]['params']))]
    assert all(moved), net
  records = [r for r in read_metrics(full_dir) if 'finite' in r]
  assert [r['step'] for r in records] == list(range(1, 7))
  assert all(r['finite'] == 1.0 and np.isfinite(r['loss']) for r in records)
  with open(os.path.join(full_dir, loop.EVAL_FILE)) as f:
    final = json.load(f)
  # 24 images x 10 captions, each a query; accuracies are fractions, top-5 >= top-1.
  assert final['test/num_queries'] == 240
  assert 0.0 <= final['test/top1'] <= final['test/top5'] <= 1.0
  assert 0.0 <= final['test/r_precision'] <= 1.0
  # Stopped after 3 steps, then resumed to 6: the same state bit for bit (dropout keys,
  # caption draws and batches are functions of the step).
  half = str(tmp_path / 'half')
  loop.train_and_evaluate(cfg(3), half)
  resumed = loop.train_and_evaluate(cfg(6), half)
  assert int(resumed.step) == 6
  assert_bitwise_equal(full, resumed)


@pytest.mark.parametrize('encoder', ENCODERS)
def test_counterfactual_captions_are_hard_negatives(encoder, data_dir, tmp_path):
  """With data.counterfactual each image's changed caption joins its row of the loss: the
  step's loss and ``batch_counterfactual`` recomputed from the networks, from a batch the
  pipeline wrote; the run resumes bit for bit."""
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  cfg = lambda n=6: tiny(encoder, data_dir, num_steps=n, checkpoint_every=3)  # noqa: E731
  c = cfg()
  with c.data.unlocked():
    c.data.counterfactual = 'shape'
  config, module = loop.prepare(c)
  family = module.build(config, with_data=False)
  assert family.batch_keys[-2:] == captions.COUNTERFACTUAL_KEYS
  assert 'batch_counterfactual' in family.progress_keys
  text, image = text_encoder.make_text_net(config), text_encoder.make_image_net(config)
  batch = next(captions.make_dataset(config.data, 'train', config.batch_size,
                                      seed=config.seed))
  batch = {k: jnp.asarray(batch[k]) for k in family.batch_keys}
  state = jax.jit(family.init)(jax.random.PRNGKey(0))
  _, metrics = jax.jit(family.train_step)(state, batch)
  key = jax.random.fold_in(state.rng, state.step)
  t_vars, i_vars = (base_variables(state.nets[n]) for n in ('text', 'image'))
  s = text.embed(t_vars, batch['caption_ids'], batch['caption_len'], train=True, rng=key)
  hard = text.embed(t_vars, batch['counterfactual_ids'], batch['counterfactual_len'],
                    train=True, rng=jax.random.fold_in(key, 1))
  v = image.apply(i_vars, batch['image'])
  loss = text_encoder.matching_loss(config)
  # float32, the same operations in another order: a few ulps of an O(1) loss.
  np.testing.assert_allclose(float(metrics['loss']), float(loss(v, s, hard_negatives=hard)),
                             rtol=2e-6)
  a, b, h = (np.asarray(x, np.float64) for x in (v, s, hard))
  if config.loss.name == 'damsm':
    a, b, h = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b, h))
  right, changed = np.einsum('nd,nd->n', a, b), np.einsum('nd,nd->n', a, h)
  # The step compares float32 scores: a pair within float32 rounding of a tie (1e-5 of the
  # scores' scale, far above D * 2**-24) may go either way, every other pair must agree.
  near = np.abs(right - changed) <= 1e-5 * np.maximum(np.abs(right), 1.0)
  sure = np.sum((right > changed) & ~near)
  assert sure <= float(metrics['batch_counterfactual']) * len(right) <= sure + np.sum(near)
  # Not vacuous: the hard negatives change the loss.
  assert float(metrics['loss']) > float(loss(v, s)) + 1e-3
  # Every counterfactual caption differs from its caption (in the shape word).
  assert not np.any(np.all(batch['caption_ids'] == batch['counterfactual_ids'], axis=1))
  full_dir, half_dir = str(tmp_path / 'full'), str(tmp_path / 'half')
  full = loop.train_and_evaluate(c, full_dir)
  half = cfg(3)
  with half.data.unlocked():
    half.data.counterfactual = 'shape'
  loop.train_and_evaluate(half, half_dir)
  assert_bitwise_equal(full, loop.train_and_evaluate(c, half_dir))


def base_variables(net):
  return {'params': net['params'], **net['vars']}


def test_evaluation_bookkeeping(data_dir):
  """``embed_split`` pairs every caption with its own image: with an "image encoder" that
  returns the text embedding of the image's first caption, each first caption retrieves its
  image (cosine 1) and the query list is image-major, 10 captions per image."""
  from jaxgen.data import captions  # pylint: disable=g-import-not-at-top
  from jaxgen.metrics import retrieval  # pylint: disable=g-import-not-at-top
  c = tiny('bilstm', data_dir)
  text = text_encoder.make_text_net(c)
  data = captions.load_caption_split(c.data, 'test', text.tokenizer, whole=True)
  params = text.init(jax.random.PRNGKey(1))
  first = np.asarray(text.embed(params, data['caption_ids'][:, 0], data['caption_len'][:, 0]))

  class FirstCaption:
    def apply(self, variables, x):
      del variables
      return jnp.asarray(first)[:x.shape[0]]

  net = {'params': params['params'], 'vars': {}}
  cap, true, img = text_encoder.embed_split(text, FirstCaption(), {'text': net, 'image': net},
                                            data, batch_size=len(first))
  assert cap.shape == (240, text.dim) and img.shape == (24, text.dim)
  np.testing.assert_array_equal(true, np.repeat(np.arange(24), 10))
  # Padded batches of 24 captions give the same embeddings as one unpadded call.
  np.testing.assert_allclose(cap[::10], first, atol=1e-6)
  got = retrieval.caption_to_image_retrieval(cap[::10], img, true[::10], num_candidates=10)
  assert got == {'top1': 1.0, 'top5': 1.0}


@pytest.mark.parametrize('encoder', ENCODERS)
def test_bad_text_gives_finite_outputs(encoder, data_dir):
  c = tiny(encoder, data_dir)
  text = text_encoder.make_text_net(c)
  bad = ['', '\u00a7\u00a7 \u00fcnknown \u2713 \U0001F426', 'zzzz qqqq xyzzy',
         'a big red circle ' * 100, '!!! ... ???']
  ids, lens = text.tokenizer.encode_batch(bad)
  assert lens[0] == 0 and lens[3] == text.tokenizer.max_len  # empty; truncated
  params = text.init(jax.random.PRNGKey(0))
  for train in (False, True):
    out = text.embed(params, jnp.asarray(ids), jnp.asarray(lens), train=train,
                     rng=jax.random.PRNGKey(1))
    assert out.shape == (len(bad), text.dim) and np.isfinite(np.asarray(out)).all()
  image_emb = jax.random.normal(jax.random.PRNGKey(2), (len(bad), text.dim))
  loss = text_encoder.matching_loss(c)

  def loss_fn(p):
    return loss(image_emb, text.embed(p, jnp.asarray(ids), jnp.asarray(lens)))
  value, grads = jax.value_and_grad(loss_fn)(params)
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_text_network_is_what_other_runs_import(data_dir, tmp_path):
  """A text-to-image config that calls ``set_text`` with the same argument builds, with
  ``make_text_net``, exactly the arrays the engine's ``init_from`` takes from this run."""
  workdir = str(tmp_path / 'enc')
  loop.train_and_evaluate(tiny('bilstm', data_dir, num_steps=3), workdir)
  other = text_config.set_text(tiny('char_cnn_rnn', data_dir), 'bilstm,tiny')
  net = text_encoder.make_text_net(other)
  built = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  loaded, where = imports.load_net(f'{workdir}:text', 'text')
  assert where.endswith(':text at step 3')
  shapes = lambda tree: {jax.tree_util.keystr(k): (tuple(v.shape), np.dtype(v.dtype))
                         for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert shapes(loaded['params']) == shapes(built['params'])
  assert "['embed']['embedding']" in shapes(built['params'])


@pytest.mark.parametrize('change,match', [
    ({'text.encoder': 'gpt'}, "Unknown text.encoder 'gpt'; accepted: char_cnn_rnn, bilstm"),
    ({'data.tokenizer': 'word'}, "reads 'char' tokens, but data.tokenizer is 'word'"),
    ({'text.char_cnn_rnn.width': 3}, r"unknown fields \['width'\]; accepted: conv_features"),
    ({'loss.name': 'clip'}, "Unknown loss.name 'clip'; accepted: joint_embedding, damsm"),
    ({'eval.similarity': 'l2'}, "Unknown eval.similarity 'l2'; accepted: cosine, dot"),
    ({'data.name': 'jaxgen_digits'}, 'trains on a caption dataset'),
    ({'eval.num_candidates': 30}, r'has 24 images, fewer than eval.num_candidates=30'),
])
def test_config_errors_name_the_problem(change, match, data_dir, tmp_path):
  c = tiny('char_cnn_rnn', data_dir)
  for key, value in change.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    with node.unlocked():
      node[leaf] = value
  with pytest.raises(ValueError, match=match):
    loop.train_and_evaluate(c, str(tmp_path / 'w'))


def test_config_variants():
  for arg in ('char_cnn_rnn', 'bilstm', 'char_cnn_rnn,paper', 'bilstm,paper', 'tiny',
              'char_cnn_rnn,cpu_long', 'bilstm,cpu_long', 'bilstm,cpu64', 'char_cnn_rnn,cpu64'):
    c = text_config.get_config(arg)
    text_encoder.validate(c)
  for encoder in ('char_cnn_rnn', 'bilstm'):
    # cpu_long trains the cpu network 4x longer and cpu64 against 64x64 images, so a
    # text-to-image config built for the cpu encoder imports their weights unchanged: same
    # module fields, same tokenizer.
    cpu, long, r64 = (text_config.get_config(f'{encoder},{s}')
                      for s in ('cpu', 'cpu_long', 'cpu64'))
    assert long.text == cpu.text and long.data == cpu.data
    assert text_encoder.text_structure(long) == text_encoder.text_structure(cpu)
    assert (cpu.num_steps, long.num_steps, r64.num_steps) == (1500, 6000, 3000)
    assert r64.text == cpu.text
    assert text_encoder.text_structure(r64) == text_encoder.text_structure(cpu)
    assert (r64.data.resolution, tuple(r64.image.features)) == (64, (32, 64, 128, 256))
    assert {k: v for k, v in r64.data.items() if k != 'resolution'} == {
        k: v for k, v in cpu.data.items() if k != 'resolution'}
  paper = text_config.get_config('char_cnn_rnn,paper')
  assert text_encoder.text_dim(paper) == 1024  # Reed et al.'s 1024-d embedding
  assert text_encoder.text_dim(text_config.get_config('bilstm,paper')) == 256  # 2 x 128
  # counterfactual: only data.counterfactual changes, so the text network is the same one.
  for arg in ('char_cnn_rnn,cpu_long', 'bilstm,cpu64', 'tiny'):
    plain, cf = text_config.get_config(arg), text_config.get_config(f'{arg},counterfactual')
    text_encoder.validate(cf)
    assert (plain.data.counterfactual, cf.data.counterfactual) == ('', 'shape')
    with cf.unlocked():
      cf.data.counterfactual = ''
    assert cf == plain
    assert text_config.parse(f'{arg},counterfactual') == text_config.parse(arg)
  with pytest.raises(ValueError, match='"<encoder>\\[,<size>\\]\\[,counterfactual\\]"'):
    text_config.get_config('bilstm,huge')
  assert text_losses.FORMS == ('softmax', 'hinge')
