"""Checkpoints: atomic writes, and rebuilding a model from a checkpoint or run directory.

A checkpoint is a plain dict (see docs/architecture.md) that loads with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnkit import __version__


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact: never a half-written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_metadata(
    model: nn.Module, classes: list[str] | None = None, palette: list | None = None
) -> dict[str, Any]:
    """What is needed to rebuild ``model`` (built by ``create_model``) and read its output."""
    for attr in ("model_name", "num_classes"):
        if not hasattr(model, attr):
            raise ValueError(f"model has no {attr!r}: build it with fcnkit.create_model")
    preprocessing = getattr(model, "preprocessing", None)
    return {
        "model_name": model.model_name,
        "num_classes": int(model.num_classes),
        "model_options": dict(getattr(model, "model_options", {})),
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "classes": list(classes) if classes is not None else None,
        "palette": [list(map(int, c)) for c in palette] if palette is not None else None,
        "fcnkit_version": __version__,
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    classes: list[str] | None = None,
    palette: list | None = None,
    **extra: Any,
) -> Path:
    """Write ``model``'s weights and metadata (plus ``extra`` training state) atomically."""
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    ckpt = model_metadata(module, classes, palette)
    ckpt["model"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt.update(extra)
    return atomic_save(ckpt, path)


def resolve_checkpoint(path_or_run: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/best.pt``, else ``last.pt``)."""
    path = Path(path_or_run)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"{path} is a directory but holds no checkpoints/best.pt or checkpoints/last.pt; "
            "pass a run directory written by `fcnkit train` or a checkpoint file"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint or run directory at {path}")
    return path


def load_checkpoint(path_or_run: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), with a clear error if it isn't one."""
    path = resolve_checkpoint(path_or_run)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle/zip errors: name the file
        raise ValueError(f"{path} is not a readable fcnkit checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        raise ValueError(
            f"{path} is not an fcnkit checkpoint (expected a dict with 'model' and 'model_name'; "
            "for a plain state dict use create_model(name, weights=path))"
        )
    ckpt["path"] = str(path)
    return ckpt


def load_model(
    path_or_run: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint or run directory; returns ``(model, metadata)``.

    The model is in eval mode; ``metadata`` is the checkpoint without its tensors' bulk.
    """
    from fcnkit.models import create_model
    from fcnkit.preprocessing import get_preprocessing

    ckpt = load_checkpoint(path_or_run, map_location)
    model = create_model(ckpt["model_name"], ckpt["num_classes"], **ckpt.get("model_options", {}))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt['path']}: weights do not fit {ckpt['model_name']}: {err}") from err
    if ckpt.get("preprocessing"):
        model.preprocessing = get_preprocessing(ckpt["preprocessing"])
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "rng")}
    return model, meta
