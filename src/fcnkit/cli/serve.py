"""``fcnkit serve``: a local web page (and HTTP API) that segments your own photos.

    fcnkit serve [MODEL] [--host 127.0.0.1] [--port 8000] [--device D]
                 [--max-upload-mb MB] [--max-queue N] [--max-image-pixels N] [--max-pixels N]
                 [--backend B] [--precision P] ...

MODEL is what ``fcnkit predict`` takes: a run directory or checkpoint, a known weight name,
or an ``.onnx`` file from ``fcnkit export``. Without it: the model the package ships (a SIFT
Flow outdoor-scene segmenter, ``fcnkit weights``), else the latest ``fcnkit demo`` run under
``runs/``. Open the printed address, drop a
photo. API: ``curl -F image=@photo.jpg http://127.0.0.1:8000/predict -o labels.png``
(``?format=json`` for JSON); see :mod:`fcnkit.serve`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnkit.cli import CLIError
from fcnkit.cli.eval import add_backend_arguments, add_model_arguments
from fcnkit.inference import DEFAULT_MAX_IMAGE_PIXELS

DEMO_RUNS = Path("runs")


def register(subparsers: argparse._SubParsersAction) -> None:
    from fcnkit.serve import DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT

    p = subparsers.add_parser("serve", help="a local web page that segments your photos")
    p.add_argument(
        "weights",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="run directory, checkpoint, known weight name or .onnx file (default: the model the "
        "package ships, else the latest `fcnkit demo` run under runs/)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument(
        "--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
        help=f"larger uploads are refused with 413 (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
        help="requests waiting or running at once; more get 503 (default "
        f"{DEFAULT_MAX_QUEUE})",
    )  # fmt: skip
    p.add_argument(
        "--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
        help=f"larger images are refused with 413 (default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )  # fmt: skip
    p.add_argument(
        "--max-pixels", type=int, default=4_000_000,
        help="images above this many pixels are segmented in tiles, bounding memory "
        "(default 4,000,000)",
    )  # fmt: skip
    add_model_arguments(p)
    add_backend_arguments(p, "int8: training images (files or folders) to calibrate on")
    p.set_defaults(func=run_serve, batch_size=1, tta=False, scales=[1.0], sliding_window=None)


def default_model(runs: Path = DEMO_RUNS) -> str:
    """The model the package ships (:func:`fcnkit.weights.shipped_models`), else the most
    recent ``fcnkit demo`` run (``runs/demo``, ``runs/demo-2`` ...) with a best checkpoint,
    else a :class:`CLIError` saying what to pass."""
    from fcnkit.weights import shipped_models

    shipped = [e for e in shipped_models() if e.available]
    if shipped:
        return shipped[0].name
    candidates = [
        d for d in runs.glob("demo*") if (d / "checkpoints" / "best.pt").is_file()
    ] if runs.is_dir() else []  # fmt: skip
    if not candidates:
        raise CLIError(
            f"no MODEL given and no demo run under {runs}/: pass a run directory, checkpoint, "
            "weight name or .onnx file (fcnkit serve MODEL), or run `fcnkit demo` first"
        )
    return str(max(candidates, key=lambda d: (d / "checkpoints" / "best.pt").stat().st_mtime))


def build_service(args: argparse.Namespace):  # -> fcnkit.serve.SegmentService
    from fcnkit.cli.predict import build_segmenter
    from fcnkit.serve import SegmentService

    if args.port < 0 or args.port > 65535:
        raise CLIError(f"--port must be 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_queue < 1:
        raise CLIError("--max-upload-mb must be positive and --max-queue at least 1")
    if args.weights is None:
        args.weights = default_model()
    segmenter = build_segmenter(args)
    return SegmentService(
        segmenter,
        model_name=str(args.weights),
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_image_pixels=args.max_image_pixels or None,
        max_queue=args.max_queue,
    )


def run_serve(args: argparse.Namespace) -> int:
    from fcnkit.serve import create_app, run_server

    service = build_service(args)
    app = create_app(service)
    shown = "localhost" if args.host in ("127.0.0.1", "::1") else args.host
    print(f"fcnkit serve: {service.model_name} on {service.device}")
    print(f"  open http://{shown}:{args.port}/ and drop a photo (Ctrl+C stops)")
    print(f"  API: curl -F image=@photo.jpg http://{shown}:{args.port}/predict -o labels.png")
    run_server(app, args.host, args.port)
    return 0
