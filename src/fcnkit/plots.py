"""Every figure fcnkit draws from training and evaluation results.

- :func:`plot_curves`: a run's training loss and validation mean IU against the step;
- :func:`plot_metric_vs_time`: several runs' validation metric against wall-clock training
  time and against the step (loss sampling, Sec. 4.3);
- :func:`plot_confusion`: a row-normalised confusion matrix (rows: truth);
- :func:`plot_per_class`: per-class IU as bars (the paper's per-class tables, Sec. 5), with
  the boundary F-score and IU by object size as grouped bars (:func:`boundary_and_size_series`);
- :func:`prediction_grid` (a tensor, for TensorBoard) and :func:`plot_overlays` (a PNG):
  image | truth | prediction for a few samples (:class:`SamplePrediction`, made by
  :func:`fcnkit.engine.evaluate.predict_samples`).

matplotlib is imported inside the functions (non-interactive ``Agg`` backend), so importing
this module costs nothing. The engine draws through this module (TensorBoard samples), so
it never imports the engine: what it draws comes in as arguments or files (``log.jsonl``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from fcnkit.metrics import ConfusionMatrix

Palette = Sequence[Sequence[int]]


@dataclass
class SamplePrediction:
    """One sample's picture, truth and prediction (primary head), ready to draw."""

    image: np.ndarray  # H x W x 3 uint8: the first three channels, denormalised
    truth: np.ndarray  # H x W class indices (the ignore label where unlabelled)
    pred: np.ndarray  # H x W predicted classes


def _pyplot() -> Any:
    from fcnkit.extras import require

    matplotlib = require("matplotlib", "Drawing figures")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (creating its folder) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a run's ``log.jsonl`` (written by :class:`fcnkit.engine.rundir.RunLogger`)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (is {run_dir} a run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """PNG with the training loss and the validation mean IU against the step."""
    plt = _pyplot()
    events = read_log(run_dir)
    # null (NaN when logged) values are gaps, not points
    train_ev = [e for e in events if e["event"] == "train" and _number(e.get("loss"))]
    eval_ev = [e for e in events if e["event"] == "eval" and _number(e.get("mean_iu"))]
    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot([e["step"] for e in train_ev], [e["loss"] for e in train_ev], color="C0")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    ax_iu.plot(
        [e["step"] for e in eval_ev], [100 * e["mean_iu"] for e in eval_ev], "o-", color="C1"
    )
    ax_iu.set_xlabel("step")
    ax_iu.set_ylabel("mean IU (%)")
    ax_iu.set_ylim(0, 100)
    ax_iu.set_title("validation mean IU")
    ax_iu.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    return _save(fig, out, dpi=90)


def plot_metric_vs_time(
    runs: Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    metric: str = "mean_iu",
    title: str = "",
) -> Path:
    """PNG of a validation metric against wall-clock training seconds (left) and against the
    step (right), one line per run (``{label: run_dir}``): the paper's loss-sampling
    comparison (Sec. 4.3 and its figure) from each run's ``log.jsonl`` eval events.

    Seconds run from the run's start (``meta.json`` ``started_unix``; else its first event)
    to each eval event, less the evaluations' own logged ``seconds`` up to it, so that runs
    evaluating at other cadences compare on training time alone.
    """
    plt = _pyplot()
    fig, (ax_time, ax_step) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (label, run_dir) in enumerate(runs.items()):
        events = read_log(run_dir)
        meta = Path(run_dir) / "meta.json"
        started = json.loads(meta.read_text()).get("started_unix") if meta.is_file() else None
        t0 = started if _number(started) else events[0]["time"]
        seconds, steps, values, evaluating = [], [], [], 0.0
        for e in events:
            if e["event"] != "eval":
                continue
            evaluating += e["seconds"] if _number(e.get("seconds")) else 0.0
            if _number(e.get(metric)):
                seconds.append(e["time"] - t0 - evaluating)
                steps.append(e["step"])
                values.append(100 * e[metric])
        if not values:
            raise ValueError(f"{run_dir}: no eval event with {metric!r} in its log.jsonl")
        ax_time.plot(seconds, values, "o-", ms=3, color=f"C{k}", label=label)
        ax_step.plot(steps, values, "o-", ms=3, color=f"C{k}", label=label)
    ax_time.set_xlabel("wall-clock training seconds (evaluation excluded)")
    ax_step.set_xlabel("step (optimiser updates)")
    for ax in (ax_time, ax_step):
        ax.set_ylabel(f"validation {metric.replace('_', ' ').replace(' iu', ' IU')} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, dpi=100)


def plot_confusion(
    matrix: ConfusionMatrix,
    path: str | os.PathLike,
    title: str = "",
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """A row-normalised confusion matrix (rows: truth) with class names (default: the
    matrix's), as a PNG."""
    plt = _pyplot()
    norm = matrix.normalized().numpy()
    n = matrix.num_classes
    names = list(class_names or matrix.class_names or [str(i) for i in range(n)])
    side = min(30.0, max(5.0, 0.32 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.005:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
                            fontsize=7, color=colour)  # fmt: skip
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def plot_per_class(
    names: Sequence[str],
    values: Sequence[float | None],
    path: str | os.PathLike,
    *,
    title: str = "",
    excluded: Sequence[int | str] = (),
    palette: Palette | None = None,
    ylabel: str = "IU (%)",
    more: Mapping[str, Sequence[float | None]] | None = None,
) -> Path:
    """Per-class values (fractions, e.g. ``per_class_iu``) as bars in percent.

    A class without a value (``None``/NaN: absent from labels and predictions) gets no bar
    and an ``n/a`` mark; excluded classes (by index or name) are hatched. ``more`` (legend
    label -> per-class values, e.g. :func:`boundary_and_size_series`): grouped bars, each
    class's ``values`` first (then in one colour, not the palette's), a missing value no bar.
    """
    plt = _pyplot()
    n = len(names)
    heights = _percent(values)
    left_out = {names[e] if isinstance(e, int) else e for e in excluded}
    colours = [
        tuple(c / 255 for c in palette[i]) if palette and i < len(palette) else "C0"
        for i in range(n)
    ]
    more = dict(more or {})
    width = 0.8 / (1 + len(more))
    fig, ax = plt.subplots(
        figsize=(max(5.0, n * (0.32 + 0.08 * len(more)) + 2.0), 4.4 if more else 3.6)
    )
    xs = np.arange(n) - (0.8 - width) / 2 if more else np.arange(n)
    bars = ax.bar(
        xs, heights, width=width if more else 0.8, color="C0" if more else colours,
        edgecolor="black", linewidth=0.4, label=ylabel.replace(" (%)", ""),
    )  # fmt: skip
    for k, (label, series) in enumerate(more.items(), start=1):
        ax.bar(xs + k * width, _percent(series), width=width, color=f"C{k}", label=label,
               edgecolor="black", linewidth=0.4)  # fmt: skip
    for i, (bar, value) in enumerate(zip(bars, values, strict=True)):
        if names[i] in left_out:
            bar.set_hatch("//")
        if value is None or not _number(value):
            ax.text(xs[i], 1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(n), names, rotation=70, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel if not more else "percent")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "per-class IU")
    if more:
        ax.legend(fontsize=7, ncol=len(more) + 1, loc="upper right")
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def _percent(values: Sequence[float | None]) -> list[float]:
    return [100 * v if v is not None and _number(v) else 0.0 for v in values]


def boundary_and_size_series(metrics: Mapping[str, Any]) -> dict[str, list[float]]:
    """Legend label -> per-class values of the boundary F-score and the IU by object size in
    a head's ``metrics`` (those present), for :func:`plot_per_class`'s ``more``."""
    from fcnkit.metrics import boundary_and_size_columns

    labels = {"BF": "boundary F", "IU-S": "IU small", "IU-M": "IU medium", "IU-L": "IU large"}
    return {labels[k]: v for k, v in boundary_and_size_columns(metrics).items()}


def color_labels(label: np.ndarray, palette: Palette | None) -> np.ndarray:
    """``H x W`` class map -> ``H x W x 3`` ``uint8`` colours (:func:`fcnkit.inference.colorize`;
    the ignore label 255 gets the VOC colour of 255)."""
    from fcnkit.inference import colorize

    return np.asarray(colorize(np.clip(label, 0, 255), palette).convert("RGB"))


def prediction_grid(samples: Sequence[SamplePrediction], palette: Palette | None) -> torch.Tensor:
    """A ``3 x H x W`` ``uint8`` picture, one row per sample: image | truth | prediction
    (TensorBoard's ``add_image``); narrower rows are padded on the right with black."""
    rows = [
        np.concatenate(
            [s.image, color_labels(s.truth, palette), color_labels(s.pred, palette)], axis=1
        )
        for s in samples
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return torch.from_numpy(np.concatenate(rows, axis=0)).permute(2, 0, 1).contiguous()


def plot_overlays(
    samples: Sequence[SamplePrediction],
    palette: Palette,
    classes: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """A grid, one row per sample: image | truth | prediction blended over the image, with a
    legend of the classes' colours."""
    from fcnkit.inference import overlay

    plt = _pyplot()
    palette = [tuple(c) for c in palette]
    n = len(samples)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row, s in enumerate(samples):
        panels = [
            (s.image, "image"),
            (color_labels(s.truth, palette), "truth"),
            (overlay(s.image, s.pred, palette, 0.55), "prediction"),
        ]
        for col, (picture, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=np.array(palette[i]) / 255.0) for i in range(len(classes))
    ]
    fig.legend(handles, list(classes), loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path, dpi=80)


def plot_class_frequency(
    stats: Any, palettes: dict[str, Palette], path: str | os.PathLike, title: str
) -> Path:
    """Bar chart of each target's per-class pixel fraction (``fcnkit data stats``), in the
    dataset's colours; ``stats`` is a :class:`fcnkit.data.stats.DatasetStats`."""
    plt = _pyplot()
    keys = list(stats.targets)
    widest = max(len(stats.targets[k].classes) for k in keys)
    fig, axes = plt.subplots(
        len(keys), 1, figsize=(max(6, 0.3 * widest + 2), 3.2 * len(keys)), squeeze=False
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
    return _save(fig, path, dpi=100)


def sample_overlay_grid(
    overlays: Sequence[tuple[str, np.ndarray]],
    path: str | os.PathLike,
    tile: int = 192,
    cols: int = 4,
) -> Path:
    """A grid PNG of ``(caption, H x W x 3 overlay)`` tiles, each captioned (dataset samples)."""
    from PIL import Image, ImageDraw

    tiles = []
    for caption, rgb in overlays:
        im = Image.fromarray(rgb)
        scale = tile / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        canvas = Image.new("RGB", (tile, tile + 14), (32, 32, 32))
        canvas.paste(im.resize(size, Image.NEAREST), (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), caption[:32], fill=(255, 255, 255))
        tiles.append(canvas)
    rows = max(1, (len(tiles) + cols - 1) // cols)
    grid = Image.new("RGB", (cols * (tile + 4), rows * (tile + 18)), (0, 0, 0))
    for k, t in enumerate(tiles):
        grid.paste(t, ((k % cols) * (tile + 4), (k // cols) * (tile + 18)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def plot_class_heatmap(
    image: np.ndarray, prob: np.ndarray, out: str | os.PathLike, title: str
) -> Path:
    """The paper's Fig. 2: ``image`` (H x W x 3 uint8) beside itself under one class's
    probability map ``prob`` (a coarse h x w grid, bilinearly upsampled to the image)."""
    plt = _pyplot()
    h, w = image.shape[:2]
    coarse = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    big = torch.nn.functional.interpolate(
        coarse, size=(h, w), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5 * h / w + 0.8))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    shown = axes[1].imshow(big, cmap="jet", alpha=0.5, vmin=0.0, vmax=max(1e-6, float(big.max())))
    axes[1].set_title(title)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="class probability")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
