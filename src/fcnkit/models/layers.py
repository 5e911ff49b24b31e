"""Trunk layers that compute the same numbers as ``torch.nn``'s with less memory.

:class:`SlicedConv2d` is the convolutionalized fully connected layer (paper Sec. 3.1: VGG16
``fc6`` 7x7 and ``fc7`` 1x1, AlexNet's ``fc6`` / ``fc7``). PyTorch's CPU convolution (oneDNN)
copies the whole weight into its blocked layout on every call; for VGG16's ``fc6``
(4096 x 512 x 7 x 7, 411 MB) that copy is the largest single allocation of a 500 x 500
inference pass (a lone ``fc6`` call peaks 405 MB above its inputs; in 32 MB slices, 39 MB;
docs/speed.md has the whole net's figures). Output channels are independent sums over the
same inputs, so computing them in slices gives the same numbers: the VGG16 FCN-8s equals the
port-style net bit for bit at 500 x 500 with oneDNN's AVX-512 and AVX2 kernels
(``ONEDNN_MAX_CPU_ISA=AVX2``); ``tests/models/test_layers.py`` allows 1e-6 relative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the most weight bytes one slice takes (the size of oneDNN's copy per call)
SLICE_BYTES = 32 * 2**20
#: slices hold a multiple of this many output channels (oneDNN's channel blocks: 8 or 16)
CHANNEL_BLOCK = 16


def capturing() -> bool:
    """True while a graph is being captured (ONNX export, TorchScript, torch.compile /
    torch.export): they see one convolution, as the reference's prototxt has."""
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


class SlicedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state dict and maths) that, in CPU inference,
    computes its output channels in slices of at most :data:`SLICE_BYTES` of weights.

    Inference means no gradient is needed: with autograd on, slicing would make each slice's
    weight gradient a full-size tensor, so the layer runs whole. Grouped convolutions, other
    padding modes, other devices and graph capture (:func:`capturing`) also run whole.
    """

    def forward(self, x: Tensor) -> Tensor:
        step = self.slice_channels(x)
        if step >= self.out_channels:
            return super().forward(x)
        weight, bias = self.weight, self.bias
        parts = [
            F.conv2d(x, weight[i : i + step], None if bias is None else bias[i : i + step],
                     self.stride, self.padding, self.dilation)
            for i in range(0, self.out_channels, step)
        ]  # fmt: skip
        return torch.cat(parts, 1)

    def slice_channels(self, x: Tensor) -> int:
        """Output channels per slice for input ``x`` (``out_channels``: no slicing)."""
        whole = self.out_channels
        if (
            x.device.type != "cpu"
            or self.groups != 1
            or self.padding_mode != "zeros"
            or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            or capturing()
        ):
            return whole
        per_channel = self.weight[0].numel() * self.weight.element_size()
        step = SLICE_BYTES // per_channel // CHANNEL_BLOCK * CHANNEL_BLOCK
        return min(whole, max(CHANNEL_BLOCK, step))
