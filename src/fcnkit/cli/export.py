"""``fcnkit export``: a trained model as ONNX with dynamic batch, height and width, or its
weights as safetensors.

    fcnkit export WEIGHTS --out model.onnx [--opset 18] [--no-check] [--dynamo]
    fcnkit export WEIGHTS --out model.safetensors [--format safetensors] [--dtype fp16]

safetensors: the weights (no pickle) with the model name, class names, colours and
preprocessing in the header's metadata (:func:`fcnkit.weights.save_safetensors`); fcnkit and
``Segmenter`` load the file like a checkpoint.

The file takes the *normalised* image (the checkpoint's preprocessing, stored in the file's
metadata under ``preprocessing``) and returns the scores. Unless ``--no-check``, the file is
run with onnxruntime at two input sizes and compared with PyTorch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcnkit.cli import CLIError, writing


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained model to ONNX (dynamic H, W)")
    p.add_argument("weights", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="the .onnx (or .safetensors) file to write")
    p.add_argument(
        "--format", choices=("onnx", "safetensors"), default=None,
        help="default: from --out's suffix (.safetensors), else onnx",
    )  # fmt: skip
    p.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
        help="safetensors: store floating-point weights in this type (default fp32)",
    )  # fmt: skip
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--example-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
        help="input size used for tracing; the exported sizes stay dynamic (default: 64 64)",
    )  # fmt: skip
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter")
    p.set_defaults(func=run_export, out_kind="file", out_example="model.onnx")


def run_export(args: argparse.Namespace) -> int:
    from fcnkit.export import export_onnx
    from fcnkit.weights import load_model

    try:
        model, meta = load_model(args.weights)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    out = Path(args.out)
    if out.resolve() == Path(meta["path"]).resolve():
        raise CLIError(f"--out {out} is the checkpoint itself")
    fmt = args.format or ("safetensors" if out.suffix.lower() == ".safetensors" else "onnx")
    if fmt == "safetensors":
        return export_safetensors(model, meta, out, args.dtype)
    if args.dtype != "fp32":
        raise CLIError("--dtype applies to --format safetensors (ONNX exports are fp32)")
    try:
        with writing(out):
            info = export_onnx(
                model,
                out,
                example_size=tuple(args.example_size),
                opset=args.opset,
                check=not args.no_check,
                dynamo=args.dynamo,
                metadata=meta,
            )
    except AssertionError as err:
        raise CLIError(f"the exported file does not match PyTorch: {err}") from None
    except (ValueError, RuntimeError) as err:  # e.g. an input the model rejects while tracing
        raise CLIError(f"cannot export {meta['model_name']}: {err}") from None
    outputs = ", ".join(info["outputs"])
    print(f"wrote {out} ({meta['model_name']}, outputs: {outputs}, opset {info['opset']})")
    if "max_abs_diff" in info:
        print(f"onnxruntime vs PyTorch at 2 sizes: max abs diff {info['max_abs_diff']:.2e}")
    return 0


def export_safetensors(model: Any, meta: dict[str, Any], out: Path, dtype: str) -> int:
    from fcnkit.cli.weights import DTYPES
    from fcnkit.weights import save_safetensors

    labels = {k: meta.get(k) for k in ("classes", "palette", "targets", "palettes")}
    with writing(out):
        save_safetensors(out, model, dtype=DTYPES[dtype], **labels)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({meta['model_name']}, safetensors {dtype}, {size:.1f} MB)")
    return 0
