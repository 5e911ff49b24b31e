"""The paper's Fig. 2: a convolutionalized ImageNet classifier's class heatmap over an image.

Sec. 3.1: once its fully connected layer is a 1x1 convolution, the classifier gives a score
map instead of one score vector; at each stride-32 cell the softmax over the 1000 ImageNet
classes says where, e.g., "tabby cat" is. Used by ``fcnkit heatmap`` and ``fcnkit serve``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Heatmap:
    """A class-probability map over an image (Fig. 2)."""

    image: np.ndarray  # H x W x 3 uint8, as fed to the net
    prob: np.ndarray  # h x w (stride 32) softmax probability of the class per cell
    class_index: int
    top5: list[tuple[str, float]]  # the classifier's prediction for the whole image


def class_heatmap(
    image: np.ndarray, class_index: int | None = None, size: int = 448, *, variant: str = "lite0"
) -> Heatmap:
    """The convolutionalized EfficientNet-Lite ``variant`` (``"lite0"``, ``"lite1"``,
    ``"lite2"``: packaged ImageNet weights) on ``image``.

    The image's shorter side is resized to ``size``; the net's ``_fc`` applied as a 1x1
    convolution at every stride-32 cell gives class scores, softmaxed per cell. The mean of
    the score map equals the classifier's logits: ``top5`` is the whole-image prediction.
    """
    from fcnkit.preprocessing import get_preprocessing
    from fcnkit.surgery import convolutionalize
    from fcnkit.weights import imagenet_classes
    from fcnkit.weights.backbones import efficientnet_lite_imagenet

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    x = torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(
        x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
        antialias=True, align_corners=False,
    )  # fmt: skip
    resized = x[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()
    # Sec. 3.1, Fig. 2: _fc as a 1x1 convolution before the (dropped) global pooling
    net = convolutionalize(efficientnet_lite_imagenet(variant), global_pool="none").eval()
    with torch.no_grad():
        scores = net(get_preprocessing("tf-efficientnet-lite").normalize(x))[0]
    probs = scores.mean((1, 2)).softmax(0)
    classes = imagenet_classes()
    top = probs.topk(5)
    if class_index is None:
        class_index = int(top.indices[0])
    return Heatmap(
        image=resized,
        prob=scores.softmax(0)[class_index].numpy(),
        class_index=class_index,
        top5=[(classes[i], float(p)) for p, i in zip(top.values, top.indices, strict=True)],
    )
