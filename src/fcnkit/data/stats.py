"""``fcnkit data stats``: per-class pixel frequencies, class weights, sample overlays to draw.

:func:`write_stats` writes ``class_frequency.csv`` (one table per target, with each class's
median-frequency weight, :func:`median_frequency_weights`) and ``class_weights.yaml`` (the
primary target's weights as a config fragment);
:func:`fcnkit.plots.plot_class_frequency` and :func:`fcnkit.plots.sample_overlay_grid` draw
``class_frequency.png`` and ``samples.png`` from :func:`class_statistics` and
:func:`sample_overlays`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.data.base import IGNORE_INDEX, as_segmentation_dataset, num_classes_of, overlay
from fcnkit.data.check import sample_indices

#: the weight of a class no labelled pixel of the split belongs to (its frequency is 0 / 0).
#: Such a class is never a target of the loss on that split, so its weight changes nothing
#: there; 1 (the unweighted loss) rather than 0 so that weights pasted into a run over a wider
#: split (``trainval`` after ``train``) still learn the class instead of silently dropping it.
ABSENT_CLASS_WEIGHT = 1.0


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Median-frequency class balancing (Eigen & Fergus, ICCV 2015, Sec. 4.1).

    ``w_c = median_k(f_k) / f_c`` where ``f_c = pixels[c] / image_pixels[c]``: the pixels of
    class c over the labelled pixels of the images in which c appears. The median runs over
    the classes present; absent classes (``pixels[c] == 0``) get :data:`ABSENT_CLASS_WEIGHT`.
    Ignore-label pixels are in neither count (see :func:`class_statistics`).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    image_pixels = np.asarray(image_pixels, dtype=np.float64)
    present = pixels > 0
    weights = np.full(pixels.shape, ABSENT_CLASS_WEIGHT)
    if present.any():
        freq = pixels[present] / image_pixels[present]
        weights[present] = np.median(freq) / freq
    return weights


@dataclass
class ClassStats:
    """Pixel counts of one target: ``pixels[k]`` of class k, ``images[k]`` containing it,
    ``image_pixels[k]`` the labelled (non-ignore) pixels of those images."""

    classes: list[str]
    pixels: np.ndarray
    images: np.ndarray
    ignore_pixels: int = 0
    n_images: int = 0
    image_pixels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image_pixels is None:
            self.image_pixels = np.zeros(len(self.classes), np.int64)

    @property
    def frequency(self) -> np.ndarray:
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros_like(self.pixels, dtype=float)

    @property
    def median_frequency_weights(self) -> np.ndarray:
        """One weight per class, :func:`median_frequency_weights` of these counts."""
        return median_frequency_weights(self.pixels, self.image_pixels)


@dataclass
class DatasetStats:
    targets: dict[str, ClassStats] = field(default_factory=dict)
    sampled: list[int] = field(default_factory=list)


def _labels(sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    label = sample["label"]
    return dict(label) if isinstance(label, dict) else {"label": label}


def class_statistics(dataset: Any, limit: int | None = None) -> DatasetStats:
    """Count the pixels of every class (per target) over the dataset or ``limit`` samples."""
    dataset = as_segmentation_dataset(dataset)
    ignore = getattr(dataset, "ignore_index", IGNORE_INDEX)
    targets = getattr(dataset, "targets", None)
    names = dict(targets) if targets else {"label": list(dataset.classes)}
    stats = DatasetStats()
    for key, classes in names.items():
        n = len(classes)
        stats.targets[key] = ClassStats(list(classes), np.zeros(n, np.int64), np.zeros(n, np.int64))
    stats.sampled = sample_indices(len(dataset), limit)
    for i in stats.sampled:
        sample = dataset.load(i)
        for key, lab in _labels(sample).items():
            s = stats.targets[key]
            n = num_classes_of(dataset, key if targets else None)
            flat = lab.reshape(-1).numpy()
            valid = flat[(flat >= 0) & (flat < n)]
            counts = np.bincount(valid, minlength=n)
            s.pixels += counts
            s.images += counts > 0
            s.image_pixels += np.where(counts > 0, valid.size, 0)
            s.ignore_pixels += int(np.count_nonzero(flat == ignore))
            s.n_images += 1
    return stats


def format_table(stats: DatasetStats, exclude: list[str] | None = None) -> str:
    """A plain-text table per target: class, pixels, fraction, images containing it, and the
    median-frequency weight (``absent``: no pixel, :data:`ABSENT_CLASS_WEIGHT`)."""
    lines = []
    for key, s in stats.targets.items():
        width = max([len(c) for c in s.classes] + [5])
        weights = s.median_frequency_weights
        lines.append(f"[{key}] {s.n_images} images, {s.ignore_pixels:,} ignore pixels")
        lines.append(
            f"  {'id':>3}  {'class':<{width}}  {'pixels':>14}  {'fraction':>8}  images  "
            "med-freq weight"
        )
        for k, c in enumerate(s.classes):
            note = "  (excluded from evaluation)" if exclude and c in exclude else ""
            weight = f"{weights[k]:>10.4g}" if s.pixels[k] else f"{'absent':>10}"
            lines.append(
                f"  {k:>3}  {c:<{width}}  {s.pixels[k]:>14,}  {s.frequency[k]:>8.4f}  "
                f"{s.images[k]:>6}  {weight}{note}"
            )
    return "\n".join(lines)


def class_weights_line(weights: np.ndarray) -> str:
    """``loss.class_weights: [w0, w1, ...]`` (6 significant digits), ready for a config."""
    return f"loss.class_weights: [{', '.join(f'{w:.6g}' for w in weights)}]"


def write_class_weights(stats: DatasetStats, path: Path, source: str) -> np.ndarray:
    """``class_weights.yaml``: the primary target's median-frequency weights as a config
    fragment (``_base_:`` it, or paste its ``loss:`` section); returns the weights."""
    s = next(iter(stats.targets.values()))
    weights = s.median_frequency_weights
    names = ", ".join(f"{k} {c}" for k, c in enumerate(s.classes))
    path.write_text(
        f"# median-frequency class weights (Eigen & Fergus 2015) of {source}, "
        f"{s.n_images} images\n# classes: {names}\n"
        "# absent classes (no labelled pixel): 1.0\n"
        f"loss:\n  class_weights: [{', '.join(f'{w:.6g}' for w in weights)}]\n"
    )
    return weights


def write_csv(stats: DatasetStats, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["target", "class_id", "class", "pixels", "fraction", "images", "image_pixels",
             "median_frequency_weight"]
        )  # fmt: skip
        for key, s in stats.targets.items():
            weights = s.median_frequency_weights
            for k, c in enumerate(s.classes):
                counts = [int(s.pixels[k]), f"{s.frequency[k]:.6f}", int(s.images[k])]
                w.writerow([key, k, c, *counts, int(s.image_pixels[k]), f"{weights[k]:.6g}"])


def write_stats(
    dataset: Any, out: Path, limit: int | None = None, source: str = "the dataset"
) -> DatasetStats:
    """Compute the statistics and write the CSV table and ``class_weights.yaml`` (the
    figures: :mod:`fcnkit.plots`)."""
    out.mkdir(parents=True, exist_ok=True)
    stats = class_statistics(dataset, limit)
    write_csv(stats, out / "class_frequency.csv")
    write_class_weights(stats, out / "class_weights.yaml", source)
    return stats


def target_palettes(dataset: Any) -> dict[str, list]:
    """Each target's colours (``{"label": palette}`` for a single-target dataset)."""
    if not getattr(dataset, "targets", None):
        return {"label": dataset.palette}
    return dict(getattr(dataset, "target_palettes", None) or {})


def sample_overlays(dataset: Any, indices: list[int]) -> list[tuple[str, np.ndarray]]:
    """``(id, H x W x 3 uint8 overlay of the primary label)`` for each of ``indices``."""
    dataset = as_segmentation_dataset(dataset)
    palettes = target_palettes(dataset)
    out = []
    for i in indices:
        sample = dataset.load(i)
        labels = _labels(sample)
        key = next(iter(labels))
        palette = palettes.get(key, dataset.palette)
        rgb = sample["image"][:3].permute(1, 2, 0).numpy().astype(np.uint8)
        lab = np.clip(labels[key].numpy(), 0, 255)
        out.append((str(sample.get("id", i)), overlay(rgb, lab, palette)))
    return out
