"""Train the GAN-INT-CLS style encoder: ``python -m experiments.style_encoder --config=experiments/configs/style_encoder.py --workdir=runs/gic_style --config.gan_workdir=runs/gic``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/style_encoder.py')
