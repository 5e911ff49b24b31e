"""``fcnkit predict``: segment images of any size with a trained model.

    fcnkit predict WEIGHTS INPUTS... --out DIR [--batch-size N] [--device D] [--tta]
                   [--sliding-window TILE] [--max-pixels N] [--max-image-pixels N]
                   [--head NAME] [--alpha A]
                   [--model NAME [--num-classes N] [--model-option KEY=VALUE]]
                   [--backend B] [--precision P] [--channels-last] [--compile] [--threads N]
                   [--calibration IMAGES [--calibration-limit N]]

WEIGHTS is a run directory or checkpoint, a known weight name (``fcnkit weights``), a
``.caffemodel``/state-dict file with ``--model``, or an ``.onnx`` file from ``fcnkit export``
(run with ONNX Runtime; preprocessing, class names and colours from its metadata). The speed
options (``--backend``, ``--precision`` ...) are measured in docs/speed.md.

INPUTS are image files or folders (searched recursively). For each image it writes
``DIR/labels/<name>.png`` (class indices, palette PNG with the dataset's colours from the
checkpoint, per head for multi-head models) and ``DIR/overlays/<name>.png`` (colours blended
over the image). Inputs are never overwritten. Image files are read upright (EXIF orientation)
as RGB (rules per mode: :func:`fcnkit.inference.load_image`): multi-modal models (RGB-D,
RGB + HHA) need stacked inputs through the Python API (``Segmenter``).

One bad file never stops the others: an unreadable image, one over ``--max-image-pixels``
or one whose prediction fails (e.g. out of memory) is reported and skipped, every other image
is written, and the run ends with the list of failures (file and reason) and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from fcnkit.cli import DEBUG_ENV, CLIError
from fcnkit.cli.eval import (
    add_backend_arguments,
    add_model_arguments,
    add_scales_argument,
    backend_options,
    load_cli_model,
    resolve_cli_device,
)
from fcnkit.inference import DEFAULT_MAX_IMAGE_PIXELS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="segment images or folders of images")
    p.add_argument(
        "weights",
        help="run directory, checkpoint file, known weight name (fcnkit weights) or a "
        ".caffemodel / state-dict file with --model",
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--batch-size", type=int, default=4, help="same-size images run together (default 4)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped input")
    add_scales_argument(p)
    p.add_argument(
        "--sliding-window",
        type=int,
        default=None,
        metavar="TILE",
        help="tile every image in TILE x TILE tiles (default: whole images)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="memory budget: images above this many pixels are processed in tiles, with float "
        "scores held for one band of tiles (default: no limit)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help="image files with more pixels are skipped (reported) before decoding; 0: no "
        f"limit (default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    p.add_argument("--head", default=None, help="head of a multi-head model (default: primary)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    add_model_arguments(p)
    add_backend_arguments(p, "int8: training images (files or folders) to calibrate on")
    p.set_defaults(func=run_predict, out_kind="folder")


def collect_inputs(inputs: list[str]) -> list[tuple[Path, str]]:
    """``(image path, output name)`` pairs: files by stem, folders by relative path."""
    from fcnkit.inference import IMAGE_EXTENSIONS

    found: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not images:
                raise CLIError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {path}")
            found += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in images]
        elif path.is_file():
            found.append((path, path.stem))
        else:
            raise CLIError(f"input {path} does not exist")
    names: set[str] = set()
    unique: list[tuple[Path, str]] = []
    for path, name in found:
        candidate, k = name, 2
        while candidate in names:  # same stem from different places: name-2, name-3, ...
            candidate, k = f"{name}-{k}", k + 1
        names.add(candidate)
        unique.append((path, candidate))
    return unique


def save_label(label: Any, path: Path, palette: list | None) -> None:
    import numpy as np
    from PIL import Image

    from fcnkit.inference import colorize

    path.parent.mkdir(parents=True, exist_ok=True)
    if label.max(initial=0) <= 255:
        colorize(label, palette).save(path)
    else:  # more than 256 classes: 16-bit greyscale indices
        Image.fromarray(label.astype(np.uint16)).save(path)


def one_sentence(err: BaseException) -> str:
    """The first line of an error's message (torch's out-of-memory errors run to paragraphs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def run_predict(args: argparse.Namespace) -> int:
    if args.max_image_pixels < 0:
        raise CLIError(
            f"--max-image-pixels must be 0 (no limit) or more, got {args.max_image_pixels}"
        )
    plan = output_plan(args.inputs, Path(args.out))
    batch = PredictBatches(args, build_segmenter(args))
    chunk = max(1, args.batch_size) * 4
    for start in range(0, len(plan), chunk):
        batch.run(plan[start : start + chunk])
    out = Path(args.out)
    print(
        f"wrote {batch.written} label maps to {out / 'labels'} and overlays to {out / 'overlays'}"
    )
    if batch.failures:
        listed = "\n".join(f"  {line}" for line in batch.failures)
        raise CLIError(
            f"{len(batch.failures)} of {len(plan)} image(s) could not be read or segmented "
            f"(the others were written):\n{listed}"
        )
    return 0


def output_plan(inputs: list[str], out: Path) -> list[tuple[Path, Path, Path]]:
    """``(image, label PNG, overlay PNG)`` for every input; refuses to overwrite an input."""
    items = collect_inputs(inputs)
    sources = {p.resolve() for p, _ in items}
    plan = [
        (path, out / "labels" / f"{name}.png", out / "overlays" / f"{name}.png")
        for path, name in items
    ]
    for path, label_path, overlay_path in plan:
        for target in (label_path, overlay_path):
            if target.resolve() in sources:
                raise CLIError(f"writing {target} would overwrite the input {path}; change --out")
    return plan


def build_segmenter(args: argparse.Namespace) -> Any:
    """The :class:`fcnkit.inference.Segmenter` of ``args.weights`` for RGB image files."""
    from fcnkit.backends import is_onnx_file
    from fcnkit.inference import Segmenter

    device = resolve_cli_device(args.device)
    options = backend_options(args)
    if is_onnx_file(args.weights):
        model, meta = args.weights, {"model_name": Path(args.weights).name}
    else:
        model, meta = load_cli_model(args, device)
    try:
        segmenter = Segmenter(
            model,
            device,
            **options,
            calibration=calibration_images(args),
            batch_size=args.batch_size,
            tta=args.tta,
            scales=args.scales,
            sliding_window=args.sliding_window,
            max_pixels=args.max_pixels,
            max_image_pixels=args.max_image_pixels or None,
            meta=meta,
            copy_model=False,  # loaded for this segmenter alone: one copy of the weights
        )
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    channels = segmenter.input_channels
    if channels is not None and channels != 3:
        name = meta.get("model_name", type(model).__name__)
        raise CLIError(
            f"{name} expects {channels}-channel input but image files are read as RGB: "
            "segment stacked multi-modal inputs with the Python API, "
            "fcnkit.Segmenter(WEIGHTS).predict(tensor_or_array)"
        )
    return segmenter


def calibration_images(args: argparse.Namespace) -> Any:
    """``--calibration`` images (at most ``--calibration-limit``, spread over the sorted
    files) as ``uint8`` tensors, read lazily; ``None`` without the option. Normalised with
    the model's preprocessing by ``Segmenter``."""
    if not args.calibration:
        return None
    from fcnkit.inference import load_image

    files = [path for path, _ in collect_inputs([args.calibration])]
    step = max(1, len(files) // max(1, args.calibration_limit))
    return (load_image(path) for path in files[::step][: args.calibration_limit])


class PredictBatches:
    """Reads, segments and writes images a chunk at a time; one image that cannot be read,
    segmented or written is listed in ``failures`` and never takes the others with it."""

    def __init__(self, args: argparse.Namespace, segmenter: Any) -> None:
        self.args = args
        self.segmenter = segmenter
        self.palette = segmenter.palette_for(args.head)
        self.debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in (
            "",
            "0",
        )
        self.failures: list[str] = []  # "PATH: reason", in input order
        self.written = 0

    def fail(self, path: Path, reason: str, err: BaseException) -> None:
        if self.debug:
            traceback.print_exception(err, file=sys.stderr)
        line = reason if str(path) in reason else f"{path}: {reason}"
        print(f"fcnkit predict: skipped {line}", file=sys.stderr)
        self.failures.append(line)

    def run(self, plan: list[tuple[Path, Path, Path]]) -> None:
        from fcnkit.inference import load_image

        loaded = []
        for path, label_path, overlay_path in plan:
            try:
                image = load_image(path, max_image_pixels=self.args.max_image_pixels or None)
            except (ValueError, MemoryError) as err:
                self.fail(path, one_sentence(err), err)
                continue
            loaded.append((path, image, label_path, overlay_path))
        if loaded:
            for item, label in zip(loaded, self.predict(loaded), strict=True):
                if label is not None:
                    self.write(item, label)

    def predict(self, loaded: list) -> list:
        """Label maps of ``loaded`` (None where an image failed): a failing batch is retried
        image by image."""
        images = [image for _, image, _, _ in loaded]
        try:
            return self.segmenter.predict_batch(images, head=self.args.head)
        except (ValueError, RuntimeError, MemoryError) as err:
            if len(loaded) == 1:
                self.fail(loaded[0][0], one_sentence(err), err)
                return [None]
        return [self.predict([item])[0] for item in loaded]

    def write(self, item: tuple, label: Any) -> None:
        import numpy as np
        from PIL import Image

        from fcnkit.inference import overlay

        path, image, label_path, overlay_path = item
        try:
            label = label.cpu().numpy()
            save_label(label, label_path, self.palette)
            rgb = image[:3].permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)
            blended = overlay(rgb, np.clip(label, 0, 255), self.palette, self.args.alpha)
            overlay_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(blended).save(overlay_path)
        except (OSError, ValueError, MemoryError) as err:
            self.fail(path, f"cannot write its outputs: {one_sentence(err)}", err)
            return
        self.written += 1
