"""Train StackGAN (Zhang et al. 2017), one stage per run: ``python -m experiments.stackgan
--config=experiments/configs/stackgan.py[:stage1|stage2,...] --workdir=runs/stackgan1``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/stackgan.py')
