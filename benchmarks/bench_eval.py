"""Evaluation speed (images/s) and peak memory of fcnkit models (a benchmark, not a test).

Times :func:`fcnkit.engine.evaluate.evaluate` end to end (forward pass, argmax, on-device
confusion matrix, metrics) over pre-transformed synthetic images held in memory, so data
generation is excluded. Reports the median of several runs after one warm-up run, images/s,
the ratio to the first model of the same run, the share of time spent in the metrics
(confusion-matrix updates timed alone on the same outputs) and peak memory during the runs
(``torch.cuda.max_memory_allocated`` on GPU; on the CPU the peak resident set size sampled
every 5 ms, minus the size before the model was built). Prints the device and every setting.

    python benchmarks/bench_eval.py
    python benchmarks/bench_eval.py --models fcn8s-mobilenet_v3_large fcn8s --size 500 --images 4
    python benchmarks/bench_eval.py --device cuda --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from fcnkit import __version__, create_model
from fcnkit.bench import cpu_model
from fcnkit.data import build_transforms, collate_pad, create_dataset
from fcnkit.engine.evaluate import evaluate
from fcnkit.metrics import ConfusionMatrix

DEFAULT_MODELS = ("fcn8s-mobilenet_v3_large", "fcn8s-efficientnet_lite0")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_model()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} threads"


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def metrics_seconds(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Time of the confusion-matrix updates alone, on the model's outputs."""
    outputs = []
    with torch.no_grad():
        for batch in loader:
            out = model(batch["image"].to(device))
            out = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
            outputs.append((out, batch["label"].to(device)))
    cm = ConfusionMatrix(outputs[0][0].shape[1], device=device)
    start = time.perf_counter()
    for out, label in outputs:
        cm.update(out, label)
    cm.compute()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--size", type=int, default=256, help="square image side (default 256)")
    parser.add_argument("--images", type=int, default=8, help="images per run (default 8)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--classes", type=int, default=7, help="classes (synthetic: 7)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--tta", action="store_true", help="also time flip TTA")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"fcnkit {__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"device: {device} - {device_description(device)}")
    print(
        f"settings: {args.images} synthetic images {args.size}x{args.size}, batch "
        f"{args.batch_size}, {args.classes} classes, median of {args.runs} runs after 1 warm-up,"
        " eval mode, no grad, AMP off"
    )
    raw = create_dataset("synthetic", split="val", num_samples=args.images, size=args.size)
    header = f"{'model':<28} {'setting':<8} {'img/s':>8} {'ms/img':>8} {'ratio':>6} "
    header += f"{'metrics%':>8} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    baseline = None
    for name in args.models:
        base_rss = PeakRSS().rss()
        model = create_model(name, args.classes).to(device).eval()
        transform = build_transforms(False, model.preprocessing)
        data = [transform(raw[i]) for i in range(len(raw))]
        loader = DataLoader(data, batch_size=args.batch_size, collate_fn=collate_pad)
        settings = [("plain", False)] + ([("flip-tta", True)] if args.tta else [])
        for label, flip in settings:
            evaluate(model, loader, device, flip=flip)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            with PeakRSS() as rss:
                for _ in range(args.runs):
                    start = time.perf_counter()
                    evaluate(model, loader, device, flip=flip)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            ips = args.images / seconds
            baseline = baseline or ips
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
            else:
                peak = (rss.peak - base_rss) / 2**20
            share = 100 * metrics_seconds(model, loader, device) / seconds
            print(
                f"{name:<28} {label:<8} {ips:8.2f} {1000 / ips:8.1f} {ips / baseline:6.2f} "
                f"{share:8.2f} {peak:8.0f}"
            )
    print("ratio: images/s relative to the first row; metrics%: confusion-matrix share of time;")
    print("peak MB: CUDA max allocated; on CPU the peak resident set during the timed runs minus")
    print("the resident set before the model was built (weights + activations + workspace;")
    print("later rows may reuse memory freed by earlier ones: run one model for exact peaks).")


if __name__ == "__main__":
    main()
