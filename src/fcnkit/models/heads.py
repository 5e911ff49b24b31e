"""FCN head primitives, one home for every family (VGG16, AlexNet, GoogLeNet, modern nets).

- :func:`score_layer`: the 1x1 class-score convolution, zero-initialised (paper Sec. 4.3: "we
  found that zero initialisation did not worsen performance"; the reference's
  ``weight_filler`` is absent for ``score_*`` layers, i.e. Caffe's constant 0);
- :func:`bilinear_kernel` / :func:`init_bilinear_` / :func:`bilinear_upsampler`: in-network
  upsampling by transposed convolution initialised to bilinear interpolation (Sec. 3.3; the
  reference's ``surgery.upsample_filt``);
- :func:`crop`: Caffe's ``Crop`` layer on the spatial axes (offsets derived by
  :mod:`fcnkit.coord_map`, never typed in).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 score layer, zero-initialised (Sec. 4.3)."""
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """Weights ``[in_channels, out_channels, k, k]`` of a bilinear-interpolation transposed conv.

    The reference filler (paper Sec. 3.3): ``f = ceil(k/2)``, ``c = f - 1`` for odd k else
    ``f - 0.5``, ``w(i, j) = (1 - |i - c| / f) (1 - |j - c| / f)``, placed on the channel
    diagonal (channel i -> i) with zeros elsewhere.
    """
    if in_channels != out_channels:
        raise ValueError("a bilinear upsampler maps each channel to itself: in == out required")
    f = math.ceil(kernel_size / 2)
    c = f - 1 if kernel_size % 2 == 1 else f - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - c).abs() / f
    filt = (filt1d[:, None] * filt1d[None, :]).to(torch.float32)
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    idx = torch.arange(in_channels)
    weight[idx, idx] = filt
    return weight


@torch.no_grad()
def init_bilinear_(layer: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """Initialise a square transposed conv in place to bilinear interpolation."""
    k = layer.kernel_size[0]
    if layer.kernel_size[0] != layer.kernel_size[1] or layer.groups != 1:
        raise ValueError("bilinear init needs a square, ungrouped transposed convolution")
    layer.weight.copy_(bilinear_kernel(layer.in_channels, layer.out_channels, k))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer


def bilinear_upsampler(
    channels: int, factor: int, *, kernel_size: int | None = None, learnable: bool = True
) -> nn.ConvTranspose2d:
    """A bias-free ``factor``x transposed conv initialised to bilinear interpolation.

    ``kernel_size`` defaults to ``2 * factor`` (the reference's ``upscore2`` 4/2,
    ``upscore16`` 32/16, ``upscore8`` 16/8, ``upscore`` 64/32); FCN-AlexNet and FCN-GoogLeNet
    use 63/32, the modern heads 3/2. ``learnable=False`` fixes it (``requires_grad=False``), as
    the reference's final upsamplers with ``lr_mult: 0``.
    """
    k = 2 * factor if kernel_size is None else kernel_size
    layer = init_bilinear_(nn.ConvTranspose2d(channels, channels, k, stride=factor, bias=False))
    layer.weight.requires_grad_(learnable)
    return layer


def crop(x: Tensor, offset: int, like: Tensor) -> Tensor:
    """Caffe's ``Crop`` on the spatial axes: ``x[..., o:o+H, o:o+W]`` with ``like``'s H, W."""
    h, w = like.shape[-2:]
    return x[:, :, offset : offset + h, offset : offset + w]
