"""Coordinate maps between blobs, and the crop offsets FCN derives from them.

This is Caffe's ``coord_map`` (used by the FCN reference ``net.py`` files to fill in every
``Crop`` layer's offset), written for PyTorch modules. Models call :func:`crop_offset` on
their own layers, so an offset can never disagree with the layers' geometry.

The derivation
--------------
A convolution or pooling layer with kernel ``k``, stride ``s`` and padding ``p`` (dilation
``d`` makes the kernel's extent ``(k - 1) d + 1``) centres output position ``x`` on input
position::

    x_in = s * x_out + ((k - 1) / 2 - p)

A transposed convolution is the inverse map. Element-wise layers (ReLU, dropout, LRN,
batch norm, scaling, sums) map ``x -> x``. Composing the maps along a path from a blob
``A`` to a blob ``B`` gives ``x_A = a * x_B + b``. To crop blob ``S`` (the *source*, e.g. the
upsampled scores) to the size of blob ``R`` (the *reference*, e.g. the input image), express
both in the coordinates of their common ancestor: ``x = a_S x_S + b_S = a_R x_R + b_R``.
When ``a_S == a_R`` the two grids are aligned up to a shift, and ``R``'s position 0 falls on
``S``'s position ``(b_R - b_S) / a_S``: that is the crop offset.

How is 19 (FCN-32s) derived? From the image to ``pool5`` of VGG16:
``conv1_1`` (k 3, pad 100) gives ``x - 99``, the other 3x3 pad-1 convs ``x``, each 2x2
stride-2 pool ``2x + 0.5``; composed, ``x_img = 32 x_pool5 - 99 + 0.5 (1 + 2 + 4 + 8 + 16)
= 32 x_pool5 - 83.5``. ``fc6`` (7x7, no pad) adds 3 at pool5's scale (``+ 96``):
``x_img = 32 x_fc6 + 12.5``. The upsampler (k 64, s 32) maps ``x_up -> (x_up - 31.5) / 32``
on ``fc6``'s grid, so ``x_img = x_up - 19``: the image starts at position 19 of the
upsampled scores. The same rule gives 5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s) and 18 for
the CaffeNet FCN (see ``tests/test_coord_map.py``).

All arithmetic is exact (:class:`fractions.Fraction`), so a half-pixel misalignment is an
error, not a rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

# Layers that do not move coordinates (Caffe's PASS_THROUGH_LAYERS, in PyTorch terms).
PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


@dataclass(frozen=True)
class CoordMap:
    """An affine map from a layer's output coordinate to its input coordinate.

    ``x_in = scale * x_out + shift`` along one spatial axis, exact rationals.
    """

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", Fraction(self.scale))
        object.__setattr__(self, "shift", Fraction(self.shift))
        if self.scale <= 0:
            raise ValueError(f"a coordinate map needs a positive scale, got {self.scale}")

    def then(self, later: CoordMap) -> CoordMap:
        """The map of this layer followed by ``later`` (``later`` is closer to the output)."""
        # x_in = s1 * x_mid + b1 and x_mid = s2 * x_out + b2.
        return CoordMap(self.scale * later.scale, self.scale * later.shift + self.shift)

    def inverse(self) -> CoordMap:
        """The map in the other direction (a transposed conv inverts its conv's map)."""
        return CoordMap(1 / self.scale, -self.shift / self.scale)

    def __call__(self, x_out: Fraction | int) -> Fraction:
        return self.scale * x_out + self.shift


def conv_map(kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> CoordMap:
    """Map of a convolution or pooling: ``x_in = s x_out + ((k - 1) / 2 - p)``."""
    extent = (kernel_size - 1) * dilation + 1
    return CoordMap(Fraction(stride), Fraction(extent - 1, 2) - padding)


def deconv_map(kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> CoordMap:
    """Map of a transposed convolution: the inverse of the matching convolution's map."""
    return conv_map(kernel_size, stride, padding, dilation).inverse()


def _axis(value: int | tuple[int, ...], axis: int) -> int:
    return value[axis] if isinstance(value, tuple) else value


Layer = nn.Module | CoordMap


def layer_map(layer: Layer, axis: int = 0) -> CoordMap:
    """The coordinate map of one module along spatial ``axis`` (0: height, 1: width).

    Handles convolutions, transposed convolutions, max/average pooling, ``nn.Sequential``
    (composed in order), element-wise layers (:data:`PASS_THROUGH`) and any module that
    defines ``coord_map(axis) -> CoordMap`` itself. Anything else is an error: guessing
    would silently misalign crops.
    """
    if isinstance(layer, CoordMap):
        return layer
    if hasattr(layer, "coord_map"):
        return layer.coord_map(axis)
    if isinstance(layer, nn.ConvTranspose2d):
        if _axis(layer.output_padding, axis) != 0:
            raise ValueError("output_padding changes the size, not the map; not supported")
        return deconv_map(*(_axis(getattr(layer, a), axis) for a in _GEOMETRY))
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _axis(getattr(layer, "dilation", 1), axis)
        k, s, p = (_axis(getattr(layer, a), axis) for a in _GEOMETRY[:3])
        if isinstance(p, str):
            raise ValueError(f"string padding {p!r} is not supported; use integers")
        return conv_map(k, s, p, dilation)
    if isinstance(layer, nn.Sequential):
        return path_map(layer, axis)
    if isinstance(layer, PASS_THROUGH):
        return CoordMap()
    raise TypeError(
        f"no coordinate map for {type(layer).__name__}: give it a coord_map(axis) method "
        "or list the spatial layers it is made of"
    )


_GEOMETRY = ("kernel_size", "stride", "padding", "dilation")


def path_map(layers: Iterable[Layer], axis: int = 0) -> CoordMap:
    """Compose the maps of ``layers`` (input first): ``x_first_input = a * x_last_output + b``."""
    result = CoordMap()
    for layer in layers:
        result = result.then(layer_map(layer, axis))
    return result


def crop_offset(source: Iterable[Layer], reference: Iterable[Layer] = (), axis: int = 0) -> int:
    """Offset at which to crop ``source``'s output to the size of ``reference``'s output.

    Both are paths of layers starting from the same blob (e.g. the image); an empty
    ``reference`` is that blob itself. This is the offset of a Caffe ``Crop`` layer whose
    bottoms are the two paths' ends (see the module docstring for the derivation).

    Raises ``ValueError`` when the two grids have different scales, are misaligned by a
    fraction of a pixel, or when the reference would start before the source (Caffe's crop
    cannot pad).
    """
    src, ref = path_map(source, axis), path_map(reference, axis)
    if src.scale != ref.scale:
        raise ValueError(
            f"cannot crop between grids of different scales ({src.scale} vs {ref.scale}): "
            "crop only blobs at the same stride"
        )
    offset = (ref.shift - src.shift) / src.scale
    if offset.denominator != 1:
        raise ValueError(f"the two grids are misaligned by a fraction of a pixel: {offset}")
    if offset < 0:
        raise ValueError(f"negative crop offset {offset}: the reference starts before the source")
    return int(offset)


# ---------------------------------------------------------------------------------------
# The geometry report: stride, offset and receptive field of every layer on a path

# ``parts(module)``: a composite module's parallel branches (each a list of layers, input
# first; ``[]`` is the identity), or ``None`` when the module is not composite. Lets a caller
# describe blocks this module cannot know (Inception, residual blocks) without guessing.
Parts = Callable[[nn.Module], "list[list[Layer]] | None"]


def _branches(layer: Layer, parts: Parts | None) -> list[list[Layer]] | None:
    if parts is None or isinstance(layer, CoordMap):
        return None
    return parts(layer)


def _branch_map(branches: list[list[Layer]], axis: int, parts: Parts | None) -> CoordMap:
    maps = {path_geometry(b, axis, parts)[0] for b in branches}
    if len(maps) != 1:
        raise ValueError(f"parallel branches are misaligned: {sorted(maps, key=str)}")
    return maps.pop()


def layer_field(
    layer: Layer, axis: int = 0, parts: Parts | None = None
) -> tuple[Fraction, Fraction]:
    """``(field, jump)`` of one layer in units of its input positions: one output position
    depends on ``field`` consecutive input positions, and the next output position is
    ``jump`` input positions further.

    Convolution and pooling: the kernel's extent ``(k - 1) d + 1`` and the stride. A
    transposed convolution (stride ``s``, kernel ``k``) reads at most ``ceil(k / s)`` input
    positions (exactly that many when ``s`` divides ``k``, as every FCN upsampler) with jump
    ``1 / s``. Parallel branches (``parts``) take the widest. A :class:`CoordMap` has no
    extent: give the layers instead.
    """
    branches = _branches(layer, parts)
    if branches is not None:
        geos = [path_geometry(b, axis, parts) for b in branches]
        _branch_map(branches, axis, parts)
        return max(g[1] for g in geos), geos[0][0].scale
    if isinstance(layer, CoordMap):
        raise TypeError("a CoordMap has no receptive field: give the layers it stands for")
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, _, d = (_axis(getattr(layer, a), axis) for a in _GEOMETRY)
        extent = (k - 1) * d + 1
        return Fraction(-(-extent // s)), Fraction(1, s)
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = (_axis(getattr(layer, a), axis) for a in _GEOMETRY[:2])
        d = _axis(getattr(layer, "dilation", 1), axis)
        return Fraction((k - 1) * d + 1), Fraction(s)
    if isinstance(layer, nn.Sequential):
        return path_geometry(list(layer), axis, parts)[1:]
    if isinstance(layer, PASS_THROUGH) or hasattr(layer, "coord_map"):
        scale = layer_map(layer, axis).scale
        if scale != 1:
            raise TypeError(f"no receptive field for {type(layer).__name__} (scale {scale})")
        return Fraction(1), Fraction(1)
    raise TypeError(
        f"no receptive field for {type(layer).__name__}: describe its parts (parts=) "
        "or list the spatial layers it is made of"
    )


def path_geometry(
    layers: Iterable[Layer], axis: int = 0, parts: Parts | None = None
) -> tuple[CoordMap, Fraction, Fraction]:
    """``(map, field, jump)`` of a path of layers (input first): the composed coordinate map,
    and the receptive field and jump of the path's output in input positions, by the usual
    recursion ``field += (field_layer - 1) * jump; jump *= jump_layer``."""
    result, field, jump = CoordMap(), Fraction(1), Fraction(1)
    for layer in layers:
        branches = _branches(layer, parts)
        if branches is not None:
            m = _branch_map(branches, axis, parts)
        elif isinstance(layer, nn.Sequential):  # its members may be composite
            m = path_geometry(list(layer), axis, parts)[0]
        else:
            m = layer_map(layer, axis)
        f, j = layer_field(layer, axis, parts)
        result = result.then(m)
        field += (f - 1) * jump
        jump *= j
    return result, field, jump


@dataclass(frozen=True)
class LayerGeometry:
    """Where one layer's output lies on the image, along one axis.

    ``stride``: image pixels per step of the output (the map's scale); ``offset``: the image
    coordinate of output position 0, the centre of its receptive field (``x_image = stride *
    x + offset``, Caffe's coord_map read towards the image); ``field``: the receptive field,
    in image pixels.
    """

    name: str
    stride: Fraction
    offset: Fraction
    field: Fraction

    @property
    def map(self) -> CoordMap:
        return CoordMap(self.stride, self.offset)


def trace_geometry(
    named_layers: Iterable[tuple[str, Layer]],
    start: LayerGeometry | None = None,
    axis: int = 0,
    parts: Parts | None = None,
) -> list[LayerGeometry]:
    """The :class:`LayerGeometry` of each layer of a path (input first), starting from the
    image or from the output of ``start`` (a branch off a tapped layer)."""
    geometry = CoordMap() if start is None else start.map
    field = Fraction(1) if start is None else start.field
    rows = []
    for name, layer in named_layers:
        m, f, _ = path_geometry([layer], axis, parts)
        field += (f - 1) * geometry.scale
        geometry = geometry.then(m)
        rows.append(LayerGeometry(name, geometry.scale, geometry.shift, field))
    return rows


def crop_between(source: LayerGeometry, reference: LayerGeometry | None = None) -> Fraction:
    """The crop offset of ``source`` to ``reference`` (``None``: the image) from their
    geometry: ``(offset_reference - offset_source) / stride``, as :func:`crop_offset` (which
    also refuses what Caffe's crop cannot do)."""
    ref = CoordMap() if reference is None else reference.map
    if source.stride != ref.scale:
        raise ValueError(f"cannot crop between strides {source.stride} and {ref.scale}")
    return (ref.shift - source.offset) / source.stride


# ---------------------------------------------------------------------------------------
# Placing a score map on the image's pixels by its coordinate map


def place_scores(scores: Tensor, maps: Sequence[CoordMap], size: Sequence[int]) -> Tensor:
    """``scores`` (``... x h x w``) resampled onto an ``H x W`` pixel grid (``size``) by their
    coordinate maps (``maps``: height, width), cell ``i`` of an axis centred on pixel
    ``scale * i + shift`` (:class:`LayerGeometry`'s reading).

    Pixel ``p`` takes the linear interpolation of the two cells around ``t = (p - shift) /
    scale``, computed exactly (a cell that falls on a pixel is copied, bit for bit); pixels
    beyond the first or last cell take that cell (edge replication). At stride 1 with an
    integer shift this is a pure translation, a half-integer shift (VGG16's ``12.5``)
    averages the two neighbours, and a stride ``> 1`` is bilinear upsampling aligned, in
    the interior, as the FCN's own bilinear upsamplers with their derived crops.
    """
    if len(maps) != 2 or len(size) != 2:
        raise ValueError("give one coordinate map and one size per spatial axis (height, width)")
    for axis, (m, n) in enumerate(zip(maps, size, strict=True)):
        scores = _place_axis(scores, m, int(n), scores.dim() - 2 + axis)
    return scores


def _place_axis(x: Tensor, m: CoordMap, size: int, dim: int) -> Tensor:
    """:func:`place_scores` along one dimension."""
    cells = x.shape[dim]
    if cells < 1:
        raise ValueError("no score cells to place")
    # t = (p - b) / a in integers: a = an / ad, b = bn / bd, t = num / den with den > 0.
    an, ad = m.scale.numerator, m.scale.denominator
    bn, bd = m.shift.numerator, m.shift.denominator
    p = torch.arange(size, dtype=torch.int64)
    num, den = (p * bd - bn) * ad, bd * an
    low = torch.div(num, den, rounding_mode="floor")
    weight = (num - low * den).double() / den  # in [0, 1)
    before, after = low < 0, low >= cells - 1
    weight[before | after] = 0.0  # edge replication
    low = low.clamp(0, cells - 1)
    first = x.index_select(dim, low.to(x.device))
    if not bool(weight.any()):
        return first
    high = (low + 1).clamp(max=cells - 1)
    second = x.index_select(dim, high.to(x.device))
    shape = [1] * x.dim()
    shape[dim] = size
    return torch.lerp(first, second, weight.to(x.device, x.dtype).view(shape))
