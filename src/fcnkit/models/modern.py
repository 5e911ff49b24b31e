"""The FCN head on modern torchvision backbones (ResNet-50, MobileNetV3-Large).

The paper's skip architecture (Sec. 4.2) without the paper's VGG-era overhead: the backbone
keeps its own "same" padding (no ``pad=100`` and no crops of a 200-pixel border), there is
no fc6/fc7, and the stride-32, 16 and 8 features are scored directly by zero-initialised 1x1
convolutions (``score_fr``, ``score_pool4``, ``score_pool3``, named as the paper net's
layers so :mod:`fcnkit.surgery` staging and class resizing apply unchanged). Coarse scores
are upsampled 2x by learnable transposed convolutions initialised to bilinear interpolation
(``upscore2``, ``upscore_pool4``; Sec. 3.3) or by plain bilinear interpolation, cropped to
the finer map and summed; the result is upsampled to the input by fixed bilinear
interpolation and cropped, so the output is input-sized for every ``H, W >= 1``.

Backbone weights are torchvision's ImageNet weights, named by their enum member
(``backbone_weights="IMAGENET1K_V2"``) or given as a local file. Building without weights
(the default) never touches the network.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from fcnkit.models.registry import register_model
from fcnkit.surgery import init_bilinear_

__all__ = ["ModernFCN", "FeatureTaps", "build_backbone", "BACKBONES", "load_backbone_weights"]


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


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_backbone_weights(classifier: nn.Module, backbone: str, weights: str | os.PathLike) -> None:
    """Load ImageNet weights into a torchvision classifier, in place.

    ``weights`` is a member name of the model's torchvision weight enum (``"IMAGENET1K_V1"``,
    ``"IMAGENET1K_V2"``, ``"DEFAULT"``), read from the torch hub cache or downloaded there,
    or a path to a local state-dict file (loaded with ``weights_only=True``). When the
    download fails (offline), the error names the file expected in the cache.
    """
    path = Path(weights)
    if path.suffix in (".pt", ".pth") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        enum = tvm.get_model_weights(backbone)
        try:
            entry = enum[str(weights)]
        except KeyError:
            raise ValueError(
                f"unknown {backbone} weights {weights!r}: use one of "
                f"{', '.join(enum.__members__)} or a path to a .pth file"
            ) from None
        expected = _hub_file(entry.url)
        try:
            state = torch.hub.load_state_dict_from_url(
                entry.url, map_location="cpu", progress=False, weights_only=True
            )
        except Exception as error:  # URLError, HTTPError, socket errors, ...
            raise FileNotFoundError(
                f"cannot get the {backbone} {entry.name} weights: downloading {entry.url} "
                f"failed ({type(error).__name__}: {error}). Offline, place the file at "
                f"{expected} (torch.hub.get_dir()/checkpoints), or pass a local file: "
                f"backbone_weights='/path/to/{expected.name}'"
            ) from error
    classifier.load_state_dict(state)


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> FeatureTaps:
    """A torchvision classifier's trunk that returns ``{8: ..., 16: ..., 32: ...}`` features."""
    try:
        builder, trunk, taps, _ = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None
    classifier = builder(weights=None)
    if weights is not None:
        load_backbone_weights(classifier, name, weights)
    return FeatureTaps(OrderedDict(trunk(classifier).named_children()), taps)


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)  # zero-initialised score layers (Sec. 4.3)
    nn.init.zeros_(layer.bias)
    return layer


def _upsample2x(num_classes: int, learnable: bool) -> nn.ConvTranspose2d:
    """Exactly 2x (kernel 4, stride 2, padding 1), bilinear-initialised (Sec. 3.3)."""
    layer = init_bilinear_(nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False))
    layer.weight.requires_grad_(learnable)
    return layer


class ModernFCN(nn.Module):
    """FCN-32s / 16s / 8s head on a backbone returning stride-8/16/32 features.

    Args:
        backbone: module returning ``{stride: features}`` for at least the strides used
            (``32``; ``16`` for 16s; ``8`` for 8s) with "same" padding, i.e. sizes
            ``ceil(H / stride)``.
        channels: feature channels per stride, e.g. ``{8: 512, 16: 1024, 32: 2048}``.
        num_classes: output classes.
        stride: 32, 16 or 8: the finest skip used (Sec. 4.2).
        fusion: ``"transposed"``: learnable 2x transposed convolutions initialised to
            bilinear interpolation (the paper's in-network upsampling, Sec. 3.3);
            ``"interpolate"``: parameter-free bilinear interpolation.
        learn_upsampling: whether the 2x transposed convolutions learn.

    The coarse map upsampled 2x has ``2 * ceil(H / 2s)`` rows, ``ceil(H / s)`` or one more;
    it is cropped to the finer map (top-left, where both grids start). The fused map is
    upsampled by its stride with fixed bilinear interpolation and cropped to ``H x W``.
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
    ) -> None:
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"stride must be 8, 16 or 32, got {stride}")
        if fusion not in ("transposed", "interpolate"):
            raise ValueError(f"fusion must be 'transposed' or 'interpolate', got {fusion!r}")
        self.stride = stride
        self.fusion = fusion
        self.backbone = backbone
        self.score_fr = _score(channels[32], num_classes)
        if stride <= 16:
            self.score_pool4 = _score(channels[16], num_classes)
            if fusion == "transposed":
                self.upscore2 = _upsample2x(num_classes, learn_upsampling)
        if stride == 8:
            self.score_pool3 = _score(channels[8], num_classes)
            if fusion == "transposed":
                self.upscore_pool4 = _upsample2x(num_classes, learn_upsampling)

    def _fuse(self, coarse: Tensor, fine: Tensor, upsampler: str) -> Tensor:
        h, w = fine.shape[-2:]
        if self.fusion == "transposed":
            up = getattr(self, upsampler)(coarse)[..., :h, :w]
        else:
            up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
            up = up[..., :h, :w]
        return up + fine

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        features = self.backbone(x)
        score = self.score_fr(features[32])
        if self.stride <= 16:
            score = self._fuse(score, self.score_pool4(features[16]), "upscore2")
        if self.stride == 8:
            score = self._fuse(score, self.score_pool3(features[8]), "upscore_pool4")
        score = F.interpolate(
            score, scale_factor=float(self.stride), mode="bilinear", align_corners=False
        )
        return score[..., :h, :w]


def _builder(backbone: str, stride: int) -> Callable[..., ModernFCN]:
    def build(
        num_classes: int,
        *,
        backbone_weights: str | os.PathLike | None = None,
        fusion: str = "transposed",
        learn_upsampling: bool = True,
    ) -> ModernFCN:
        return ModernFCN(
            build_backbone(backbone, backbone_weights),
            BACKBONES[backbone][3],
            num_classes,
            stride,
            fusion=fusion,
            learn_upsampling=learn_upsampling,
        )

    build.__name__ = f"fcn{stride}s_{backbone}"
    build.__doc__ = (
        f"FCN-{stride}s on torchvision {backbone}. ``backbone_weights``: a torchvision enum "
        "member name (``'IMAGENET1K_V1'``, ...) or a local ``.pth`` file; ``fusion``: "
        "``'transposed'`` (learnable bilinear-initialised 2x) or ``'interpolate'``."
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
