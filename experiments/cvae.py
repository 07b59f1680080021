"""Train a conditional VAE: ``python -m experiments.cvae --config=experiments/configs/cvae.py[:variant] --workdir=runs/cvae``.

Then ``python -m jaxgen.vae_tools generate --workdir=runs/cvae --label=3`` (a chosen class) and
``python -m jaxgen.vae_tools rerender --workdir=runs/cvae`` (same style, every class).
"""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/cvae.py')
