"""SlicedConv2d: the same numbers as ``nn.Conv2d`` (an independent computation: PyTorch's own
layer with the same weights), sliced only where slicing is safe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnkit.models import layers
from fcnkit.models.layers import SlicedConv2d
from fcnkit.models.registry import create_model


def _pair(**kwargs) -> tuple[nn.Conv2d, SlicedConv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(**kwargs)
    sliced = SlicedConv2d(**kwargs)
    sliced.load_state_dict(plain.state_dict())
    return plain, sliced


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 16 channels for the small layers below (fc6-sized layers slice as it is)."""
    monkeypatch.setattr(layers, "SLICE_BYTES", 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=32, out_channels=72, kernel_size=7),  # fc6-like, 72 = 4 x 16 + 8
        dict(in_channels=32, out_channels=64, kernel_size=7, padding=3),  # no-pad-100 fc6
        dict(in_channels=32, out_channels=48, kernel_size=3, dilation=4, padding=2),  # rarefied
        dict(in_channels=32, out_channels=40, kernel_size=1, bias=False),  # fc7-like
        dict(in_channels=32, out_channels=33, kernel_size=3, stride=2),
    ],
)
def test_sliced_inference_equals_conv2d(kwargs: dict, small_slices: None) -> None:
    plain, sliced = _pair(**kwargs)
    x = torch.randn(2, 32, 19, 23)
    with torch.no_grad():
        assert sliced.slice_channels(x) == 16 < kwargs["out_channels"]  # it does slice
        expected, got = plain(x), sliced(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_vgg_fc6_slices_at_the_default_size() -> None:
    """VGG16's fc6 (411 MB of weights) runs in 32 MB slices: 320 channels (a multiple of 16)."""
    fc6 = create_model("fcn32s", num_classes=21).fc6
    assert isinstance(fc6, SlicedConv2d)
    with torch.no_grad():
        assert fc6.slice_channels(torch.zeros(1, 512, 7, 7)) == 320


def test_whole_when_gradients_or_capture_need_it(small_slices: None) -> None:
    """With autograd on, the layer runs whole and its gradients are nn.Conv2d's; a traced
    graph (the ONNX exporter's path) holds one convolution."""
    plain, sliced = _pair(in_channels=8, out_channels=48, kernel_size=3)
    x = torch.randn(1, 8, 9, 9)
    assert sliced.slice_channels(x) == 48
    plain(x).square().sum().backward()
    sliced(x).square().sum().backward()
    torch.testing.assert_close(sliced.weight.grad, plain.weight.grad)
    sliced.requires_grad_(False)
    with torch.no_grad():
        traced = torch.jit.trace(sliced, x)
    kinds = [node.kind() for node in traced.inlined_graph.nodes()]
    assert kinds.count("aten::_convolution") == 1 and "aten::cat" not in kinds


def test_frozen_trunk_slices_while_training(small_slices: None) -> None:
    """FCN-32s-fixed: no gradient reaches a frozen fc6, so it slices even in training mode."""
    plain, sliced = _pair(in_channels=8, out_channels=48, kernel_size=3)
    sliced.requires_grad_(False)
    x = torch.randn(1, 8, 9, 9)
    assert sliced.slice_channels(x) == 16
    torch.testing.assert_close(sliced(x), plain(x).detach(), rtol=1e-6, atol=1e-6)
