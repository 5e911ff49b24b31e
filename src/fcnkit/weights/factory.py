"""``create_model(name, weights=...)``: a registered network with its pretrained weights;
``load_any(spec)``: a model from whatever the user has (run, checkpoint, entry name, file).

The one public way to get a model: the network from :func:`fcnkit.models.build_model`, then
ImageNet backbone weights (``backbone_weights=``, :mod:`fcnkit.weights.backbones`), then the
weights themselves (``weights=``, :func:`fcnkit.weights.load.load_weights`), which decide the
model's preprocessing unless ``preprocessing=`` overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fcnkit.models import registry
from fcnkit.preprocessing import Preprocessing, get_preprocessing
from fcnkit.weights.backbones import load_backbone_weights
from fcnkit.weights.caffe import read_caffemodel, score_classes
from fcnkit.weights.checkpoint import load_model
from fcnkit.weights.entries import SHIPPED_KIND, WeightEntry, get_weight_entry
from fcnkit.weights.load import load_weights, looks_like_path


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: str | os.PathLike | WeightEntry | None = None,
    preprocessing: str | Preprocessing | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model, optionally with pretrained weights.

    Args:
        name: a name from :func:`fcnkit.list_models`, e.g. ``"fcn8s"`` or ``"fcn8s-resnet50"``.
        num_classes: number of output classes (the entry's default when ``None``).
        weights: ``None`` (random init), the name of a known weight entry
            (see ``fcnkit weights``), or a path to a local file (``.pt``/``.pth``/
            ``.caffemodel``/``.h5``). The weights decide the model's ``preprocessing``.
        preprocessing: override the preprocessing recorded on the model.
        **options: model-specific options (documented on each builder), and for the modern
            nets ``backbone_weights``: ImageNet weights for the backbone (``"imagenet"`` for
            EfficientNet-Lite0, a torchvision enum member name or a ``.pth`` file otherwise).

    The returned module carries ``model_name``, ``num_classes``, ``model_options`` (the options
    it was built with, ``backbone_weights`` included, so a checkpoint can rebuild it) and
    ``preprocessing``.
    """
    given = "backbone_weights" in options
    backbone_weights = options.pop("backbone_weights", None)
    model = registry.build_model(name, num_classes, **options)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    if given:  # recorded for provenance; a checkpoint rebuilds without fetching them
        model.model_options["backbone_weights"] = backbone_weights
    if weights is not None:
        load_weights(model, weights)
    if preprocessing is not None:
        model.preprocessing = get_preprocessing(preprocessing)
    return model


registry._register_weights_factory(create_model)


def load_any(
    spec: str | os.PathLike,
    *,
    model_name: str | None = None,
    num_classes: int | None = None,
    model_options: dict[str, Any] | None = None,
    map_location: Any = "cpu",
    options: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model from a checkpoint or run directory, a known weight entry name, or a weights
    file (``.caffemodel``, ``.pt``/``.pth`` state dict, ``.h5``); returns ``(model, metadata)``.

    Checkpoints rebuild their own model (:func:`load_model`). Otherwise the model is
    ``create_model(model_name, num_classes, weights=spec, **model_options)``: an entry made for
    one model gives ``model_name`` (and a NYUD entry its ``modality``) itself; a file needs
    ``model_name``. ``num_classes`` defaults to the entry's, the caffemodel's ``score_fr``
    or the model's default. Raises ``ValueError``/``FileNotFoundError`` with what to pass.
    (``options=`` is the older name of ``model_options=``, kept for one release.)
    """
    path, text = Path(spec), str(spec)
    build = _Build(model_name, num_classes, {**(options or {}), **(model_options or {})})
    if path.is_dir() or (path.is_file() and path.suffix.lower() not in (".caffemodel", ".h5")):
        try:
            return load_model(path, map_location)
        except ValueError as err:
            if path.is_dir():
                raise
            if model_name is None:
                raise ValueError(
                    f"{err}; to load it as the weights of a model, pass the model name "
                    "(--model NAME; Python: model_name=)"
                ) from None
    if not path.exists():
        if looks_like_path(text):
            raise FileNotFoundError(f"no checkpoint, run directory or weights file at {path}")
        entry = get_weight_entry(text)  # ValueError listing the known names
        if entry.kind == SHIPPED_KIND:  # a whole trained model with its metadata
            model, meta = load_model(entry.path(), map_location)
            return model, {**meta, "weights": entry.name}
        _from_entry(entry, build)
    else:
        _from_file(path, build)
    try:
        model = create_model(build.model_name, build.num_classes, weights=text, **build.options)
    except TypeError as err:  # unknown model options
        raise ValueError(f"cannot build {build.model_name!r}: {err}") from None
    model.to(map_location).eval()
    classes = build.classes if build.classes and len(build.classes) == model.num_classes else None
    meta = {
        "path": text,
        "model_name": build.model_name,
        "num_classes": model.num_classes,
        "model_options": build.options,
        "classes": classes,
        "palette": None,
        "weights": getattr(model, "weights", text),
    }
    return model, meta


@dataclass
class _Build:
    """What :func:`load_any` will build for weights that are not a checkpoint."""

    model_name: str | None
    num_classes: int | None
    options: dict[str, Any]
    classes: list[str] | None = None


def _from_entry(entry: WeightEntry, build: _Build) -> None:
    """Fill in the model, class count, classes (and NYUD modality) from a weight entry."""
    if build.model_name is None:
        exact = [m for m in entry.models if not any(c in m for c in "*?[")]
        if len(exact) != 1:
            raise ValueError(
                f"weights {entry.name!r} fit {', '.join(entry.models) or 'no fcnkit model'}: "
                "pass the model to build (--model NAME; Python: model_name=)"
            )
        build.model_name = exact[0]
    if entry.num_classes is None:
        raise ValueError(
            f"weights {entry.name!r} are an ImageNet trunk/backbone without a segmentation "
            "score layer: train a model from them first (fcnkit train), then pass its run"
        )
    if entry.modality is not None:
        build.options.setdefault("modality", entry.modality)
    build.num_classes = build.num_classes or entry.num_classes
    build.classes = entry.class_names()


def _from_file(path: Path, build: _Build) -> None:
    """A weights file says nothing of its model: the name must be given (a caffemodel's
    ``score_fr`` gives the class count)."""
    if build.model_name is None:
        raise ValueError(
            f"{path} is not an fcnkit checkpoint or run directory: cannot tell which model it "
            "is for; pass --model NAME (and --num-classes N, --model-option KEY=VALUE as needed; "
            "Python: model_name=, num_classes=, model_options=)"
        )
    if build.num_classes is None and path.suffix.lower() == ".caffemodel":
        build.num_classes = score_classes(read_caffemodel(path))
