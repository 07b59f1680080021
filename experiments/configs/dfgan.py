"""DF-GAN (Tao et al., CVPR 2022): one-stage text-to-image GAN with deep text fusion and MA-GP.

  python -m experiments.dfgan --config=experiments/configs/dfgan.py --workdir=runs/dfgan \
      --config.text_from=runs/text_encoder/char_cnn_rnn
  python -m experiments.dfgan --config=experiments/configs/dfgan.py:paper \
      --workdir=runs/dfgan_paper --config.text_from=runs/text_encoder/bilstm_paper
  python -m experiments.dfgan --config=experiments/configs/dfgan.py:cub --workdir=runs/dfgan_cub \
      --config.data.manual_dir=<CUB + Reed captions> --config.text_from=<bi-LSTM run on CUB>
  python -m experiments.dfgan --config=experiments/configs/dfgan.py:coco \
      --workdir=runs/dfgan_coco --config.text_from=<bi-LSTM run on COCO>

Variants (``:<name>``, comma-separated, the later ones overriding):
  cpu    (default) 64x64 on the embedded ``jaxgen_shapes``, widths 8 (ngf = ndf = 8), the CPU
         char-CNN-RNN (128-d, as ``gan_int_cls.py``'s default), D's strided convolutions by
         ``jaxgen.nn.fast_conv`` (``model.conv_impl='fast'``), the official batch of 32,
         2,000 steps (16 epochs). The step measured 0.45 s on the quiet 2-core CPU
         (``benchmarks/results/step_throughput_dfgan_cpu.json``; 0.80 s with
         ``conv_impl='plain'``), so the steps take about 15 minutes there, plus the periodic
         samples and checkpoints.
  cpu32  32x32 (the size of ``gan_int_cls.py``'s ``cpu32``, so the two are scored side by
         side), widths 16 (ngf = ndf = 16), batch 32, 12,000 steps (96 epochs; as many
         images as ``gan_int_cls.py:cpu32``'s 6,000 steps of 64), the other settings as
         ``cpu``: about 45 minutes on the quiet 2-core CPU (4.5 steps/s). Use it with the
         longer-trained CPU char-CNN-RNN (``text_encoder.py:char_cnn_rnn,cpu_long``) as the
         measured table does (docs/text_to_image.md).
  bilstm the CPU size of DF-GAN's own kind of text encoder, AttnGAN's DAMSM bi-LSTM
         (``text_encoder.py:bilstm,cpu64``: words, 128-d sentences, matched against 64x64
         images) in place of the char-CNN-RNN, e.g. ``cpu32,bilstm`` with
         ``--config.text_from=<that run>``.
  counterfactual  not the paper, ``jaxgen_shapes`` only: half of D's mismatched pairs are
         each real image with its own caption, one object's shape or colour changed
         (``data.counterfactual='shape,colour'``), so that D must check those words; the
         other half are the paper's (the batch's captions rolled by one). E.g.
         ``cpu32,counterfactual``.
  matching  not DF-GAN's (AttnGAN's DAMSM loss for G, with the caption encoder's own loss):
         G's loss also asks that each fake match its caption under the text-encoder run's
         image network (``matching.weight`` 0.1; that run is ``text_from``, its image
         network is imported frozen), e.g. ``cpu32,counterfactual,matching``. At weight 1
         the loss outweighs D: on ``cpu32,counterfactual`` G drew a grid-like texture in
         place of objects from the first sample grid (1,200 steps) on, while the loss fell
         to 0.29 by step 3,600, near the 0.23 of real training batches: the small image
         network is fooled, not satisfied. ``matching``'s other fields mirror the
         text-encoder config of the same text argument (image features, loss, size).
  mode_seeking  not the paper: MSGAN's mode-seeking term (Mao et al. 2019) in G's loss at
         weight 1 (``mode_seeking.weight``), which penalises two latents drawing the same
         image for one caption; G runs on twice the batch. E.g.
         ``cpu32,counterfactual,matching,mode_seeking``, where the matching loss alone made G
         ignore z (docs/text_to_image.md).
  aux    not the paper, ``jaxgen_shapes`` only: an auxiliary classifier (AC-GAN, Odena et al.
         2017; TAC-GAN, Dash et al. 2017) on D's 4x4 features, trained on the real images'
         shapes and colours; G's loss asks D's classifier to read each fake's caption in it
         (``aux_classifier.weight`` 1). E.g. ``cpu32,aux``. On ``cpu32,aux,ema`` weight 4
         made G ignore z (two latents drew one caption's background alike 0.99 of the time,
         against 0.72 at weight 1; docs/text_to_image.md).
  ema    not the paper: an exponential moving average of G's weights (``ema_decay`` 0.999,
         a half-life of about 700 steps), which samples and scoring use, e.g. ``cpu32,ema``.
  r32, r64, r128, r256  the output resolution (model and data), e.g. ``r128`` or ``paper,r64``.
  paper  the paper's networks: 256x256, widths 32 (``nf: 32`` of the official configs),
         flax's own convolutions (``conv_impl='plain'``: cuDNN runs them well),
         z 100, the DAMSM bi-LSTM sentence encoder (300-d words, 128 units per direction,
         256-d sentences; ``text_encoder.py:bilstm,paper``), batch 32, the official
         optimisers; on ``jaxgen_shapes`` for as many epochs as the CUB run (1,300 of the
         4,000 training images).
  cub    ``paper`` on CUB-200-2011 with Reed et al.'s captions (``jaxgen_cub_captions``,
         StackGAN's bounding-box crop, ``data.manual_dir``): the official ``bird.yml``, batch
         32, 1,300 epochs of the 8,855 training images (``max_epoch: 1301``, epochs 1..1300,
         incomplete batches dropped: 276 steps per epoch).
  coco   ``paper`` on MS-COCO 2014 (TFDS ``coco_captions``: ``train`` is train2014, 82,783
         images; prepare it with ``tfds build coco_captions``): the official ``coco.yml``,
         batch 32, 300 epochs (2,586 steps each).
  tiny   a seconds-long smoke run (64x64, the smallest size of the paper's configs; widths
         4, the tiny char-CNN-RNN, batch 4, 4 steps).

Every variant keeps the official optimisation: Adam with betas (0.0, 0.9), G at 1e-4, D at
4e-4, one D step then one G step per train step, D's loss ``real + (fake + mismatch) / 2 +
MA-GP`` with MA-GP's k = 2 and p = 6, and truncated sampling noise (``truncation=True``,
``trunc_rate=0.86``: 0.86 * a standard normal truncated to [-2, 2], as the released code's
configs). What is not reproduced: the official data augmentation (resize to 76/64 of the
size, random crop, horizontal flip) -- jaxgen's caption datasets centre-crop and resize.

Evaluation protocol of the paper (CUB and COCO): about 30,000 images generated from *test*
captions with truncated noise (0.86), FID against the test images (InceptionV3 pool features,
pytorch-fid's port of the 2015-12-05 weights, images at 256x256 resized to 299). The released
code draws one random caption per test image per pass and drops incomplete batches of 32: ten
passes over CUB's 2,933 test images (``sample_times: 10``, 29,120 images) and one over COCO's
val2014 (40,504 images, 40,480 drawn, ``sample_times: 1``). Here ``cub`` and ``coco`` set
``eval_num_samples`` = 30,000 and ``eval_reference_split``, so
``--config.evaluators='("inception_fid",)'`` (or ``python -m jaxgen.evaluate --workdir=...
--metrics=fid --num_samples=30000``) scores that many truncated samples against real test
images: CUB's ``test`` split; for COCO, whose val2014 TFDS stores as Karpathy's ``restval``
(30,504 images), ``val`` and ``test`` (5,000 each), the largest of them, ``restval``, since the
data layer reads one split at a time. Not the paper's protocol in one respect: the engine's
samples come from ``sample``, whose captions cycle through the first ``num_sample_captions``
captions of ``data.eval_split``, not through every test caption.

Model size. The results table of the official repository's README (tobran/DF-GAN) gives the
number of parameters of the paper's model ("DF-GAN(paper)", NOP) as 19M and of the released
pretrained model as 18M; the paper's own table was not available to check here, nor which
networks the figure counts. jaxgen at the paper's width (256x256, ngf = ndf = 32, cond_dim
256): G 9,744,131, D features 6,421,830, head 295,936, together 16,461,897 (16.5M). PyTorch's
D_Block also creates a 1x1 shortcut convolution in its three 256 -> 256 blocks that it never
uses (197,376 parameters), so the same networks counted in PyTorch come to 16,659,273 (16.7M).
The 2.3M to 19M is about the size of the DAMSM bi-LSTM text encoder (440,320 LSTM weights plus
300 per vocabulary word, 1.5M at 5,000 words), which the figure may or may not include. The
``cpu`` config's networks: G 548,611 (most of it the affine MLPs, which read ``concat(z, s)``,
228-d), D 224,724 (features 196,820 + head 27,904), text (the CPU char-CNN-RNN) 166,464.

The caption encoder ``text`` is the text-encoder family's (``config.text``, the tokenizer
fields of ``config.data``), set by ``experiments.configs.text_encoder.set_text`` with
``<encoder>,<size>``: ``char_cnn_rnn,cpu`` (default), ``bilstm,paper`` (``paper``, ``cub``,
``coco``) or ``char_cnn_rnn,tiny`` (``tiny``), so it builds the same network as
``text_encoder.py:<encoder>,<size>``. It is frozen; import a trained one with
``--config.text_from=<text-encoder workdir>[:net]``. For CUB and COCO that text-encoder run
must be trained on the same data fields (name, ``max_caption_len`` 18 as AttnGAN's
``WORDS_NUM``, vocabulary). With precomputed sentence embeddings:
``--config.text.encoder=precomputed --config.data.embedding_dim=<d> --config.model.cond_dim=<d>
--config.data.embeddings_dir=<dir>``.
"""
import ml_collections

from experiments.configs import text_encoder as text_config
from jaxgen.engine import config as engine_config
from jaxgen.families import text_encoder

VARIANTS = ('cpu', 'cpu32', 'bilstm', 'counterfactual', 'ema', 'matching', 'mode_seeking',
            'aux', 'r32', 'r64', 'r128', 'r256', 'paper', 'cub', 'coco', 'tiny')
RESOLUTION_VARIANTS = {'r32': 32, 'r64': 64, 'r128': 128, 'r256': 256}
PAPER_WIDTH = 32
EMA_DECAY = 0.999
MATCHING_WEIGHT = 0.1  # 1 made G fool the image network (see matching above)
MODE_SEEKING_WEIGHT = 1.0  # MSGAN's code adds the term unweighted
AUX_WEIGHT = 1.0  # AC-GAN adds its class log-likelihood unweighted
# The official training sets (images) and epochs (bird.yml / coco.yml: max_epoch 1301 / 301,
# epochs counted from 1), batch 32, incomplete batches dropped.
OFFICIAL = {'cub': dict(images=8_855, epochs=1_300), 'coco': dict(images=82_783, epochs=300)}
OFFICIAL_BATCH = 32
SHAPES_TRAIN_IMAGES = 4_000
# (data.name, data.eval_split) of the official data sets, and the split of real images FID is
# measured against: DF-GAN's COCO test set is val2014, which TFDS splits into Karpathy's
# restval (30,504 images), val and test (5,000 each); jaxgen's data layer reads one of them.
DATASETS = {'cub': ('jaxgen_cub_captions', 'test'), 'coco': ('coco_captions', 'val')}
REFERENCE_SPLITS = {'coco': 'restval'}


def dfgan_defaults() -> ml_collections.ConfigDict:
  """The ``cpu`` config."""
  c = engine_config.defaults()
  c.family = 'dfgan'
  # cond_dim: the sentence size of config.text (set in get_config).
  c.model = ml_collections.ConfigDict(dict(
      resolution=64, channels=3, latent_dim=100, cond_dim=128, g_width=8, d_width=8,
      residual_gamma=False, conv_impl='fast'))
  # manual_dir: CUB / Oxford-102 sources. embeddings_dir, embedding_dim: precomputed caption
  # embeddings and their size (text.encoder='precomputed').
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_shapes', split='train', eval_split='test', resolution=64, channels=3,
      data_dir='', cache=True, shuffle_buffer=10_000, manual_dir='', embeddings_dir='',
      embedding_dim=0,
      # Not the paper (jaxgen_shapes only): e.g. 'shape,colour' also shows D each real image
      # with its caption's shape or colour changed, as half of the mismatched pairs.
      counterfactual=''))
  set_text(c, 'char_cnn_rnn')
  c.ma_gp = ml_collections.ConfigDict(dict(k=2.0, p=6.0))
  c.optimizer = ml_collections.ConfigDict(dict(g_lr=1e-4, d_lr=4e-4, b1=0.0, b2=0.9, eps=1e-8,
                                               schedule='constant', decay_start_frac=0.0,
                                               final_lr_frac=0.0))
  c.truncation = True        # sampling latents: trunc_rate * N(0, 1) truncated to +-trunc_bound
  c.trunc_rate = 0.86
  c.trunc_bound = 2.0
  c.text_from = ''           # '<text-encoder workdir>[:net]': import phi from that run (frozen)
  c.text_scale = 1.0         # s = text_scale * phi(t) for G, D and MA-GP (1: the paper)
  c.ema_decay = 0.0          # > 0 (not the paper): an EMA of G's weights samples and scores
  # > 0 (not the paper): MSGAN's mode-seeking term in G's loss, at this weight.
  c.mode_seeking = ml_collections.ConfigDict(dict(weight=0.0))
  # > 0 (not the paper; jaxgen_shapes only): D's attribute head and its terms, at this weight.
  c.aux_classifier = ml_collections.ConfigDict(dict(weight=0.0))
  c.batch_size = OFFICIAL_BATCH
  c.num_steps = 2000
  c.checkpoint_every = 500
  c.num_sample_captions = 8  # sample grids: 8 fixed test captions, one per column
  return c


def set_text(c, arg: str) -> None:
  """``c.text`` and the tokenizer as ``text_encoder.py:<arg>`` (the run ``text_from`` names),
  and ``c.matching``'s fields from that run's image network and loss (weight 0: off)."""
  text_config.set_text(c, arg)
  encoder_config = text_config.get_config(arg)
  weight = c.matching.weight if 'matching' in c else 0.0
  c.matching = ml_collections.ConfigDict(dict(
      weight=weight, image_features=tuple(encoder_config.image.features),
      resolution=encoder_config.data.resolution, loss=encoder_config.loss.to_dict()))


def get_config(arg: str = 'cpu'):
  c = dfgan_defaults()
  names = (arg or 'cpu').split(',')
  for name in names:
    if name not in VARIANTS:
      raise ValueError(f'Unknown dfgan variant {name!r}; accepted: {", ".join(VARIANTS)}.')
  paper_sized = any(n in ('paper', 'cub', 'coco') for n in names)
  if 'tiny' in names:
    text_arg = 'char_cnn_rnn,tiny'
  else:
    text_arg = 'bilstm,paper' if paper_sized else 'char_cnn_rnn,cpu'
    if 'bilstm' in names and not paper_sized:
      text_arg = 'bilstm,cpu64'
  set_text(c, text_arg)
  for name in names:
    if name in RESOLUTION_VARIANTS:
      c.model.resolution = c.data.resolution = RESOLUTION_VARIANTS[name]
    elif name in ('paper', 'cub', 'coco'):
      c.model.resolution = c.data.resolution = 256
      c.model.g_width = c.model.d_width = PAPER_WIDTH
      # The GPU step times (docs/benchmarks.md) are flax's own convolutions', which cuDNN
      # runs well; 'fast' is for XLA:CPU.
      c.model.conv_impl = 'plain'
      c.batch_size = OFFICIAL_BATCH
      c.checkpoint_every = 5000
      c.log_every = 100
      c.eval_num_samples = 30_000
      if name == 'paper':
        c.num_steps = OFFICIAL['cub']['epochs'] * (SHAPES_TRAIN_IMAGES // OFFICIAL_BATCH)
      else:
        official = OFFICIAL[name]
        c.num_steps = official['epochs'] * (official['images'] // OFFICIAL_BATCH)
        c.data.max_caption_len = 18  # AttnGAN's WORDS_NUM
        c.data.name, c.data.eval_split = DATASETS[name]
        if name == 'cub':
          c.data.builder_config = 'bbox_crop'
      c.eval_reference_split = REFERENCE_SPLITS.get(name, c.data.eval_split)
    elif name == 'counterfactual':
      c.data.counterfactual = 'shape,colour'
    elif name == 'ema':
      c.ema_decay = EMA_DECAY
    elif name == 'matching':
      c.matching.weight = MATCHING_WEIGHT
    elif name == 'mode_seeking':
      c.mode_seeking.weight = MODE_SEEKING_WEIGHT
    elif name == 'aux':
      c.aux_classifier.weight = AUX_WEIGHT
    elif name == 'cpu32':
      c.model.resolution = c.data.resolution = 32
      c.model.g_width = c.model.d_width = 16
      c.num_steps = 12_000
      c.checkpoint_every = 1000
    elif name == 'tiny':
      c.model.resolution = c.data.resolution = 64  # the smallest size of the paper's configs
      c.model.g_width = c.model.d_width = 4
      c.model.latent_dim = 8
      c.batch_size = 4
      c.num_steps = 4
      c.log_every = 1
      c.checkpoint_every = 2
      c.num_grid_samples = 8
      c.num_sample_captions = 4
  c.model.cond_dim = text_encoder.text_dim(c)  # the sentence size of c.text
  return c
