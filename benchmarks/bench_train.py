"""Training and evaluation speed and peak memory of fcnkit models (not a timed test).

Measures full training steps (forward, pixelwise loss, backward, SGD/AdamW update with the
recipe's parameter groups) and evaluation forward passes, reporting the median over several
steps after warm-up, images/s, process CPU seconds per step (to spot a contended machine) and
peak memory: ``torch.cuda.max_memory_allocated`` on GPU, the process's peak resident set size
(``ru_maxrss``) on the CPU. Prints the device and every setting.

    python benchmarks/bench_train.py                       # demo config + VGG16 FCN-8s 500x500
    python benchmarks/bench_train.py --only demo --steps 10
    python benchmarks/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import torch

from fcnkit import __version__, create_model
from fcnkit.engine.config import load_config
from fcnkit.engine.loss import SegmentationLoss
from fcnkit.engine.optim import build_optimizer


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    label: str,
    model_name: str,
    num_classes: int,
    options: dict,
    optim_cfg,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict:
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = create_model(model_name, num_classes, **options).to(device)
    optimizer = build_optimizer(model, optim_cfg)
    criterion = SegmentationLoss(normalize=True)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch, size, size), device=device)
    times, cpu = [], []
    model.train()
    for i in range(warmup + steps):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        optimizer.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    train_peak = peak_memory_mb(device)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            sync(device)
            t = time.perf_counter()
            model(x).argmax(1)
            sync(device)
            if i >= warmup:
                eval_times.append(time.perf_counter() - t)
    step = statistics.median(times)
    result = {
        "label": label,
        "model": model_name,
        "batch": batch,
        "size": size,
        "train_s_per_step": step,
        "train_images_per_s": batch / step,
        "cpu_s_per_step": statistics.median(cpu),
        "eval_images_per_s": batch / statistics.median(eval_times),
        "peak_memory_mb": train_peak,
    }
    print(
        f"{label:<28} {model_name:<26} batch {batch:>2} x {size}x{size}: "
        f"train {result['train_images_per_s']:7.2f} img/s ({step:.3f} s/step, "
        f"{result['cpu_s_per_step']:.2f} CPU s/step), eval {result['eval_images_per_s']:7.2f} "
        f"img/s, peak memory {train_peak:,.0f} MB",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--only", choices=["demo", "vgg"], default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"fcnkit {__version__}, torch {torch.__version__}, device {device} "
        f"({name or platform.machine()}), {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    if args.only in (None, "demo"):
        demo = load_config("demo")
        size = demo.data.options.get("size", 128)
        bench(
            "demo recipe",
            demo.model.name,
            demo.model.num_classes or 7,
            demo.model.options,
            demo.optim,
            demo.data.batch_size,
            size,
            args.steps,
            args.warmup,
            device,
        )
    if args.only in (None, "vgg"):
        paper = load_config("voc-fcn8s-paper")
        bench(
            "VGG16 FCN-8s (paper-text recipe, 20-image batches)",
            "fcn8s",
            21,
            {},
            paper.optim,
            1,
            500,
            args.steps,
            args.warmup,
            device,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
