"""Batching samples of different sizes.

FCNs take any input size, and the paper trains whole images at batch size 1 (Sec. 4.3:
"whole image training", which is what ``DataLoader(batch_size=1)`` with no crop gives). For
larger batches of differently sized images, :func:`collate_pad` pads every image and every
label map to the largest height and width in the batch, at the bottom and right so pixel
coordinates are unchanged. Labels are padded with the ignore value, so padding adds nothing
to the loss or the metrics.

The image padding value depends on what the batch holds:

- **normalised float images** (the output of :func:`fcnkit.data.build_transforms`, what the
  training and evaluation loaders batch): 0, which is the mean pixel for every fcnkit
  :class:`~fcnkit.preprocessing.Preprocessing` (Caffe mean subtraction or mean/std);
- **raw integer images** (``uint8`` dataset samples, normalised later, e.g. by
  :func:`fcnkit.engine.evaluate.evaluate`): 0 would be *black*, not the mean. Pass
  ``preprocessing=model.preprocessing`` to pad with the raw pixel that normalises to 0 (its
  mean, rounded), or ``image_fill=`` to choose. Without either, padding raw images raises.
- ``image_fill=`` (a number or one per channel, in the images' own units) overrides both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fcnkit.data.base import IGNORE_INDEX
from fcnkit.preprocessing import Preprocessing, get_preprocessing

__all__ = ["collate_pad", "image_pad_value"]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_stack(
    tensors: Sequence[torch.Tensor], size: tuple[int, int], fill: float | torch.Tensor
) -> torch.Tensor:
    """Stack ``tensors`` (``... x h x w``) into ``N x ... x H x W``, padded with ``fill``.

    ``fill`` is a number or a per-channel tensor broadcastable to ``... x 1 x 1``.
    """
    first = tensors[0]
    shape = (len(tensors), *first.shape[:-2], *size)
    out = torch.empty(shape, dtype=first.dtype, device=first.device)
    out[:] = fill.to(first.device) if isinstance(fill, torch.Tensor) else fill
    for i, t in enumerate(tensors):
        if t.shape[:-2] != first.shape[:-2]:
            raise ValueError(
                f"cannot batch shapes {tuple(first.shape)} and {tuple(t.shape)}: "
                "only height and width may differ"
            )
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def image_pad_value(
    images: Sequence[torch.Tensor],
    image_fill: float | Sequence[float] | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
) -> float | torch.Tensor:
    """The image padding value of a batch (rules in the module docstring).

    Returns a number or a ``C x 1 x 1`` tensor of the images' dtype.
    """
    first = images[0]
    c = first.shape[-3] if first.ndim >= 3 else 1
    if image_fill is not None:
        if isinstance(image_fill, (int, float)):
            return float(image_fill)
        values = [float(v) for v in image_fill]
        if len(values) != c:
            raise ValueError(f"image_fill has {len(values)} values for {c}-channel images")
        return torch.tensor(values).to(first.dtype).view(c, 1, 1)
    if first.is_floating_point():
        return 0.0  # normalised images: 0 is the mean pixel
    if preprocessing is None:
        raise ValueError(
            f"padding raw {first.dtype} images of different sizes: 0 would be black, not the "
            "mean pixel; pass preprocessing=model.preprocessing (pads with its mean) or "
            "image_fill= (e.g. 0 for black), or normalise first (build_transforms)"
        )
    mean = get_preprocessing(preprocessing).denormalize(torch.zeros(c, 1, 1))
    info = torch.iinfo(first.dtype)
    return mean.round().clamp(info.min, info.max).to(first.dtype)


def collate_pad(
    batch: Sequence[Mapping[str, Any]],
    *,
    size_multiple: int = 1,
    ignore_index: int = IGNORE_INDEX,
    image_fill: float | Sequence[float] | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
) -> dict[str, Any]:
    """Stack samples into a batch, padding to the largest H, W (bottom/right).

    ``image`` -> ``N x C x H x W``, ``label`` -> ``N x H x W`` or a dict of those (padded
    with ``ignore_index``), ``id`` and any other key -> list. Images are padded with 0 when
    they are normalised floats (the mean pixel); raw integer images need ``preprocessing``
    (pad with its mean pixel) or ``image_fill`` (see the module docstring). ``size_multiple``
    rounds the padded H and W up to a multiple (e.g. 32 for a stride-32 trunk). Use
    ``functools.partial(collate_pad, size_multiple=32)`` as a ``collate_fn``.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if size_multiple < 1:
        raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
    images = [s["image"] for s in batch]
    h = _round_up(max(t.shape[-2] for t in images), size_multiple)
    w = _round_up(max(t.shape[-1] for t in images), size_multiple)
    if all(tuple(t.shape[-2:]) == (h, w) for t in images):
        fill: float | torch.Tensor = 0.0  # nothing to pad
    else:
        fill = image_pad_value(images, image_fill, preprocessing)
    out: dict[str, Any] = {"image": _pad_stack(images, (h, w), fill)}
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
