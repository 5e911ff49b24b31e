"""The fcnkit checkpoint format: writing it atomically, recognising it, rebuilding its model.

A checkpoint is a plain dict (see docs/architecture.md) that loads with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists and dicts only. It
holds the weights (``model``) and what is needed to rebuild and read the model
(:func:`model_metadata`); a training checkpoint adds the training state (optimiser, RNG
streams, ...), which :mod:`fcnkit.engine.train` writes and reads.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from fcnkit.models.registry import build_model
from fcnkit.preprocessing import get_preprocessing
from fcnkit.version import __version__


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact: never a half-written checkpoint. A
    full disk removes the temporary file and raises ``OSError(ENOSPC)`` naming ``path``.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, fsync, rename over ``path``
    (the guarantees of :func:`atomic_save`, for any format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC, "no space left on device (the previous file is unchanged)", str(path)
            ) from err
        raise
    return path


# create_model options that fetch pretrained weights while building: not used when a
# checkpoint rebuilds its model (the checkpoint holds every weight; the backbone file may be
# absent or need a download), but kept in the checkpoint for provenance.
WEIGHT_OPTIONS = ("backbone_weights",)


def _palette(palette: Any) -> list[list[int]] | None:
    return [list(map(int, c)) for c in palette] if palette is not None else None


def model_metadata(
    model: nn.Module,
    classes: list[str] | None = None,
    palette: list | None = None,
    *,
    targets: dict[str, list[str]] | None = None,
    palettes: dict[str, list] | None = None,
) -> dict[str, Any]:
    """What is needed to rebuild ``model`` (built by ``create_model``) and read its output.

    ``classes``/``palette`` are the primary head's; multi-head models also record ``targets``
    (head -> class names, the dataset's ``targets``) and ``palettes`` (head -> colours, the
    dataset's ``target_palettes``).
    """
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
        "palette": _palette(palette),
        "targets": {str(h): list(c) for h, c in targets.items()} if targets else None,
        "palettes": {str(h): _palette(p) for h, p in palettes.items()} if palettes else None,
        "fcnkit_version": __version__,
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    classes: list[str] | None = None,
    palette: list | None = None,
    targets: dict[str, list[str]] | None = None,
    palettes: dict[str, list] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model``'s weights and metadata (plus ``extra`` training state) atomically.

    Multi-head models: ``targets`` (head -> class names) and ``palettes`` (head -> colours),
    so that predicting or evaluating any head uses its own names and colours. Weights holding
    NaN or inf are refused (``ValueError``): a checkpoint is always a usable model.
    """
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    ckpt = model_metadata(module, classes, palette, targets=targets, palettes=palettes)
    ckpt["model"] = finite_state(module, path)
    ckpt.update(extra)
    return atomic_save(ckpt, path)


def finite_state(
    module: nn.Module, path: str | os.PathLike, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """``module``'s state dict on the CPU (floating-point tensors in ``dtype`` if given), or
    a ``ValueError`` naming the tensors holding NaN / inf: nothing is written to ``path``
    (the previous file there stays as it was)."""
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        state[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(
            f"refusing to write {path}: the weights {', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            + " hold NaN or inf values"
        )
    return state


SAFETENSORS_SUFFIX = ".safetensors"
_SAFETENSORS_META = "fcnkit"  # header key holding model_metadata() as JSON


def save_safetensors(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    classes: list[str] | None = None,
    palette: list | None = None,
    targets: dict[str, list[str]] | None = None,
    palettes: dict[str, list] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model``'s weights as safetensors, for other tools (no pickle: safe to load
    from anywhere), atomically. The header's metadata holds what :func:`model_metadata`
    records (model name, class count and names, palette, preprocessing) as JSON under
    ``"fcnkit"``, plus ``model_name`` in plain text; fcnkit reads the file back like a
    checkpoint. ``dtype`` (e.g. ``torch.float16``) converts floating-point tensors."""
    from fcnkit.extras import require

    st = require("safetensors.torch", "Writing safetensors")
    module = model.module if hasattr(model, "module") else model
    meta = model_metadata(module, classes, palette, targets=targets, palettes=palettes)
    # tied weights: one copy per name (safetensors refuses shared storage)
    tensors = {k: v.contiguous().clone() for k, v in finite_state(module, path, dtype).items()}
    header = {_SAFETENSORS_META: json.dumps(meta), "model_name": meta["model_name"], "format": "pt"}
    return atomic_write(path, lambda f: f.write(st.save(tensors, metadata=header)))


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A safetensors file as :func:`load_checkpoint` returns checkpoints when it carries
    fcnkit's metadata, else as a plain state dict (name -> tensor)."""
    from fcnkit.extras import require

    safetensors = require("safetensors", "Reading safetensors")
    st = require("safetensors.torch", "Reading safetensors")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = st.load_file(str(path))
    except Exception as err:  # a truncated or foreign file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} could not be read as safetensors ({reason})") from None
    if _SAFETENSORS_META not in header:
        return tensors
    try:
        meta = json.loads(header[_SAFETENSORS_META])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the fcnkit metadata in its header is not JSON ({err})") from None
    return {**meta, "model": tensors}


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


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is an fcnkit checkpoint (the one place the format is recognised)."""
    return isinstance(obj, dict) and "model" in obj and "model_name" in obj


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REFUSALS = ("Unsupported global", "unrecognized function", "Unsupported class")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+)")


def torch_load_error(path: str | os.PathLike, err: BaseException, what: str) -> str:
    """fcnkit's sentence for ``torch.load(path, weights_only=True)`` failing with ``err``.

    A refused pickle (a class or function outside torch's allowlist) is named as such: fcnkit
    never unpickles arbitrary code, and never advises turning that check off. Other failures
    (not a torch file, truncated) give torch's reason without its advice.
    """
    text = str(err)
    if any(r in text for r in _REFUSALS):
        found = _REFUSED_GLOBAL.search(text)
        name = found[1] if found else "a Python object"
        return (
            f"{path}: refused: it asks to unpickle {name}, which is not a tensor, number, "
            "string, list or dict, and fcnkit will not unpickle arbitrary code from a weights "
            f"file. Expected {what}; if the file is yours, re-save its weights as a plain dict "
            "of tensors (torch.save(model.state_dict(), PATH))"
        )
    detail = _UNPICKLER_DETAIL.search(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = detail[1].strip() if detail else (lines[0] if lines else type(err).__name__)
    if "weights_only" in reason:  # torch's advice may be to switch the check off: not ours
        reason = type(err).__name__
    how = "torch.load(weights_only=True)"
    return f"{path} could not be read with {how} ({reason}); expected {what}"


def load_checkpoint(path_or_run: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), with a clear error if it isn't one."""
    path = resolve_checkpoint(path_or_run)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        ckpt = read_safetensors(path)
    else:
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # pickle/zip errors: name the file
            raise ValueError(torch_load_error(path, err, "an fcnkit checkpoint")) from err
    if not is_checkpoint(ckpt):
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
    Options that fetch pretrained weights (``backbone_weights``) are not used: the
    checkpoint holds every weight (they stay in ``metadata["model_options"]``).
    """
    ckpt = load_checkpoint(path_or_run, map_location)
    options = {
        k: v for k, v in (ckpt.get("model_options") or {}).items() if k not in WEIGHT_OPTIONS
    }
    model = build_model(ckpt["model_name"], ckpt["num_classes"], **options)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt['path']}: weights do not fit {ckpt['model_name']}: {err}") from err
    if ckpt.get("preprocessing"):
        model.preprocessing = get_preprocessing(ckpt["preprocessing"])
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "rng")}
    return model, meta


def head_classes(meta: dict[str, Any], head: str | None = None) -> list[str] | None:
    """Class names of ``head`` (the primary head when ``None``) from checkpoint metadata."""
    targets = meta.get("targets") or {}
    if head is not None and head in targets:
        return list(targets[head])
    if head is None or not targets or head == next(iter(targets)):
        return meta.get("classes") or (list(next(iter(targets.values()))) if targets else None)
    return None


def head_palette(meta: dict[str, Any], head: str | None = None) -> list[list[int]] | None:
    """Colours of ``head`` (the primary head when ``None``) from checkpoint metadata."""
    palettes = meta.get("palettes") or {}
    if head is not None and head in palettes:
        return palettes[head]
    targets = meta.get("targets") or {}
    primary = next(iter(palettes or targets), None)
    if head is None or head == primary or not (palettes or targets):
        return meta.get("palette") or (palettes.get(primary) if primary else None)
    return None
