"""``fcnkit eval``: the paper's metrics (Sec. 5) of a trained model on a dataset split.

    fcnkit eval RUN_OR_WEIGHTS --dataset NAME [--root DIR] --split S [--option k=v ...]
                [--out DIR] [--device D] [--batch-size N] [--sliding-window TILE] [--tta]
                [--boundary-tolerance TOL] [--no-boundary-f] [--no-size-iu]
                [--backend B] [--precision P] [--channels-last] [--compile] [--threads N]
                [--calibration SPLIT [--calibration-limit N]]

Prints a per-class table and pixel accuracy, mean accuracy, mean IU and frequency-weighted IU,
and beyond them the boundary F-score and IU by object size (:class:`fcnkit.metrics.BoundaryFScore`,
:class:`fcnkit.metrics.SizeIU`; ``--boundary-tolerance``, ``--no-boundary-f``, ``--no-size-iu``);
writes ``metrics.json``, a row-normalised confusion-matrix PNG and per-class bars into
``--out`` (default: ``<run dir>/eval-<dataset>-<split>/``, the settings that change the scores
appended: ``-tta``, ``-onnxruntime-int8``, ``-nopad100`` ...). Scored as validation during
training scores (:func:`fcnkit.engine.evaluate.evaluate_model` with the dataset's class
names, exclusions and ``ignore_index``). Runs on 1..N processes (``torchrun ... -m fcnkit
eval ...``, :mod:`fcnkit.engine.distributed`): each rank evaluates its shard, rank 0 writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnkit.cli import CLIError, check_out_folder, writing
from fcnkit.plots import plot_confusion  # noqa: F401 (moved to fcnkit.plots; kept one release)

if TYPE_CHECKING:
    from fcnkit.engine.evaluate import EvalResult


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a trained model (pixel acc, mean acc, mean IU, f.w. IU)"
    )
    p.add_argument(
        "weights",
        help="run directory, checkpoint file, known weight name (fcnkit weights), an .onnx "
        "file from `fcnkit export` (ONNX Runtime) or a .caffemodel / state-dict file with "
        "--model",
    )
    p.add_argument("--dataset", required=True, help="dataset name (see `fcnkit data list`)")
    p.add_argument("--root", default=None, help="the folder holding the dataset's files")
    p.add_argument("--split", required=True, help="split to evaluate, e.g. val or seg11valid")
    p.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: RUN/eval-DATASET-SPLIT, plus the settings that change "
        "the scores, e.g. -tta or -onnxruntime-int8)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument(
        "--sliding-window", type=int, default=None, metavar="TILE", help="tile large images"
    )
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped input")
    add_scales_argument(p)
    p.add_argument(
        "--on-bad-sample",
        choices=("stop", "skip"),
        default="stop",
        help="a sample that cannot be read: stop with its file named (default), or skip it, "
        "score the others and list the skipped files at the end and in metrics.json",
    )
    add_extra_metric_arguments(p)
    add_model_arguments(p)
    add_backend_arguments(p, "int8: the split of the dataset to calibrate on, e.g. train")
    p.set_defaults(func=run_eval, out_kind="folder")  # --out checked by fcnkit.cli.main


def add_extra_metric_arguments(p: argparse.ArgumentParser) -> None:
    """``--boundary-tolerance``, ``--no-boundary-f``, ``--no-size-iu``: the metrics beyond the
    paper's four (:class:`fcnkit.engine.evaluate.ExtraMetrics`)."""
    p.add_argument(
        "--boundary-tolerance",
        default="0.75%",
        metavar="TOL",
        help="boundary F-score: distance within which a predicted boundary pixel matches a "
        "true one, in pixels (2) or percent of the image diagonal (default 0.75%%)",
    )
    p.add_argument("--no-boundary-f", action="store_true", help="skip the boundary F-score")
    p.add_argument(
        "--no-size-iu", action="store_true", help="skip IU by object size (small/medium/large)"
    )


def extra_metrics(args: argparse.Namespace) -> Any:
    """The :class:`~fcnkit.engine.evaluate.ExtraMetrics` the options ask for (``None``: none)."""
    from fcnkit.engine.evaluate import ExtraMetrics
    from fcnkit.metrics import boundary_tolerance_px

    if args.no_boundary_f and args.no_size_iu:
        return None
    try:
        boundary_tolerance_px(args.boundary_tolerance, 1, 1)
    except ValueError as err:
        raise CLIError(f"--boundary-tolerance: {err}") from None
    tolerance = None if args.no_boundary_f else args.boundary_tolerance
    return ExtraMetrics(boundary_tolerance=tolerance, size_iu=not args.no_size_iu)


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


def add_backend_arguments(p: argparse.ArgumentParser, calibration: str) -> None:
    """``--backend``, ``--precision``, ``--channels-last``, ``--compile``, ``--threads`` and
    the int8 calibration options (:func:`fcnkit.backends.build_runner`; docs/speed.md).
    ``calibration``: the help of the option naming the calibration images."""
    from fcnkit.backends import BACKENDS, PRECISIONS

    g = p.add_argument_group("speed (docs/speed.md)")
    g.add_argument(
        "--backend",
        default=None,
        help=f"{' or '.join(BACKENDS)} (default: eager; onnxruntime for an .onnx file; "
        "openvino: the fastest on CPU for the EfficientNet-Lite FCNs)",
    )
    g.add_argument(
        "--precision",
        default="fp32",
        help=f"{', '.join(PRECISIONS)} or auto (default fp32, the faithful one; int8 needs "
        "--backend onnxruntime and calibration images; auto: bf16 only where it is fast)",
    )
    g.add_argument("--channels-last", action="store_true", help="eager: NHWC memory format")
    g.add_argument("--compile", action="store_true", help="eager: torch.compile per input size")
    g.add_argument(
        "--no-pad100",
        dest="pad100",
        action="store_false",
        help="VGG16 FCNs: no 100-pixel pad around the image (conv1_1 pads by 1, outputs "
        "input-sized without crops): faster, scores near the borders change",
    )
    g.add_argument("--threads", type=int, default=None, help="intra-op threads")
    g.add_argument("--calibration", default=None, metavar="SOURCE", help=calibration)
    g.add_argument(
        "--calibration-limit",
        type=int,
        default=100,
        metavar="N",
        help="int8: calibrate on N images spread over the calibration set (default 100)",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`fcnkit.inference.Segmenter` / ``build_runner`` keywords of the options
    (without ``calibration``); bad names as :class:`CLIError`."""
    from fcnkit.backends import check_backend

    backend = args.backend
    try:
        if args.precision != "auto":
            check_backend(backend or "eager", args.precision)
        elif backend is not None:
            check_backend(backend)
    except ValueError as err:
        raise CLIError(f"--backend/--precision: {err}") from None
    if args.precision == "int8" and not args.calibration:
        raise CLIError("--precision int8 needs --calibration (training images to measure on)")
    return {
        "backend": backend,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "threads": args.threads,
        "pad100": args.pad100,
    }


def fast_model(
    args: argparse.Namespace, model: Any, device: Any, meta: dict[str, Any] | None = None
) -> Any:
    """``model`` run as the speed options say (a :class:`fcnkit.backends.RunnerModule`), or
    ``model`` itself for the faithful eager fp32; int8 calibrates on ``--calibration``
    (a split of the evaluated dataset, e.g. ``train``; never the split evaluated). ``model``
    may be an exported ``.onnx`` file (``meta``: :func:`fcnkit.backends.onnx_metadata`),
    run by ONNX Runtime."""
    import torch

    from fcnkit.backends import (
        ONNX_BACKENDS,
        RunnerModule,
        build_runner,
        calibration_batches,
        is_faithful,
        is_onnx_file,
    )
    from fcnkit.preprocessing import get_preprocessing

    options = backend_options(args)
    onnx_file = is_onnx_file(model)
    if onnx_file:
        options["backend"] = options["backend"] or "onnxruntime"
        if options["backend"] not in ONNX_BACKENDS:
            raise CLIError(f"{model}: an exported ONNX file runs with --backend "
                           f"{' or '.join(ONNX_BACKENDS)}")  # fmt: skip
    if is_faithful(**options):
        if args.threads:
            torch.set_num_threads(args.threads)
        return model
    source = (meta or {}).get("preprocessing") if onnx_file else model.preprocessing
    if source is None:
        raise CLIError(f"{model}: the file records no preprocessing (export it with fcnkit)")
    preprocessing = get_preprocessing(source)
    calibration = None
    if args.precision == "int8":
        if args.calibration == args.split:
            raise CLIError(f"--calibration {args.calibration}: calibrate on another split "
                           "than the one evaluated (e.g. train)")  # fmt: skip
        raw = open_dataset(argparse.Namespace(**{**vars(args), "split": args.calibration,
                                                 "limit": None}))  # fmt: skip
        step = max(1, len(raw) // max(1, args.calibration_limit))
        images = (raw[i]["image"] for i in range(0, len(raw), step))
        calibration = calibration_batches(images, preprocessing, args.calibration_limit)
    options["backend"] = options["backend"] or "eager"
    try:
        runner = build_runner(model, **options, calibration=calibration, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    print(f"backend: {runner.name}", file=sys.stderr)
    if not onnx_file:
        return RunnerModule(runner, like=model)
    module = RunnerModule(runner)  # the file's own metadata stands in for the model's
    module.preprocessing = preprocessing
    module.model_name = (meta or {}).get("model_name")
    channels = (meta or {}).get("input_channels") or 3
    probe = next(iter(runner(torch.zeros(1, channels, 32, 32)).values()))
    module.num_classes = int(probe.shape[1])  # the score channels
    return module


def load_cli_model(args: argparse.Namespace, device: Any) -> tuple[Any, dict[str, Any]]:
    """The model of ``args.weights`` (:func:`fcnkit.weights.load_any`); user
    errors become :class:`CLIError`."""
    from fcnkit.cli.data import parse_options
    from fcnkit.weights import load_any

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


def default_out_dir(
    weights: str | os.PathLike, dataset: str, split: str, settings: str = ""
) -> Path:
    """``RUN/eval-DATASET-SPLIT[-SETTINGS]`` for a run directory or a checkpoint in
    ``RUN/checkpoints``; beside the file otherwise. ``settings``: :func:`eval_settings`."""
    path = Path(weights)
    if path.is_dir():
        run = path
    elif path.parent.name == "checkpoints":
        run = path.parent.parent
    else:
        run = path.parent
    return run / "-".join(x for x in ("eval", dataset, split, settings) if x)


def eval_settings(args: argparse.Namespace) -> str:
    """The evaluation settings that change the scores, as a folder-name suffix
    (``first50-scales-0.75-1-1.25-tta-onnxruntime-int8-nopad100``; ``""``: the faithful
    whole split), so that one setting's results never overwrite another's."""
    parts = [f"first{args.limit}"] if args.limit else []
    if args.sliding_window:
        parts.append(f"window{args.sliding_window}")
    if list(args.scales) != [1.0]:
        parts.append("scales-" + "-".join(f"{s:g}" for s in args.scales))
    if args.tta:
        parts.append("tta")
    if args.backend or args.precision != "fp32" or args.channels_last or args.compile:
        parts.append(f"{args.backend or 'eager'}-{args.precision}")
        parts += ["channels_last"] * args.channels_last + ["compiled"] * args.compile
    if not args.pad100:
        parts.append("nopad100")
    return "-".join(parts)


def resolve_cli_device(name: str) -> Any:
    """``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``; under torchrun ``cuda`` means
    ``cuda:LOCAL_RANK``) with user errors as :class:`CLIError`."""
    from fcnkit.engine.distributed import resolve_device

    try:
        return resolve_device(name, int(os.environ.get("LOCAL_RANK", "0")))
    except RuntimeError as err:
        raise CLIError(f"device {name!r}: {err}") from None


def open_dataset(args: argparse.Namespace) -> Any:
    """The raw split to evaluate (its first ``--limit`` images); user errors as CLIError."""
    from torch.utils.data import Subset

    from fcnkit.cli.data import parse_options
    from fcnkit.data import create_dataset
    from fcnkit.data.base import DatasetError

    try:
        raw = create_dataset(args.dataset, args.root, args.split, **parse_options(args.option))
    except (DatasetError, ValueError, TypeError, OSError) as err:
        raise CLIError(f"cannot open dataset {args.dataset!r}: {err}") from None
    if args.limit is not None:
        raw = Subset(raw, range(min(args.limit, len(raw))))
    if len(raw) == 0:
        raise CLIError(f"split {args.split!r} of {args.dataset!r} is empty")
    return raw


def run_eval(args: argparse.Namespace) -> int:
    from fcnkit.backends import is_onnx_file, onnx_metadata
    from fcnkit.engine import distributed
    from fcnkit.engine.evaluate import (
        BadSampleError,
        dataset_scoring,
        evaluate_model,
        make_eval_loader,
    )

    extra = extra_metrics(args)
    if args.out:
        out = check_out_folder(args.out)
    else:  # before evaluating: a file where the default folder goes stops the run now
        default = default_out_dir(args.weights, args.dataset, args.split, eval_settings(args))
        out = check_out_folder(default, "folder")
    info = distributed.setup(str(resolve_cli_device(args.device)))  # torchrun: its process group
    try:
        if is_onnx_file(args.weights):
            try:
                model, meta = args.weights, onnx_metadata(args.weights)
            except (FileNotFoundError, ValueError) as err:
                raise CLIError(f"{args.weights}: {err}") from None
        else:
            model, meta = load_cli_model(args, info.device)
        model = fast_model(args, model, info.device, meta)
        raw = open_dataset(args)
        loader = make_eval_loader(
            raw,
            args.batch_size,
            num_workers=args.workers,
            preprocessing=model.preprocessing,
            num_replicas=info.world_size,
            rank=info.rank,
            catch_bad_samples=True,
        )
        result = evaluate_model(
            model,
            loader,
            info.device,
            scoring=dataset_scoring(raw, model.num_classes, strict=True),
            sliding_window=args.sliding_window,
            flip=args.tta,
            on_bad_sample=args.on_bad_sample,
            extra=extra,
            scales=args.scales,
        )
    except BadSampleError as err:
        hint = "" if args.on_bad_sample == "skip" else " (--on-bad-sample skip scores the others)"
        raise CLIError(f"bad sample in {args.dataset} {args.split}: {err}{hint}") from None
    except ValueError as err:
        raise CLIError(str(err)) from None
    finally:
        distributed.cleanup(info)
    if info.is_main:
        write_results(args, result, meta, out)
        report_skipped(result.skipped)
    return 0


def scale_value(text: str) -> float:
    """``--scales`` item: a finite number > 0 (argparse names the option when it is not)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected numbers > 0, got {text!r} (--scales takes every word after it: put "
            "it after the positional arguments)"
        )
    return value


def add_scales_argument(p: argparse.ArgumentParser) -> None:
    """``--scales S [S ...]``: multi-scale test-time augmentation (``dense_scores``)."""
    p.add_argument(
        "--scales",
        nargs="+",
        type=scale_value,
        default=[1.0],
        metavar="S",
        help="multi-scale test-time augmentation: average the scores at these input scales, "
        "each resized back to the image (with --tta each flipped too), e.g. --scales 0.75 1 "
        "1.25 (default: 1, off); costs about the sum of the squared scales x one pass",
    )


def report_skipped(skipped: list[str]) -> None:
    """List the bad samples ``--on-bad-sample skip`` left out (stderr, after the results)."""
    if skipped:
        listed = "\n".join(f"  {line}" for line in skipped)
        print(
            f"fcnkit eval: skipped {len(skipped)} bad sample(s), not scored:\n{listed}",
            file=sys.stderr,
        )


def write_results(
    args: argparse.Namespace, result: EvalResult, meta: dict[str, Any], out: Path | None = None
) -> None:
    """Print each head's per-class table; write ``metrics.json``, the confusion matrices and
    the per-class IU bars into ``out`` (default: ``--out``, else beside the weights; rank 0)."""
    from fcnkit import plots
    from fcnkit.cli.data import parse_options
    from fcnkit.engine.rundir import write_json
    from fcnkit.metrics import format_boundary_and_size, format_metrics

    if out is None:
        default = default_out_dir(args.weights, args.dataset, args.split, eval_settings(args))
        out = Path(args.out) if args.out else default
    confusion, bars = {}, {}
    for head, matrix in result.matrices.items():
        title = "" if len(result.matrices) == 1 else f"head {head}: "
        print(f"{title}{args.dataset} {args.split}, {result.num_images} images")
        print(result.table(head))
        print()
        suffix = "" if head == result.primary else f"-{head}"
        m = result.head_metrics(head)
        what = f"{meta.get('model_name', '')} on {args.dataset} {args.split} ({title}"
        with writing(out / f"confusion{suffix}.png"):
            confusion[head] = plots.plot_confusion(
                matrix, out / f"confusion{suffix}.png", f"{what}mean IU {100 * m['mean_iu']:.1f})"
            )
        names = matrix.class_names or [str(i) for i in range(matrix.num_classes)]
        with writing(out / f"per-class-iu{suffix}.png"):
            bars[head] = plots.plot_per_class(
                names, m["per_class_iu"], out / f"per-class-iu{suffix}.png",
                title=f"{what}per-class IU)", excluded=result.excluded(head),
                more=plots.boundary_and_size_series(m),
            )  # fmt: skip
    record = {
        "weights": str(meta.get("path", args.weights)),
        "model_name": meta.get("model_name"),
        "dataset": args.dataset,
        "root": args.root,
        "split": args.split,
        "options": parse_options(args.option),
        "tta": args.tta,
        "scales": list(args.scales),
        "sliding_window": args.sliding_window,
        "metrics": result.metrics,
        "confusion": {h: m.matrix.tolist() for h, m in result.matrices.items()},
        "confusion_png": {h: p.name for h, p in confusion.items()},
        "per_class_png": {h: p.name for h, p in bars.items()},
        "skipped": list(result.skipped),
    }
    with writing(out / "metrics.json"):
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", record)
    print(format_metrics(result.metrics))
    if more := format_boundary_and_size(result.metrics):
        print(more)
    pngs = ", ".join(p.name for p in [*confusion.values(), *bars.values()])
    print(f"wrote {out / 'metrics.json'} and {pngs}")
