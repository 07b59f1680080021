"""Train a DCGAN: ``python -m experiments.dcgan --config=experiments/configs/dcgan.py --workdir=runs/dcgan``."""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/dcgan.py')
