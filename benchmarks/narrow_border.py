"""Before and after: the narrow border (``FCN.narrow_border``) and the fused optimiser.

Run from the repository root (the numbers of ``docs/speed.md``)::

    python -m benchmarks.narrow_border --out benchmarks/results/narrow-border.json

In one process, in turns (each round runs every configuration once, the order rotating,
after a pause of ``fcnkit.bench.PAIRED_PAUSE_S``), against the port-style VGG16 FCN-8s of
``fcnkit.bench`` with the same weights:

- inference at ``--infer-size`` (batch 1, ``no_grad``): the port, fcnkit with the full
  100-pixel border, fcnkit with the narrow border; whether the three outputs are equal bit
  for bit;
- a training step at ``--train-size`` (batch 1; the bench's step: the ``voc-fcn8s-paper``
  optimiser, ``SegmentationLoss`` and the non-finite guards): the port's (plain SGD), fcnkit
  before (full border, per-tensor SGD), with the narrow border only, with both.

Peak memory of each inference configuration: ``--memory-processes`` fresh processes each
(``fcnkit.bench.PeakMemory``: the resident set's high-water mark above the size after the
imports). The medians of the per-round ratios are reported. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch

from fcnkit import bench
from fcnkit.engine import optim

INFER = ("port", "fcnkit-full-border", "fcnkit-narrow-border")
TRAIN = ("port", "fcnkit-before", "fcnkit-narrow-border", "fcnkit-narrow-border+fused")


def _nets(classes: int = 21) -> tuple[torch.nn.Module, torch.nn.Module]:
    """fcnkit's FCN-8s (seed 0, score layers non-zero) and the port-style net with its weights."""
    torch.manual_seed(0)
    net = bench.build_net(bench.Case("infer", bench.FAITHFUL, classes=classes))
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            getattr(net, name).weight.normal_(0, 0.01)
    return net, bench.port_style_from(net)


def infer_steps(size: int) -> tuple[dict[str, Callable], dict[str, torch.Tensor]]:
    net, port = _nets()
    net.eval(), port.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

    def run(model: torch.nn.Module, narrow: bool | None) -> Callable:
        def step() -> torch.Tensor:
            if narrow is not None:
                model.narrow_border = narrow
            with torch.no_grad():
                return model(x)

        return step

    steps = dict(zip(INFER, (run(port, None), run(net, False), run(net, True)), strict=True))
    return steps, {name: step() for name, step in steps.items()}


def train_steps(size: int) -> dict[str, Callable]:
    steps = {}
    for name in TRAIN:
        case = bench.Case("train", bench.PORT if name == "port" else bench.FAITHFUL,
                          size=(size, size), variant="recipe")  # fmt: skip
        net = bench.build_net(case)
        if name != "port":
            net.narrow_border = name != "fcnkit-before"
        fused = name.endswith("+fused")  # the port builds its own (plain) SGD
        saved = optim.fused_supported
        optim.fused_supported = saved if fused else (lambda groups: False)
        try:
            steps[name], _ = bench._train_step(case, net, torch.device("cpu"))
        finally:
            optim.fused_supported = saved
    return steps


def in_turns(steps: dict[str, Callable], rounds: int, warmup: int) -> dict[str, Any]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = bench.time_in_turns(list(steps.values()), rounds)
    paired = {"labels": list(steps), "times_s": times}
    return {
        "median_ms": {n: 1000 * statistics.median(t) for n, t in zip(steps, times, strict=True)},
        "vs_port": bench.paired_ratios(paired),
        "times_s": dict(zip(steps, times, strict=True)),
        "rounds": rounds,
    }


def memory_worker(name: str, size: int, runs: int) -> float:
    """Peak MB of ``runs`` inference calls of configuration ``name`` (in this process)."""
    bench.preload()
    memory = bench.PeakMemory(torch.device("cpu"))
    steps, _ = infer_steps(size)
    step = steps[name]
    del steps
    memory.reset()
    for _ in range(runs):
        step()
    return memory.peak_mb()


def memory_in_processes(size: int, processes: int, threads: int) -> dict[str, list[float]]:
    peaks: dict[str, list[float]] = {n: [] for n in INFER}
    for _ in range(processes):
        for name in INFER:
            code = ("import torch, sys; from benchmarks.narrow_border import memory_worker; "
                    f"torch.set_num_threads({threads}); "
                    f"print(memory_worker({name!r}, {size}, 3))")  # fmt: skip
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)  # fmt: skip
            peaks[name].append(float(out.stdout.strip().splitlines()[-1]))
    return peaks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infer-size", type=int, default=500)
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--train-rounds", type=int, default=5)
    p.add_argument("--memory-processes", type=int, default=3)
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.narrow_border " + " ".join(argv or sys.argv[1:]),
        "machine": bench.machine_info(args.threads),
        "load_average_start": bench.load_average(),
    }
    steps, outputs = infer_steps(args.infer_size)
    port_out = outputs["port"]
    report["outputs_equal_to_port"] = {
        n: bool(torch.equal(o, port_out)) for n, o in outputs.items()
    }
    report["inference"] = in_turns(steps, args.rounds, warmup=1)
    del steps, outputs, port_out
    print(json.dumps({k: report[k] for k in ("outputs_equal_to_port",)}), flush=True)
    print("inference", json.dumps(report["inference"]["vs_port"]), flush=True)
    report["training"] = in_turns(train_steps(args.train_size), args.train_rounds, warmup=1)
    print("training", json.dumps(report["training"]["vs_port"]), flush=True)
    peaks = memory_in_processes(args.infer_size, args.memory_processes, args.threads)
    medians = {n: statistics.median(v) for n, v in peaks.items()}
    report["inference_peak_mb"] = {"per_process": peaks, "median": medians}
    print("peak MB", json.dumps(report["inference_peak_mb"]["median"]), flush=True)
    report["load_average_end"] = bench.load_average()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
