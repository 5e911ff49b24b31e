"""``fcnkit data stats``: per-class pixel frequencies, and sample overlays to draw.

:func:`write_stats` writes ``class_frequency.csv`` (one table per target);
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


@dataclass
class ClassStats:
    """Pixel counts of one target: ``pixels[k]`` of class k, ``images[k]`` containing it."""

    classes: list[str]
    pixels: np.ndarray
    images: np.ndarray
    ignore_pixels: int = 0
    n_images: int = 0

    @property
    def frequency(self) -> np.ndarray:
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros_like(self.pixels, dtype=float)


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
            s.ignore_pixels += int(np.count_nonzero(flat == ignore))
            s.n_images += 1
    return stats


def format_table(stats: DatasetStats, exclude: list[str] | None = None) -> str:
    """A plain-text table per target: class, pixels, fraction, images containing it."""
    lines = []
    for key, s in stats.targets.items():
        width = max([len(c) for c in s.classes] + [5])
        lines.append(f"[{key}] {s.n_images} images, {s.ignore_pixels:,} ignore pixels")
        lines.append(f"  {'id':>3}  {'class':<{width}}  {'pixels':>14}  {'fraction':>8}  images")
        for k, c in enumerate(s.classes):
            note = "  (excluded from evaluation)" if exclude and c in exclude else ""
            lines.append(
                f"  {k:>3}  {c:<{width}}  {s.pixels[k]:>14,}  {s.frequency[k]:>8.4f}  "
                f"{s.images[k]:>6}{note}"
            )
    return "\n".join(lines)


def write_csv(stats: DatasetStats, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "class_id", "class", "pixels", "fraction", "images"])
        for key, s in stats.targets.items():
            for k, c in enumerate(s.classes):
                w.writerow([key, k, c, int(s.pixels[k]), f"{s.frequency[k]:.6f}", int(s.images[k])])


def write_stats(dataset: Any, out: Path, limit: int | None = None) -> DatasetStats:
    """Compute the statistics and write the CSV table (the figures: :mod:`fcnkit.plots`)."""
    out.mkdir(parents=True, exist_ok=True)
    stats = class_statistics(dataset, limit)
    write_csv(stats, out / "class_frequency.csv")
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
