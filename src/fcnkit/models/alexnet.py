"""FCN-AlexNet (Long et al., CVPR 2015, Table 1) in the reference's CaffeNet layout.

CaffeNet differs from torchvision's AlexNet: 96-256-384-384-256 filters, local response
normalisation after pool1 and pool2, and grouped (2) conv2, conv4 and conv5. As for VGG16,
``conv1`` pads by 100, ``fc6``/``fc7`` are convolutionalized (Sec. 3.1, ``fc6`` 6x6) and a
fixed bilinear transposed convolution (kernel 63, stride 32; Sec. 3.3) upsamples
``score_fr`` back to the input; its crop offset (18) is derived by :mod:`fcnkit.coord_map`.
The odd kernel makes the alignment integral: the CaffeNet trunk's own shift is integral,
where VGG16's is a half pixel.
"""

from __future__ import annotations

from torch import Tensor, nn

from fcnkit.coord_map import crop_offset
from fcnkit.models.heads import bilinear_upsampler, crop, score_layer
from fcnkit.models.layers import SlicedConv2d
from fcnkit.models.registry import register_model

__all__ = ["FCNAlexNet", "caffenet_layers"]


def caffenet_layers(in_channels: int = 3) -> list[tuple[str, nn.Module]]:
    """CaffeNet up to ``drop7`` with convolutionalized ``fc6`` (6x6) and ``fc7`` (1x1)."""

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def lrn() -> nn.LocalResponseNorm:
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)

    return [
        ("conv1", nn.Conv2d(in_channels, 96, 11, stride=4, padding=100)),
        ("relu1", nn.ReLU(inplace=True)),
        ("pool1", pool()),
        ("norm1", lrn()),
        ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)),
        ("relu2", nn.ReLU(inplace=True)),
        ("pool2", pool()),
        ("norm2", lrn()),
        ("conv3", nn.Conv2d(256, 384, 3, padding=1)),
        ("relu3", nn.ReLU(inplace=True)),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)),
        ("relu4", nn.ReLU(inplace=True)),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)),
        ("relu5", nn.ReLU(inplace=True)),
        ("pool5", pool()),
        ("fc6", SlicedConv2d(256, 4096, 6)),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(0.5)),
        ("fc7", SlicedConv2d(4096, 4096, 1)),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(0.5)),
    ]


class FCNAlexNet(nn.Module):
    """FCN-32s on CaffeNet with Caffe layer names (``conv1`` ... ``fc7``, ``score_fr``,
    ``upscore``). The derived crop offset is ``crop_offsets["score"]`` (18)."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self._trunk_names = []
        for name, layer in caffenet_layers(in_channels):
            self.add_module(name, layer)
            self._trunk_names.append(name)
        self.score_fr = score_layer(4096, num_classes)
        # fixed bilinear interpolation, 63 x 63 / 32 as the reference's voc-fcn-alexnet
        self.upscore = bilinear_upsampler(num_classes, 32, kernel_size=63, learnable=False)
        path = [getattr(self, n) for n in self._trunk_names] + [self.score_fr, self.upscore]
        self.crop_offsets = {"score": crop_offset(path, [])}

    def forward(self, x: Tensor) -> Tensor:
        image = x
        for name in self._trunk_names:
            x = getattr(self, name)(x)
        x = self.upscore(self.score_fr(x))
        return crop(x, self.crop_offsets["score"], like=image)


@register_model(
    "fcn32s-alexnet",
    description="FCN-AlexNet: CaffeNet (LRN, groups) convolutionalized, stride 32",
    paper="Sec. 4.1, Table 1",
    tags=("paper", "alexnet"),
)
def fcn32s_alexnet(num_classes: int) -> FCNAlexNet:
    return FCNAlexNet(num_classes)
