"""fcnkit: Fully Convolutional Networks for semantic segmentation, in PyTorch.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015. ``create_model(name, num_classes, weights=...)`` builds any registered FCN with
its pretrained weights; ``list_models()`` names them.
"""

from __future__ import annotations

from typing import Any

from fcnkit.models import list_models
from fcnkit.version import __version__
from fcnkit.weights import create_model

__all__ = ["create_model", "list_models", "Segmenter", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily: inference pulls in the data stack, which `fcnkit models` does not need.
    if name == "Segmenter":
        from fcnkit.inference import Segmenter

        return Segmenter
    raise AttributeError(f"module 'fcnkit' has no attribute {name!r}")
