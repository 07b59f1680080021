"""Pretrain a text encoder (char-CNN-RNN or DAMSM bi-LSTM) on image-text matching.

  python -m experiments.text_encoder --config=experiments/configs/text_encoder.py:bilstm \
      --workdir=runs/text_bilstm [--results=docs/results/text_encoder/bilstm.json]

Writes checkpoints, metrics.jsonl / TensorBoard and eval.json (caption -> image retrieval
top-1/top-5 among 100) into the workdir; with ``--results`` also a stamped results file
(:mod:`jaxgen.results`) holding eval.json, the training time and the config. Text-to-image
runs import its ``text`` network: ``init_from = {'text': '<workdir>:text'}``.
"""
from experiments import launch

if __name__ == '__main__':
  launch.run('experiments/configs/text_encoder.py')
