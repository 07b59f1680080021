"""PyTorch reference DF-GAN (Tao et al., CVPR 2022): networks and train step as the authors'
released code (tobran/DF-GAN) writes them. Benchmark/test-only; needs ``pip install torch``.

Networks (``code/models/GAN.py``), same module and parameter names, NCHW:

* :class:`NetG` ``(noise [B, nz], sent [B, cond_dim]) -> images [B, C, r, r]``: ``fc`` to a
  4x4 map of 8 * ngf channels, :class:`G_Block` s (nearest 2x upsampling, 1x1 shortcut when
  the channels change, residual DFBLK / 3x3 conv / DFBLK / 3x3 conv) up to r, then LeakyReLU,
  3x3 conv, tanh. Every affine sees ``cat(noise, sent)``. ``residual_gamma=True`` scales the
  residual by a learnable scalar starting at 0 (the 2020 preprint's code; jaxgen's
  ``residual_gamma``); the default is the CVPR code.
* :class:`NetD` ``images -> features [B, 8 * ndf, 4, 4]``: 3x3 conv, then :class:`D_Block` s
  (``avgpool(shortcut(x)) + gamma * residual(x)``). As in the released code every D_Block
  creates its 1x1 ``conv_s``, used only where the channels change.
* :class:`NetC` ``(features, sent) -> logits [B, 1, 1, 1]``: the sentence tiled over 4x4 and
  concatenated, 3x3 conv to 2 * ndf, LeakyReLU, 4x4 valid conv.

Any resolution jaxgen builds (64, 128, 256) and any widths. The weights move to and from
jaxgen's flax DF-GAN (``jaxgen.models.dfgan``) with ``benchmarks.torch_bridge``'s
``dfgan_to_flax`` / ``flax_to_dfgan``; :func:`networks_from_flax` builds the three modules
sized from a flax parameter tree and loads it.

:func:`train_step` is one iteration of ``code/lib/modules.py``'s ``train`` loop on given
tensors (no data loader, text encoder or RNG inside), in the released order (but for G's
forward, which runs first here; nothing before it in the released loop depends on it):

1. real features ``netD(imgs)`` (imgs and sent require grad), ``pred_real = netC(features,
   sent)``, hinge ``mean(relu(1 - pred_real))``; mismatched pairs: the real features rolled
   by one (``cat(f[1:], f[:1])``) against the same sentences, ``mean(relu(1 + .))``;
2. ``fake = netG(noise, sent)``; ``netD(fake.detach())`` -> ``mean(relu(1 + .))``;
3. MA-GP (``MA_GP_FP32``): ``torch.autograd.grad`` of pred_real w.r.t. (imgs, sent) with
   ``create_graph``, per-example L2 norm of both gradients concatenated, ``k * mean(norm^p)``
   (k = 2, p = 6);
4. ``errD = real + (fake + mis) / 2 + MA-GP`` (steps 1 to 4's loss is
   :func:`discriminator_loss`); ``optimizerD.zero_grad()``, backward, step;
5. ``errG = -mean(netC(netD(fake), sent))`` through the updated D and the same G forward;
   ``optimizerG.zero_grad()``, backward, step.

:func:`make_optimizers` gives the released optimizers: Adam with betas (0.0, 0.9), G lr 1e-4,
D lr 4e-4 over ``netD`` and ``netC`` together. :class:`TorchDFGAN` holds networks, optimizers
and random inputs for the step benchmark (``benchmarks.step_throughput.bench_torch_dfgan``).

Nothing runs at import time except the torch import itself (and hiding triton, below).
"""
from __future__ import annotations

import collections
import sys

# As benchmarks.torch_dcgan: torch.optim imports torch._dynamo, which imports triton when it
# is installed, and loading triton's native library in a process that already loaded
# TensorFlow segfaults. This reference runs eager kernels only, so triton is hidden from it.
sys.modules.setdefault('triton', None)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
from torch import nn  # pylint: disable=g-import-not-at-top,wrong-import-position
from torch.nn import functional as F  # pylint: disable=g-import-not-at-top,wrong-import-position

RESOLUTIONS = (64, 128, 256)
# The released code's defaults: z_dim 100, the DAMSM sentence vector's 256 dimensions, widths
# 32, Adam(betas (0.0, 0.9)) with G lr 1e-4 and D lr 4e-4, MA-GP k = 2, p = 6.
NZ, COND_DIM, NGF, NDF, NC = 100, 256, 32, 32, 3
LR_G, LR_D, BETAS = 1e-4, 4e-4, (0.0, 0.9)
MAGP_K, MAGP_P = 2.0, 6.0


def _channels(nf: int, imsize: int) -> list[int]:
  if imsize not in RESOLUTIONS:
    raise ValueError(f'DF-GAN is built for {", ".join(map(str, RESOLUTIONS))}; got '
                     f'{imsize}.')
  layer_num = int(np.log2(imsize)) - 1
  return [nf * min(2 ** idx, 8) for idx in range(layer_num)]


def get_G_in_out_chs(nf: int, imsize: int):  # pylint: disable=invalid-name
  """(in, out) channels of each G_Block, from 4x4 up (the released code's helper)."""
  channel_nums = _channels(nf, imsize)[::-1]
  return list(zip(channel_nums[:-1], channel_nums[1:]))


def get_D_in_out_chs(nf: int, imsize: int):  # pylint: disable=invalid-name
  """(in, out) channels of each D_Block, from the image size down."""
  channel_nums = _channels(nf, imsize)
  return list(zip(channel_nums[:-1], channel_nums[1:]))


class Affine(nn.Module):
  """``fc_gamma(y) * x + fc_beta(y)``, each an MLP Linear(cond, C), ReLU, Linear(C, C); the
  last layers start at weight 0 and bias 1 (gamma) / 0 (beta)."""

  def __init__(self, cond_dim: int, num_features: int):
    super().__init__()

    def mlp():
      return nn.Sequential(collections.OrderedDict([
          ('linear1', nn.Linear(cond_dim, num_features)), ('relu1', nn.ReLU(inplace=True)),
          ('linear2', nn.Linear(num_features, num_features))]))
    self.fc_gamma, self.fc_beta = mlp(), mlp()
    nn.init.zeros_(self.fc_gamma.linear2.weight)
    nn.init.ones_(self.fc_gamma.linear2.bias)
    nn.init.zeros_(self.fc_beta.linear2.weight)
    nn.init.zeros_(self.fc_beta.linear2.bias)

  def forward(self, x, y):
    weight = self.fc_gamma(y)[:, :, None, None].expand(x.size())
    bias = self.fc_beta(y)[:, :, None, None].expand(x.size())
    return weight * x + bias


class DFBLK(nn.Module):
  """Affine, LeakyReLU(0.2), affine, LeakyReLU(0.2)."""

  def __init__(self, cond_dim: int, in_ch: int):
    super().__init__()
    self.affine0 = Affine(cond_dim, in_ch)
    self.affine1 = Affine(cond_dim, in_ch)

  def forward(self, x, y):
    h = F.leaky_relu(self.affine0(x, y), 0.2, inplace=True)
    return F.leaky_relu(self.affine1(h, y), 0.2, inplace=True)


class G_Block(nn.Module):  # pylint: disable=invalid-name
  """Upsample 2x, then shortcut(x) + residual(x, y)."""

  def __init__(self, cond_dim: int, in_ch: int, out_ch: int, residual_gamma: bool = False):
    super().__init__()
    self.learnable_sc = in_ch != out_ch
    self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
    self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
    self.fuse1 = DFBLK(cond_dim, in_ch)
    self.fuse2 = DFBLK(cond_dim, out_ch)
    if self.learnable_sc:
      self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)
    self.gamma = nn.Parameter(torch.zeros(1)) if residual_gamma else None

  def forward(self, x, y):
    x = F.interpolate(x, scale_factor=2)
    h = self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))
    if self.gamma is not None:
      h = self.gamma * h
    return (self.c_sc(x) if self.learnable_sc else x) + h


class NetG(nn.Module):
  """(noise [B, nz], sentence [B, cond_dim]) -> images [B, ch_size, imsize, imsize]."""

  def __init__(self, ngf: int = NGF, nz: int = NZ, cond_dim: int = COND_DIM,
               imsize: int = 256, ch_size: int = NC, residual_gamma: bool = False):
    super().__init__()
    self.ngf = ngf
    self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
    self.GBlocks = nn.ModuleList(  # pylint: disable=invalid-name
        [G_Block(cond_dim + nz, i, o, residual_gamma) for i, o in get_G_in_out_chs(ngf, imsize)])
    self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2, inplace=True),
                                nn.Conv2d(ngf, ch_size, 3, 1, 1), nn.Tanh())

  def forward(self, noise, c):
    out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
    cond = torch.cat((noise, c), dim=1)
    for block in self.GBlocks:
      out = block(out, cond)
    return self.to_rgb(out)


class D_Block(nn.Module):  # pylint: disable=invalid-name
  """avgpool2(shortcut(x)) + gamma * [conv4x4/2, LReLU, conv3x3, LReLU](x)."""

  def __init__(self, fin: int, fout: int):
    super().__init__()
    self.learned_shortcut = fin != fout
    self.conv_r = nn.Sequential(nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
                                nn.LeakyReLU(0.2, inplace=True),
                                nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
                                nn.LeakyReLU(0.2, inplace=True))
    self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)  # Unused where fin == fout.
    self.gamma = nn.Parameter(torch.zeros(1))

  def forward(self, x):
    res = self.conv_r(x)
    if self.learned_shortcut:
      x = self.conv_s(x)
    return F.avg_pool2d(x, 2) + self.gamma * res


class NetD(nn.Module):
  """images [B, ch_size, imsize, imsize] -> features [B, 8 * ndf, 4, 4]."""

  def __init__(self, ndf: int = NDF, imsize: int = 256, ch_size: int = NC):
    super().__init__()
    self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
    self.DBlocks = nn.ModuleList(  # pylint: disable=invalid-name
        [D_Block(i, o) for i, o in get_D_in_out_chs(ndf, imsize)])

  def forward(self, x):
    out = self.conv_img(x)
    for block in self.DBlocks:
      out = block(out)
    return out


class NetC(nn.Module):
  """(features [B, 8 * ndf, 4, 4], sentence [B, cond_dim]) -> logits [B, 1, 1, 1]."""

  def __init__(self, ndf: int = NDF, cond_dim: int = COND_DIM):
    super().__init__()
    self.cond_dim = cond_dim
    self.joint_conv = nn.Sequential(
        nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False))

  def forward(self, out, y):
    y = y.view(-1, self.cond_dim, 1, 1).repeat(1, 1, 4, 4)
    return self.joint_conv(torch.cat((out, y), 1))


def count_params(*modules: nn.Module) -> int:
  return sum(p.numel() for m in modules for p in m.parameters())


def networks_from_flax(g_variables, d_variables, dtype=torch.float32):
  """``(NetG, NetD, NetC)`` sized from jaxgen's flax DF-GAN parameters and holding them.

  g_variables: ``Generator``'s variables (``{'params': ...}``); d_variables:
  ``MatchingDiscriminator``'s (``{'params': {'features': ..., 'head': ...}}``). Widths,
  noise and sentence sizes, channels and resolution are read from the shapes. In ``dtype``
  (float32 values copy exactly into float64 modules).
  """
  from benchmarks import torch_bridge  # pylint: disable=g-import-not-at-top
  pg = g_variables['params']
  pd, ph = d_variables['params']['features'], d_variables['params']['head']
  nz, fc_out = np.shape(pg['fc']['kernel'])
  ngf = fc_out // (8 * 16)
  n_g = sum(1 for k in pg if k.startswith('block'))
  g = NetG(ngf, nz, np.shape(pg['block0']['fuse1']['affine0']['gamma_1']['kernel'])[0] - nz,
           4 * 2 ** n_g, np.shape(pg['to_rgb']['kernel'])[-1],
           residual_gamma='gamma' in pg['block0'])
  ch, ndf = np.shape(pd['conv_img']['kernel'])[2:]
  n_d = sum(1 for k in pd if k.startswith('block'))
  d = NetD(ndf, 4 * 2 ** n_d, ch)
  c = NetC(ndf, np.shape(ph['joint_conv0']['kernel'])[2] - 8 * ndf)
  for m in (g, d, c):
    m.to(dtype)
  torch_bridge.flax_to_dfgan(pg, g)
  torch_bridge.flax_to_dfgan(pd, d)
  torch_bridge.flax_to_dfgan(ph, c)
  return g, d, c


def make_optimizers(netG, netD, netC, lr_g: float = LR_G,  # pylint: disable=invalid-name
                    lr_d: float = LR_D, betas=BETAS, eps: float = 1e-8):
  """``(optimizerG, optimizerD)`` as the released code: D's Adam covers netD and netC."""
  opt_g = torch.optim.Adam(netG.parameters(), lr=lr_g, betas=betas, eps=eps)
  opt_d = torch.optim.Adam(list(netD.parameters()) + list(netC.parameters()), lr=lr_d,
                           betas=betas, eps=eps)
  return opt_g, opt_d


def hinge_loss(output, negative: bool):
  """``mean(relu(1 - out))`` for positive pairs, ``mean(relu(1 + out))`` for negative."""
  return torch.mean(F.relu(1.0 + output)) if negative else torch.mean(F.relu(1.0 - output))


def ma_gp(img, sent, out, k: float = MAGP_K, p: float = MAGP_P):
  """The released ``MA_GP_FP32``: ``k * mean(||(d out/d img, d out/d sent)||^p)``, with the
  graph kept so that the penalty is differentiated w.r.t. D's parameters."""
  grads = torch.autograd.grad(outputs=out, inputs=(img, sent), grad_outputs=torch.ones_like(out),
                              retain_graph=True, create_graph=True, only_inputs=True)
  grad = torch.cat([g.reshape(g.size(0), -1) for g in grads], dim=1)
  grad_l2norm = torch.sqrt(torch.sum(grad ** 2, dim=1))
  return k * torch.mean(grad_l2norm ** p)


def discriminator_loss(netD, netC, imgs, sent_emb, fake,  # pylint: disable=invalid-name
                       k: float = MAGP_K, p: float = MAGP_P) -> dict:
  """errD and its terms as the released step computes them: real features once, for the
  matching pairs (and MA-GP) and, rolled by one, the mismatched ones; ``fake`` scored as
  given (the step passes it detached). ``imgs`` and ``sent_emb`` must require grad (MA-GP
  differentiates w.r.t. them). Returns tensors 'd_loss', 'real', 'fake', 'mismatch', 'magp'.
  """
  real_features = netD(imgs)
  pred_real = netC(real_features, sent_emb)
  err_real = hinge_loss(pred_real, negative=False)
  mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
  err_mis = hinge_loss(netC(mis_features, sent_emb), negative=True)
  err_fake = hinge_loss(netC(netD(fake), sent_emb), negative=True)
  err_magp = ma_gp(imgs, sent_emb, pred_real, k, p)
  return {'d_loss': err_real + (err_fake + err_mis) / 2.0 + err_magp, 'real': err_real,
          'fake': err_fake, 'mismatch': err_mis, 'magp': err_magp}


def train_step(netG, netD, netC, optimizerG, optimizerD,  # pylint: disable=invalid-name
               noise, sent_emb, imgs, k: float = MAGP_K, p: float = MAGP_P,
               on_backward=None) -> dict:
  """One step of the released ``train`` loop on given tensors (see the module docstring).

  noise [B, nz], sent_emb [B, cond_dim], imgs [B, C, r, r] (B >= 2: the mismatched pairs
  roll the batch). The released loop scores the real pairs before running G; here G runs
  first, which changes no value (nothing in between depends on the order). ``on_backward
  (which)``, if given, is called with 'd' after the D loss's backward and with 'g' after the
  G loss's, each before its optimizer step (the gradients are then in the parameters'
  ``.grad``). The G loss's backward also leaves gradients on netD and netC, as in the
  released code; the next step's ``optimizerD.zero_grad()`` drops them. Returns the losses
  as detached tensors: those of :func:`discriminator_loss` and 'g_loss'.
  """
  if imgs.shape[0] < 2:
    raise ValueError(f'Mismatched pairs need a batch of at least 2; got {imgs.shape[0]}.')
  imgs = imgs.detach().requires_grad_()
  sent_emb = sent_emb.detach().requires_grad_()
  fake = netG(noise, sent_emb)
  out = discriminator_loss(netD, netC, imgs, sent_emb, fake.detach(), k, p)
  optimizerD.zero_grad()
  out['d_loss'].backward()
  if on_backward is not None:
    on_backward('d')
  optimizerD.step()
  err_g = -netC(netD(fake), sent_emb).mean()
  optimizerG.zero_grad()
  err_g.backward()
  if on_backward is not None:
    on_backward('g')
  optimizerG.step()
  out['g_loss'] = err_g
  return {key: v.detach() for key, v in out.items()}


class TorchDFGAN:
  """Networks at ``resolution`` and widths, the released optimizers, and ``step(real)``: one
  :func:`train_step` on ``real`` with fresh N(0, 1) noise and sentence vectors
  (a stand-in for the frozen text encoder's output, which costs nothing here)."""

  def __init__(self, resolution: int = 256, batch_size: int = 32, ngf: int = NGF,
               ndf: int = NDF, nz: int = NZ, cond_dim: int = COND_DIM, device: str = 'cpu',
               seed: int = 0):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.batch_size, self.nz, self.cond_dim = batch_size, nz, cond_dim
    self.resolution = resolution
    self.g = NetG(ngf, nz, cond_dim, resolution).to(self.device)
    self.d = NetD(ndf, resolution).to(self.device)
    self.c = NetC(ndf, cond_dim).to(self.device)
    self.g_opt, self.d_opt = make_optimizers(self.g, self.d, self.c)
    for m in (self.g, self.d, self.c):
      m.train()

  def sentences(self):
    return torch.randn(self.batch_size, self.cond_dim, device=self.device)

  def step(self, real: torch.Tensor) -> dict:
    noise = torch.randn(self.batch_size, self.nz, device=self.device)
    return train_step(self.g, self.d, self.c, self.g_opt, self.d_opt, noise, self.sentences(),
                      real)

  def params(self) -> int:
    """Parameters the step trains (NetD's unused 1x1 shortcuts not counted)."""
    unused = sum(count_params(b.conv_s) for b in self.d.DBlocks if not b.learned_shortcut)
    return count_params(self.g, self.d, self.c) - unused

  def synchronize(self):
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)
