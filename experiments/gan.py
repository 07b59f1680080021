"""Train the MLP GAN: ``python -m experiments.gan --config=experiments/configs/gan.py --workdir=runs/gan``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/gan.py')
