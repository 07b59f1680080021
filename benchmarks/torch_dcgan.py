"""PyTorch reference DCGAN-64 train step (benchmark-only; needs ``pip install torch``).

The standard architecture of pytorch/examples ``dcgan`` (nz=100, ngf=ndf=64, nc=3):
G 3,576,704 and D 2,765,568 parameters, no biases, BatchNorm everywhere but D's first layer
and G's output, weights N(0, 0.02), BatchNorm scale N(1, 0.02). The loss is
BCE-with-logits (D ends in raw logits, never sigmoid-then-log), Adam(2e-4, betas (0.5, 0.999)).

One step, as ``jaxgen.train.step.make_train_step`` with n_dis=1 does it:
1. D update: fake = G(z1) (no graph kept), loss = BCE(D(real), 1) + BCE(D(fake), 0), Adam step.
2. G update: fake = G(z2) with a fresh z2, loss = BCE(D(fake), 1), Adam step on G only.
``reuse_fake=True`` instead reuses the first G forward for the G update (pytorch/examples'
``main.py`` does this: one G forward per step instead of two); the benchmark reports it too.

Nothing here runs at import time except the torch import itself, and this module is only
imported by ``benchmarks.step_throughput`` when torch is installed.
"""
from __future__ import annotations

import torch
from torch import nn

NZ, NGF, NDF, NC = 100, 64, 64, 3


def _init(m):
  if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
    nn.init.normal_(m.weight, 0.0, 0.02)
  elif isinstance(m, nn.BatchNorm2d):
    nn.init.normal_(m.weight, 1.0, 0.02)
    nn.init.zeros_(m.bias)


def make_generator(nz: int = NZ, ngf: int = NGF, nc: int = NC) -> nn.Module:
  return nn.Sequential(
      nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4),
      nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
      nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
      nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def make_discriminator(ndf: int = NDF, nc: int = NC) -> nn.Module:
  return nn.Sequential(
      nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Flatten(0))


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


class TorchDCGAN:
  """Networks, optimizers and a ``step(real)`` that does one D and one G update."""

  def __init__(self, batch_size: int = 64, device: str = 'cpu', seed: int = 0,
               reuse_fake: bool = False, channels_last: bool = False):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.batch_size = batch_size
    self.reuse_fake = reuse_fake
    self.g = make_generator().to(self.device)
    self.d = make_discriminator().to(self.device)
    self.g.apply(_init)
    self.d.apply(_init)
    if channels_last:
      self.g = self.g.to(memory_format=torch.channels_last)
      self.d = self.d.to(memory_format=torch.channels_last)
    self.g_opt = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    self.d_opt = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    self.loss = nn.BCEWithLogitsLoss()
    self.ones = torch.ones(batch_size, device=self.device)
    self.zeros = torch.zeros(batch_size, device=self.device)
    self.g.train()
    self.d.train()

  def _noise(self):
    return torch.randn(self.batch_size, NZ, 1, 1, device=self.device)

  def step(self, real: torch.Tensor):
    """One D update on real + fake, then one G update; returns (d_loss, g_loss) tensors."""
    self.d_opt.zero_grad(set_to_none=True)
    if self.reuse_fake:
      fake = self.g(self._noise())
      d_fake_in = fake.detach()
    else:
      with torch.no_grad():
        d_fake_in = self.g(self._noise())
    d_loss = self.loss(self.d(real), self.ones) + self.loss(self.d(d_fake_in), self.zeros)
    d_loss.backward()
    self.d_opt.step()

    self.g_opt.zero_grad(set_to_none=True)
    if not self.reuse_fake:
      fake = self.g(self._noise())
    g_loss = self.loss(self.d(fake), self.ones)
    g_loss.backward()
    self.g_opt.step()
    return d_loss.detach(), g_loss.detach()

  def synchronize(self):
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)
