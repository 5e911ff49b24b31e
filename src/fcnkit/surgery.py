"""Net surgery (paper Sec. 3.1, 3.3): classifier -> dense predictor.

- :func:`bilinear_kernel` / :func:`init_bilinear_`: the reference upsampling filter.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
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
