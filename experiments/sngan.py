"""Train SN-DCGAN (Miyato et al. 2018's standard CNN, hinge loss, spectral norm on every D layer).

  python -m experiments.sngan --config=experiments/configs/sngan.py --workdir=runs/sngan
  python -m experiments.sngan --config=experiments/configs/sngan.py:cifar10,B --workdir=runs/sngan_c10

DCGAN-with-SN (the DCGAN architecture with SN instead of BatchNorm in D) is a DCGAN variant:
``python -m experiments.dcgan --config=experiments/configs/dcgan.py:sn --workdir=runs/dcgan_sn``.
"""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/sngan.py')
