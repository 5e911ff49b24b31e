"""Batching samples of different sizes.

FCNs take any input size, and the paper trains whole images at batch size 1 (Sec. 4.3:
"whole image training", which is what ``DataLoader(batch_size=1)`` with no crop gives). For
larger batches of differently sized images, :func:`collate_pad` pads every image (with 0,
which is the mean pixel after Caffe-style or mean/std normalisation) and every label map
(with the ignore value, so padding adds nothing to the loss or the metrics) to the largest
height and width in the batch, at the bottom and right so pixel coordinates are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fcnkit.data.base import IGNORE_INDEX

__all__ = ["collate_pad"]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_stack(tensors: Sequence[torch.Tensor], size: tuple[int, int], fill: float) -> torch.Tensor:
    first = tensors[0]
    out = torch.full(
        (len(tensors), *first.shape[:-2], *size), fill, dtype=first.dtype, device=first.device
    )
    for i, t in enumerate(tensors):
        if t.shape[:-2] != first.shape[:-2]:
            raise ValueError(
                f"cannot batch shapes {tuple(first.shape)} and {tuple(t.shape)}: "
                "only height and width may differ"
            )
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def collate_pad(
    batch: Sequence[Mapping[str, Any]],
    *,
    size_multiple: int = 1,
    ignore_index: int = IGNORE_INDEX,
    image_fill: float = 0.0,
) -> dict[str, Any]:
    """Stack samples into a batch, padding to the largest H, W (bottom/right).

    ``image`` -> ``N x C x H x W`` (padded with ``image_fill``), ``label`` -> ``N x H x W``
    or a dict of those (padded with ``ignore_index``), ``id`` and any other key -> list.
    ``size_multiple`` rounds the padded H and W up to a multiple (e.g. 32 for a stride-32
    trunk). Use ``functools.partial(collate_pad, size_multiple=32)`` as a ``collate_fn``.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if size_multiple < 1:
        raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
    images = [s["image"] for s in batch]
    h = _round_up(max(t.shape[-2] for t in images), size_multiple)
    w = _round_up(max(t.shape[-1] for t in images), size_multiple)
    out: dict[str, Any] = {"image": _pad_stack(images, (h, w), image_fill)}
    if "label" in batch[0]:
        first = batch[0]["label"]
        for s in batch:
            lab = s["label"]
            lab_hw = next(iter(lab.values())).shape[-2:] if isinstance(lab, Mapping) else lab.shape
            if tuple(lab_hw[-2:]) != tuple(s["image"].shape[-2:]):
                raise ValueError(
                    f"sample {s.get('id')!r}: label size {tuple(lab_hw[-2:])} differs from "
                    f"image size {tuple(s['image'].shape[-2:])}"
                )
        if isinstance(first, Mapping):
            out["label"] = {
                k: _pad_stack([s["label"][k] for s in batch], (h, w), ignore_index) for k in first
            }
        else:
            out["label"] = _pad_stack([s["label"] for s in batch], (h, w), ignore_index)
    for key in batch[0]:
        if key not in ("image", "label"):
            out[key] = [s[key] for s in batch]
    return out
