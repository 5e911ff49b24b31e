"""Caffe's 100-pixel border without the repeated rows: the same numbers from fewer pixels.

The reference pads ``conv1_1`` by 100 (``voc-fcn8s/net.py``), so the first feature maps are
mostly border: at 500 x 500, ``conv1_2`` is 698 x 698 for 500 x 500 pixels of image; at
256 x 256, 456 x 456. Away from both the image and the map's edges (where each layer's own
zero padding reaches in), a border row holds the same numbers as its neighbours: all of its
inputs are equal rows. The net needs those rows (the later layers' receptive fields cover
them), but not computed one by one.

:func:`border_plan` finds, from the layers' geometry alone, the smallest ``conv1_1`` padding
whose feature maps at a tap (VGG16: ``pool3``) contain every distinct row and column of the
full border's; the layers up to the tap run on that narrower input and the full map is
gathered back (:func:`run_narrow`, one ``index_select`` per axis, whose gradient sums the
copies). For VGG16 with pad 100 it is 52, at every input size: at 500 x 500 the first
three stages see 602^2 pixels instead of 698^2, at 256 x 256 360^2 instead of 456^2.

How the rows are known to be equal (:func:`axis_ids`): each row of the padded input gets an
id, one per image row and one shared by all zero rows; a convolution or pooling output row's
id is the tuple of its window's ids (interned), so equal ids mean equal rows for any weights,
and the same holds for columns and, in 2-D, for each pixel by its (row id, column id). The
outputs are therefore the same function of the weights as the full computation, and so are
the gradients; with oneDNN on the CPU the convolutions round each output pixel alike at any
map size, and the outputs are equal bit for bit (``tests/models/test_border.py`` checks them
within 1e-5 on any CPU; ``docs/speed.md`` has the speed).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnkit.models.layers import capturing

#: the id of an all-zero row (the image's padding and every convolution's zero padding)
ZERO_ROW = 0
#: the id of max pooling's padding (-inf)
NEG_INF_ROW = -1
#: layers that act on each pixel alone: equal rows stay equal (dropout would not, its masks
#: differ by pixel, and is refused)
_POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Identity)

# (kind, kernel, stride, padding, dilation, ceil_mode) of one layer along one axis
_Geometry = tuple[str, int, int, int, int, bool]


@dataclass(frozen=True)
class BorderPlan:
    """``conv1_1``'s narrow padding (rows, columns) and, for each row / column of the full
    border's map at the tap, its index in the narrow map."""

    padding: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]


def _axis_geometry(layers: Sequence[nn.Module], axis: int) -> tuple[_Geometry, ...] | None:
    """Each layer's geometry along ``axis``; ``None`` if a layer could mix rows otherwise
    than by a zero-padded window (dropout, normalisation, other padding modes)."""
    out: list[_Geometry] = []
    for layer in layers:
        if isinstance(layer, _POINTWISE):
            continue
        if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
            padding = layer.padding
            if isinstance(padding, str):
                return None
            out.append(("conv", layer.kernel_size[axis], layer.stride[axis], padding[axis],
                        layer.dilation[axis], False))  # fmt: skip
        elif isinstance(layer, nn.MaxPool2d):
            k, s, p, d = (v if isinstance(v, int) else v[axis]
                          for v in (layer.kernel_size, layer.stride, layer.padding,
                                    layer.dilation))  # fmt: skip
            out.append(("pool", k, s, p, d, bool(layer.ceil_mode)))
        else:
            return None
    return tuple(out)


def _output_size(size: int, padding: int, layer: _Geometry) -> int:
    """PyTorch's output size of a convolution or pooling along one axis (``ceil_mode`` drops
    a window that would start in the padding)."""
    _, k, s, _, d, ceil_mode = layer
    span = size + 2 * padding - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + padding:
        out -= 1
    return out


def axis_ids(
    geometry: Sequence[_Geometry], size: int, first_padding: int, table: dict
) -> list[int]:
    """Row ids at the end of ``geometry`` for an input of ``size`` rows whose first layer
    pads by ``first_padding``; rows with equal ids are equal. ``table`` interns the windows
    (share it between the calls whose ids are compared)."""

    def intern(key: tuple) -> int:
        return table.setdefault(key, len(table) + size + 1)

    ids = list(range(1, size + 1))  # one id per image row
    for index, layer in enumerate(geometry):
        kind, k, s, p, d, _ = layer
        p = first_padding if index == 0 else p
        fill = ZERO_ROW if kind == "conv" else NEG_INF_ROW
        padded = [fill] * p + ids + [fill] * p
        n = _output_size(len(ids), p, layer)
        ids = [
            intern((index, tuple(padded[o * s + j * d] for j in range(k)
                                 if o * s + j * d < len(padded))))
            for o in range(n)
        ]  # fmt: skip
    return ids


@functools.lru_cache(maxsize=256)
def narrow_axis(geometry: tuple[_Geometry, ...], size: int) -> tuple[int, tuple[int, ...]]:
    """``(padding, index)``: a first-layer padding as small as found whose output rows
    include every row of the full padding's, and where each full row is found in it."""
    full_padding = geometry[0][3]
    table: dict = {}
    full = axis_ids(geometry, size, full_padding, table)
    # the paddings that remove a multiple of the layers' total stride keep every pooling
    # window aligned: tried first (VGG16: 4, 12, ..., 52), then the others
    stride = math.prod(g[2] for g in geometry)
    for padding in sorted(range(full_padding), key=lambda p: ((full_padding - p) % stride, p)):
        narrow = axis_ids(geometry, size, padding, table)
        where: dict[int, int] = {}
        for i, row in enumerate(narrow):
            where.setdefault(row, i)
        if all(row in where for row in full):
            return padding, tuple(where[row] for row in full)
    return full_padding, tuple(range(len(full)))


def border_plan(layers: Sequence[nn.Module], height: int, width: int) -> BorderPlan | None:
    """How to run ``layers`` (the first pads the image) on a narrower border for an input of
    ``height`` x ``width``; ``None`` when nothing is saved or the layers are not all
    zero-padded convolutions, max pooling and pointwise activations."""
    if not layers or not isinstance(layers[0], nn.Conv2d):
        return None
    plans = []
    for axis, size in ((0, height), (1, width)):
        geometry = _axis_geometry(layers, axis)
        if geometry is None:
            return None
        plans.append(narrow_axis(geometry, size))
    padding = (plans[0][0], plans[1][0])
    if padding == tuple(layers[0].padding):
        return None
    return BorderPlan(padding, plans[0][1], plans[1][1])


def _hooked(layers: Sequence[nn.Module]) -> bool:
    """Whether a forward hook could look at a layer's output (it must see the full map)."""
    from torch.nn.modules import module

    return bool(module._global_forward_hooks or module._global_forward_pre_hooks) or any(
        layer._forward_hooks or layer._forward_pre_hooks for layer in layers
    )


def run_narrow(layers: Sequence[nn.Module], x: Tensor) -> Tensor:
    """``layers`` applied to ``x`` (the first with its own padding), computed on the narrow
    border of :func:`border_plan` when it has one; the whole computation while a graph is
    captured (ONNX export, ``torch.compile``: the plan depends on the input's size) or
    while a forward hook is on one of the layers (it sees the maps it would see without)."""
    plan = None
    if not capturing() and not _hooked(layers):
        plan = border_plan(layers, x.shape[-2], x.shape[-1])
    if plan is None:
        for layer in layers:
            x = layer(x)
        return x
    first = layers[0]
    y = F.conv2d(x, first.weight, first.bias, first.stride, plan.padding, first.dilation,
                 first.groups)  # fmt: skip
    for layer in layers[1:]:
        y = layer(y)
    rows = torch.tensor(plan.rows, device=y.device)
    cols = torch.tensor(plan.cols, device=y.device)
    out = y.index_select(2, rows).index_select(3, cols)
    if y.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
