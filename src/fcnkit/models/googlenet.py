"""FCN-GoogLeNet (Long et al., CVPR 2015, Sec. 4.1, Table 1).

The paper: "For GoogLeNet, we use only the final loss layer, and improve performance by
discarding the final average pooling layer". So: the Inception v1 trunk up to
``inception5b`` (no auxiliary classifiers, no global pooling), the classifier's dropout,
the classifier replaced by a 1x1 ``score_fr`` convolution (Sec. 3.1) and a fixed bilinear
upsampler back to the input (Sec. 3.3).

The trunk is torchvision's GoogLeNet layout with its parameter names (``conv1.conv.weight``,
``inception3a.branch1.conv.weight``, ...), so torchvision's ImageNet weights load by name;
this layout has batch norm and a 2x2 ``maxpool4``. The crop offset is derived by
:mod:`fcnkit.coord_map` (every Inception block is checked to keep coordinates in place).
The trunk's shift is integral, so, as for FCN-AlexNet, the upsampler has an odd kernel (63,
stride 32) to stay pixel-aligned. Like the reference's pad 100 on VGG16, ``conv1`` pads more
than the classifier did (10 instead of 3; padding has no parameters, so the weights are
unchanged): the smallest padding with which every pooling layer gets an input and the
upsampled scores cover the image for every input size >= 1, without pad-100's waste. The
derived crop offset is then 16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import googlenet as tv_googlenet
from torchvision.models.googlenet import BasicConv2d, Inception

from fcnkit.coord_map import CoordMap, crop_offset, layer_map, path_map
from fcnkit.models.heads import bilinear_upsampler, crop, score_layer
from fcnkit.models.registry import register_model

__all__ = ["CONV1_PADDING", "FCNGoogLeNet"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
CONV1_PADDING = 10  # smallest padding giving input-sized output for every size >= 1

_TRUNK = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)


def _coord_map(module: nn.Module, axis: int = 0) -> CoordMap:
    """Coordinate map of a torchvision GoogLeNet block; all Inception branches must agree."""
    if isinstance(module, BasicConv2d):
        return layer_map(module.conv, axis)
    if isinstance(module, nn.Sequential):
        return path_map([_coord_map(m, axis) for m in module], axis)
    if isinstance(module, Inception):
        branches = [module.branch1, module.branch2, module.branch3, module.branch4]
        maps = {_coord_map(b, axis) for b in branches}
        if len(maps) != 1:
            raise ValueError(f"Inception branches are misaligned: {maps}")
        return maps.pop()
    return layer_map(module, axis)


class FCNGoogLeNet(nn.Module):
    """FCN-32s on GoogLeNet (Inception v1).

    Args:
        num_classes: output classes of ``score_fr``.
        dropout: dropout before ``score_fr``; 0.4 as GoogLeNet's final classifier.
        transform_input: re-normalise ImageNet-normalised input to the ``(x - 0.5) / 0.5``
            range torchvision's GoogLeNet weights were trained with (as torchvision does
            when those weights are used).
    """

    def __init__(self, num_classes: int, dropout: float = 0.4, transform_input: bool = True):
        super().__init__()
        net = tv_googlenet(weights=None, aux_logits=False, init_weights=True)
        net.conv1.conv.padding = (CONV1_PADDING, CONV1_PADDING)
        for name in _TRUNK:
            self.add_module(name, getattr(net, name))
        self.transform_input = transform_input
        self.dropout = nn.Dropout(dropout)
        self.score_fr = score_layer(1024, num_classes)
        self.upscore = bilinear_upsampler(num_classes, 32, kernel_size=63, learnable=False)
        path = [_coord_map(getattr(self, n)) for n in _TRUNK] + [self.score_fr, self.upscore]
        self.crop_offsets = {"score": crop_offset(path, [])}

    def _transform_input(self, x: Tensor) -> Tensor:
        # torchvision's GoogLeNet: ImageNet (mean, std) normalisation -> (x - 0.5) / 0.5.
        channels = [
            x[:, c : c + 1] * (std / 0.5) + (mean - 0.5) / 0.5
            for c, (mean, std) in enumerate(zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True))
        ]
        return torch.cat(channels + [x[:, 3:]], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        image = x
        if self.transform_input:
            x = self._transform_input(x)
        for name in _TRUNK:
            x = getattr(self, name)(x)
        x = self.upscore(self.score_fr(self.dropout(x)))
        return crop(x, self.crop_offsets["score"], like=image)


@register_model(
    "fcn32s-googlenet",
    description="FCN-GoogLeNet: Inception v1 (torchvision layout), final loss only, stride 32",
    preprocessing="torchvision-imagenet",
    paper="Sec. 4.1, Table 1",
    tags=("paper", "googlenet"),
)
def fcn32s_googlenet(
    num_classes: int, *, dropout: float = 0.4, transform_input: bool = True
) -> FCNGoogLeNet:
    return FCNGoogLeNet(num_classes, dropout=dropout, transform_input=transform_input)
