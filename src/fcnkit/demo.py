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
``overwrite=True``. When ``train.time_limit`` ends training before ``train.steps``, the console
and the report say so (steps done of planned) with the command that runs the demo in full.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from fcnkit.engine.config import Config, load_config
from fcnkit.engine.evaluate import EvalResult
from fcnkit.engine.rundir import write_json
from fcnkit.extras import MissingExtraError
from fcnkit.metrics import METRIC_NAMES, ConfusionMatrix, format_metrics
from fcnkit.plots import read_log

CONFUSION_TITLE = "confusion (test, row-normalised)"


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
    from fcnkit import plots
    from fcnkit.engine.evaluate import predict_samples
    from fcnkit.engine.train import train

    config = demo_config(steps, size, overrides)
    base = Path(run_dir)
    run_dir = free_run_dir(base, overwrite)
    print(f"fcnkit demo: {config.model.name} on synthetic shapes -> {run_dir}")
    t0 = time.perf_counter()
    train(config, run_dir, overwrite=overwrite, progress=progress)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    result, test_set, model = evaluate_test_split(config, run_dir, num_test)
    eval_seconds = time.perf_counter() - t1
    samples = predict_samples(model, _eval_view(test_set, model), 6)
    try:
        plots.plot_overlays(samples, test_set.palette, test_set.classes, run_dir / "overlays.png")
        plots.plot_curves(run_dir, run_dir / "curves.png")
        plots.plot_confusion(result.matrix, run_dir / "confusion.png", CONFUSION_TITLE)
    except MissingExtraError as err:  # the figures are extras; the metrics and report are not
        print(f"fcnkit demo: no figures written. {err}")
    metrics = result.metrics
    summary = {
        "split": "test",
        **{k: metrics[k] for k in METRIC_NAMES},
        "per_class_iu": dict(zip(test_set.classes, metrics["per_class_iu"], strict=True)),
        "num_images": len(test_set),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "threads": torch.get_num_threads(),
        "model": config.model.name,
        "steps": _steps_done(run_dir),
        "steps_planned": config.train.steps,
        "val": _val_summary(run_dir),
        "eval_command": eval_command(config, run_dir, num_test),
    }
    summary["stopped_early"] = summary["steps"] < config.train.steps
    if summary["stopped_early"]:
        summary["full_command"] = full_run_command(base, steps, size, overrides)
    write_json(run_dir / "metrics.json", summary)
    write_report(config, summary, run_dir / "report.md")
    print(f"\nheld-out test split ({len(test_set)} images): {format_metrics(metrics)}")
    if summary["stopped_early"]:
        print(f"fcnkit demo: {stopped_early_note(config, summary)}")
    print(f"trained in {train_seconds:.0f} s; report: {run_dir / 'report.md'}")
    return {**summary, "run_dir": str(run_dir)}


def full_run_command(
    run_dir: Path, steps: int | None, size: int | None, overrides: list[str] | None
) -> str:
    """The ``fcnkit demo`` command of this demo without its time limit."""
    argv = ["fcnkit", "demo"]
    if run_dir != Path("runs/demo"):
        argv += ["--run-dir", str(run_dir)]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if size is not None:
        argv += ["--size", str(size)]
    for item in overrides or []:
        if not item.replace(" ", "").startswith("train.time_limit="):
            argv += ["--set", item]
    return shlex.join([*argv, "--set", "train.time_limit=null"])


def stopped_early_note(config: Config, summary: dict[str, Any]) -> str:
    """One sentence: training stopped by the time limit, steps done of planned, the command
    that runs it in full."""
    return (
        f"stopped early: train.time_limit ({config.train.time_limit:g} s) ended training after "
        f"{summary['steps']:,} of {summary['steps_planned']:,} planned steps, so these are the "
        f"metrics of a shortened run (a busy or slow machine). To run it in full: "
        f"`{summary['full_command']}`"
    )


def eval_command(config: Config, run_dir: Path, num_test: int | None) -> str:
    """The ``fcnkit eval`` command that scores the demo's test split as the demo does."""
    options = dict(config.data.val_options or config.data.options)
    if num_test is not None:
        options["num_samples"] = num_test
    argv = ["fcnkit", "eval", str(run_dir), "--dataset", config.data.dataset, "--split", "test"]
    for key, value in options.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        argv += ["--option", f"{key}={text}"]
    return shlex.join(argv)


def _steps_done(run_dir: Path) -> int:
    return max(e["step"] for e in read_log(run_dir) if e["event"] == "train")


def _val_summary(run_dir: Path) -> dict[str, Any]:
    """The last validation of the training run (its ``metrics.json``, before the demo's)."""
    val = json.loads((run_dir / "metrics.json").read_text())
    return {k: val.get(k) for k in ("step", *METRIC_NAMES)}


def _eval_view(raw: Any, model: torch.nn.Module) -> Any:
    """``raw`` through the evaluation transform (whole images, normalised for ``model``)."""
    from fcnkit.data.transforms import TransformedDataset, build_transforms

    return TransformedDataset(raw, build_transforms(False, model.preprocessing))


def evaluate_test_split(
    config: Config, run_dir: Path, num_test: int | None
) -> tuple[EvalResult, Any, torch.nn.Module]:
    """The best checkpoint on the synthetic ``test`` split (never seen in training), scored
    as validation and ``fcnkit eval`` score (:func:`fcnkit.engine.evaluate.evaluate_model`).

    Returns ``(result, raw test set, model)``.
    """
    from fcnkit.data import create_dataset
    from fcnkit.engine.evaluate import dataset_scoring, evaluate_model, make_eval_loader
    from fcnkit.weights import load_model

    model, _ = load_model(run_dir)
    options = dict(config.data.val_options or config.data.options)
    if num_test is not None:
        options["num_samples"] = num_test
    raw = create_dataset(config.data.dataset, None, "test", **options)
    loader = make_eval_loader(raw, 16, preprocessing=model.preprocessing, num_replicas=1, rank=0)
    scoring = dataset_scoring(raw, model.num_classes)
    result = evaluate_model(model, loader, "cpu", scoring=scoring, num_classes=model.num_classes)
    return result, raw, model


def evaluate_test(
    config: Config, run_dir: Path, num_test: int | None
) -> tuple[dict[str, Any], Any, torch.nn.Module, ConfusionMatrix]:
    """``(metrics, raw test set, model, confusion matrix)`` of :func:`evaluate_test_split`
    (kept for one release)."""
    result, raw, model = evaluate_test_split(config, run_dir, num_test)
    return result.metrics, raw, model, result.matrix


def write_overlays(model: torch.nn.Module, dataset: Any, path: Path, n: int = 6) -> None:
    """:func:`fcnkit.plots.plot_overlays` of the first ``n`` samples of the raw ``dataset``
    (kept for one release)."""
    from fcnkit import plots
    from fcnkit.engine.evaluate import predict_samples

    samples = predict_samples(model, _eval_view(dataset, model), n)
    plots.plot_overlays(samples, dataset.palette, dataset.classes, path)


def write_confusion(matrix: ConfusionMatrix, classes: list[str], path: Path) -> None:
    """:func:`fcnkit.plots.plot_confusion` with ``classes`` (kept for one release)."""
    from fcnkit.plots import plot_confusion

    plot_confusion(matrix, path, CONFUSION_TITLE, class_names=classes)


def write_report(config: Config, summary: dict[str, Any], path: Path) -> None:
    per_class = "\n".join(
        f"| {name} | {100 * iu:.1f} % |" for name, iu in summary["per_class_iu"].items()
    )
    size = config.data.options.get("size", "default")
    stopped = (
        f"\n**Note**: {stopped_early_note(config, summary)}.\n"
        if summary.get("stopped_early")
        else ""
    )
    predict = shlex.join(
        ["fcnkit", "predict", str(path.parent / "checkpoints" / "best.pt"), "IMAGES", "--out",
         str(path.parent / "predictions")]
    )  # fmt: skip
    text = f"""# fcnkit demo

An FCN-8s-style network (`{config.model.name}`: ImageNet-pretrained EfficientNet-Lite0 trunk,
score layers on stride 32, 16 and 8 fused by 2x upsampling, paper Sec. 4.2) trained on the
built-in synthetic shapes (6 shape classes + background; colours and textures say nothing
about the class, only shape does) for {summary["steps"]} steps of
{config.data.batch_size} images of size {size} on the CPU (torch threads: {summary["threads"]}) in
{summary["train_seconds"]:.0f} s, then evaluated on the held-out test split
({summary["num_images"]} images never seen in training).
{stopped}
Test metrics (percent): **{format_metrics(summary)}**

![held-out samples: image, truth, prediction](overlays.png)

![training curves](curves.png)

![confusion matrix](confusion.png)

| class | IU |
|---|---|
{per_class}

Optimiser: {config.optim.name}, lr {config.optim.lr:g}, {config.schedule.name} schedule.
Full settings: `config.yaml`; training log: `log.jsonl`; TensorBoard: `tb/`;
weights: `checkpoints/best.pt`. Segment your images (IMAGES: files or folders):
`{predict}`; score the test split again: `{summary["eval_command"]}`.
"""
    path.write_text(text)
