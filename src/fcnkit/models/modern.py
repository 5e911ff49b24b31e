"""The FCN head on modern backbones (torchvision ResNet-50, MobileNetV3-Large; EfficientNet-Lite0).

The paper's skip architecture (Sec. 4.2) without the paper's VGG-era overhead: the backbone
keeps its own "same" padding (no ``pad=100`` and no crops of a 200-pixel border), there is
no fc6/fc7, and the stride-32, 16 and 8 features are scored directly by zero-initialised 1x1
convolutions (``score_fr``, ``score_pool4``, ``score_pool3``, named as the paper net's
layers so :mod:`fcnkit.surgery` staging and class resizing apply unchanged).

Alignment (the modern counterpart of the VGG nets' Caffe crops, :mod:`fcnkit.coord_map`):
a stride-``s`` feature cell ``i`` is centred on input pixel ``s * i + b_s``. torchvision's
odd-kernel "same" convolutions (``k``, stride 2, pad ``(k - 1) / 2``) map ``x -> 2x``, so
``b_s = 0``; TensorFlow "SAME" padding (EfficientNet) gives a shift that depends on the
input's parity. The head puts every score cell on its receptive-field centre: coarse scores
are upsampled 2x by learnable 3x3 stride-2 transposed convolutions initialised to bilinear
interpolation (``upscore2``, ``upscore_pool4``; Sec. 3.3; a 3-tap kernel because the two
grids are co-centred, where the reference's 4-tap kernel assumes 2x2 pools) or by plain
bilinear interpolation, placed at the offset between the two grids and summed; the result is
upsampled to the input by fixed bilinear interpolation that puts cell ``i`` on pixel
``s * i + b_s``. Borders clamp (edge replication), and the output is input-sized for every
``H, W >= 1``.

Backbone weights are torchvision's ImageNet weights, named by their enum member
(``backbone_weights="IMAGENET1K_V2"``) or given as a local file. Building without weights
(the default) never touches the network.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import SqueezeExcitation

from fcnkit.coord_map import CoordMap, layer_map, path_map
from fcnkit.models.heads import bilinear_upsampler, score_layer
from fcnkit.models.registry import register_model

__all__ = [
    "ModernFCN",
    "FeatureTaps",
    "build_backbone",
    "BACKBONES",
    "trunk_map",
    "aligned_upsample",
]

# {stride: (row shift, column shift)}: cell i of the stride-s map is centred on pixel s*i + shift
Offsets = dict[int, tuple[int | Tensor, int | Tensor]]


def trunk_map(module: nn.Module, axis: int = 0) -> CoordMap:
    """The coordinate map (:mod:`fcnkit.coord_map`) of a torchvision trunk or block.

    Follows the main path of residual blocks (ResNet ``BasicBlock``/``Bottleneck``,
    MobileNetV3 ``InvertedResidual``; a shortcut must map alike) and treats
    squeeze-and-excitation as element-wise; ``nn.Sequential`` is composed in order.
    """
    if isinstance(module, (BasicBlock, Bottleneck)):
        convs = [module.conv1, module.conv2] + ([module.conv3] if hasattr(module, "conv3") else [])
        main = path_map(convs, axis)
        if module.downsample is not None and trunk_map(module.downsample, axis) != main:
            raise ValueError("the residual shortcut and the main path are misaligned")
        return main
    if isinstance(module, InvertedResidual):
        return trunk_map(module.block, axis)
    if isinstance(module, SqueezeExcitation):
        return CoordMap()  # a per-channel gate: element-wise
    if isinstance(module, nn.Sequential):
        result = CoordMap()
        for child in module:
            result = result.then(trunk_map(child, axis))
        return result
    return layer_map(module, axis)


class FeatureTaps(nn.Module):
    """Run ``layers`` in order and return the outputs of the tapped ones, keyed by stride.

    Layers after the last tap are dropped (a classifier's pooling and fc). Parameter names
    are the layers' own (``conv1``, ``layer4`` ... or ``0`` ... ``16``), unprefixed.
    """

    def __init__(self, layers: OrderedDict[str, nn.Module], taps: dict[str, int]) -> None:
        super().__init__()
        self.taps = dict(taps)  # layer name -> output stride
        for name, layer in layers.items():
            self.add_module(name, layer)
            if name == list(taps)[-1]:
                break
        missing = set(taps) - set(self._modules)
        if missing:
            raise ValueError(f"tapped layers not found: {sorted(missing)}")
        self.offsets = self._derive_offsets()

    def _derive_offsets(self) -> dict[int, tuple[int, int]]:
        """``{stride: (shift_h, shift_w)}`` from the layers' coordinate maps; raises unless
        each tap is a ``stride`` x subsampling on whole pixels (no size dependence)."""
        maps = [CoordMap(), CoordMap()]
        offsets: dict[int, tuple[int, int]] = {}
        for name, layer in self._modules.items():
            maps = [m.then(trunk_map(layer, axis)) for axis, m in enumerate(maps)]
            if name in self.taps:
                stride = self.taps[name]
                for m in maps:
                    if m.scale != stride or m.shift.denominator != 1:
                        raise ValueError(f"layer {name}: coordinate map {m}, not stride {stride}")
                offsets[stride] = (int(maps[0].shift), int(maps[1].shift))
        return offsets

    @property
    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Consecutive layers (an untapped one reads only into the next), for
        :func:`fcnkit.models.fold.fold_batchnorm_`: ``conv1`` -> ``bn1`` of a ResNet."""
        names = list(self._modules)
        return [(a, b) for a, b in zip(names, names[1:], strict=False) if a not in self.taps]

    def feature_offsets(self, height: int | Tensor, width: int | Tensor) -> Offsets:
        """Cell ``i`` of the stride-``s`` features is centred on input pixel ``s i + shift``."""
        return dict(self.offsets)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        out: dict[int, Tensor] = {}
        for name, layer in self._modules.items():
            x = layer(x)
            if name in self.taps:
                out[self.taps[name]] = x
        return out


# backbone name -> (torchvision builder, the classifier's trunk, {tapped layer: stride},
# {stride: channels})
BACKBONES: dict[
    str,
    tuple[
        Callable[..., nn.Module], Callable[[nn.Module], nn.Module], dict[str, int], dict[int, int]
    ],
] = {
    "resnet50": (
        tvm.resnet50,
        lambda net: net,
        {"layer2": 8, "layer3": 16, "layer4": 32},
        {8: 512, 16: 1024, 32: 2048},
    ),
    "mobilenet_v3_large": (
        tvm.mobilenet_v3_large,
        lambda net: net.features,
        {"6": 8, "12": 16, "16": 32},
        {8: 40, 16: 112, 32: 960},
    ),
}


def build_backbone(name: str) -> FeatureTaps:
    """A torchvision classifier's trunk (random init) returning ``{8: ..., 16: ..., 32: ...}``.

    ImageNet weights are loaded above the models (:mod:`fcnkit.weights.backbones`).
    """
    try:
        builder, trunk, taps, _ = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None
    return FeatureTaps(OrderedDict(trunk(builder(weights=None)).named_children()), taps)


def upsampler2x(num_classes: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """2x transposed conv (kernel 3, stride 2) initialised to bilinear interpolation (Sec. 3.3).

    Its map is ``x_up = 2 x + 1``; the 3-tap kernel ``(0.5, 1, 0.5)`` interpolates between
    co-centred grids (coarse cell ``i`` on fine cell ``2i``), see :meth:`ModernFCN._fuse`.
    """
    return bilinear_upsampler(num_classes, 2, kernel_size=3, learnable=learnable)


def _edge_pad(x: Tensor) -> Tensor:
    """One replicated cell on every side: upsampling clamps at the borders."""
    return F.pad(x, [1, 1, 1, 1], mode="replicate")


def aligned_upsample(
    x: Tensor,
    factor: int,
    offset: tuple[int | Tensor, int | Tensor],
    size: tuple[int | Tensor, int | Tensor],
) -> Tensor:
    """Bilinear upsampling that puts cell ``i`` of ``x`` on output position ``factor * i +
    offset`` (``0 <= offset <= factor``), clamped at the borders, cropped to ``size``.

    ``align_corners=True`` interpolation of the edge-padded map to ``factor * (n + 1) + 1``
    positions maps position ``u`` to padded cell ``u / factor`` exactly, i.e. to output
    position ``u - factor + offset``. Offsets may be traced integers (ONNX, any input size).
    """
    n_h, n_w = x.shape[-2:]
    up = F.interpolate(
        _edge_pad(x),
        size=(factor * (n_h + 1) + 1, factor * (n_w + 1) + 1),
        mode="bilinear",
        align_corners=True,
    )
    top, left = factor - offset[0], factor - offset[1]
    return up[..., top : top + size[0], left : left + size[1]]


class ModernFCN(nn.Module):
    """FCN-32s / 16s / 8s head on a backbone returning stride-8/16/32 features.

    Args:
        backbone: module returning ``{stride: features}`` for at least the strides used
            (``32``; ``16`` for 16s; ``8`` for 8s) with "same" padding, i.e. sizes
            ``ceil(H / stride)``. Its ``feature_offsets(H, W)`` gives ``{stride: (b_h, b_w)}``:
            cell ``i`` is centred on pixel ``stride * i + b`` (``0 <= b < stride``); without
            that method ``b = 0``, torchvision's odd-kernel "same" convolutions.
        channels: feature channels per stride, e.g. ``{8: 512, 16: 1024, 32: 2048}``.
        num_classes: output classes.
        stride: 32, 16 or 8: the finest skip used (Sec. 4.2).
        fusion: ``"transposed"``: learnable 2x transposed convolutions initialised to
            bilinear interpolation (the paper's in-network upsampling, Sec. 3.3);
            ``"interpolate"``: parameter-free bilinear interpolation (equal at init).
        learn_upsampling: whether the 2x transposed convolutions learn.
        dropout: channel dropout on the stride-32 features before ``score_fr``.

    Score cell ``i`` of stride ``s`` lands on pixel ``s * i + b_s`` of the output, its
    receptive field's centre, at every fusion and in the final upsampling.
    """

    def __init__(
        self,
        backbone: nn.Module,
        channels: dict[int, int],
        num_classes: int,
        stride: int = 8,
        *,
        fusion: str = "transposed",
        learn_upsampling: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"stride must be 8, 16 or 32, got {stride!r}")
        if fusion not in ("transposed", "interpolate"):
            raise ValueError(f"fusion must be 'transposed' or 'interpolate', got {fusion!r}")
        self.stride = stride
        self.fusion = fusion
        self.backbone = backbone
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.score_fr = score_layer(channels[32], num_classes)
        if stride <= 16:
            self.score_pool4 = score_layer(channels[16], num_classes)
            if fusion == "transposed":
                self.upscore2 = upsampler2x(num_classes, learn_upsampling)
        if stride == 8:
            self.score_pool3 = score_layer(channels[8], num_classes)
            if fusion == "transposed":
                self.upscore_pool4 = upsampler2x(num_classes, learn_upsampling)

    def extract_features(self, x: Tensor) -> dict[int, Tensor]:
        """The backbone's ``{stride: features}``."""
        return self.backbone(x)

    def feature_offsets(self, height: int | Tensor, width: int | Tensor) -> Offsets:
        """``{stride: (b_h, b_w)}`` for an ``height x width`` input (see the class doc)."""
        offsets = getattr(self.backbone, "feature_offsets", None)
        if offsets is None:
            return {s: (0, 0) for s in (8, 16, 32)}
        return offsets(height, width)

    def _fuse(
        self, coarse: Tensor, fine: Tensor, shift: tuple[int | Tensor, ...], upsampler: str
    ) -> Tensor:
        """``fine`` + ``coarse`` upsampled 2x with coarse cell ``i`` on fine cell ``2i + shift``.

        Transposed: the edge-padded coarse cell ``i`` (padded index ``i + 1``) lands at
        ``2 (i + 1) + 1`` (``coord_map``: ``x_up = 2 x + 1``), so fine cell 0 is at
        ``3 - shift``.
        """
        size = fine.shape[-2:]
        if self.fusion == "interpolate":
            return aligned_upsample(coarse, 2, shift, size) + fine
        layer = getattr(self, upsampler)
        up = layer(_edge_pad(coarse))
        top, left = (int(layer_map(layer, axis).inverse()(1)) - s for axis, s in enumerate(shift))
        return up[..., top : top + size[0], left : left + size[1]] + fine

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        features = self.extract_features(x)
        offsets = self.feature_offsets(h, w)
        score = self.score_fr(self.drop(features[32]))
        for coarse, fine, skip, upsampler in (
            (32, 16, "score_pool4", "upscore2"),
            (16, 8, "score_pool3", "upscore_pool4"),
        ):
            if self.stride > fine:
                break
            # coarse cell i: pixel 2f i + b_2f = f (2i + (b_2f - b_f) / f) + b_f
            shift = tuple(
                (bc - bf) // fine for bc, bf in zip(offsets[coarse], offsets[fine], strict=True)
            )
            score = self._fuse(score, getattr(self, skip)(features[fine]), shift, upsampler)
        return aligned_upsample(score, self.stride, offsets[self.stride], (h, w))


def _builder(backbone: str, stride: int) -> Callable[..., ModernFCN]:
    def build(
        num_classes: int,
        *,
        fusion: str = "transposed",
        learn_upsampling: bool = True,
    ) -> ModernFCN:
        model = ModernFCN(
            build_backbone(backbone),
            BACKBONES[backbone][3],
            num_classes,
            stride,
            fusion=fusion,
            learn_upsampling=learn_upsampling,
        )
        model.backbone_name = backbone  # which ImageNet weights fit (fcnkit.weights)
        return model

    build.__name__ = f"fcn{stride}s_{backbone}"
    build.__doc__ = (
        f"FCN-{stride}s on torchvision {backbone}. ``fusion``: ``'transposed'`` (learnable "
        "bilinear-initialised 2x) or ``'interpolate'``. ImageNet weights: "
        "``fcnkit.create_model(..., backbone_weights='IMAGENET1K_V1')`` (a torchvision enum "
        "member name or a local ``.pth`` file)."
    )
    return build


for _backbone, _label in (("resnet50", "ResNet-50"), ("mobilenet_v3_large", "MobileNetV3-L")):
    for _stride in (32, 16, 8):
        register_model(
            f"fcn{_stride}s-{_backbone}",
            description=f"FCN-{_stride}s head on torchvision {_label}: no pad-100, 1x1 scores",
            preprocessing="torchvision-imagenet",
            paper="Sec. 4.2 (skips) on a modern backbone",
            tags=("modern", _backbone),
        )(_builder(_backbone, _stride))
