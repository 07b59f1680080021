"""PyTorch reference DCGAN-64 train step (benchmark-only; needs ``pip install torch``).

The standard architecture of pytorch/examples ``dcgan`` (nz=100, ngf=ndf=64, nc=3):
G 3,576,704 and D 2,765,568 parameters, no biases, BatchNorm everywhere but D's first layer
and G's output, weights N(0, 0.02), BatchNorm scale N(1, 0.02). The loss is
BCE-with-logits (D ends in raw logits, never sigmoid-then-log), Adam(2e-4, betas (0.5, 0.999)).

One step, as the GAN family's default step (``jaxgen.families.gan``, n_dis=1) does it:
1. D update: fake = G(z1) (no graph kept), loss = BCE(D(real), 1) + BCE(D(fake), 0), Adam step.
2. G update: fake = G(z2) with a fresh z2, loss = BCE(D(fake), 1), Adam step on G only.
``reuse_fake=True`` instead reuses the first G forward for the G update (pytorch/examples'
``main.py`` does this: one G forward per step instead of two); the benchmark reports it too.

``make_generator``/``make_discriminator`` also build jaxgen's other DCGAN resolutions (16,
32, 128; 64 is pytorch/examples' network). ``run_reference`` runs N steps of either order
on explicit real and z batches (tests/test_torch_parity.py compares jaxgen against it;
weights move between the two with ``benchmarks.torch_bridge``).

Nothing here runs at import time except the torch import itself (and hiding triton, below),
and this module is only imported by ``benchmarks.step_throughput``, its tests and the parity
test when torch is installed.
"""
from __future__ import annotations

import sys

# torch.optim's constructors import torch._dynamo, which imports triton (the GPU kernel
# compiler) when it is installed. In a process that has already loaded TensorFlow (the TFDS
# builders), loading triton's native library segfaults (torch 2.14.1 with its triton: a
# style-encoder test, then tests/test_torch_parity.py, in one pytest process). This reference
# runs eager kernels only and never compiles any, so triton is hidden from it: ``import
# triton`` then raises ImportError, which torch reads as "not installed". An already imported
# triton is left alone.
sys.modules.setdefault('triton', None)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
from torch import nn

NZ, NGF, NDF, NC = 100, 64, 64, 3


def _init(m):
  if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
    nn.init.normal_(m.weight, 0.0, 0.02)
  elif isinstance(m, nn.BatchNorm2d):
    nn.init.normal_(m.weight, 1.0, 0.02)
    nn.init.zeros_(m.bias)


def _n_resamples(resolution: int) -> int:
  n = resolution.bit_length() - 3
  if resolution < 8 or 4 * 2 ** n != resolution:
    raise ValueError(f'resolution must be 4 * 2**k >= 8 (jaxgen: 16, 32, 64, 128); got '
                     f'{resolution}.')
  return n


def make_generator(nz: int = NZ, ngf: int = NGF, nc: int = NC,
                   resolution: int = 64) -> nn.Module:
  """pytorch/examples' G; other resolutions add or drop stride-2 layers as jaxgen's DCGAN.

  At 64 this is exactly pytorch/examples' network: z -> 4x4 (ngf*8), then 8, 16, 32, 64.
  At resolution 4 * 2**n the first layer has ngf * 2**(n-1) features, halved by each of
  the n stride-2 layers but the last (which outputs nc): jaxgen.models.dcgan.Generator.
  """
  n_up = _n_resamples(resolution)
  feats = ngf * 2 ** (n_up - 1)
  layers = [nn.ConvTranspose2d(nz, feats, 4, 1, 0, bias=False), nn.BatchNorm2d(feats),
            nn.ReLU(True)]
  for i in range(n_up):
    if i == n_up - 1:
      layers += [nn.ConvTranspose2d(feats, nc, 4, 2, 1, bias=False), nn.Tanh()]
    else:
      layers += [nn.ConvTranspose2d(feats, feats // 2, 4, 2, 1, bias=False),
                 nn.BatchNorm2d(feats // 2), nn.ReLU(True)]
      feats //= 2
  return nn.Sequential(*layers)


def make_discriminator(ndf: int = NDF, nc: int = NC, resolution: int = 64) -> nn.Module:
  """pytorch/examples' D (raw logits, shape (batch,)); other resolutions as jaxgen's DCGAN."""
  n_down = _n_resamples(resolution)
  layers, feats, c_in = [], ndf, nc
  for i in range(n_down):
    layers.append(nn.Conv2d(c_in, feats, 4, 2, 1, bias=False))
    if i > 0:
      layers.append(nn.BatchNorm2d(feats))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    c_in, feats = feats, feats * 2
  layers += [nn.Conv2d(c_in, 1, 4, 1, 0, bias=False), nn.Flatten(0)]
  return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> nn.Module:
  """pytorch/examples' weights_init: conv N(0, 0.02), BatchNorm scale N(1, 0.02), bias 0."""
  module.apply(_init)
  return module


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


ORDERS = ('fresh', 'shared')


class AbsGradRecorder:
  """Per parameter, the sum of the absolute values of the terms its gradient sums.

  A weight gradient is a sum over batch and positions of input x cotangent (BatchNorm's:
  of dy * x_hat and of dy); float32 rounds it with an error proportional to that sum of
  |terms|, which can be far larger than the gradient itself where the terms cancel. This
  computes the same sums with |input| and |cotangent|, for every pass of the module between
  ``start()`` and ``stop()``. Activations are switched to out-of-place while recording
  (same values) so that the output hooks see unmodified tensors.
  """

  def __init__(self, module: nn.Module):
    self.module = module
    self.sums = None
    self._handles = []
    for m in module.modules():
      if hasattr(m, 'inplace'):
        m.inplace = False
      if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
        self._handles.append(m.register_forward_hook(self._forward))

  def start(self):
    self.sums = {}

  def stop(self) -> dict:
    """{parameter name: sum of |terms|} since ``start()``."""
    names = {id(p): n for n, p in self.module.named_parameters()}
    out = {names[k]: v for k, v in self.sums.items()}
    self.sums = None
    return out

  def _add(self, param, value):
    self.sums[id(param)] = self.sums.get(id(param), 0) + value

  def _forward(self, m, inputs, output):
    if self.sums is None or not output.requires_grad:
      return
    x = inputs[0].detach()

    def hook(grad):
      if self.sums is None:
        return
      ax, ag = x.abs(), grad.detach().abs()
      with torch.enable_grad():
        if isinstance(m, nn.BatchNorm2d):
          dims = (0, 2, 3)
          x_hat = (x - x.mean(dims, keepdim=True)) / torch.sqrt(
              x.var(dims, unbiased=False, keepdim=True) + m.eps)
          self._add(m.weight, (ag * x_hat.abs()).sum(dims))
          self._add(m.bias, ag.sum(dims))
          return
        w = torch.zeros_like(m.weight, requires_grad=True)
        if isinstance(m, nn.ConvTranspose2d):
          y = nn.functional.conv_transpose2d(ax, w, None, m.stride, m.padding,
                                             m.output_padding, m.groups, m.dilation)
        else:
          y = nn.functional.conv2d(ax, w, None, m.stride, m.padding, m.dilation, m.groups)
        (w_grad,) = torch.autograd.grad(y, w, ag)
        self._add(m.weight, w_grad)

    output.register_hook(hook)


def run_reference(g: nn.Module, d: nn.Module, reals, zs, order: str = 'fresh',
                  lr: float = 2e-4, betas=(0.5, 0.999), eps: float = 1e-8,
                  record_grads: bool = False, on_step=None) -> dict:
  """Runs ``len(reals)`` DCGAN steps on ``g`` and ``d`` (in place) in the given order.

  reals: a sequence of (B, nc, H, W) batches (numpy or torch, NCHW). zs: one noise batch
  (B, nz) per step for 'shared', two per step for 'fresh' (``zs[t] = (z1, z2)``); numpy or
  torch, reshaped to (B, nz, 1, 1). Both networks train with their own
  ``torch.optim.Adam(lr, betas, eps)`` created here, BCE-with-logits losses:

  * 'fresh' (jaxgen's Algorithm 1): D update on real and G(z1) computed without a graph,
    then a G update on D(G(z2)) through the updated D.
  * 'shared' (pytorch/examples ``main.py``): fake = G(z1); D update on real and
    fake.detach(); then the G update on D(fake) through the updated D, back through the same
    G forward (G's BatchNorm statistics advance once per step).

  D runs in train mode in every pass, the G-loss pass included, so its BatchNorm running
  statistics advance three times per step (real, fake, G loss); G's twice per step in
  'fresh' (z1, z2) and once in 'shared'.

  ``record_grads`` also records 'd_abs_grads' / 'g_abs_grads' (``AbsGradRecorder``: per
  parameter the sum of |terms| of its gradient, what its float32 rounding error scales
  with); it switches the networks' activations to out-of-place. ``on_step(t, g, d, g_opt, d_opt)``, if given, is called after step t's G update (e.g. to
  snapshot the weights and Adam moments). Returns {'d_loss': [float], 'g_loss': [float], 'g': state_dict, 'd': state_dict,
  'g_opt': Adam, 'd_opt': Adam} (state dicts are detached copies) and, with
  ``record_grads``, 'd_grads' / 'g_grads': per step, {name: gradient copy}.
  """
  if order not in ORDERS:
    raise ValueError(f'Unknown order {order!r}; accepted: {", ".join(ORDERS)}.')
  if len(zs) != len(reals):
    raise ValueError(f'{len(reals)} real batches but {len(zs)} noise entries.')
  device = next(g.parameters()).device
  # A copy: the inputs may be read-only views (e.g. of jax arrays), which torch must not alias.
  as_t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32, device=device)
  g_opt = torch.optim.Adam(g.parameters(), lr=lr, betas=betas, eps=eps)
  d_opt = torch.optim.Adam(d.parameters(), lr=lr, betas=betas, eps=eps)
  bce = nn.BCEWithLogitsLoss()
  g.train()
  d.train()
  out = {'d_loss': [], 'g_loss': [], 'd_grads': [], 'g_grads': [], 'd_abs_grads': [],
         'g_abs_grads': []}
  if record_grads:
    g_abs, d_abs = AbsGradRecorder(g), AbsGradRecorder(d)
  for real, z in zip(reals, zs):
    real = as_t(real)
    if order == 'fresh':
      z1, z2 = (as_t(v).reshape(v.shape[0], -1, 1, 1) for v in z)
    else:
      z1 = as_t(z).reshape(z.shape[0], -1, 1, 1)
    ones = torch.ones(real.shape[0], device=device)
    zeros = torch.zeros(real.shape[0], device=device)

    d_opt.zero_grad(set_to_none=True)
    if record_grads:
      d_abs.start()
      g_abs.start()
    if order == 'shared':
      fake = g(z1)
      d_fake_in = fake.detach()
    else:
      with torch.no_grad():
        d_fake_in = g(z1)
    d_loss = bce(d(real), ones) + bce(d(d_fake_in), zeros)
    d_loss.backward()
    if record_grads:
      out['d_grads'].append({n: p.grad.detach().clone() for n, p in d.named_parameters()})
      out['d_abs_grads'].append(d_abs.stop())
    d_opt.step()

    g_opt.zero_grad(set_to_none=True)
    if order == 'fresh':
      fake = g(z2)
    g_loss = bce(d(fake), ones)
    g_loss.backward()
    if record_grads:
      out['g_grads'].append({n: p.grad.detach().clone() for n, p in g.named_parameters()})
      out['g_abs_grads'].append(g_abs.stop())
    g_opt.step()
    d.zero_grad(set_to_none=True)  # The G loss also left gradients on D; they are unused.
    out['d_loss'].append(d_loss.item())
    out['g_loss'].append(g_loss.item())
    if on_step is not None:
      on_step(len(out['g_loss']) - 1, g, d, g_opt, d_opt)
  out['g'] = {k: v.detach().clone() for k, v in g.state_dict().items()}
  out['d'] = {k: v.detach().clone() for k, v in d.state_dict().items()}
  out['g_opt'], out['d_opt'] = g_opt, d_opt
  if not record_grads:
    for k in ('d_grads', 'g_grads', 'd_abs_grads', 'g_abs_grads'):
      del out[k]
  return out
