"""The paper's VGG16 FCNs (Long et al., CVPR 2015) in the Caffe reference's exact layout.

- Sec. 3.1 (surgery): VGG16's fully connected layers as convolutions, ``fc6`` 7x7 and
  ``fc7`` 1x1, followed by a 1x1 ``score_fr`` producing class scores at stride 32.
- Sec. 3.3 (upsampling): bias-free transposed convolutions initialised to bilinear
  interpolation; the final one is fixed, the 2x ones may learn (``learn_upsampling``).
- Sec. 4.2 (skips): FCN-16s adds scores from ``pool4`` and FCN-8s also from ``pool3``, each
  cropped to the upsampled coarser scores and summed.

The geometry is Caffe's: ``conv1_1`` pads by 100 (so that ``fc6`` always has a 7x7 input
and the output can be cropped to any input size >= 1), max pooling rounds up, and every
crop offset is derived from the layers themselves with :mod:`fcnkit.coord_map`. Layers are
top-level attributes named as the reference prototxts (``conv1_1``, ``fc6``, ``score_fr``,
``score_pool4``, ``upscore2``, ...), so the authors' weights map 1:1 by name.

Variants: FCN-8s at-once (fixed skip scaling), FCN-32s-fixed (frozen trunk), SIFT Flow's
two heads on one trunk (``_sem``/``_geo`` suffixes) and the NYUDv2 modalities (RGB, HHA,
early-fusion RGB-D, late-fusion RGB + HHA with ``color``/``hha`` suffixed trunks).

Sec. 3.2 (shift-and-stitch is filter rarefaction): :meth:`FCN.coarse_scores` returns the
scores before the final upsampler (FCN-32s: ``score_fr``, stride 32) and
:meth:`FCN.coarse_map` their coordinate map, which :func:`fcnkit.inference.shift_and_stitch`
makes dense; the stride-32 nets take ``rarefy=f`` (:mod:`fcnkit.models.rarefy`): the last
pools' strides removed and the layers after them dilated, the same dense scores in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from fcnkit.coord_map import CoordMap, crop_offset, path_map, place_scores
from fcnkit.models.border import run_narrow
from fcnkit.models.heads import bilinear_upsampler, crop, score_layer
from fcnkit.models.layers import SlicedConv2d
from fcnkit.models.outputs import Outputs
from fcnkit.models.rarefy import rarefy_layers
from fcnkit.models.registry import register_model
from fcnkit.preprocessing import MODALITIES, Preprocessing, get_preprocessing

__all__ = [
    "FCN",
    "MODALITIES",
    "FixedScale",
    "crop",
    "nyud_preprocessing",
    "vgg16_layers",
]

# (width, number of 3x3 convs) of VGG16's five stages.
_VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
_FINAL_UPSCORE = {32: "upscore", 16: "upscore16", 8: "upscore8"}


def vgg16_layers(in_channels: int = 3) -> list[tuple[str, nn.Module]]:
    """VGG16 up to ``drop7`` with the fully connected layers convolutionalized (Sec. 3.1).

    Returns ``(caffe_name, module)`` pairs: ``conv1_1`` (padding 100), ..., ``pool5``,
    ``fc6`` (7x7, no padding), ``relu6``, ``drop6``, ``fc7`` (1x1), ``relu7``, ``drop7``.
    Dropout is element-wise (``nn.Dropout``), as Caffe's.
    """
    layers: list[tuple[str, nn.Module]] = []
    channels = in_channels
    for stage, (width, depth) in enumerate(_VGG16_STAGES, start=1):
        for i in range(1, depth + 1):
            padding = 100 if (stage, i) == (1, 1) else 1
            layers.append((f"conv{stage}_{i}", nn.Conv2d(channels, width, 3, padding=padding)))
            layers.append((f"relu{stage}_{i}", nn.ReLU(inplace=True)))
            channels = width
        layers.append((f"pool{stage}", nn.MaxPool2d(2, stride=2, ceil_mode=True)))
    layers += [
        ("fc6", SlicedConv2d(512, 4096, 7)),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(0.5)),
        ("fc7", SlicedConv2d(4096, 4096, 1)),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(0.5)),
    ]
    return layers


class FixedScale(nn.Module):
    """Multiply by a constant (FCN-8s at-once's ``scale_pool4``/``scale_pool3``); no parameter."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale

    def coord_map(self, axis: int = 0) -> CoordMap:
        return CoordMap()

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class FCN(nn.Module):
    """VGG16 FCN-32s / 16s / 8s with one or more heads and one or more trunks.

    Args:
        heads: head suffix -> number of classes. ``{"": 21}`` is the VOC net;
            ``{"_sem": 33, "_geo": 3}`` SIFT Flow's two heads (``score_fr_sem``, ...).
        stride: 32, 16 or 8 (Sec. 4.2; FCN-32s, FCN-16s, FCN-8s).
        trunks: suffixes of the VGG16 trunks; several trunks mean late fusion (NYUD
            ``("color", "hha")``: ``conv1_1color``, ``score_frhha``, ...). The input's
            channels are split between the trunks in order; each trunk's scores are
            weighted by ``1 / len(trunks)`` (the reference's 0.5/0.5) and summed before the
            (shared) upsamplers.
        in_channels: input channels per trunk (4 for NYUD early-fusion RGB-D).
        learn_upsampling: let the 2x upsamplers (``upscore2``, ``upscore_pool4``) learn, as
            the paper (Sec. 3.3); the reference keeps them fixed (``False``). The final
            upsampler is always fixed bilinear interpolation.
        skip_scales: fixed factors for ``pool4`` and ``pool3`` before their score layers,
            ``(0.01, 0.0001)`` for FCN-8s at-once; ``None`` for the staged nets.
        freeze_trunk: freeze ``conv1_1`` ... ``fc7`` (FCN-32s-fixed, Table 2).
        rarefy: filter rarefaction (Sec. 3.2, :meth:`rarefy_`), stride-32 nets only: 1 (off),
            2, 4, 8, 16 or 32 (pool5; pool4 and pool5; ...; all five pools).

    ``forward(x)`` returns ``N x C x H x W`` scores for one unnamed head, else a dict
    keyed by head name without the leading ``_`` (``{"sem": ..., "geo": ...}``), in order.
    :attr:`narrow_border` (default on) computes the first three stages on a narrower
    border than Caffe's 100 pixels and gathers the repeated border rows back at ``pool3``
    (:mod:`fcnkit.models.border`): the same outputs and gradients, with fewer pixels; set it
    to ``False`` to compute every border pixel. The derived crop offsets are in
    :attr:`crop_offsets`, keyed by the reference's crop blob names (``score_pool4c``,
    ``score_pool3c``, ``score``). :meth:`coarse_scores` and
    :meth:`coarse_map` give the scores before the final upsampler and where they lie.
    """

    #: compute up to ``pool3`` on the narrow border (:mod:`fcnkit.models.border`)
    narrow_border: bool = True

    def __init__(
        self,
        heads: Mapping[str, int],
        stride: int = 32,
        *,
        trunks: Sequence[str] = ("",),
        in_channels: int = 3,
        learn_upsampling: bool = True,
        skip_scales: tuple[float, float] | None = None,
        freeze_trunk: bool = False,
        rarefy: int = 1,
    ) -> None:
        super().__init__()
        if stride not in _FINAL_UPSCORE:
            raise ValueError(f"stride must be 32, 16 or 8, got {stride}")
        if not heads or any(n < 1 for n in heads.values()):
            raise ValueError(f"every head needs at least one class, got {dict(heads)}")
        self.stride = stride
        self.heads = dict(heads)
        self.trunks = tuple(trunks)
        self.in_channels = in_channels
        self.fusion_weight = 1.0 / len(self.trunks)
        self._trunk_names: list[str] = []

        for t in self.trunks:
            for name, layer in vgg16_layers(in_channels):
                self.add_module(name + t, layer)
                if t == self.trunks[0]:
                    self._trunk_names.append(name)
        if freeze_trunk:
            for p in self.parameters():  # only the trunks exist so far
                p.requires_grad_(False)

        if skip_scales is not None:
            self.scale_pool4 = FixedScale(skip_scales[0])
            self.scale_pool3 = FixedScale(skip_scales[1])
        for h, n in self.heads.items():
            for t in self.trunks:
                self.add_module(f"score_fr{h}{t}", score_layer(4096, n))
                if stride <= 16:
                    self.add_module(f"score_pool4{h}{t}", score_layer(512, n))
                if stride == 8:
                    self.add_module(f"score_pool3{h}{t}", score_layer(256, n))
            if stride <= 16:
                self.add_module(
                    f"upscore2{h}", bilinear_upsampler(n, 2, learnable=learn_upsampling)
                )
            if stride == 8:
                self.add_module(
                    f"upscore_pool4{h}", bilinear_upsampler(n, 2, learnable=learn_upsampling)
                )
            self.add_module(
                _FINAL_UPSCORE[stride] + h, bilinear_upsampler(n, stride, learnable=False)
            )

        self.geometry = "caffe"
        self.crop_offsets = self._derive_crop_offsets()
        self.rarefaction = 1
        if rarefy != 1:
            self.rarefy_(rarefy)

    @property
    def head_classes(self) -> dict[str, int]:
        """Output name -> classes, in output order (``{"sem": 33, "geo": 3}``; ``{"": 21}``)."""
        return {h.lstrip("_"): n for h, n in self.heads.items()}

    @property
    def input_channels(self) -> int:
        """Channels of the input tensor (all trunks' inputs concatenated)."""
        return self.in_channels * len(self.trunks)

    def _layers(self, names: Sequence[str]) -> list[nn.Module]:
        return [getattr(self, n) for n in names]

    def _trunk_path(self, last: str) -> list[nn.Module]:
        """The first trunk's layers from the image up to and including ``last``."""
        t = self.trunks[0]
        names = self._trunk_names[: self._trunk_names.index(last) + 1]
        return self._layers([n + t for n in names])

    def _derive_crop_offsets(self) -> dict[str, int]:
        """Crop offsets from the layers' geometry (:func:`fcnkit.coord_map.crop_offset`).
        Caffe's geometry crops each skip's scores to the upsampled ones; the ``"same"`` one
        (:meth:`drop_pad100_`) crops the upsampled scores to the skip's (same keys)."""
        h, t = next(iter(self.heads)), self.trunks[0]
        scale = [self.scale_pool4] if hasattr(self, "scale_pool4") else []
        upscored = self._trunk_path("drop7") + self._layers([f"score_fr{h}{t}"])
        offsets = {}

        def skip_offset(skip: list[nn.Module]) -> int:
            if self.geometry == "same":
                return crop_offset(upscored, skip)
            return crop_offset(skip, upscored)

        if self.stride <= 16:
            upscored += self._layers([f"upscore2{h}"])
            pool4 = self._trunk_path("pool4") + scale + self._layers([f"score_pool4{h}{t}"])
            offsets["score_pool4c"] = skip_offset(pool4)
        if self.stride == 8:
            upscored += self._layers([f"upscore_pool4{h}"])
            pool3 = self._trunk_path("pool3") + scale + self._layers([f"score_pool3{h}{t}"])
            offsets["score_pool3c"] = skip_offset(pool3)
        upscored += self._layers([_FINAL_UPSCORE[self.stride] + h])
        offsets["score"] = crop_offset(upscored, [])  # [] = the image itself
        return offsets

    def _coarse_path(self) -> list[nn.Module]:
        """The layers from the image to the input of the final upsampler (first trunk and
        head; the others have the same geometry)."""
        h, t = next(iter(self.heads)), self.trunks[0]
        path = self._trunk_path("drop7") + self._layers([f"score_fr{h}{t}"])
        if self.stride <= 16:
            path += self._layers([f"upscore2{h}"])  # fuse_pool4 lies on upscore2's grid
        if self.stride == 8:
            path += self._layers([f"upscore_pool4{h}"])  # fuse_pool3 on upscore_pool4's
        return path

    def coarse_map(self, axis: int = 0) -> CoordMap:
        """Where :meth:`coarse_scores` lie: cell ``i`` is centred on input pixel ``scale * i
        + shift`` (FCN-32s: ``32 i + 12.5``; rarefied by ``f``: ``(32 / f) i + 12.5``)."""
        return path_map(self._coarse_path(), axis)

    def coarse_scores(self, x: Tensor) -> Outputs:
        """The scores before the final upsampler (Sec. 3.2's coarse output): ``score_fr``
        (stride 32) for FCN-32s, ``fuse_pool4`` (16) for FCN-16s, ``fuse_pool3`` (8) for
        FCN-8s; a rarefied net's are denser. Same form as :meth:`forward` (a tensor, or a
        dict by head); positions by :meth:`coarse_map`. The input of shift-and-stitch
        (:func:`fcnkit.inference.shift_and_stitch`)."""
        return self._by_head(self._coarse(x))

    def rarefy_(self, factor: int) -> FCN:
        """Filter rarefaction in place (Sec. 3.2, :func:`fcnkit.models.rarefy.rarefy_layers`):
        the strides of the last pools of every trunk, multiplying to ``factor``, set to 1
        (2: ``pool5``; 4: ``pool4``, ``pool5``; ... 32: all five) and the layers after them
        dilated (``conv5_*`` by 2 and ``fc6`` by 4 when ``factor`` is 4; ``fc6`` 7x7 of
        dilation ``factor``), their padding scaled alike. :meth:`coarse_scores` then equal
        the shift-and-stitch of the original's with that factor, at ``factor^2`` times the
        cost of every layer after the first rarefied pool; :meth:`forward` places them on
        the input's pixels by :meth:`coarse_map` (:func:`fcnkit.coord_map.place_scores`:
        linear interpolation, which is what the fixed bilinear ``upscore`` does in the
        interior; the crops no longer apply: :attr:`crop_offsets` is emptied). The weights
        keep their names and shapes. Stride-32 nets only: the skips of FCN-16s / 8s fuse at
        fixed strides."""
        if self.stride != 32:
            raise ValueError(
                f"filter rarefaction needs a stride-32 net (FCN-32s); FCN-{self.stride}s "
                "fuses skips at fixed strides"
            )
        for t in self.trunks:
            names = [n + t for n in self._trunk_names]
            for name, layer in zip(names, rarefy_layers(self._layers(names), factor), strict=True):
                setattr(self, name, layer)
        self.rarefaction *= int(factor)
        self.crop_offsets = {}
        if isinstance(getattr(self, "model_options", None), dict):
            self.model_options = {**self.model_options, "rarefy": self.rarefaction}
        return self

    def drop_pad100_(self) -> FCN:
        """The no-pad-100 geometry, in place (``geometry = "same"``): ``conv1_1`` pads by 1
        instead of Caffe's 100, ``fc6`` (7x7) by 3, every upsampler (``upscore2``, ...,
        ``upscore8``) by half its factor; the crop offsets, derived again, are all 0 and the
        output has the input's size. Same weights and names; not the same maths: the trunk
        sees the image without a 100-pixel border of zeros (at 500 x 500, ~1.9x fewer
        convolution FLOPs), and scores near the borders differ (docs/speed.md measures the
        speed and the change of labels). Caffe's pad 100 exists so that ``fc6`` gets a 7x7
        input from any image (reference ``voc-fcn32s/net.py``); here ``fc6``'s own padding
        does that, and images down to 1 x 1 still work (ceil-mode pooling)."""
        if self.rarefaction > 1:
            raise ValueError("drop_pad100_ before rarefy_: rarefaction keeps the geometry it finds")
        if self.geometry == "same":
            return self
        for t in self.trunks:
            getattr(self, f"conv1_1{t}").padding = (1, 1)
            getattr(self, f"fc6{t}").padding = (3, 3)
        for name, layer in self.named_children():
            if name.startswith("upscore"):
                half = layer.stride[0] // 2
                layer.padding = (half, half)
        self.geometry = "same"
        self.crop_offsets = self._derive_crop_offsets()
        return self

    def _fuse(self, upscored: Tensor, skip: Tensor, offset: int) -> Tensor:
        """``upscored + skip`` on their common grid (the reference's ``fuse_pool4`` /
        ``fuse_pool3``): Caffe's geometry crops the skip, the ``"same"`` one the upsampled."""
        if self.geometry == "same":
            return crop(upscored, offset, like=skip) + skip
        return upscored + crop(skip, offset, like=upscored)

    def _run_trunk(self, x: Tensor, t: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(pool3, pool4, drop7)`` of trunk ``t``; the layers up to ``pool3`` (the first
        tap) on the narrow border when :attr:`narrow_border` is on."""
        names = self._trunk_names
        first_tap = names.index("pool3") + 1
        early = self._layers([n + t for n in names[:first_tap]])
        if self.narrow_border:
            x = run_narrow(early, x)
        else:
            for layer in early:
                x = layer(x)
        pool3 = x
        for name in names[first_tap:]:
            x = getattr(self, name + t)(x)
            if name == "pool4":
                pool4 = x
        return pool3, pool4, x

    def _fused_score(self, layer: str, h: str, features: list[Tensor]) -> Tensor:
        """Sum over trunks of ``layer{h}{t}`` applied to each trunk's features."""
        scores = [
            getattr(self, f"{layer}{h}{t}")(f) for t, f in zip(self.trunks, features, strict=True)
        ]
        if len(scores) == 1:
            return scores[0]
        return sum(s * self.fusion_weight for s in scores)

    def _by_head(self, scores: dict[str, Tensor]) -> Outputs:
        """Head suffix -> scores as the output form: a tensor for one unnamed head, else a
        dict by head name without the leading ``_``."""
        out = {h.lstrip("_"): s for h, s in scores.items()}
        return out[""] if list(out) == [""] else out

    def _coarse(self, x: Tensor) -> dict[str, Tensor]:
        """Each head's scores before the final upsampler, by head suffix."""
        expected = self.input_channels
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(f"expected input N x {expected} x H x W, got {tuple(x.shape)}")
        feats = [
            self._run_trunk(xt, t)
            for t, xt in zip(self.trunks, x.split(self.in_channels, 1), strict=True)
        ]
        pool3 = [f[0] for f in feats]
        pool4 = [f[1] for f in feats]
        fc7 = [f[2] for f in feats]
        if hasattr(self, "scale_pool4"):
            pool4 = [self.scale_pool4(p) for p in pool4]
            pool3 = [self.scale_pool3(p) for p in pool3]

        off = self.crop_offsets
        out = {}
        for h in self.heads:
            score = self._fused_score("score_fr", h, fc7)
            if self.stride <= 16:
                score = getattr(self, f"upscore2{h}")(score)
                pool4_score = self._fused_score("score_pool4", h, pool4)
                score = self._fuse(score, pool4_score, off["score_pool4c"])  # fuse_pool4
            if self.stride == 8:
                score = getattr(self, f"upscore_pool4{h}")(score)
                pool3_score = self._fused_score("score_pool3", h, pool3)
                score = self._fuse(score, pool3_score, off["score_pool3c"])  # fuse_pool3
            out[h] = score
        return out

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        coarse = self._coarse(x)
        if self.rarefaction > 1:  # no crop fits a rarefied grid: place by the coordinate map
            maps, size = (self.coarse_map(0), self.coarse_map(1)), x.shape[-2:]
            return self._by_head({h: place_scores(s, maps, size) for h, s in coarse.items()})
        out = {}
        for h, score in coarse.items():
            score = getattr(self, _FINAL_UPSCORE[self.stride] + h)(score)
            out[h] = crop(score, self.crop_offsets["score"], like=x)
        return self._by_head(out)


# ---------------------------------------------------------------------------------------
# PASCAL VOC nets (Sec. 4.1-4.2, Table 1-2)


def _fcn(num_classes: int, stride: int, learn_upsampling: bool = True, **kwargs) -> FCN:
    return FCN({"": num_classes}, stride, learn_upsampling=learn_upsampling, **kwargs)


@register_model(
    "fcn32s",
    description="FCN-32s, VGG16 (Caffe layout), single-stream stride-32 prediction",
    paper="Sec. 4.1, Table 1",
    tags=("paper", "vgg16"),
)
def fcn32s(num_classes: int, *, rarefy: int = 1) -> FCN:
    """``rarefy``: filter rarefaction by that factor (Sec. 3.2, :meth:`FCN.rarefy_`)."""
    return _fcn(num_classes, 32, rarefy=rarefy)


@register_model(
    "fcn16s",
    description="FCN-16s, VGG16: stride-32 scores fused with pool4 scores",
    paper="Sec. 4.2, Table 2",
    tags=("paper", "vgg16"),
)
def fcn16s(num_classes: int, *, learn_upsampling: bool = True) -> FCN:
    """``learn_upsampling``: the 2x upsampler learns (paper) or stays bilinear (reference)."""
    return _fcn(num_classes, 16, learn_upsampling)


@register_model(
    "fcn8s",
    description="FCN-8s, VGG16: fuses pool4 and pool3 scores (stride 8)",
    paper="Sec. 4.2, Table 2",
    tags=("paper", "vgg16"),
)
def fcn8s(num_classes: int, *, learn_upsampling: bool = True) -> FCN:
    """``learn_upsampling``: the 2x upsamplers learn (paper) or stay bilinear (reference)."""
    return _fcn(num_classes, 8, learn_upsampling)


@register_model(
    "fcn8s-atonce",
    description="FCN-8s trained at once: pool4 x 0.01 and pool3 x 0.0001 before scoring",
    paper="PAMI 2016 (reference voc-fcn8s-atonce)",
    tags=("paper", "vgg16"),
)
def fcn8s_atonce(num_classes: int, *, learn_upsampling: bool = True) -> FCN:
    """All-at-once FCN-8s; ``learn_upsampling=False`` is the reference (all fixed)."""
    return _fcn(num_classes, 8, learn_upsampling, skip_scales=(0.01, 0.0001))


@register_model(
    "fcn32s-fixed",
    description="FCN-32s with the VGG16 trunk frozen: only score_fr learns (45.4 baseline)",
    paper="Sec. 4.2, Table 2",
    tags=("paper", "vgg16"),
)
def fcn32s_fixed(num_classes: int, *, rarefy: int = 1) -> FCN:
    """``rarefy``: filter rarefaction by that factor (Sec. 3.2, :meth:`FCN.rarefy_`)."""
    return _fcn(num_classes, 32, freeze_trunk=True, rarefy=rarefy)


# ---------------------------------------------------------------------------------------
# SIFT Flow: semantic + geometric heads on one trunk (Sec. 5, Table 5)


def _siftflow(
    stride: int, num_classes: int, num_geo_classes: int, learn_upsampling: bool, rarefy: int = 1
) -> FCN:
    heads = {"_sem": num_classes, "_geo": num_geo_classes}
    return FCN(heads, stride, learn_upsampling=learn_upsampling, rarefy=rarefy)


_SIFTFLOW_ENTRY = dict(
    preprocessing="caffe-siftflow", default_num_classes=33, paper="Sec. 5, Table 5"
)


@register_model(
    "fcn32s-siftflow",
    description="FCN-32s with SIFT Flow's semantic (33) and geometric (3) heads -> dict",
    tags=("paper", "vgg16", "siftflow"),
    **_SIFTFLOW_ENTRY,
)
def fcn32s_siftflow(num_classes: int, *, num_geo_classes: int = 3, rarefy: int = 1) -> FCN:
    """``num_classes``: semantic classes (33); ``num_geo_classes``: geometric (3);
    ``rarefy``: filter rarefaction (Sec. 3.2, :meth:`FCN.rarefy_`)."""
    return _siftflow(32, num_classes, num_geo_classes, True, rarefy)


@register_model(
    "fcn16s-siftflow",
    description="FCN-16s with SIFT Flow's semantic and geometric heads (paper's model)",
    tags=("paper", "vgg16", "siftflow"),
    **_SIFTFLOW_ENTRY,
)
def fcn16s_siftflow(
    num_classes: int, *, num_geo_classes: int = 3, learn_upsampling: bool = True
) -> FCN:
    """``num_classes``: semantic classes (33); ``num_geo_classes``: geometric (3)."""
    return _siftflow(16, num_classes, num_geo_classes, learn_upsampling)


@register_model(
    "fcn8s-siftflow",
    description="FCN-8s with SIFT Flow's semantic and geometric heads",
    tags=("paper", "vgg16", "siftflow"),
    **_SIFTFLOW_ENTRY,
)
def fcn8s_siftflow(
    num_classes: int, *, num_geo_classes: int = 3, learn_upsampling: bool = True
) -> FCN:
    """``num_classes``: semantic classes (33); ``num_geo_classes``: geometric (3)."""
    return _siftflow(8, num_classes, num_geo_classes, learn_upsampling)


# ---------------------------------------------------------------------------------------
# NYUDv2: RGB, HHA, early fusion RGB-D, late fusion RGB + HHA (Sec. 5, Table 4)


def nyud_preprocessing(modality: str) -> Preprocessing:
    """The preprocessing for a NYUD modality.

    ``rgb``: ``caffe-nyud-color``; ``hha``: ``caffe-nyud-hha``; ``rgbd``: ``caffe-nyud-rgbd``
    (the depth channel becomes the reference's log-depth minus 7.844); ``rgb+hha``:
    ``caffe-nyud-color-hha`` (HHA means in file order, see :mod:`fcnkit.preprocessing`).
    """
    names = {
        "rgb": "caffe-nyud-color",
        "hha": "caffe-nyud-hha",
        "rgbd": "caffe-nyud-rgbd",
        "rgb+hha": "caffe-nyud-color-hha",
    }
    return get_preprocessing(names[modality])


def _nyud(
    stride: int, num_classes: int, modality: str, learn_upsampling: bool, rarefy: int = 1
) -> FCN:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    model = FCN(
        {"": num_classes},
        stride,
        trunks=("color", "hha") if modality == "rgb+hha" else ("",),
        in_channels=4 if modality == "rgbd" else 3,
        learn_upsampling=learn_upsampling,
        rarefy=rarefy,
    )
    model.modality = modality
    model.preprocessing = nyud_preprocessing(modality)
    return model


_NYUD_ENTRY = dict(
    preprocessing="caffe-nyud-color", default_num_classes=40, paper="Sec. 5, Table 4"
)


@register_model(
    "fcn32s-nyud",
    description="FCN-32s for NYUDv2, modality rgb | hha | rgbd (early) | rgb+hha (late fusion)",
    tags=("paper", "vgg16", "nyud"),
    **_NYUD_ENTRY,
)
def fcn32s_nyud(num_classes: int, *, modality: str = "rgb", rarefy: int = 1) -> FCN:
    """``modality``: ``"rgb"``, ``"hha"``, ``"rgbd"`` (4-channel input, RGB then depth) or
    ``"rgb+hha"`` (6-channel input, RGB then HHA; two trunks, scores summed 0.5/0.5);
    ``rarefy``: filter rarefaction of every trunk (Sec. 3.2, :meth:`FCN.rarefy_`)."""
    return _nyud(32, num_classes, modality, True, rarefy)


@register_model(
    "fcn16s-nyud",
    description="FCN-16s for NYUDv2 (paper: rgb+hha), modality rgb | hha | rgbd | rgb+hha",
    tags=("paper", "vgg16", "nyud"),
    **_NYUD_ENTRY,
)
def fcn16s_nyud(num_classes: int, *, modality: str = "rgb", learn_upsampling: bool = True) -> FCN:
    """As ``fcn32s-nyud``, with the pool4 skip (each trunk has its ``score_pool4``)."""
    return _nyud(16, num_classes, modality, learn_upsampling)
