"""Joint image + label transforms: training augmentation and per-weights normalisation.

``build_transforms(train, preprocessing, **aug)`` returns a callable on a sample dict
``{"image": uint8 C x H x W, "label": int64 H x W | dict[str, Tensor], "id": ...}`` that
returns the sample with ``image`` a normalised float32 tensor (``preprocessing.normalize``,
i.e. the model's own :class:`~fcnkit.preprocessing.Preprocessing`: pass ``model.preprocessing``).

Training augmentation, in this order: random scale (log-uniform in ``scale_range``), random
crop to ``crop_size`` (padding the image and the labels where the scaled image is smaller),
colour jitter (first three = RGB channels, on the image content, not the padding; extra
modalities such as HHA or depth are left untouched), horizontal flip. With a crop, only the
source box under the crop window is resampled, so large images at large scales stay cheap
(the box is whole source pixels, so the effective scale may differ from the drawn one by
under a pixel over the window). Geometry is applied identically to the image and to every
label map. Labels are only ever resampled **nearest-neighbour** (by index gathering, so no
transform can create a label value that was not in its input; padding adds only the ignore
value). The image is resampled bilinearly (antialiased when shrinking).

Paper notes (Sec. 4.3): the reference trains on whole images at batch size 1 ("patch
sampling" by random crops gave no faster convergence) and found mirroring and 32 px
translation jitter to give "no noticeable improvement"; ``build_transforms(True, p,
scale_range=None, flip=False)`` reproduces that plain setting, while the defaults are the
common modern recipe (scale 0.5-2, flip, crop).

Randomness and exact resume: the transform draws every random number from a
:class:`torch.Generator`. Call it as ``transform(sample, generator=g)`` to control it, or put
an int ``"seed"`` in the sample; with neither it uses torch's global RNG (which DataLoader
seeds per worker, so runs repeat for a fixed ``torch.manual_seed`` and worker count, but a
resumed epoch does not). For exact, worker-count-independent resume use
:class:`TransformedDataset`: sample ``i`` of epoch ``e`` is augmented with the generator
seeded by :func:`sample_seed` ``(seed, e, i)``, so replaying the sampler's indices reproduces
the same augmented batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fcnkit.data.base import IGNORE_INDEX, Sample
from fcnkit.preprocessing import Preprocessing, get_preprocessing

__all__ = [
    "JointTransform",
    "TransformedDataset",
    "build_transforms",
    "resize_image",
    "resize_label",
    "sample_seed",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch``: well mixed, same in every process."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, epoch, index])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _nearest_indices(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each output position, nearest-neighbour with pixel-centre alignment."""
    # The source pixel holding output centre (o + 0.5) * n_in / n_out, in exact integers.
    return (2 * torch.arange(n_out) + 1) * n_in // (2 * n_out)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[..., H, W]`` by gathering (dtype and values preserved)."""
    h, w = label.shape[-2:]
    if (h, w) == tuple(size):
        return label
    iy = _nearest_indices(h, size[0])
    ix = _nearest_indices(w, size[1])
    return label[..., iy[:, None], ix[None, :]]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float ``C x H x W`` image (antialiased when shrinking)."""
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    shrink = size[0] < h or size[1] < w
    out = F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )
    return out[0]


def _map_labels(label: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(label, Mapping):
        return {k: fn(v) for k, v in label.items()}
    return fn(label)


def _label_size(label: Any) -> tuple[int, int]:
    first = next(iter(label.values())) if isinstance(label, Mapping) else label
    return tuple(first.shape[-2:])  # type: ignore[return-value]


def _uniform(g: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator | None, high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=g))


def _jitter_rgb(image: torch.Tensor, strength: float, g: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of the RGB channels (float 0..255)."""
    rgb = image[:3]
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(3, 1, 1)
    brightness = _uniform(g, 1 - strength, 1 + strength)
    contrast = _uniform(g, 1 - strength, 1 + strength)
    saturation = _uniform(g, 1 - strength, 1 + strength)
    rgb = rgb * brightness
    grey_mean = (rgb * weights).sum(0).mean()
    rgb = (rgb - grey_mean) * contrast + grey_mean
    grey = (rgb * weights).sum(0, keepdim=True)
    rgb = (rgb - grey) * saturation + grey
    return torch.cat([rgb.clamp(0.0, 255.0), image[3:]], dim=0)


def _source_span(start: int, length: int, scaled: int, original: int) -> tuple[int, int]:
    """Source pixels ``(first, count)`` under scaled pixels ``start .. start + length``."""
    ratio = original / scaled
    first = min(original - 1, math.floor(start * ratio))
    last = max(first + 1, min(original, math.ceil((start + length) * ratio)))
    return first, last - first


def _place(
    x: torch.Tensor, size: tuple[int, int], top: int, left: int, fill: float | torch.Tensor
) -> torch.Tensor:
    """``x [..., h, w]`` at ``(top, left)`` in a ``fill``-ed canvas of ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = torch.empty((*x.shape[:-2], *size), dtype=x.dtype)
    if isinstance(fill, torch.Tensor):
        out[:] = fill.to(x.dtype)
    else:
        out.fill_(fill)
    out[..., top : top + x.shape[-2], left : left + x.shape[-1]] = x
    return out


class JointTransform:
    """Callable ``(sample, generator=None) -> sample``; see :func:`build_transforms`."""

    def __init__(
        self,
        train: bool,
        preprocessing: Preprocessing,
        *,
        crop_size: tuple[int, int] | None,
        scale_range: tuple[float, float] | None,
        flip: bool,
        color_jitter: float,
        pad_image: str,
        ignore_index: int,
    ) -> None:
        self.train = train
        self.preprocessing = preprocessing
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.color_jitter = color_jitter
        self.pad_image = pad_image
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (
            f"JointTransform(train={self.train}, preprocessing={self.preprocessing.name!r}, "
            f"crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
            f"color_jitter={self.color_jitter}, pad_image={self.pad_image!r})"
        )

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        out = dict(sample)
        image = sample["image"].to(torch.float32)
        if image.ndim != 3:
            raise ValueError(f"expected image C x H x W, got shape {tuple(image.shape)}")
        label = sample.get("label")
        if label is not None and _label_size(label) != tuple(image.shape[-2:]):
            raise ValueError(
                f"sample {sample.get('id')!r}: image {tuple(image.shape[-2:])} and label "
                f"{_label_size(label)} differ in size"
            )
        if self.train:
            g = generator
            if g is None and "seed" in sample:
                g = torch.Generator().manual_seed(int(sample["seed"]))
            image, label = self._augment(image, label, g)
        out["image"] = self.preprocessing.normalize(image)
        if label is not None:
            out["label"] = label
        return out

    def _augment(
        self, image: torch.Tensor, label: Any, g: torch.Generator | None
    ) -> tuple[torch.Tensor, Any]:
        h, w = image.shape[-2:]
        size = (h, w)
        if self.scale_range is not None:
            lo, hi = self.scale_range
            s = math.exp(_uniform(g, math.log(lo), math.log(hi)))
            size = (max(1, round(h * s)), max(1, round(w * s)))
        out_size = size
        dy, dx, ny, nx = 0, 0, *size  # where the resampled content goes in the output
        sy, sx, sny, snx = 0, 0, h, w  # the source box it comes from
        if self.crop_size is not None:
            # The crop window in scaled coordinates: inside a larger scaled image, or placing
            # a smaller one at a random offset. Only the source box under the window is
            # resampled (cheap for large images at large scales).
            out_size = self.crop_size
            (ch, cw), (sh, sw) = self.crop_size, size
            top = _randint(g, sh - ch) if sh >= ch else -_randint(g, ch - sh)
            left = _randint(g, sw - cw) if sw >= cw else -_randint(g, cw - sw)
            y0, x0 = max(top, 0), max(left, 0)
            ny, nx = min(sh, top + ch) - y0, min(sw, left + cw) - x0
            dy, dx = y0 - top, x0 - left
            sy, sny = _source_span(y0, ny, sh, h)
            sx, snx = _source_span(x0, nx, sw, w)
        content = resize_image(image[:, sy : sy + sny, sx : sx + snx], (ny, nx))
        if self.color_jitter > 0:
            content = _jitter_rgb(content, self.color_jitter, g)
        image = _place(content, out_size, dy, dx, self._image_fill(image))
        if label is not None:
            label = _map_labels(
                label,
                lambda t: _place(
                    resize_label(t[..., sy : sy + sny, sx : sx + snx], (ny, nx)),
                    out_size,
                    dy,
                    dx,
                    self.ignore_index,
                ),
            )
        if self.flip and _uniform(g, 0.0, 1.0) < 0.5:
            image = image.flip(-1)
            if label is not None:
                label = _map_labels(label, lambda t: t.flip(-1))
        return image, label

    def _image_fill(self, image: torch.Tensor) -> torch.Tensor:
        """Raw (pre-normalisation) pad value per channel: 0 or the preprocessing mean."""
        c = image.shape[0]
        if self.pad_image == "zero":
            return torch.zeros(c, 1, 1)
        # The raw value that normalises to 0 is the mean, in RGB order and 0..255 units.
        return self.preprocessing.denormalize(torch.zeros(c, 1, 1))


def build_transforms(
    train: bool,
    preprocessing: Preprocessing | str | dict,
    *,
    crop_size: int | tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    flip: bool = True,
    color_jitter: float = 0.0,
    pad_image: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> JointTransform:
    """The sample transform for training (``train=True``) or evaluation.

    Args:
        train: augment (scale, jitter, flip, crop); evaluation only normalises (whole image,
            as the paper evaluates), ignoring the augmentation options.
        preprocessing: the model's :class:`Preprocessing` (``model.preprocessing``), a
            preset name or its dict.
        crop_size: ``(H, W)`` or int; training outputs have exactly this size (random crop,
            padding images with ``pad_image`` and labels with ``ignore_index``). ``None``
            keeps the (scaled) size: batch with :func:`fcnkit.data.collate_pad` or batch 1.
        scale_range: random scale factor range (log-uniform); ``None`` disables scaling.
        flip: random horizontal flip with probability 0.5.
        color_jitter: strength ``s``: brightness, contrast and saturation factors drawn from
            ``[1 - s, 1 + s]``, on the RGB channels only; 0 disables.
        pad_image: ``"mean"`` (padding normalises to 0) or ``"zero"`` (black pixels).
        ignore_index: label value used for padding.
    """
    crop = _pair(crop_size)
    if crop is not None and (crop[0] < 1 or crop[1] < 1):
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if not 0 <= color_jitter < 1:
        raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
    if pad_image not in ("mean", "zero"):
        raise ValueError(f"pad_image must be 'mean' or 'zero', got {pad_image!r}")
    return JointTransform(
        train,
        get_preprocessing(preprocessing),
        crop_size=crop,
        scale_range=None if scale_range is None else (float(scale_range[0]), float(scale_range[1])),
        flip=flip,
        color_jitter=float(color_jitter),
        pad_image=pad_image,
        ignore_index=ignore_index,
    )


class TransformedDataset(Dataset):
    """``dataset`` with ``transform`` applied, reproducibly per ``(seed, epoch, index)``.

    Sample ``i`` is augmented with a generator seeded by ``sample_seed(seed, epoch, i)``, so
    the result does not depend on the worker count, the worker that loads it or the order of
    loading: a run resumed at step ``k`` that replays the same sampler indices gets the same
    batches. Call :meth:`set_epoch` before each epoch (DataLoader must not use
    ``persistent_workers=True``, or the workers keep the epoch they were started with).
    """

    def __init__(self, dataset: Dataset, transform: Callable[..., Sample], seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        return self.transform(self.dataset[index], generator=g)

    def __getattr__(self, name: str) -> Any:
        # Dataset metadata (classes, palette, ignore_index, ...) passes through.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
