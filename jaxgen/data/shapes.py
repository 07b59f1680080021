"""``jaxgen_shapes``: an embedded, procedurally rendered caption dataset (no download).

A stand-in for CUB/Oxford-102 that builds in seconds and whose ground truth is known, for
testing text-to-image models (GAN-INT-CLS of Reed et al. 2016, StackGAN, DF-GAN) end to end.
Each image holds one or two flat objects drawn over a plain background. Every object has

* a shape (``SHAPES``: circle, square, triangle, star, cross, diamond),
* a colour (``COLOURS``: eight saturated colours, none of them a background colour),
* a size (small / large) and
* a position (top / bottom / left / right / centre; two objects never share a position).

The background colour (``BACKGROUNDS``) is the "style" of the image: each caption names it
only with probability ``BACKGROUND_MENTION_P``. Small per-image variations (a jitter of the
position, the size and, for non-circles, a rotation) make images with equal attributes differ.

Each image has ``CAPTIONS_PER_IMAGE`` = 10 captions drawn from sentence templates, synonyms
("crimson", "scarlet"; "disc"; "tiny"; "in the middle", ...) and word orders; every caption
names every object's colour, shape, size and position.

Splits (sizes in ``SPLIT_SIZES``). Measured on a shared 2-core CPU, building all 5,000
examples took 15 s of CPU time at 64x64 (7.4 MB on disk) and 28 s at 256x256 (12 MB);
a :class:`JaxgenShapesConfig` with smaller ``split_sizes`` builds proportionally faster.

* ``train`` (4,000) and ``test`` (500): objects only ever use the colour-shape pairs *not* in
  ``HELDOUT_PAIRS``; the test images are new draws of the same combinations.
* ``heldout`` (500): the first object of each image is one of the eight ``HELDOUT_PAIRS``
  (one per colour, every shape at least once), combinations that never occur in train or
  test, while every colour and every shape on its own does (the "bird that does not exist").
  A second object, when there is one, uses the train combinations.

Rendering is deterministic: example ``i`` of a split comes from a numpy generator seeded with
``(SEED, split, i)``, so the attributes do not depend on the resolution or on the order of
generation, and every build writes the same pixels. Objects are drawn with PIL at 4x the
resolution (2x at 256) and box-filtered down, so edges are anti-aliased while object
interiors and the background keep their exact colour.

Stored per example: ``image`` uint8 [r, r, 3]; ``captions`` 10 strings; per object (2 slots,
the second -1 when there is one object) ``object_shape``, ``object_colour``, ``object_size``,
``object_position`` int64 [2]; ``num_objects``; ``background`` (index into BACKGROUNDS).
"""
from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

RESOLUTIONS = (32, 64, 128, 256)
SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'diamond')
COLOURS = ('red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'cyan')
COLOUR_RGB = ((220, 30, 30), (40, 180, 60), (40, 70, 230), (245, 225, 40),
              (250, 140, 20), (140, 50, 190), (250, 130, 200), (40, 220, 230))
BACKGROUNDS = ('black', 'grey', 'navy', 'brown')
BACKGROUND_RGB = ((15, 15, 15), (120, 120, 120), (20, 25, 80), (90, 55, 30))
SIZES = ('small', 'large')
POSITIONS = ('top', 'bottom', 'left', 'right', 'centre')
# Object centre (x, y) as fractions of the image side.
POSITION_XY = ((0.5, 0.16), (0.5, 0.84), (0.16, 0.5), (0.84, 0.5), (0.5, 0.5))
# Object radius as a fraction of the image side: every shape lies inside the disc of this
# radius around its centre, whatever its rotation. With the jitters below, two objects never
# overlap (centres >= 0.34 - 2 * 0.02 apart, radii <= 0.125 * 1.1) and stay inside the frame.
SIZE_RADIUS = (0.07, 0.125)
JITTER = 0.02           # Uniform jitter of the centre, fraction of the side.
SIZE_JITTER = 0.1       # Uniform relative jitter of the radius.
MAX_ROTATION = 20.0     # Degrees, uniform, for every shape but the circle.
SUPERSAMPLE = 4         # Drawing canvas = resolution * factor, the factor capped so the
MAX_CANVAS = 512        # canvas is at most this wide (2x at 256, 4x up to 128).
# (colour, shape) pairs that appear only in the heldout split: one per colour.
HELDOUT_PAIRS = (('red', 'star'), ('green', 'triangle'), ('blue', 'cross'),
                 ('yellow', 'circle'), ('orange', 'diamond'), ('purple', 'square'),
                 ('pink', 'triangle'), ('cyan', 'star'))
SPLIT_SIZES = {'train': 4000, 'test': 500, 'heldout': 500}
SPLIT_IDS = {'train': 0, 'test': 1, 'heldout': 2}
# Extra renders for measuring instruments (the attribute classifier of
# jaxgen.metrics.attributes), never a dataset split and never seen by a generative model:
# every object draws from all 48 colour-shape pairs, the held-out ones included, from seeds no
# split uses, so an instrument can recognise an unseen pair as well as a seen one.
INSTRUMENT = 'instrument'
_SEED_IDS = {**SPLIT_IDS, INSTRUMENT: 3}
TWO_OBJECT_P = 0.5
BACKGROUND_MENTION_P = 0.3
CAPTIONS_PER_IMAGE = 10
SEED = 20161203

COLOUR_WORDS = {
    'red': ('red', 'crimson', 'scarlet'), 'green': ('green', 'emerald'),
    'blue': ('blue', 'cobalt'), 'yellow': ('yellow', 'golden'),
    'orange': ('orange', 'tangerine'), 'purple': ('purple', 'violet'),
    'pink': ('pink', 'rose'), 'cyan': ('cyan', 'turquoise')}
SHAPE_WORDS = {
    'circle': ('circle', 'disc', 'round dot'), 'square': ('square', 'box'),
    'triangle': ('triangle',), 'star': ('star', 'five-pointed star'),
    'cross': ('cross', 'plus sign'), 'diamond': ('diamond', 'rhombus')}
SIZE_WORDS = {'small': ('small', 'tiny', 'little'), 'large': ('large', 'big', 'huge')}
POSITION_WORDS = {
    'top': ('at the top', 'near the top', 'in the upper part of the image'),
    'bottom': ('at the bottom', 'near the bottom', 'in the lower part of the image'),
    'left': ('on the left', 'on the left side', 'to the left'),
    'right': ('on the right', 'on the right side', 'to the right'),
    'centre': ('in the centre', 'in the middle', 'at the center')}
BACKGROUND_WORDS = {'black': ('black',), 'grey': ('grey', 'gray'),
                    'navy': ('navy', 'dark blue'), 'brown': ('brown',)}
# One object: {o} is "a small red circle", {p} a position phrase.
SINGLE_TEMPLATES = (
    '{o} {p}', 'there is {o} {p}', '{P} there is {o}', '{o} placed {p}',
    'this image shows {o} {p}', '{o} sits {p}', '{o} can be seen {p}',
    'a picture of {o} {p}', '{P} is {o}', 'an image with {o} {p}')
# Two objects: {a} and {b} are "a small red circle at the top".
PAIR_TEMPLATES = (
    '{a} and {b}', 'there is {a} and {b}', 'two shapes: {a} and {b}',
    'this image shows {a} and {b}', '{a}, with {b}', 'a picture of {a} and {b}',
    '{a} next to {b}', 'we see {a} as well as {b}')
BACKGROUND_TEMPLATES = ('on a {c} background', 'against a {c} backdrop',
                        'over a plain {c} background')


class ObjectSpec(NamedTuple):
  shape: int
  colour: int
  size: int
  position: int


class ShapesExample(NamedTuple):
  objects: tuple[ObjectSpec, ...]
  background: int
  centres: tuple[tuple[float, float], ...]  # fractions of the side, after jitter
  radii: tuple[float, ...]                  # fractions of the side, after jitter
  rotations: tuple[float, ...]              # degrees
  captions: tuple[str, ...]


def heldout_pair_ids() -> frozenset[tuple[int, int]]:
  """The held-out combinations as (colour index, shape index)."""
  return frozenset((COLOURS.index(c), SHAPES.index(s)) for c, s in HELDOUT_PAIRS)


def _seen_pairs():
  held = heldout_pair_ids()
  return [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if (c, s) not in held]


def _article(phrase: str) -> str:
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _pick(rng, options):
  return options[int(rng.integers(len(options)))]


def _object_phrase(rng, obj: ObjectSpec) -> str:
  size = _pick(rng, SIZE_WORDS[SIZES[obj.size]])
  colour = _pick(rng, COLOUR_WORDS[COLOURS[obj.colour]])
  shape = _pick(rng, SHAPE_WORDS[SHAPES[obj.shape]])
  return _article(f'{size} {colour} {shape}')


def make_caption(rng: np.random.Generator, objects, background: int) -> str:
  """One caption naming every object's size, colour, shape and position."""
  if len(objects) == 1:
    o, = objects
    pos = _pick(rng, POSITION_WORDS[POSITIONS[o.position]])
    text = _pick(rng, SINGLE_TEMPLATES).format(o=_object_phrase(rng, o), p=pos, P=pos)
  else:
    a, b = (f'{_object_phrase(rng, o)} {_pick(rng, POSITION_WORDS[POSITIONS[o.position]])}'
            for o in objects)
    text = _pick(rng, PAIR_TEMPLATES).format(a=a, b=b)
  if rng.random() < BACKGROUND_MENTION_P:
    colour = _pick(rng, BACKGROUND_WORDS[BACKGROUNDS[background]])
    text += ' ' + _pick(rng, BACKGROUND_TEMPLATES).format(c=colour)
  return text


COUNTERFACTUAL_ATTRIBUTES = ('shape', 'colour')


@functools.cache
def _word_patterns():
  """attribute -> (regex of every word of it, longest first; word -> value index)."""
  out = {}
  for attr, names, words in (('shape', SHAPES, SHAPE_WORDS), ('colour', COLOURS, COLOUR_WORDS)):
    index = {w: names.index(name) for name, ws in words.items() for w in ws}
    alternatives = sorted(index, key=len, reverse=True)
    out[attr] = (re.compile(r'\b(' + '|'.join(map(re.escape, alternatives)) + r')\b'), index)
  return out


def counterfactual_caption(caption: str, objects, attribute: str, rng) -> str:
  """``caption`` with one object's ``attribute`` ('shape' or 'colour') changed, nothing else.

  ``objects``: the image's (shape, colour) index pairs in caption order (every caption names
  its objects in order, and the templates and positions contain no shape or colour word, so
  the k-th shape word and the k-th colour word are object k's; a background mention comes
  last). One object is picked uniformly, its value is replaced by another drawn uniformly
  among those that keep its colour-shape pair a seen one (a held-out pair is never written),
  with a synonym drawn uniformly. ``rng``: a ``np.random.Generator``. Raises ValueError when
  the caption does not name ``objects`` this way (not a ``jaxgen_shapes`` caption of them).
  """
  if attribute not in COUNTERFACTUAL_ATTRIBUTES:
    raise ValueError(f'Unknown counterfactual attribute {attribute!r}; accepted: '
                     f'{", ".join(COUNTERFACTUAL_ATTRIBUTES)}.')
  objects = [(int(s), int(c)) for s, c in objects]
  pattern, index = _word_patterns()[attribute]
  found = list(pattern.finditer(caption))[:len(objects)]
  slot = 0 if attribute == 'shape' else 1
  if not objects or len(found) < len(objects) or any(
      index[m.group(0)] != obj[slot] for m, obj in zip(found, objects)):
    raise ValueError(f'The caption {caption!r} does not name the {attribute}s of the objects '
                     f'{objects} (shape, colour) in order.')
  k = int(rng.integers(len(objects)))
  shape, colour = objects[k]
  held = heldout_pair_ids()
  if attribute == 'shape':
    options = [s for s in range(len(SHAPES)) if s != shape and (colour, s) not in held]
    words = SHAPE_WORDS[SHAPES[options[int(rng.integers(len(options)))]]]
  else:
    options = [c for c in range(len(COLOURS)) if c != colour and (c, shape) not in held]
    words = COLOUR_WORDS[COLOURS[options[int(rng.integers(len(options)))]]]
  m = found[k]
  return caption[:m.start()] + words[int(rng.integers(len(words)))] + caption[m.end():]


def sample_example(split: str, index: int) -> ShapesExample:
  """The attributes, jitter and captions of example ``index`` of ``split`` (no pixels);
  ``split`` may also be :data:`INSTRUMENT` (all colour-shape pairs)."""
  if split not in _SEED_IDS:
    raise ValueError(f'Unknown jaxgen_shapes split {split!r}; accepted: {", ".join(_SEED_IDS)}.')
  rng = np.random.default_rng((SEED, _SEED_IDS[split], index))
  n = 2 if rng.random() < TWO_OBJECT_P else 1
  positions = rng.permutation(len(POSITIONS))[:n]
  seen = _seen_pairs()
  held = sorted(heldout_pair_ids())
  every = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
  objects = []
  for k in range(n):
    pairs = (every if split == INSTRUMENT else
             held if (split == 'heldout' and k == 0) else seen)
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    objects.append(ObjectSpec(shape=shape, colour=colour, size=int(rng.integers(2)),
                              position=int(positions[k])))
  background = int(rng.integers(len(BACKGROUNDS)))
  centres = tuple((POSITION_XY[o.position][0] + rng.uniform(-JITTER, JITTER),
                   POSITION_XY[o.position][1] + rng.uniform(-JITTER, JITTER)) for o in objects)
  radii = tuple(SIZE_RADIUS[o.size] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
                for o in objects)
  rotations = tuple(0.0 if SHAPES[o.shape] == 'circle' else
                    float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)) for o in objects)
  captions = []
  for _ in range(50 * CAPTIONS_PER_IMAGE):  # Distinct captions when possible.
    c = make_caption(rng, objects, background)
    if c not in captions:
      captions.append(c)
    if len(captions) == CAPTIONS_PER_IMAGE:
      break
  while len(captions) < CAPTIONS_PER_IMAGE:  # Never reached with the templates above.
    captions.append(make_caption(rng, objects, background))
  return ShapesExample(tuple(objects), background, centres, radii, rotations, tuple(captions))


def _polygon(shape: str, cx: float, cy: float, r: float, degrees: float):
  """Vertices (pixels) of a non-circle shape lying inside the disc of radius ``r``."""
  if shape == 'square':
    pts = [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)]
  elif shape == 'diamond':
    pts = [(0, -1), (0.7, 0), (0, 1), (-0.7, 0)]
  elif shape == 'triangle':
    pts = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
  elif shape == 'star':
    pts = []
    for k in range(10):
      a = math.radians(-90 + 36 * k)
      rad = 1.0 if k % 2 == 0 else 0.45
      pts.append((rad * math.cos(a), rad * math.sin(a)))
  elif shape == 'cross':
    w, e = 0.33, 0.94  # Arm half-width and length: the far corners sit inside the unit disc.
    pts = [(-w, -e), (w, -e), (w, -w), (e, -w), (e, w), (w, w), (w, e), (-w, e), (-w, w),
           (-e, w), (-e, -w), (-w, -w)]
  else:
    raise ValueError(f'Unknown shape {shape!r}; accepted: {", ".join(SHAPES)}.')
  c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
  return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in pts]


def supersample_factor(resolution: int) -> int:
  return max(1, min(SUPERSAMPLE, MAX_CANVAS // resolution))


def render(example: ShapesExample, resolution: int) -> np.ndarray:
  """uint8 [resolution, resolution, 3] image of ``example``."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
    raise ValueError(f'resolution must be an integer in [8, 1024]; got {resolution!r}.')
  factor = supersample_factor(resolution)
  big = resolution * factor
  image = Image.new('RGB', (big, big), BACKGROUND_RGB[example.background])
  draw = ImageDraw.Draw(image)
  for obj, (fx, fy), fr, rot in zip(example.objects, example.centres, example.radii,
                                    example.rotations):
    cx, cy, r = fx * big, fy * big, fr * big
    fill = COLOUR_RGB[obj.colour]
    if SHAPES[obj.shape] == 'circle':
      draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
      draw.polygon(_polygon(SHAPES[obj.shape], cx, cy, r, rot), fill=fill)
  return np.asarray(image.reduce(factor), dtype=np.uint8)


def example_features(example: ShapesExample, resolution: int) -> dict:
  """The stored feature dict of one example (see the module docstring)."""
  def slots(field):
    values = [getattr(o, field) for o in example.objects]
    return np.array(values + [-1] * (2 - len(values)), dtype=np.int64)
  return {
      'image': render(example, resolution),
      'captions': list(example.captions),
      'object_shape': slots('shape'),
      'object_colour': slots('colour'),
      'object_size': slots('size'),
      'object_position': slots('position'),
      'num_objects': len(example.objects),
      'background': example.background,
  }


class JaxgenShapesConfig(tfds.core.BuilderConfig):
  """A resolution and the number of examples per split (defaults: ``SPLIT_SIZES``)."""

  def __init__(self, *, resolution: int, split_sizes: dict | None = None, name=None,
               **kwargs):
    split_sizes = dict(SPLIT_SIZES if split_sizes is None else split_sizes)
    if set(split_sizes) != set(SPLIT_SIZES) or any(
        not isinstance(v, int) or v < 1 for v in split_sizes.values()):
      raise ValueError(f'split_sizes must give a positive integer for each of '
                       f'{", ".join(SPLIT_SIZES)}; got {split_sizes!r}.')
    super().__init__(name=name or str(resolution),
                     description=f'{resolution}x{resolution} shapes with captions', **kwargs)
    self.resolution = resolution
    self.split_sizes = split_sizes


class JaxgenShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes with 10 captions each; no download."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [JaxgenShapesConfig(resolution=r) for r in RESOLUTIONS]

  def _info(self):
    r = self.builder_config.resolution
    slot = lambda n: tfds.features.Tensor(shape=(2,), dtype=np.int64)  # noqa: E731
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(r, r, 3)),
            'captions': tfds.features.Sequence(tfds.features.Text(),
                                               length=CAPTIONS_PER_IMAGE),
            'object_shape': slot(len(SHAPES)),
            'object_colour': slot(len(COLOURS)),
            'object_size': slot(len(SIZES)),
            'object_position': slot(len(POSITIONS)),
            'num_objects': tfds.features.Scalar(dtype=np.int64),
            'background': tfds.features.ClassLabel(names=BACKGROUNDS),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the images are rendered.
    return {s: self._generate_examples(s) for s in SPLIT_SIZES}

  def _generate_examples(self, split):
    r = self.builder_config.resolution
    for i in range(self.builder_config.split_sizes[split]):
      yield i, example_features(sample_example(split, i), r)
