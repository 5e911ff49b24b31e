"""``fcnkit eval``: the paper's metrics (Sec. 5) of a trained model on a dataset split.

    fcnkit eval RUN_OR_WEIGHTS --dataset NAME [--root DIR] --split S [--option k=v ...]
                [--out DIR] [--device D] [--batch-size N] [--sliding-window TILE] [--tta]

Prints a per-class table and pixel accuracy, mean accuracy, mean IU and frequency-weighted IU;
writes ``metrics.json`` and a row-normalised confusion-matrix PNG into ``--out`` (default:
``<run dir>/eval-<dataset>-<split>/``). Runs on 1..N processes (``torchrun ... -m fcnkit
eval ...``): each rank evaluates its shard, rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from fcnkit.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a trained model (pixel acc, mean acc, mean IU, f.w. IU)"
    )
    p.add_argument(
        "weights",
        help="run directory, checkpoint file, known weight name (fcnkit weights) or a "
        ".caffemodel / state-dict file with --model",
    )
    p.add_argument("--dataset", required=True, help="dataset name (see `fcnkit data list`)")
    p.add_argument("--root", default=None, help="the folder holding the dataset's files")
    p.add_argument("--split", required=True, help="split to evaluate, e.g. val or seg11valid")
    p.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)"
    )
    p.add_argument("--out", default=None, help="output folder (default: RUN/eval-DATASET-SPLIT)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument(
        "--sliding-window", type=int, default=None, metavar="TILE", help="tile large images"
    )
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped input")
    add_model_arguments(p)
    p.set_defaults(func=run_eval)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--num-classes``, ``--model-option``: the model for weights that are not a
    checkpoint (a weight entry name, a ``.caffemodel`` or state-dict file)."""
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="model for WEIGHTS that are not a checkpoint (default: the weight entry's model)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of that model (default: the weights' own, else the model's default)",
    )
    p.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="option of that model, e.g. modality=rgb+hha (repeatable)",
    )


def load_cli_model(args: argparse.Namespace, device: Any) -> tuple[Any, dict[str, Any]]:
    """The model of ``args.weights`` (:func:`fcnkit.engine.checkpoint.load_any`); user
    errors become :class:`CLIError`."""
    from fcnkit.cli.data import parse_options
    from fcnkit.engine.checkpoint import load_any

    try:
        return load_any(
            args.weights,
            model_name=args.model,
            num_classes=args.num_classes,
            options=parse_options(args.model_option),
            map_location=device,
        )
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None


def default_out_dir(weights: str | os.PathLike, dataset: str, split: str) -> Path:
    """``RUN/eval-DATASET-SPLIT`` for a run directory or a checkpoint in ``RUN/checkpoints``;
    beside the file otherwise."""
    path = Path(weights)
    if path.is_dir():
        run = path
    elif path.parent.name == "checkpoints":
        run = path.parent.parent
    else:
        run = path.parent
    return run / f"eval-{dataset}-{split}"


def resolve_cli_device(name: str) -> Any:
    """``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``; under torchrun ``cuda`` means
    ``cuda:LOCAL_RANK``) with user errors as :class:`CLIError`."""
    from fcnkit.engine.distributed import resolve_device

    try:
        return resolve_device(name, int(os.environ.get("LOCAL_RANK", "0")))
    except RuntimeError as err:
        raise CLIError(f"device {name!r}: {err}") from None


def _class_names(dataset: Any, model: Any) -> tuple[dict[str, list[str]] | list[str] | None, Any]:
    """Class names (per head for multi-target datasets) and the per-head exclusions."""
    excluded = list(getattr(dataset, "eval_exclude", []) or [])
    targets = getattr(dataset, "targets", None)
    if targets:
        names = {head: list(classes) for head, classes in targets.items()}
        exclude = {h: [e for e in excluded if e in c] for h, c in names.items()}
        return names, exclude
    classes = list(getattr(dataset, "classes", []) or []) or None
    if classes is not None and len(classes) != model.num_classes:
        raise CLIError(
            f"the model predicts {model.num_classes} classes but the dataset has "
            f"{len(classes)} ({', '.join(classes[:5])}, ...): wrong dataset or model?"
        )
    return classes, excluded


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def plot_confusion(matrix: Any, path: Path, title: str = "") -> Path:
    """A row-normalised confusion matrix (rows: truth) with class names, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = matrix.normalized().numpy()
    n = matrix.num_classes
    names = matrix.class_names or [str(i) for i in range(n)]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import Subset

    from fcnkit.cli.data import parse_options
    from fcnkit.data import create_dataset
    from fcnkit.data.base import DatasetError
    from fcnkit.data.collate import collate_pad
    from fcnkit.data.transforms import TransformedDataset, build_transforms
    from fcnkit.engine.evaluate import evaluate_confusion, make_eval_loader, summarize
    from fcnkit.metrics import format_metrics

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_cli_device(args.device)
    model, meta = load_cli_model(args, device)
    try:
        raw = create_dataset(args.dataset, args.root, args.split, **parse_options(args.option))
    except (DatasetError, ValueError, TypeError, OSError) as err:
        raise CLIError(f"cannot open dataset {args.dataset!r}: {err}") from None
    class_names, exclude = _class_names(raw, model)
    dataset: Any = TransformedDataset(raw, build_transforms(False, model.preprocessing))
    if args.limit is not None:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    if len(dataset) == 0:
        raise CLIError(f"split {args.split!r} of {args.dataset!r} is empty")

    initialised_here = False
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world)
        initialised_here = True
    try:
        loader = make_eval_loader(
            dataset, args.batch_size, num_workers=args.workers, collate_fn=collate_pad
        )
        matrices, count = evaluate_confusion(
            model,
            loader,
            device,
            ignore_index=getattr(raw, "ignore_index", 255),
            class_names=class_names,
            sliding_window=args.sliding_window,
            flip=args.tta,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    finally:
        if initialised_here:
            torch.distributed.destroy_process_group()
    if rank != 0:
        return 0

    metrics = summarize(matrices, exclude, num_images=count)
    out = Path(args.out) if args.out else default_out_dir(args.weights, args.dataset, args.split)
    primary = next(iter(matrices))
    pngs = {}
    for head, matrix in matrices.items():
        excl = exclude.get(head, []) if isinstance(exclude, dict) else exclude
        title = "" if len(matrices) == 1 else f"head {head}: "
        print(f"{title}{args.dataset} {args.split}, {count} images")
        print(matrix.table(excl))
        print()
        name = "confusion.png" if head == primary else f"confusion-{head}.png"
        m = metrics["heads"][head] if "heads" in metrics else metrics
        pngs[head] = plot_confusion(
            matrix,
            out / name,
            f"{meta.get('model_name', '')} on {args.dataset} {args.split} ({title or ''}"
            f"mean IU {100 * m['mean_iu']:.1f})",
        )
    record = {
        "weights": str(meta.get("path", args.weights)),
        "model_name": meta.get("model_name"),
        "dataset": args.dataset,
        "root": args.root,
        "split": args.split,
        "options": parse_options(args.option),
        "tta": args.tta,
        "sliding_window": args.sliding_window,
        "metrics": metrics,
        "confusion": {h: m.matrix.tolist() for h, m in matrices.items()},
        "confusion_png": {h: p.name for h, p in pngs.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_nan_to_none(record), indent=2))
    print(format_metrics(metrics))
    print(f"wrote {out / 'metrics.json'} and {', '.join(p.name for p in pngs.values())}")
    return 0
