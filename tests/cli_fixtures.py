"""Shared pieces of the CLI tests (not a test module): a tiny FCN-like net and the
`--set` overrides that make `fcnkit train demo` a seconds-long run."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# `fcnkit train demo` in two steps on 32 px synthetic scenes, random backbone (no I/O)
TINY_TRAIN = [
    "--set", "model.options.backbone_weights=null",
    "--set", "train.steps=2",
    "--set", "train.eval_every=2",
    "--set", "train.log_every=1",
    "--set", "data.options={size: 32, num_samples: 4}",
    "--set", "data.val_options={size: 32, num_samples: 2}",
    "--set", "data.batch_size=2",
    "--no-progress",
]  # fmt: skip


class TinyNet(nn.Module):
    """Conv, stride-2 pool, scores, bilinear back to the input size: any H x W in and out."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.score = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.score(F.max_pool2d(torch.relu(self.conv(x)), 2, ceil_mode=True))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def lite0_with_random_scores(num_classes: int) -> nn.Module:
    """An FCN-8s on a random EfficientNet-Lite0 trunk whose score layers are drawn N(0, 0.5)
    (not zero) so that it predicts several classes: a real architecture for end-to-end
    tests of loading, serving and writing weights (seeded by the caller)."""
    import fcnkit

    model = fcnkit.create_model(
        "fcn8s-efficientnet_lite0", num_classes=num_classes, backbone_weights=None
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "score" in name:
                p.normal_(0, 0.5)
    return model.eval()
