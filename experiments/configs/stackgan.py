"""StackGAN (Zhang et al., ICCV 2017): Stage-I (64x64) and Stage-II (128 or 256), two runs.

  python -m experiments.text_encoder --config=experiments/configs/text_encoder.py:char_cnn_rnn \
      --workdir=runs/text_char
  python -m experiments.stackgan --config=experiments/configs/stackgan.py:stage1 \
      --workdir=runs/stackgan1 --config.text_from=runs/text_char
  python -m experiments.stackgan --config=experiments/configs/stackgan.py:stage2 \
      --workdir=runs/stackgan2 --config.stage1_from=runs/stackgan1

Variants (``:<name>``, comma-separated, the later ones overriding):
  stage1  (default) Stage-I: 64x64 images from text and noise (``stage=1``).
  stage2  Stage-II: refines the images of the stage-1 run ``--config.stage1_from=<workdir>``
          (its g and text are imported frozen; its model and text fields copied).
  cpu     (the default sizes) the embedded ``jaxgen_shapes``, c_dim 64, batch 64. Stage-I at
          widths 16 (GF_DIM = DF_DIM = 16: G 455k, D 208k parameters), 2,000 steps; Stage-II
          64 -> 128 at widths 16 with 2 residual blocks (G 304k, D 1.03M), 500 steps. On a
          2-core CPU, Stage-I took 13 minutes (0.38 s per step) and Stage-II 19 minutes
          (2.25 s per step), sharing the machine with a test run at the lowest priority
          (docs/results/stackgan/stage1.json and stage2.json, ``train_seconds``).
  paper   the authors' sizes on ``jaxgen_shapes``: Stage-I GF_DIM 128 / DF_DIM 64, Stage-II
          64 -> 256 with 4 residual blocks, c_dim 128, z 100, the 1024-d char-CNN-RNN
          (``text_encoder.py:char_cnn_rnn,paper``), batch 64, 600 epochs per stage.
  cub     the paper's sizes on CUB-200-2011 (``jaxgen_cub_captions``, StackGAN's enlarged
          bounding-box crop) conditioned on the authors' precomputed char-CNN-RNN embeddings
          (1024-d): set ``--config.data.manual_dir`` (images and Reed's captions, see
          jaxgen/data/caption_sets.py) and ``--config.data.embeddings_dir`` (StackGAN's
          ``birds/`` folder with ``train/`` and ``test/`` pickles). 600 epochs of the 8,855
          training images per stage. No sample grids (there is no text encoder to embed the
          grid's captions).
  tiny    a seconds-long smoke run: widths 2-4, the tiny text encoder, a 64-image build of
          the set, 4 steps (Stage-II at 128).
e.g. ``stage2,paper``.

Training settings: the paper's batch 64, 600 epochs per stage and Adam at 2e-4 for G and D;
the authors' code's betas (0.5, 0.999), KL weight 2.0 (``kl_weight``; the paper writes
lambda = 1) and relu CA; the paper's D (text compressed by D itself, a 1x1 joint
convolution: ``model.d_cond_proj``, ``model.d_joint_kernel``). Paper and code halve the
learning rates every 100 epochs (the code: every ``LR_DECAY_EPOCH``); :mod:`jaxgen.optim`
has no such schedule, so they stay constant here. Data augmentation (the code's random crops
from 76 / 304 pixels and flips) is not done.

The caption encoder ``text`` is the text-encoder family's (as in gan_int_cls.py): Stage-I
builds the network of ``text_encoder.py:char_cnn_rnn,<size>`` (``cpu``, ``paper``, ``tiny``),
so ``--config.text_from=<that text-encoder workdir>`` imports it; Stage-II takes it from its
stage-1 run (so the text-image scorer, which looks for the text-encoder run in
``init_from.text``, needs ``--text_encoder=<that workdir>`` for a stage-2 run's R-precision).
"""
import ml_collections

from experiments.configs import text_encoder as text_config
from jaxgen.engine import config as engine_config

STAGES = {'stage1': 1, 'stage2': 2}
SIZES = ('cpu', 'paper', 'cub', 'tiny')
VARIANTS = (*STAGES, *SIZES)
PAPER_EPOCHS = 600
SHAPES_TRAIN_IMAGES = 4000
CUB_TRAIN_IMAGES = 8855  # Reed's 150 train classes of CUB-200-2011 (StackGAN's train split).
# About 30 minutes per stage on a 2-core CPU (module docstring).
CPU_STEPS = {1: 2000, 2: 500}


def stackgan_defaults() -> ml_collections.ConfigDict:
  c = engine_config.defaults()
  c.family = 'stackgan'
  c.stage = 1
  c.stage1_from = ''         # stage 2: the finished stage-1 workdir whose g (and text) it uses
  c.text_from = ''           # stage 1: '<text-encoder workdir>[:net]', phi imported (frozen)
  # jaxgen.models.stackgan's fields (model.resolution, the side drawn, is set by the family).
  c.model = ml_collections.ConfigDict(dict(
      channels=3, latent_dim=100, c_dim=64, g1_width=16, d1_width=16, g2_width=16,
      d2_width=16, num_residual=2, stage2_resolution=128, ca_activation='relu',
      d_cond_proj=True, d_joint_kernel=1))
  # manual_dir: CUB / Oxford-102 sources. embeddings_dir, embedding_dim: precomputed caption
  # embeddings and their size (text.encoder='precomputed').
  c.data = ml_collections.ConfigDict(dict(
      name='jaxgen_shapes', split='train', eval_split='test', resolution=64, channels=3,
      data_dir='', cache=True, shuffle_buffer=10_000, manual_dir='', embeddings_dir='',
      embedding_dim=0))
  text_config.set_text(c, 'char_cnn_rnn')  # config.text and the tokenizer fields of data
  c.kl_weight = 2.0           # the CA's KL term in G's loss (the code's TRAIN.COEFF.KL)
  c.stage1_batch_stats = False  # stage 2: g1 on batch statistics (the code) or running ones
  c.optimizer = ml_collections.ConfigDict(dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999,
                                               eps=1e-8, schedule='constant',
                                               decay_start_frac=0.0, final_lr_frac=0.0))
  c.batch_size = 64
  c.num_steps = CPU_STEPS[1]
  c.checkpoint_every = 500
  c.num_sample_captions = 8  # sample grids: 8 fixed test captions, one per column
  return c


def get_config(arg: str = 'stage1'):
  c = stackgan_defaults()
  names = (arg or 'stage1').split(',')
  for name in names:
    if name not in VARIANTS:
      raise ValueError(f'Unknown stackgan variant {name!r}; accepted: {", ".join(VARIANTS)}.')
  stage = ([STAGES[n] for n in names if n in STAGES] or [1])[-1]
  size = ([n for n in names if n in SIZES] or ['cpu'])[-1]
  c.stage = stage
  text_config.set_text(c, f'char_cnn_rnn,{"paper" if size == "cub" else size}')
  if size == 'cpu':
    c.num_steps = CPU_STEPS[stage]
    if stage == 2:  # 4 s steps: log and checkpoint more often than every 50 / 500
      c.log_every, c.checkpoint_every = 10, 100
  elif size in ('paper', 'cub'):
    c.model.update(dict(c_dim=128, g1_width=128, d1_width=64, g2_width=128, d2_width=64,
                        num_residual=4, stage2_resolution=256))
    c.num_steps = PAPER_EPOCHS * SHAPES_TRAIN_IMAGES // c.batch_size
    c.checkpoint_every = 2000
    c.log_every = 100
    if size == 'cub':
      with c.data.unlocked():
        c.data.update(dict(name='jaxgen_cub_captions', builder_config='bbox_crop',
                           embedding_dim=1024))
      c.text.encoder = 'precomputed'
      c.num_steps = PAPER_EPOCHS * CUB_TRAIN_IMAGES // c.batch_size
  elif size == 'tiny':
    c.model.update(dict(latent_dim=4, c_dim=4, g1_width=4, d1_width=2, g2_width=4, d2_width=2,
                        num_residual=1))
    with c.data.unlocked():
      c.data.split_sizes = dict(text_config.TINY_SPLITS)
    c.batch_size = 8
    c.num_steps = 4
    c.log_every = 1
    c.checkpoint_every = 2
    c.num_grid_samples = 8
    c.num_sample_captions = 4
  c.data.resolution = 64 if stage == 1 else c.model.stage2_resolution
  return c
