"""Filter rarefaction (paper Sec. 3.2): shift-and-stitch's dense output in one pass.

The paper: for a layer with input stride ``s`` followed by a filter ``f_ij``, setting the
stride to 1 upsamples the layer's output by ``s``, and the filter reproduces shift-and-stitch
once it is rarefied, ``f'_ij = f_{i/s, j/s}`` where ``s`` divides ``i`` and ``j``, else 0,
i.e. dilated by ``s`` (the trick "is equivalent to shift-and-stitch"); repeated layer by layer
it removes any amount of subsampling.

:func:`rarefy_layers` does that to a path of layers (input first): the strides of its last
strided layers, whose product is ``factor``, become 1, and every spatial layer after each of
them has its dilation and padding multiplied by the strides removed before it (so each
output keeps its receptive-field centre: a ``k x k`` conv with padding ``p`` maps ``x`` to
``s x + (k - 1) / 2 - p`` before and after). A ceil-mode max pool (Caffe's rounding) whose
stride is removed becomes a :class:`CeilMaxPool2d`, which pads its bottom/right with ``-inf``
so that the coarse net's partial border windows exist in the dense map too. The output has
stride ``F / factor`` (``F``: the path's stride) and the same coordinate offset; the
coarse net's output is its every ``factor``-th cell, exactly.

Cost: every layer after the first rarefied one runs at ``factor^2`` times as many positions
(the ``f^2`` passes of shift-and-stitch in one), and the receptive fields stay the same:
``fc6`` of VGG16 becomes a 7x7 filter of dilation ``factor`` (extent ``6 factor + 1``).

:func:`rarefy` returns a rarefied copy of a model: an ``nn.Sequential`` (its output becomes
the dense map), or a model with a ``rarefy_(factor)`` method (the VGG16 FCN-32s nets,
:class:`fcnkit.models.vgg.FCN`; also ``create_model("fcn32s", rarefy=f)``).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from fcnkit.coord_map import PASS_THROUGH, CoordMap, layer_map

__all__ = ["CeilMaxPool2d", "rarefy", "rarefy_layers", "rarefiable_factors"]


def _pair(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    if isinstance(value, str):
        raise ValueError(f"{type(layer).__name__}: string padding {value!r} cannot be rarefied")
    values = value if isinstance(value, tuple) else (value, value)
    if len(set(values)) != 1:
        raise ValueError(f"{type(layer).__name__}: non-square {what} {values} is not supported")
    return int(values[0])


def _stride(layer: nn.Module) -> int:
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return _pair(layer.stride, "stride", layer)
    if isinstance(layer, nn.Sequential) and any(_stride(c) > 1 for c in layer.children()):
        raise ValueError("a nested nn.Sequential holds a strided layer: give its layers")
    return 1


class CeilMaxPool2d(nn.MaxPool2d):
    """A stride-1 max pool standing in for a ceil-mode (Caffe) max pool whose stride was
    removed by rarefaction (Sec. 3.2): the input is first padded at the bottom and right by
    ``ceil_pad`` with ``-inf``, so that every partial window of the strided pool (which
    Caffe's rounding up adds at the border) has its dense counterpart. The padding is after
    the data, so the coordinate map is the plain pool's (:mod:`fcnkit.coord_map` reads it
    as an ``nn.MaxPool2d``)."""

    def __init__(self, kernel_size: int, *, dilation: int, padding: int, ceil_pad: int) -> None:
        super().__init__(kernel_size, stride=1, padding=padding, dilation=dilation)
        self.ceil_pad = ceil_pad

    def forward(self, x: Tensor) -> Tensor:
        if self.ceil_pad:
            x = F.pad(x, (0, self.ceil_pad, 0, self.ceil_pad), value=-math.inf)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ceil_pad={self.ceil_pad}"


def rarefiable_factors(layers: Sequence[nn.Module]) -> list[int]:
    """The factors :func:`rarefy_layers` accepts for ``layers``: the products of the strides
    of the last 1, 2, ... strided layers (VGG16: 2, 4, 8, 16, 32)."""
    factors, product = [], 1
    for layer in reversed(list(layers)):
        s = _stride(layer)
        if s > 1:
            product *= s
            factors.append(product)
    return factors


def rarefy_layers(layers: Sequence[nn.Module], factor: int) -> list[nn.Module]:
    """The path ``layers`` (input first) rarefied by ``factor`` (see the module docstring).

    Returns the new list: the modules are changed in place (copy them first to keep the
    originals), except ceil-mode max pools whose stride is removed, which are replaced by
    :class:`CeilMaxPool2d`. ``factor`` must be a product of the last strides
    (:func:`rarefiable_factors`); layers that cannot be dilated exactly (average pooling
    after a removed stride, transposed convolutions, non-zero padding modes) are refused.
    """
    layers = list(layers)
    factor = int(factor)
    if factor == 1:
        return layers
    valid = rarefiable_factors(layers)
    if factor not in valid:
        raise ValueError(
            f"cannot rarefy by {factor}: the factor must be the product of the last layers' "
            f"strides, one of {valid or 'none (no strided layer)'}"
        )
    # the strided layers to rarefy: the last ones, until their strides multiply to factor
    chosen, product = set(), 1
    for i in reversed(range(len(layers))):
        if product == factor:
            break
        s = _stride(layers[i])
        if s > 1:
            chosen.add(i)
            product *= s
    first = min(chosen)
    rate, out = 1, []  # rate: the product of the strides removed so far
    for i, layer in enumerate(layers):
        if i < first:
            out.append(layer)
            continue
        s = _stride(layer) if i in chosen else 1
        out.append(_dilate(layer, rate, remove_stride=i in chosen))
        rate *= s
    return out


def _dilate(layer: nn.Module, rate: int, *, remove_stride: bool) -> nn.Module:
    """``layer`` with stride 1 (``remove_stride``) and dilation and padding times ``rate``."""
    if isinstance(layer, nn.Sequential):
        if remove_stride:
            raise ValueError("rarefy the layers of a nested nn.Sequential, not the container")
        for name, child in list(layer.named_children()):
            setattr(layer, name, _dilate(child, rate, remove_stride=False))
        return layer
    if isinstance(layer, nn.ConvTranspose2d):
        raise ValueError("a transposed convolution after a removed stride cannot be rarefied")
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"padding_mode {layer.padding_mode!r} cannot be rarefied exactly")
        d = _pair(layer.dilation, "dilation", layer) * rate
        p = _pair(layer.padding, "padding", layer) * rate
        layer.dilation, layer.padding = (d, d), (p, p)
        if remove_stride:
            layer.stride = (1, 1)
        return layer
    if isinstance(layer, CeilMaxPool2d):
        layer.dilation *= rate
        layer.padding *= rate
        layer.ceil_pad *= rate
        return layer
    if isinstance(layer, nn.MaxPool2d):
        k = _pair(layer.kernel_size, "kernel", layer)
        s = _pair(layer.stride, "stride", layer)
        d = _pair(layer.dilation, "dilation", layer) * rate
        p = _pair(layer.padding, "padding", layer) * rate
        if remove_stride and layer.ceil_mode and s > 1:
            if s > k:
                raise ValueError(f"a ceil-mode pool with stride {s} > kernel {k} is not supported")
            # the strided pool's last window may reach s - 1 cells (rate positions each) past
            return CeilMaxPool2d(k, dilation=d, padding=p, ceil_pad=(s - 1) * rate)
        layer.kernel_size, layer.dilation, layer.padding = k, d, p
        if remove_stride:
            layer.stride = 1
        return layer
    if isinstance(layer, nn.AvgPool2d):
        if rate > 1:
            raise ValueError("average pooling after a removed stride cannot be dilated")
        if remove_stride:
            if layer.ceil_mode:
                raise ValueError("a ceil-mode average pool cannot be rarefied exactly")
            layer.stride = 1
        return layer
    if isinstance(layer, PASS_THROUGH) or (hasattr(layer, "coord_map") and _moves_nothing(layer)):
        return layer  # element-wise layers (ReLU, dropout, LRN, fixed scaling) are unchanged
    raise ValueError(f"{type(layer).__name__} after a removed stride cannot be rarefied")


def _moves_nothing(layer: nn.Module) -> bool:
    return all(layer_map(layer, axis) == CoordMap() for axis in (0, 1))


def rarefy(model: nn.Module, factor: int) -> nn.Module:
    """A copy of ``model`` rarefied by ``factor`` (paper Sec. 3.2): its output is the
    shift-and-stitch output of ``model`` with that factor, in one pass.

    An ``nn.Sequential`` is rarefied as a path (its output becomes the dense map, stride
    ``F / factor``); a model with a ``rarefy_(factor)`` method (the VGG16 FCN-32s nets)
    rarefies its coarse path and keeps its input-sized output. See :func:`rarefy_layers`.
    """
    dense = copy.deepcopy(model)
    if hasattr(dense, "rarefy_"):
        dense.rarefy_(factor)
        return dense
    if isinstance(dense, nn.Sequential):
        names = [name for name, _ in dense.named_children()]
        layers = rarefy_layers(list(dense.children()), factor)
        return nn.Sequential(OrderedDict(zip(names, layers, strict=True)))
    raise TypeError(
        f"cannot rarefy a {type(model).__name__}: give an nn.Sequential or a model with "
        "rarefy_(factor) (the VGG16 FCN-32s nets)"
    )
