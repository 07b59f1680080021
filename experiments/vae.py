"""Train a VAE: ``python -m experiments.vae --config=experiments/configs/vae.py[:variant] --workdir=runs/vae``.

Writes checkpoints, metrics.jsonl / TensorBoard, eval.json (test ELBO and IWAE log p(x)) and
figures/ into the workdir; ``python -m jaxgen.vae_tools`` makes more figures from it.
"""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/vae.py')
