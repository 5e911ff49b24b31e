"""``fcnkit data stats``: per-class pixel frequencies and a grid of sample overlays.

Writes into ``out``: ``class_frequency.csv`` (one table per target), ``class_frequency.png``
(bar chart in the dataset's palette) and ``samples.png`` (images overlaid with their labels,
ignore shown white).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

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


def plot_frequencies(
    stats: DatasetStats, palettes: dict[str, list], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(stats.targets)
    fig, axes = plt.subplots(
        len(keys),
        1,
        figsize=(
            max(6, 0.3 * max(len(stats.targets[k].classes) for k in keys) + 2),
            3.2 * len(keys),
        ),
        squeeze=False,
    )
    for ax, key in zip(axes[:, 0], keys, strict=True):
        s = stats.targets[key]
        pal = palettes.get(key) or []
        colours = [
            tuple(v / 255 for v in pal[k]) if k < len(pal) else (0.5, 0.5, 0.5)
            for k in range(len(s.classes))
        ]
        ax.bar(range(len(s.classes)), s.frequency, color=colours, edgecolor="black", linewidth=0.4)
        ax.set_xticks(range(len(s.classes)))
        ax.set_xticklabels(s.classes, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("pixel fraction")
        ax.set_title(f"{title} [{key}]" if len(keys) > 1 else title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(
    dataset: Any, indices: list[int], path: Path, tile: int = 192, cols: int = 4
) -> None:
    """A grid PNG of overlays of the primary label for ``indices``, captioned with the ids."""
    dataset = as_segmentation_dataset(dataset)
    targets = getattr(dataset, "targets", None)
    pal_of = getattr(dataset, "target_palettes", None) or {}
    tiles = []
    for i in indices:
        sample = dataset.load(i)
        labels = _labels(sample)
        key = next(iter(labels))
        palette = pal_of.get(key, dataset.palette) if targets else dataset.palette
        rgb = sample["image"][:3].permute(1, 2, 0).numpy().astype(np.uint8)
        lab = np.clip(labels[key].numpy(), 0, 255)
        im = Image.fromarray(overlay(rgb, lab, palette))
        scale = tile / max(im.size)
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.NEAREST
        )
        canvas = Image.new("RGB", (tile, tile + 14), (32, 32, 32))
        canvas.paste(im, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), str(sample.get("id", i))[:32], fill=(255, 255, 255))
        tiles.append(canvas)
    rows = max(1, (len(tiles) + cols - 1) // cols)
    grid = Image.new("RGB", (cols * (tile + 4), rows * (tile + 18)), (0, 0, 0))
    for k, t in enumerate(tiles):
        grid.paste(t, ((k % cols) * (tile + 4), (k // cols) * (tile + 18)))
    grid.save(path)


def write_stats(
    dataset: Any, out: Path, title: str, limit: int | None = None, samples: int = 16
) -> DatasetStats:
    """Compute the statistics and write the CSV table, the bar chart and the overlay grid."""
    out.mkdir(parents=True, exist_ok=True)
    stats = class_statistics(dataset, limit)
    write_csv(stats, out / "class_frequency.csv")
    targets = getattr(dataset, "targets", None)
    palettes = getattr(dataset, "target_palettes", None) or {}
    if not targets:
        palettes = {"label": dataset.palette}
    plot_frequencies(stats, palettes, out / "class_frequency.png", title)
    sample_grid(dataset, sample_indices(len(dataset), samples), out / "samples.png")
    return stats
