"""Net surgery (paper Sec. 3.1, 3.3, 4.2): turn a classifier into a dense predictor.

- :func:`bilinear_kernel` / :func:`init_bilinear_`: the reference upsampling filter (Sec. 3.3).
- :func:`linear_to_conv` / :func:`convolutionalize`: fully connected layers as convolutions,
  so that a classifier outputs a class heatmap (Sec. 3.1, Fig. 2).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
from torch import nn

__all__ = [
    "bilinear_kernel",
    "init_bilinear_",
    "linear_to_conv",
    "convolutionalize",
]


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


# Layers that act element-wise, so they can follow a convolutionalized Linear unchanged.
# nn.Dropout stays element-wise on a 4-D map (the reference's fc6/fc7 dropout), unlike Dropout2d.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Identity,
)


@torch.no_grad()
def linear_to_conv(linear: nn.Linear, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """The convolution equivalent to ``linear`` applied to a flattened ``C x kh x kw`` map.

    Paper Sec. 3.1: a fully connected layer is a convolution whose kernel covers its whole
    input region (VGG16 fc6: ``in_shape=(512, 7, 7)`` -> a 7x7 conv; a layer after global
    pooling: ``(C, 1, 1)`` -> a 1x1 conv). Flattening order is PyTorch's (channel, row, column),
    as in ``torch.flatten(x, 1)``. The weights are copied, not shared.
    """
    c, kh, kw = in_shape
    if linear.in_features != c * kh * kw:
        raise ValueError(
            f"Linear has {linear.in_features} inputs, but in_shape {tuple(in_shape)} has "
            f"{c * kh * kw} elements"
        )
    w = linear.weight
    conv = nn.Conv2d(
        c,
        linear.out_features,
        (kh, kw),
        bias=linear.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    conv.weight.copy_(w.reshape(linear.out_features, c, kh, kw))
    if linear.bias is not None:
        conv.bias.copy_(linear.bias)
    return conv


def _pair(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int]:
    if size is None:  # AdaptiveAvgPool2d allows None (keep the input size): not a fixed grid
        raise ValueError("an adaptive pool with output size None cannot be convolutionalized")
    if isinstance(size, int):
        return size, size
    h, w = size
    if h is None or w is None:
        raise ValueError("an adaptive pool with output size None cannot be convolutionalized")
    return int(h), int(w)


def _convolutionalize_head(
    layers: list[nn.Module], in_shape: tuple[int, int, int]
) -> nn.Sequential:
    """Linear layers -> convs; element-wise layers copied; ``Flatten`` dropped."""
    out: list[nn.Module] = []
    shape = in_shape
    for layer in layers:
        if isinstance(layer, nn.Flatten):
            continue
        if isinstance(layer, nn.Linear):
            out.append(linear_to_conv(layer, shape))
            shape = (layer.out_features, 1, 1)
        elif isinstance(layer, _ELEMENTWISE):
            out.append(copy.deepcopy(layer))
        else:
            raise TypeError(
                f"cannot convolutionalize a classifier layer of type {type(layer).__name__}: "
                "only Linear, Flatten and element-wise layers are supported"
            )
    return nn.Sequential(*out)


def _head_layers(head: nn.Module) -> list[nn.Module]:
    return list(head) if isinstance(head, nn.Sequential) else [head]


def _first_linear(layers: list[nn.Module]) -> nn.Linear:
    for layer in layers:
        if isinstance(layer, nn.Linear):
            return layer
    raise TypeError("the classifier head has no nn.Linear layer")


def convolutionalize(
    classifier: nn.Module, *, global_pool: str = "window", pool_size: int | tuple[int, int] = 7
) -> nn.Sequential:
    """A fully convolutional copy of an image classifier: it outputs a class-score map.

    Paper Sec. 3.1 and Fig. 2. Supported layouts (torchvision's, and any module built alike):

    * ``features`` -> ``avgpool`` (``AdaptiveAvgPool2d``) -> ``classifier`` (``Sequential``),
      as VGG, AlexNet, MobileNetV3, EfficientNet. With a spatial pool (VGG's 7x7, AlexNet's
      6x6) the pool is dropped and the first ``Linear`` becomes a ``C x h x w`` convolution
      (VGG fc6 -> 7x7, fc7/fc8 -> 1x1); at the training size the pool is the identity.
    * children ending in ``avgpool`` -> ``fc`` (ResNet, ResNeXt, RegNet): the trunk is the
      preceding children in definition order (the order their ``forward`` runs them).

    Global pooling (``AdaptiveAvgPool2d(1)``) does not slide, so ``global_pool`` decides:
    ``"window"`` (default) replaces it by a stride-1 ``AvgPool2d(pool_size)``, the pool the
    classifier applied at its training size (7 = 224 px / stride 32): the output cell
    ``(i, j)`` is the classifier's score of the input window at ``(32 i, 32 j)``.
    ``"none"`` drops the pooling and scores every feature cell (the FCN head); for a single
    ``Linear`` head the spatial mean of that map equals the logits at any input size.

    Returns ``Sequential(features, [pool,] classifier)``; the input's own modules are copied,
    never shared. The classifier's ``forward`` must be these modules in this order (true for
    the torchvision classes named above, not for GoogLeNet/Inception with auxiliary heads).
    """
    if global_pool not in ("window", "none"):
        raise ValueError(f"global_pool must be 'window' or 'none', got {global_pool!r}")
    children = OrderedDict(classifier.named_children())
    names = list(children)
    if {"features", "avgpool", "classifier"} <= set(names):
        trunk = copy.deepcopy(children["features"])
        pool, head = children["avgpool"], children["classifier"]
    elif names[-2:] == ["avgpool", "fc"]:
        trunk = nn.Sequential(
            OrderedDict(
                (n, copy.deepcopy(m)) for n, m in children.items() if n not in ("avgpool", "fc")
            )
        )
        pool, head = children["avgpool"], children["fc"]
    else:
        raise TypeError(
            f"cannot convolutionalize {type(classifier).__name__}: expected children "
            "'features', 'avgpool', 'classifier' (VGG/AlexNet/MobileNet style) or ending in "
            "'avgpool', 'fc' (ResNet style)"
        )
    if not isinstance(pool, nn.AdaptiveAvgPool2d):
        raise TypeError(f"expected avgpool to be nn.AdaptiveAvgPool2d, got {type(pool).__name__}")
    layers = _head_layers(head)
    oh, ow = _pair(pool.output_size)
    in_features = _first_linear(layers).in_features
    if in_features % (oh * ow):
        raise ValueError(f"first Linear's {in_features} inputs do not split into {oh}x{ow} cells")
    in_shape = (in_features // (oh * ow), oh, ow)

    modules: OrderedDict[str, nn.Module] = OrderedDict(features=trunk)
    if (oh, ow) == (1, 1) and global_pool == "window":
        modules["pool"] = nn.AvgPool2d(pool_size, stride=1)
    modules["classifier"] = _convolutionalize_head(layers, in_shape)
    return nn.Sequential(modules)
