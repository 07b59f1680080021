"""jaxgen.metrics.background: background colours, named backgrounds, the scores."""
import numpy as np
import pytest

from jaxgen.data import shapes, text
from jaxgen.metrics import background


def _renders(split, n, res):
  examples = [shapes.sample_example(split, i) for i in range(n)]
  images = np.stack([shapes.render(e, res) for e in examples]).astype(np.float32) / 127.5 - 1
  return images, np.array([e.background for e in examples])


@pytest.mark.parametrize('res', [32, 64])
def test_border_finds_the_exact_background_of_real_renders(res):
  images, labels = _renders('heldout', 120, res)
  # Objects never reach the border, so the ring's median is the background colour itself
  # (float32 of x / 127.5 - 1, hence the float32 ulp at 1).
  np.testing.assert_allclose(background.border_colours(images), background.palette()[labels],
                             rtol=0, atol=2 ** -23)
  np.testing.assert_array_equal(background.background_ids(images), labels)
  uint8 = (images + 1) * 127.5
  np.testing.assert_array_equal(background.background_ids(uint8, 'uint8'), labels)


def test_names_background_against_captions_made_with_and_without_a_mention(monkeypatch):
  examples = [shapes.sample_example('train', i) for i in range(200)]
  mention_p = shapes.BACKGROUND_MENTION_P
  made = {}
  for p in (0.0, 1.0):  # BACKGROUND_MENTION_P: never / always name the background
    monkeypatch.setattr(shapes, 'BACKGROUND_MENTION_P', p)
    rng = np.random.default_rng(0)
    made[p] = [shapes.make_caption(rng, e.objects, e.background) for e in examples]
  assert not background.names_background(made[0.0]).any()
  assert background.names_background(made[1.0]).all()
  # As the word tokenizer's decode writes them ("dark blue", lower case, no punctuation).
  vocab = text.WordVocab.build(made[0.0] + made[1.0], max_len=40)
  decoded = [vocab.decode(ids) for ids in vocab.encode_batch(made[1.0])[0]]
  assert background.names_background(decoded).all()
  # The stored captions name it about BACKGROUND_MENTION_P of the time (2,000 captions: the
  # binomial standard deviation is 0.01).
  stored = [c for e in examples for c in e.captions]
  assert abs(background.names_background(stored).mean() - mention_p) < 0.05


def _flat(ids, res=8):
  pal = background.palette()
  images = np.repeat(np.repeat(pal[np.asarray(ids)][:, None, None, :], res, 1), res, 2)
  images[:, 2:5, 2:5] = 0.9  # an object inside the frame
  return images


def test_scores_by_hand():
  labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
  drawn = np.array([0, 0, 0, 0, 0, 1, 2, 3])  # 5 black, one of each other
  named = np.array([True, True, False, False, True, False, False, True])
  out = background.background_scores(_flat(drawn), labels, named)
  assert [out[f'background/{b}'] for b in shapes.BACKGROUNDS] == [5 / 8, 1 / 8, 1 / 8, 1 / 8]
  # Real mix: 1/4 each. TV = 0.5 * (|5/8 - 1/4| + 3 * |1/8 - 1/4|) = 0.5 * (3/8 + 3/8).
  assert out['background/tv'] == pytest.approx(3 / 8, abs=1e-15)
  # Named: images 0, 1, 4, 7 show 0, 0, 0, 3 for labels 0, 1, 0, 3: 3 of 4.
  assert out['background/named_accuracy'] == 0.75 and out['background/num_named'] == 4
  same = background.background_scores(_flat(labels), labels, named)
  assert same['background/tv'] == 0.0 and same['background/named_accuracy'] == 1.0
  # Disjoint mixes are 1 apart.
  far = background.background_scores(_flat([1, 1]), [0, 0], [False, False])
  assert far['background/tv'] == 1.0 and far['background/named_accuracy'] is None


def test_agreement_by_hand_and_its_real_reference():
  # Pairs (0, 0), (1, 2), (3, 3), (2, 2): 3 of 4 agree.
  assert background.agreement(_flat([0, 1, 3, 2]), _flat([0, 2, 3, 2])) == 0.75
  # Labels mix (1/2, 1/4, 1/4, 0): sum p^2 = 3/8; 1 of 4 captions named: 1/4 + 3/4 * 3/8.
  labels, named = [0, 0, 1, 2], [False, True, False, False]
  assert background.expected_agreement(labels, named) == pytest.approx(1 / 4 + 3 / 4 * 3 / 8,
                                                                       abs=1e-15)
  # Monte Carlo of its definition: a second real image of each caption keeps a named
  # background and draws an unnamed one from the mix (200,000 pairs: the binomial standard
  # deviation is about 0.0011, so 0.006 is over 5 of them).
  rng = np.random.default_rng(0)
  n = 200_000
  lab = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
  nam = rng.random(n) < 0.3
  other = np.where(nam, lab, rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1]))
  assert abs(np.mean(other == lab) - background.expected_agreement(lab, nam)) < 0.006


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match=r'images \[N, H, W, C\] of at least 3x3'):
    background.border_colours(np.zeros((2, 2, 2, 3)))
  with pytest.raises(ValueError, match='Expected 3 channels'):
    background.background_ids(np.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match='one entry per image; got 2, 3 and 2'):
    background.background_scores(_flat([0, 1]), [0, 1, 2], [True, False])
  with pytest.raises(ValueError, match=r'background indices in \[0, 4\); got values in \[0, 7\]'):
    background.background_scores(_flat([0, 1]), [0, 7], [True, False])
  with pytest.raises(ValueError, match="Unknown scale 'rgb'"):
    background.palette('rgb')
  with pytest.raises(ValueError, match='two equal, non-empty sets of images; got 2 and 1'):
    background.agreement(_flat([0, 1]), _flat([0]))
  with pytest.raises(ValueError, match='one entry per image; got 2 and 1'):
    background.expected_agreement([0, 1], [True])
