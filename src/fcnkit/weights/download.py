"""fcnkit's one download / cache policy, for torchvision's weights (the only ones downloaded).

The file in the torch hub cache is used when present; otherwise, unless ``FCNKIT_OFFLINE=1``,
one download is tried with a short timeout; any failure is an immediate ``FileNotFoundError``
naming the file to place, where, and how to pass a local file instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from fcnkit.weights.entries import WeightEntry, get_weight_entry

DOWNLOAD_TIMEOUT_S = 10.0


def torchvision_weight_file(weights: Any, *, option: str = "weights") -> Path:
    """The local file of torchvision weights: **fcnkit's one download policy**.

    ``weights`` is a torchvision weight enum member (``ResNet50_Weights.IMAGENET1K_V2``,
    ``torchvision.models.get_model_weights("resnet50")["IMAGENET1K_V2"]``), its name as a
    string (``"ResNet50_Weights.IMAGENET1K_V2"``) or an fcnkit entry (name or
    :class:`WeightEntry`) of kind ``torchvision``.

    The file in the torch hub cache (``torch.hub.get_dir()/checkpoints``) is used when
    present. Otherwise, unless ``FCNKIT_OFFLINE=1``, one download is tried with a short
    socket timeout (``$FCNKIT_DOWNLOAD_TIMEOUT`` seconds, default 10); any failure (no
    network, HTTP error, timeout) raises ``FileNotFoundError`` at once, naming the file to
    place, where, and how to pass a local file instead (through the caller's ``option``,
    e.g. ``backbone_weights``). Load the result with
    ``torch.load(path, weights_only=True)``.
    """
    url, label = _torchvision_url(weights)
    file_name = os.path.basename(urlparse(url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if target.is_file():
        return target
    hint = (
        f"place {file_name} at {target} (download {url} on a machine with network), "
        f"or pass the local file: {option}='/path/to/{file_name}'"
    )
    if os.environ.get("FCNKIT_OFFLINE", "") not in ("", "0"):
        raise FileNotFoundError(
            f"weights {label} are not in the torch hub cache and FCNKIT_OFFLINE is set: {hint}"
        )
    try:
        timeout = float(os.environ.get("FCNKIT_DOWNLOAD_TIMEOUT", DOWNLOAD_TIMEOUT_S))
    except ValueError:
        timeout = DOWNLOAD_TIMEOUT_S
    try:
        _download(url, target, timeout)
    except Exception as err:  # URLError, HTTPError, socket timeout, hash mismatch, ...
        raise FileNotFoundError(
            f"weights {label} are not in the torch hub cache and downloading {url} failed "
            f"({type(err).__name__}: {err}): {hint}"
        ) from err
    if not target.is_file():
        raise FileNotFoundError(f"weights {label}: the download wrote no file: {hint}")
    return target


def _torchvision_url(weights: Any) -> tuple[str, str]:
    """``(url, label for messages)`` of torchvision weights given as in
    :func:`torchvision_weight_file`."""
    if isinstance(weights, WeightEntry) or (
        isinstance(weights, str) and "." not in weights and "_Weights" not in weights
    ):
        entry = weights if isinstance(weights, WeightEntry) else get_weight_entry(weights)
        if entry.kind != "torchvision" or not entry.torchvision:
            raise ValueError(f"weights {entry.name!r} are not torchvision weights")
        return entry.source, f"{entry.name!r} ({entry.torchvision})"
    if isinstance(weights, str):
        from torchvision import models as tvm

        cls_name, _, member = weights.partition(".")
        try:
            weights = getattr(getattr(tvm, cls_name), member)
        except AttributeError:
            raise ValueError(
                f"unknown torchvision weights {weights!r}: expected e.g. "
                "'ResNet50_Weights.IMAGENET1K_V2' or an fcnkit torchvision entry name"
            ) from None
    url = getattr(weights, "url", None)
    if not isinstance(url, str):
        raise TypeError(f"not torchvision weights: {weights!r}")
    return url, f"{type(weights).__name__}.{weights.name}"


def _download(url: str, target: Path, timeout: float) -> None:
    """One download into ``target`` via ``torch.hub.download_url_to_file`` (atomic: it writes
    a temporary file first), with ``timeout`` seconds for every socket operation."""
    import socket

    target.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    finally:
        socket.setdefaulttimeout(previous)
