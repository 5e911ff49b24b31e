"""Speed and accuracy of every inference mode of ``fcnkit.backends`` on real data.

Run from the repository root (the numbers of ``docs/speed.md``)::

    python -m benchmarks.backend_modes runs/speed/fcn8s-lite0 \\
        --root /work/shared/data/siftflow --out runs/speed/modes.json

For each mode (``--modes``; default: eager fp32 = the faithful baseline, channels-last,
compiled, ONNX Runtime fp32, ONNX Runtime int8, eager bf16; also eager fp16, OpenVINO fp32 /
bf16) it measures

- latency of one image at each ``--sizes`` (batch 1): the modes take turns, one call each per
  round, ``--warmup`` rounds then ``--reps`` timed ones; the median is reported (turns, so a
  load change on a shared machine hits every mode alike);
- SIFT Flow test (``--split``, the first ``--limit`` images; ``--slow-limit`` for modes
  over 10x slower than fp32) scored as ``fcnkit eval`` scores it: pixel accuracy and mean IU
  of the semantic head, ignore label and the dataset's excluded classes as in
  :func:`fcnkit.engine.evaluate.dataset_scoring`;
- label disagreement with eager fp32 on the same images: over all pixels and the worst image.

int8 is calibrated on ``--calibration-images`` images spread over the *training* split.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch

MODES: dict[str, dict[str, Any]] = {
    "eager-fp32": {},
    "eager-fp32-channels_last": {"channels_last": True},
    "eager-fp32-compiled": {"compile": True},
    "onnxruntime-fp32": {"backend": "onnxruntime"},
    "onnxruntime-int8": {"backend": "onnxruntime", "precision": "int8"},
    "eager-bf16": {"precision": "bf16"},
    "eager-bf16-channels_last": {"precision": "bf16", "channels_last": True},
    "eager-fp16": {"precision": "fp16"},
    "openvino-fp32": {"backend": "openvino"},
    "openvino-bf16": {"backend": "openvino", "precision": "bf16"},
}
DEFAULT_MODES = [m for m in MODES if m not in ("eager-fp16", "eager-bf16-channels_last")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help="run directory or checkpoint (a SIFT Flow model)")
    p.add_argument("--root", required=True, help="SIFT Flow folder")
    p.add_argument("--split", default="test")
    p.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 500])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="test images (default: all)")
    p.add_argument("--slow-limit", type=int, default=20, help="test images for slow modes")
    p.add_argument("--calibration-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    p.add_argument("--out", default=None, help="JSON file for the results")
    return p.parse_args()


def calibration(raw_train: Any, count: int, preprocessing: Any) -> list[torch.Tensor]:
    from fcnkit.backends import calibration_batches

    step = max(1, len(raw_train) // count)
    images = (raw_train[i]["image"] for i in range(0, len(raw_train), step))
    return list(calibration_batches(images, preprocessing, count))


def latencies(runners: dict[str, Any], sizes: list[int], warmup: int, reps: int) -> dict:
    """Median seconds per mode and size, the modes taking turns within each round."""
    times: dict[str, dict[int, list[float]]] = {m: {s: [] for s in sizes} for m in runners}
    g = torch.Generator().manual_seed(0)
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=g)
        for round_ in range(warmup + reps):
            for mode, runner in runners.items():
                start = time.perf_counter()
                runner(x)
                if round_ >= warmup:
                    times[mode][size].append(time.perf_counter() - start)
    return {m: {s: statistics.median(v) for s, v in per.items()} for m, per in times.items()}


def score(runner: Any, raw: Any, indices: range, preprocessing: Any, scoring: Any) -> dict:
    """Pixel accuracy and mean IU of the primary head, and the label maps."""
    from fcnkit.metrics import ConfusionMatrix
    from fcnkit.models.outputs import primary

    cm = ConfusionMatrix(len(scoring.class_names), scoring.ignore_index,
                         class_names=scoring.class_names)  # fmt: skip
    labels = []
    for i in indices:
        sample = raw[i]
        x = preprocessing.normalize(sample["image"][None])
        pred = primary(runner(x)).argmax(1)[0]
        truth = sample["label"]
        truth = truth if isinstance(truth, torch.Tensor) else primary(truth)
        cm.update(pred, truth)
        labels.append(pred.to(torch.uint8))
    metrics = cm.compute(exclude=scoring.exclude)
    return {"pixel_acc": metrics["pixel_acc"], "mean_iu": metrics["mean_iu"], "labels": labels}


def disagreement(labels: list[torch.Tensor], reference: list[torch.Tensor]) -> dict:
    per_image = [float((a != b).float().mean()) for a, b in zip(labels, reference, strict=False)]
    pixels = sum(a.numel() for a in labels)
    differing = sum(float((a != b).sum()) for a, b in zip(labels, reference, strict=False))
    return {"all_pixels": differing / pixels, "worst_image": max(per_image)}


def main() -> None:
    from fcnkit.backends import build_runner, cpu_flags, default_precision
    from fcnkit.data import create_dataset
    from fcnkit.engine.evaluate import dataset_scoring
    from fcnkit.weights import load_any

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_any(args.weights)
    model.eval()
    pre = model.preprocessing
    raw = create_dataset("siftflow", args.root, args.split)
    scoring = dataset_scoring(raw, model.num_classes)
    runners, build_s = {}, {}
    for mode in args.modes:
        options = dict(MODES[mode])
        if options.get("precision") == "int8":
            train = create_dataset("siftflow", args.root, "train")
            options["calibration"] = calibration(train, args.calibration_images, pre)
        start = time.perf_counter()
        runners[mode] = build_runner(model, **options, threads=args.threads)
        build_s[mode] = time.perf_counter() - start
        print(f"built {runners[mode].name} in {build_s[mode]:.1f} s", flush=True)
    lat = latencies(runners, args.sizes, args.warmup, args.reps)
    base = lat["eager-fp32"]
    results: dict[str, Any] = {}
    reference = None
    for mode, runner in runners.items():
        slow = lat[mode][args.sizes[0]] > 10 * base[args.sizes[0]]
        n = min(len(raw), args.slow_limit if slow else (args.limit or len(raw)))
        start = time.perf_counter()
        scored = score(runner, raw, range(n), pre, scoring)
        if reference is None:
            reference = scored["labels"]
        row = {
            "latency_s": lat[mode],
            "ratio_vs_eager_fp32": {s: lat[mode][s] / base[s] for s in args.sizes},
            "images_scored": n,
            "pixel_acc": scored["pixel_acc"],
            "mean_iu": scored["mean_iu"],
            "disagreement_vs_fp32": disagreement(scored["labels"], reference),
            "build_s": build_s[mode],
            "score_s": time.perf_counter() - start,
        }
        results[mode] = row
        print(mode, json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    info = {
        "weights": args.weights,
        "split": args.split,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f),
        "default_precision_cpu": default_precision("cpu"),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "modes": results,
    }
    print(table(info, args.sizes))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1, default=str)


def table(info: dict, sizes: list[int]) -> str:
    head = " | ".join(f"{s}x{s} ms (ratio)" for s in sizes)
    lines = [
        f"| mode | {head} | images | mean IU | pixel acc. | labels differing (all / worst image) |",
        "|---" * (len(sizes) + 5) + "|",
    ]
    for mode, r in info["modes"].items():
        cells = " | ".join(
            f"{1000 * r['latency_s'][s]:.1f} ({r['ratio_vs_eager_fp32'][s]:.2f}x)" for s in sizes
        )
        d = r["disagreement_vs_fp32"]
        lines.append(
            f"| {mode} | {cells} | {r['images_scored']} | {100 * r['mean_iu']:.2f} | "
            f"{100 * r['pixel_acc']:.2f} | {100 * d['all_pixels']:.3f}% / "
            f"{100 * d['worst_image']:.2f}% |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
