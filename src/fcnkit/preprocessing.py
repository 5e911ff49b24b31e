"""Input preprocessing, chosen by a model's weights (never by hand).

Caffe-trained weights (the FCN reference, VGG_ILSVRC_16_layers, HED) expect BGR images in
0..255 minus a per-channel mean; torchvision weights expect RGB in 0..1 normalised by
mean/std. Datasets yield RGB ``uint8`` images (extra modalities appended as further
channels); :meth:`Preprocessing.normalize` turns them into the network's input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch


@dataclass(frozen=True)
class Preprocessing:
    """How raw 0..255 RGB(+extra) images become network input.

    ``channel_order`` applies to the first three channels: ``"BGR"`` reverses them,
    ``"RGB"`` keeps them as the dataset yields them (for an HHA image: the PNG's own channel
    order). ``mean`` and ``std`` are in the network's channel order and in the units after
    ``scale`` (input / 255 * scale).
    Channels beyond ``len(mean)`` are passed through the same scale with mean 0, std 1
    unless ``mean``/``std`` cover them.
    """

    name: str
    channel_order: str = "RGB"  # "RGB" or "BGR"
    scale: float = 255.0  # network sees values in 0..scale
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """``uint8``/float image(s) ``[..., C, H, W]`` in 0..255 RGB -> float32 network input."""
        x = image.to(torch.float32)
        if x.shape[-3] < 3:
            raise ValueError(f"expected at least 3 channels, got shape {tuple(image.shape)}")
        if self.channel_order == "BGR":
            x = torch.cat([x[..., [2, 1, 0], :, :], x[..., 3:, :, :]], dim=-3)
        if self.scale != 255.0:
            x = x * (self.scale / 255.0)
        c = x.shape[-3]
        mean = _per_channel(self.mean, c, 0.0, x)
        std = _per_channel(self.std, c, 1.0, x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, back to float 0..255 RGB (for visualisation)."""
        c = x.shape[-3]
        x = x * _per_channel(self.std, c, 1.0, x) + _per_channel(self.mean, c, 0.0, x)
        if self.scale != 255.0:
            x = x * (255.0 / self.scale)
        if self.channel_order == "BGR":
            x = torch.cat([x[..., [2, 1, 0], :, :], x[..., 3:, :, :]], dim=-3)
        return x

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["mean"] = tuple(d.get("mean", ()))
        d["std"] = tuple(d.get("std", ()))
        return cls(**d)


def _per_channel(values: Sequence[float], c: int, fill: float, like: torch.Tensor) -> torch.Tensor:
    v = list(values)[:c] + [fill] * max(0, c - len(values))
    return torch.tensor(v, dtype=like.dtype, device=like.device).view(c, 1, 1)


# The reference means (fcn.berkeleyvision.org data layers), BGR order, 0..255.
CAFFE_VOC = Preprocessing(
    "caffe-voc", "BGR", 255.0, (104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0)
)
CAFFE_SIFTFLOW = Preprocessing(
    "caffe-siftflow", "BGR", 255.0, (114.578, 115.294, 108.353), (1.0, 1.0, 1.0)
)
CAFFE_NYUD_COLOR = Preprocessing(
    "caffe-nyud-color", "BGR", 255.0, (116.190, 97.203, 92.318), (1.0, 1.0, 1.0)
)
# HHA images are 3-channel PNGs. The reference (nyud_layers.py, load_hha) subtracts
# HHA_MEAN from the PNG's channels in FILE order and does not reverse them: only colour goes
# RGB -> BGR (load_image). So the HHA preset keeps the channels as read ("RGB" = no swap):
# an HHA pixel (200, 100, 50) becomes (67.569, 5.924, -68.477), as the reference feeds it.
HHA_MEAN = (132.431, 94.076, 118.477)  # nyud_layers.py mean_hha, in the PNG's channel order
CAFFE_NYUD_HHA = Preprocessing("caffe-nyud-hha", "RGB", 255.0, HHA_MEAN, (1.0, 1.0, 1.0))
# Early-fusion RGB-D: colour as above plus the NYUD reader's uint8 log-depth code
# v = 255 (log2(d_mm) - DEPTH_LOG2_MIN) / DEPTH_LOG2_SPAN on the 4th channel. The code is
# defined here, its one home: fcnkit.data.nyud imports it (data depends on preprocessing).
# DEPTH_CODE_MEAN/STD turn v back into the reference's ``ln(d) - 7.844``.
DEPTH_LOG2_MIN = 8.0  # code 0 = 2**8 mm = 256 mm
DEPTH_LOG2_SPAN = 6.0  # code 255 = 2**14 mm = 16.384 m
REFERENCE_LOG_DEPTH_MEAN = 7.844  # the reference subtracts this from ln(depth in mm)
DEPTH_CODE_STD = 255.0 / (DEPTH_LOG2_SPAN * math.log(2.0))
DEPTH_CODE_MEAN = (REFERENCE_LOG_DEPTH_MEAN - DEPTH_LOG2_MIN * math.log(2.0)) * DEPTH_CODE_STD
CAFFE_NYUD_RGBD = Preprocessing(
    "caffe-nyud-rgbd",
    "BGR",
    255.0,
    (116.190, 97.203, 92.318, DEPTH_CODE_MEAN),
    (1.0, 1.0, 1.0, DEPTH_CODE_STD),
)
# Late fusion feeds 6 channels, RGB then HHA. ``normalize`` reverses only the first three
# (colour -> BGR) and leaves the HHA channels in file order, exactly the two inputs of the
# reference's color-hha net (load_image and load_hha of nyud_layers.py): the reference's
# conv1_1hha, trained on this input, loads unchanged.
CAFFE_NYUD_COLOR_HHA = Preprocessing(
    "caffe-nyud-color-hha",
    "BGR",
    255.0,
    (116.190, 97.203, 92.318, *HHA_MEAN),
    (1.0,) * 6,
)
# The VGG ILSVRC-2014 Caffe models: BGR 0..255 minus the ImageNet mean.
# NYUDv2 input modalities (paper Sec. 5, Table 4): colour, HHA, early-fusion RGB-D, late-fusion
# RGB + HHA; the reader stacks them, the models take as many input channels.
MODALITIES = ("rgb", "hha", "rgbd", "rgb+hha")

CAFFE_ILSVRC = Preprocessing("caffe-ilsvrc", "BGR", 255.0, (103.939, 116.779, 123.68))
# TF EfficientNet-Lite: RGB 0..255, (x - 127) / 128 (the TPU reference's lite preprocessing).
TF_EFFICIENTNET_LITE = Preprocessing(
    "tf-efficientnet-lite", "RGB", 255.0, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)
)
# torchvision VGG16_Weights.IMAGENET1K_FEATURES: RGB 0..1, mean subtracted, std 1/255.
TORCHVISION_VGG16_FEATURES = Preprocessing(
    "torchvision-vgg16-features",
    "RGB",
    1.0,
    (0.48235, 0.45882, 0.40784),
    (1 / 255, 1 / 255, 1 / 255),
)
TORCHVISION_IMAGENET = Preprocessing(
    "torchvision-imagenet", "RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
)

PRESETS: dict[str, Preprocessing] = {
    p.name: p
    for p in (
        CAFFE_VOC,
        CAFFE_SIFTFLOW,
        CAFFE_NYUD_COLOR,
        CAFFE_NYUD_HHA,
        CAFFE_NYUD_RGBD,
        CAFFE_NYUD_COLOR_HHA,
        CAFFE_ILSVRC,
        TF_EFFICIENTNET_LITE,
        TORCHVISION_VGG16_FEATURES,
        TORCHVISION_IMAGENET,
    )
}


def get_preprocessing(name_or_obj: str | Preprocessing | dict) -> Preprocessing:
    if isinstance(name_or_obj, Preprocessing):
        return name_or_obj
    if isinstance(name_or_obj, dict):
        return Preprocessing.from_dict(name_or_obj)
    try:
        return PRESETS[name_or_obj]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing {name_or_obj!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None
