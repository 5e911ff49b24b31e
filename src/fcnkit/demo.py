"""``fcnkit demo``: train an FCN-8s on the built-in synthetic shapes, on the CPU, in minutes.

The demo runs the ``demo`` recipe (an FCN-8s-style net on an ImageNet-pretrained
EfficientNet-Lite0, Sec. 4.2's skip architecture), evaluates it on the held-out ``test``
split with the paper's four metrics (Sec. 5), segments a few test images and writes a report
into ``runs/demo/``::

    report.md            what was run, the metrics, the pictures
    overlays.png         image | truth | prediction for held-out samples
    curves.png           training loss and validation mean IU
    confusion.png        row-normalised confusion matrix (test split)
    metrics.json         test metrics (+ the last validation metrics)

An earlier demo run is never overwritten silently: a new ``runs/demo-N`` is used unless
``overwrite=True``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from fcnkit.engine.config import Config, load_config
from fcnkit.metrics import METRIC_NAMES, ConfusionMatrix, format_metrics


def demo_config(
    steps: int | None = None, size: int | None = None, extra: list[str] | None = None
) -> Config:
    """The ``demo`` recipe with the shortening options applied."""
    overrides = list(extra or [])
    if steps is not None:
        overrides += [f"train.steps={steps}"]
    config = load_config("demo", overrides)
    if steps is not None:  # keep evaluation/checkpoint cadence sensible for short runs
        config.train.eval_every = min(config.train.eval_every, steps)
        config.train.checkpoint_every = min(config.train.checkpoint_every, steps)
        config.train.log_every = min(config.train.log_every, max(1, steps // 4))
    if size is not None:
        config.data.options["size"] = size
        config.data.val_options["size"] = size
        if "crop_size" in config.data.augment:
            config.data.augment["crop_size"] = size
    return config


def free_run_dir(base: Path, overwrite: bool) -> Path:
    """``base`` if free (or ``overwrite``), else the first free ``base-2``, ``base-3``, ..."""
    if overwrite or not base.exists() or not any(base.iterdir()):
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def run_demo(
    run_dir: str | Path = "runs/demo",
    *,
    steps: int | None = None,
    size: int | None = None,
    overwrite: bool = False,
    num_test: int | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and report; returns the test metrics (plus ``run_dir``, timings)."""
    from fcnkit.engine.train import train

    config = demo_config(steps, size, overrides)
    run_dir = free_run_dir(Path(run_dir), overwrite)
    print(f"fcnkit demo: {config.model.name} on synthetic shapes -> {run_dir}")
    t0 = time.perf_counter()
    train(config, run_dir, overwrite=overwrite, progress=progress)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics, test_set, model, matrix = evaluate_test(config, run_dir, num_test)
    eval_seconds = time.perf_counter() - t1
    write_overlays(model, test_set, run_dir / "overlays.png")
    from fcnkit.engine.train import plot_curves

    plot_curves(run_dir, run_dir / "curves.png")
    write_confusion(matrix, test_set.classes, run_dir / "confusion.png")
    val = json.loads((run_dir / "metrics.json").read_text())
    from fcnkit.engine.train import read_log, write_json

    steps_done = max(e["step"] for e in read_log(run_dir) if e["event"] == "train")
    summary = {
        "split": "test",
        **{k: metrics[k] for k in METRIC_NAMES},
        "per_class_iu": dict(zip(test_set.classes, metrics["per_class_iu"], strict=True)),
        "num_images": len(test_set),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "threads": torch.get_num_threads(),
        "model": config.model.name,
        "steps": steps_done,
        "steps_planned": config.train.steps,
        "val": {k: val.get(k) for k in ("step", "pixel_acc", "mean_acc", "mean_iu", "fw_iu")},
    }
    write_json(run_dir / "metrics.json", summary)
    write_report(config, summary, run_dir / "report.md")
    print(f"\nheld-out test split ({len(test_set)} images): {format_metrics(metrics)}")
    print(f"trained in {train_seconds:.0f} s; report: {run_dir / 'report.md'}")
    return {**summary, "run_dir": str(run_dir)}


def evaluate_test(
    config: Config, run_dir: Path, num_test: int | None
) -> tuple[dict[str, Any], Any, torch.nn.Module, ConfusionMatrix]:
    """The best checkpoint on the synthetic ``test`` split (never seen in training).

    Returns ``(metrics, raw test set, model, confusion matrix)``; the metrics are
    :func:`fcnkit.engine.evaluate.evaluate`'s (via ``evaluate_confusion`` + ``summarize``,
    which also give the matrix for the report).
    """
    from fcnkit.data import create_dataset
    from fcnkit.engine.checkpoint import load_model
    from fcnkit.engine.evaluate import evaluate_confusion, make_eval_loader, summarize

    model, _ = load_model(run_dir)
    options = dict(config.data.val_options or config.data.options)
    if num_test is not None:
        options["num_samples"] = num_test
    raw = create_dataset(config.data.dataset, None, "test", **options)
    loader = make_eval_loader(raw, 16, preprocessing=model.preprocessing, num_replicas=1, rank=0)
    matrices, count = evaluate_confusion(
        model, loader, "cpu", num_classes=model.num_classes, class_names=raw.classes
    )
    matrix = next(iter(matrices.values()))
    return summarize(matrices, num_images=count), raw, model, matrix


@torch.no_grad()
def write_overlays(model: torch.nn.Module, dataset: Any, path: Path, n: int = 6) -> None:
    """A grid: one row per held-out sample, columns image | truth | prediction overlay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fcnkit.data.transforms import build_transforms
    from fcnkit.inference import colorize, overlay

    transform = build_transforms(False, model.preprocessing)
    palette = [tuple(c) for c in dataset.palette]
    n = min(n, len(dataset))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row in range(n):
        sample = dataset[row]
        pred = model(transform(sample)["image"][None]).argmax(1)[0].numpy()
        image = sample["image"][:3].permute(1, 2, 0).numpy()
        truth = np.asarray(colorize(sample["label"].numpy(), palette).convert("RGB"))
        for col, (img, title) in enumerate(
            [
                (image, "image"),
                (truth, "truth"),
                (overlay(image, pred, palette, 0.55), "prediction"),
            ]
        ):
            ax = axes[row, col]
            ax.imshow(img, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=np.array(palette[i]) / 255.0)
        for i in range(len(dataset.classes))
    ]
    fig.legend(handles, dataset.classes, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_confusion(matrix: ConfusionMatrix, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (rows: truth) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = matrix.normalized().numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if norm[i, j] >= 0.01:
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(
                    j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color
                )
    fig.colorbar(im, ax=ax)
    ax.set_title("confusion (test, row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(config: Config, summary: dict[str, Any], path: Path) -> None:
    per_class = "\n".join(
        f"| {name} | {100 * iu:.1f} % |" for name, iu in summary["per_class_iu"].items()
    )
    size = config.data.options.get("size", "default")
    text = f"""# fcnkit demo

An FCN-8s-style network (`{config.model.name}`: ImageNet-pretrained EfficientNet-Lite0 trunk,
score layers on stride 32, 16 and 8 fused by 2x upsampling, paper Sec. 4.2) trained on the
built-in synthetic shapes (6 shape classes + background; colours and textures say nothing
about the class, only shape does) for {summary["steps"]} steps of
{config.data.batch_size} images of size {size} on the CPU (torch threads: {summary["threads"]}) in
{summary["train_seconds"]:.0f} s, then evaluated on the held-out test split
({summary["num_images"]} images never seen in training).

Test metrics (percent): **{format_metrics(summary)}**

![held-out samples: image, truth, prediction](overlays.png)

![training curves](curves.png)

![confusion matrix](confusion.png)

| class | IU |
|---|---|
{per_class}

Optimiser: {config.optim.name}, lr {config.optim.lr:g}, {config.schedule.name} schedule.
Full settings: `config.yaml`; training log: `log.jsonl`; TensorBoard: `tb/`;
weights: `checkpoints/best.pt` (`fcnkit predict {path.parent}/checkpoints/best.pt IMAGES`).
"""
    path.write_text(text)
