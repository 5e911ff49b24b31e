"""One registry of model names (the timm / smp pattern): ``create_model(name, ...)``."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fcnkit.preprocessing import Preprocessing, get_preprocessing


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model name."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    preprocessing: str = "caffe-voc"  # default when no weights say otherwise
    default_num_classes: int = 21
    paper: str = ""  # where in the paper the model comes from, e.g. "Sec. 4.2, Table 2"
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelEntry] = {}
_discovered = False


def register_model(
    name: str,
    *,
    description: str,
    preprocessing: str = "caffe-voc",
    default_num_classes: int = 21,
    paper: str = "",
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(num_classes, **options) -> nn.Module`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(
            name, builder, description, preprocessing, default_num_classes, paper, tuple(tags)
        )
        return builder

    return decorator


def unregister_model(name: str) -> None:
    """Forget ``name`` (for temporary models, e.g. in tests); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every module of ``fcnkit.models`` so that their ``@register_model`` run."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("fcnkit.models")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"fcnkit.models.{info.name}")
    _discovered = True


def list_models(tag: str | None = None) -> list[str]:
    """Registered model names, sorted; optionally only those carrying ``tag``."""
    _discover()
    return sorted(n for n, e in _REGISTRY.items() if tag is None or tag in e.tags)


def get_model_entry(name: str) -> ModelEntry:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_model(
    name: str,
    num_classes: int | None = None,
    *,
    preprocessing: str | Preprocessing | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered network, randomly initialised (the score layers zero, Sec. 4.3).

    Args:
        name: a name from :func:`list_models`, e.g. ``"fcn8s"`` or ``"fcn8s-resnet50"``.
        num_classes: number of output classes (the entry's default when ``None``).
        preprocessing: override the preprocessing recorded on the model.
        **options: model-specific options (documented on each builder).

    The returned module carries ``model_name``, ``num_classes``, ``model_options`` (the options
    it was built with, so a checkpoint can rebuild it) and ``preprocessing``. Pretrained
    weights are loaded above the models: :func:`fcnkit.create_model` (``weights=``,
    ``backbone_weights=``).
    """
    entry = get_model_entry(name)
    if num_classes is None:
        num_classes = entry.default_num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = entry.builder(num_classes=num_classes, **options)
    model.model_name = name
    model.num_classes = num_classes
    model.model_options = dict(options)
    # A builder may choose the preprocessing from its options (e.g. the NYUD modality).
    if not isinstance(getattr(model, "preprocessing", None), Preprocessing):
        model.preprocessing = get_preprocessing(entry.preprocessing)
    if preprocessing is not None:
        model.preprocessing = get_preprocessing(preprocessing)
    return model


# ``fcnkit.weights`` (above the models) registers its ``create_model`` here, so that the older
# spelling ``fcnkit.models.create_model(name, weights=...)`` keeps loading weights for one
# release without the models importing the weights package.
_WEIGHTS_FACTORY: Callable[..., nn.Module] | None = None


def _register_weights_factory(factory: Callable[..., nn.Module]) -> None:
    global _WEIGHTS_FACTORY
    _WEIGHTS_FACTORY = factory


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    preprocessing: str | Preprocessing | None = None,
    **options: Any,
) -> nn.Module:
    """:func:`build_model`, or with ``weights`` / ``backbone_weights`` the same as
    :func:`fcnkit.create_model` (kept here for one release; prefer ``fcnkit.create_model``)."""
    if weights is None and options.get("backbone_weights") is None:
        options.pop("backbone_weights", None)
        return build_model(name, num_classes, preprocessing=preprocessing, **options)
    if _WEIGHTS_FACTORY is None:  # only when fcnkit.weights was never imported
        raise RuntimeError("loading weights needs fcnkit.weights: use fcnkit.create_model")
    return _WEIGHTS_FACTORY(
        name, num_classes, weights=weights, preprocessing=preprocessing, **options
    )
