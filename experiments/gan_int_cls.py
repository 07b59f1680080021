"""Train GAN-INT-CLS (Reed et al. 2016) or its variants GAN, GAN-CLS, GAN-INT:
``python -m experiments.gan_int_cls --config=experiments/configs/gan_int_cls.py[:variant] --workdir=runs/gic``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/gan_int_cls.py')
