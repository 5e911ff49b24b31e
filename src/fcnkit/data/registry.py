"""One registry of dataset names: ``create_dataset(name, root, split, **options)``."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    builder: Callable[..., Dataset]
    description: str
    splits: tuple[str, ...]
    needs_root: bool = True


_REGISTRY: dict[str, DatasetEntry] = {}
_discovered = False
# Modules of fcnkit.data that hold no dataset and need not be imported for discovery.
_NOT_DATASETS = {"registry", "transforms", "collate", "check", "stats"}


def register_dataset(
    name: str, *, description: str, splits: tuple[str, ...], needs_root: bool = True
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``builder(root, split, **options) -> Dataset`` under ``name``."""

    def decorator(builder: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"dataset name {name!r} is registered twice")
        _REGISTRY[name] = DatasetEntry(name, builder, description, tuple(splits), needs_root)
        return builder

    return decorator


def unregister_dataset(name: str) -> None:
    """Forget ``name`` (for temporary datasets, e.g. in tests); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("fcnkit.data")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_DATASETS:
            importlib.import_module(f"fcnkit.data.{info.name}")
    _discovered = True


def list_datasets() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_dataset_entry(name: str) -> DatasetEntry:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_dataset(name: str, root: Any = None, split: str = "train", **options: Any) -> Dataset:
    """Build a registered dataset reading its published on-disk layout under ``root``."""
    entry = get_dataset_entry(name)
    if split not in entry.splits:
        raise ValueError(
            f"dataset {name!r} has no split {split!r}; splits: {', '.join(entry.splits)}"
        )
    # the root is checked once, by the dataset itself (fcnkit.data.base.require_root), where
    # the message can describe the layout expected under it
    return entry.builder(root=root, split=split, **options)
