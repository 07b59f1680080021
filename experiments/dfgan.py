"""Train DF-GAN (Tao et al., CVPR 2022): ``python -m experiments.dfgan
--config=experiments/configs/dfgan.py[:variant] --workdir=runs/dfgan``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/dfgan.py')
