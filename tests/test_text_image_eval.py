"""The text-image scoring of a finished GAN-INT-CLS run (jaxgen.text_image_eval) and the
launcher's ``--results`` file.

End to end on the tiny 16x16 build of test_gan_int_cls: a text-encoder run, a GAN-INT-CLS run
importing its text network, then ``score_run``. Each number is recomputed independently from
its definition: the images from G and phi applied by hand to the chosen captions and latents,
the accuracies and FID from the classifier's outputs, R-precision from the text-encoder run's
own networks.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import launch
from jaxgen import results, text_image_eval, text_to_image
from jaxgen.data import captions, shapes
from jaxgen.engine import loop
from jaxgen.families import gan_int_cls
from jaxgen.families import text_conditioning as tc
from jaxgen.metrics import attributes, background, retrieval, scores
from tests import test_gan_int_cls as tgc
from tests import test_text_encoder_family as tef

shapes_dir = tgc.shapes_dir  # the fixture


def test_pick_captions_rotates_through_each_images_captions():
  n, c, l = 5, 4, 3
  ids = np.arange(n * c * l).reshape(n, c, l)
  lens = np.arange(n * c).reshape(n, c) + 100
  num = np.array([4, 4, 2, 1, 3])
  data = {'caption_ids': ids, 'caption_len': lens, 'num_captions': num}
  got_ids, got_len = text_image_eval.pick_captions(data, seed=1)
  want = [(i + 1) % num[i] for i in range(n)]  # caption (i + seed) mod num_captions[i]
  assert want == [1, 2, 1, 0, 2]
  np.testing.assert_array_equal(got_ids, ids[np.arange(n), want])
  np.testing.assert_array_equal(got_len, lens[np.arange(n), want])


def test_text_encoder_dir_reads_the_import_spec():
  cfg = tgc.gic_config.get_config('tiny')
  assert text_image_eval.text_encoder_dir(cfg) is None
  for spec, want in (('runs/te:text', 'runs/te'), ('runs/te', 'runs/te'),
                     ('gs://bucket/te', 'gs://bucket/te'),
                     ('gs://bucket/te:text', 'gs://bucket/te')):
    cfg.init_from = {'text': spec}
    assert text_image_eval.text_encoder_dir(cfg) == want, spec


def test_train_seconds_sum_the_logged_rates(tmp_path):
  recs = [{'step': 50, 'steps_per_sec': 2.0}, {'step': 100, 'steps_per_sec': 5.0},
          {'step': 100, 'eval/x': 1.0}, {'step': 150, 'steps_per_sec': 1.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
  cfg = tgc.gic_config.get_config('tiny')
  out = text_image_eval.train_summary(str(tmp_path), cfg)
  assert out['train_seconds'] == 50 / 2.0 + 50 / 5.0 + 50 / 1.0
  assert (out['cls'], out['interp'], out['num_steps']) == (True, True, cfg.num_steps)


def test_scores_of_a_finished_run_match_their_definitions(shapes_dir, tmp_path, monkeypatch):
  te_cfg = tef.tiny('char_cnn_rnn', shapes_dir, num_steps=2, checkpoint_every=2)
  with te_cfg.data.unlocked():
    te_cfg.data.builder_config, te_cfg.data.resolution = 'tiny16', 16
  te_dir = str(tmp_path / 'text_encoder')
  loop.train_and_evaluate(te_cfg, te_dir)
  gan_dir = str(tmp_path / 'gan')
  loop.train_and_evaluate(tgc.tiny_config(shapes_dir, num_steps=2, text_from=te_dir), gan_dir)
  # A classifier trained for a few steps: the scores are checked against their definitions,
  # not for quality.
  clf_cache = str(tmp_path / 'clf')
  real_get = attributes.get_attribute_classifier
  monkeypatch.setattr(attributes, 'get_attribute_classifier', lambda cfg: real_get(
      cfg, clf_cache, recipe=attributes.TrainRecipe(num_steps=3, batch_size=8)))
  k = 4  # candidates: at most the 8 held-out images
  out = text_image_eval.score_run(gan_dir, num_candidates=k, seed=3,
                                  figure=str(tmp_path / 'fig.png'))
  assert out['step'] == 2 and out['text_encoder'] == te_dir
  assert out['train']['cls'] and out['train']['interp']
  assert os.path.exists(out['figure'])

  run = text_to_image.load(gan_dir)
  # Parameters of G and D; the frozen caption encoder is not counted.
  assert out['parameters'] == {
      name: sum(x.size for x in jax.tree_util.tree_leaves(run.nets[name]['params']))
      for name in ('g', 'd')}
  clf = attributes.get_attribute_classifier(run.config.data)
  retr = text_image_eval.Retrieval(te_dir)
  for split, n in (('test', 16), ('heldout', 8)):
    got = out[split]
    assert got['num_images'] == n
    data = captions.load_caption_split(run.config.data, split, run.text.tokenizer, whole=True)
    j = (np.arange(n) + 3) % data['num_captions']
    ids, lens = data['caption_ids'][np.arange(n), j], data['caption_len'][np.arange(n), j]
    # The images: G(z_i, phi(caption_i)), all at once (the scorer pads batches of 250).
    z = jax.random.normal(jax.random.PRNGKey(3), (n, run.config.model.latent_dim))
    t = tc.embed(run.text, run.nets['text'], {'caption_ids': jnp.asarray(ids),
                                              'caption_len': jnp.asarray(lens)})
    fake = np.asarray(gan_int_cls.generate(run.generator, run.nets['g'], z, t))
    labels = {key: data[key] for key in attributes.OBJECT_KEYS}
    for name, images in (('generated', fake), ('real', data['image'])):
      outputs = clf(images)
      acc = attributes.attribute_accuracy(outputs, labels)
      for key in ('shape', 'colour', 'size', 'position', 'count'):
        assert got[name][key] == acc[key], (split, name, key)
      first = dict(labels, object_position=np.where(np.arange(2) == 0,
                                                    labels['object_position'], -1))
      assert got[name]['first/shape'] == attributes.attribute_accuracy(outputs,
                                                                       first)['shape']
      # R-precision from the text-encoder run's networks (16x16 both: no resize).
      img = retr.image_embeddings(images)
      cap = retr.caption_embeddings(ids, lens)
      assert got[name]['r_precision'] == retrieval.r_precision(
          img, cap, num_candidates=k, seed=3, similarity=te_cfg.eval.similarity)
      # Backgrounds: each caption as the run's encoder reads it names the background or not.
      named = background.names_background([run.text.tokenizer.decode(i) for i in ids])
      want = background.background_scores(images, data['background'], named)
      assert {k: v for k, v in got[name].items()
              if k.startswith('background/') and k != 'background/agreement'} == want
    # The real images show their own backgrounds: the same mix, every named one right.
    assert got['real']['background/tv'] == 0.0
    assert got['real']['background/named_accuracy'] in (1.0, None)
    # A second draw of every caption with the latents of seed + 1.
    z2 = jax.random.normal(jax.random.PRNGKey(4), (n, run.config.model.latent_dim))
    again = np.asarray(gan_int_cls.generate(run.generator, run.nets['g'], z2, t))
    assert got['generated']['background/agreement'] == background.agreement(fake, again)
    assert got['real']['background/agreement'] == background.expected_agreement(
        data['background'], named)
    real_feats = clf(data['image'])['features']
    want_fid = scores.fid_from_stats(scores.gaussian_stats(clf(fake)['features']),
                                     scores.gaussian_stats(real_feats))
    # The same features (one classifier call of <= 250 images each way) and the same code.
    assert got['generated']['fid'] == want_fid

  with pytest.raises(ValueError, match="builder config 'tiny16'"):
    text_image_eval.score_run(gan_dir, resolution=32)  # tiny16 has no standard 32x32 build
  # Scored at another resolution: real images rendered at 32x32, G's 16x16 ones resized.
  monkeypatch.setitem(shapes.JaxgenShapes.builder_configs, 'tiny32', shapes.JaxgenShapesConfig(
      resolution=32, split_sizes=tgc.TINY_SHAPES.split_sizes, name='tiny32'))
  cfg32 = run.config.data.copy_and_resolve_references()
  with cfg32.unlocked():
    cfg32.resolution, cfg32.builder_config = 32, 'tiny32'
  clf32 = attributes.get_attribute_classifier(cfg32)
  got = text_image_eval.score_split(run, clf32, None, 'test', seed=3, data_config=cfg32)
  data = captions.load_caption_split(cfg32, 'test', run.text.tokenizer, whole=True)
  assert data['image'].shape[1:] == (32, 32, 3)
  j = (np.arange(16) + 3) % data['num_captions']
  ids, lens = data['caption_ids'][np.arange(16), j], data['caption_len'][np.arange(16), j]
  z = jax.random.normal(jax.random.PRNGKey(3), (16, run.config.model.latent_dim))
  t = tc.embed(run.text, run.nets['text'], {'caption_ids': jnp.asarray(ids),
                                            'caption_len': jnp.asarray(lens)})
  fake = text_image_eval.resize(gan_int_cls.generate(run.generator, run.nets['g'], z, t), 32)
  labels = {key: data[key] for key in attributes.OBJECT_KEYS}
  assert got['generated']['shape'] == attributes.attribute_accuracy(clf32(fake), labels)['shape']


def test_resize_is_antialiased_and_identity_at_equal_size():
  x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(text_image_eval.resize(x, 8), x)
  y = text_image_eval.resize(x, 4)
  assert y.shape == (2, 4, 4, 3)
  # The kernel's weights are normalised: a constant image stays constant (float32 rounding of
  # a sum of 16 weights: a few ulp of 0.25).
  np.testing.assert_allclose(text_image_eval.resize(np.full((1, 8, 8, 3), 0.25), 4), 0.25,
                             atol=1e-6)
  # Antialiased: halving a checkerboard (the highest frequency) gives its mean, 0, not an
  # alias of one colour (a plain subsample would give all +1 or all -1). Away from the border
  # the 4x4 triangle kernel is symmetric about each output centre, so the +1 and -1 weights
  # cancel exactly up to float32 rounding.
  board = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0
  z = text_image_eval.resize(np.broadcast_to(board[None, :, :, None], (1, 8, 8, 3)), 4)
  np.testing.assert_allclose(z[0, 1:-1], 0.0, atol=1e-6)


def test_launcher_results_file_holds_eval_json(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  cfg = tgc.gic_config.get_config('tiny')
  path = str(tmp_path / 'res' / 'r.json')
  with pytest.raises(ValueError, match='eval.json is missing'):
    launch.write_results(path, cfg, str(workdir), 1.0)
  assert not os.path.exists(path)  # nothing half-written
  (workdir / loop.EVAL_FILE).write_text(json.dumps({'step': 4, 'style/roc_auc': 0.75}))
  launch.write_results(path, cfg, str(workdir), 12.5)
  doc = results.load(path)
  assert doc['result']['eval'] == {'step': 4, 'style/roc_auc': 0.75}
  assert doc['result']['wall_seconds_this_call'] == 12.5
  assert doc['result']['config'] == json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists
  assert doc['command'].startswith('python -m ')
