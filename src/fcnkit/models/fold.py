"""BatchNorm folded into the convolution before it, for inference.

In evaluation mode a BatchNorm layer is a per-channel affine map with fixed statistics, so a
convolution followed by it is one convolution with a scaled weight and a new bias (the same
folding ONNX export does, ``docs/speed.md``). Eager PyTorch runs the BatchNorm as a separate
pass over the activations; folded, the EfficientNet-Lite0 FCN-8s runs ~10% faster in bf16
and fp32 channels-last at 500 x 500 (one CPU thread). The scores change by rounding only
(~1e-6 relative in fp32), which is why the faithful fp32 runner never folds.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.googlenet import BasicConv2d
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

#: (convolution, its BatchNorm) attribute pairs of torchvision blocks that are not
#: ``nn.Sequential``; fcnkit's own blocks declare theirs as ``conv_bn_pairs``
TORCHVISION_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    ResNet: (("conv1", "bn1"),),
    BasicConv2d: (("conv", "bn"),),  # GoogLeNet's
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The (conv, bn) child names of ``module`` whose BatchNorm reads only that conv."""
    pairs = list(getattr(module, "conv_bn_pairs", ()))
    pairs += TORCHVISION_PAIRS.get(type(module), ())
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        pairs += list(zip(names, names[1:], strict=False))
    return pairs


def fold_batchnorm_(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (in place; the
    BatchNorm becomes ``nn.Identity``); returns how many were folded. Call it on a model in
    ``eval()`` mode that will not be trained again: the running statistics become weights."""
    if model.training:
        raise ValueError("fold_batchnorm_ needs a model in eval() mode (it uses the running "
                         "statistics)")  # fmt: skip
    folded = 0
    for module in model.modules():
        for conv_name, bn_name in _pairs(module):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:
                continue
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                bn.weight, bn.bias,
            )  # fmt: skip
            conv.weight, conv.bias = weight, bias
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded
