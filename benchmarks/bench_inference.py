"""fcnkit's FCNs against the port-style and torchvision baselines in one run (not a test).

A thin wrapper of ``fcnkit bench`` (:mod:`fcnkit.bench`): latency (median and spread of >= 10
runs after warm-up), throughput at batch 1 and a larger batch, peak memory (each case in a
fresh process), FLOPs per image and the share of this machine's fp32 matmul rate measured
in the same run, training steps, the 1024x2048 frame through the sliding window and a size
sweep with linear fits; every target of issue 14 printed met / not met / not measured.
Writes ``benchmarks/results/cpu-latest.json`` and ``.md`` unless told otherwise.

    python benchmarks/bench_inference.py                    # the default CPU run (minutes)
    python benchmarks/bench_inference.py --quick            # a smoke run (structure only)
    python benchmarks/bench_inference.py --full             # 128^2..2048^2, training 500x500
    python benchmarks/bench_inference.py --json out.json --markdown out.md --threads 2
"""

from __future__ import annotations

import sys
from pathlib import Path

from fcnkit.cli import main as fcnkit_main

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--json" not in argv and "--quick" not in argv:
        argv += ["--json", str(RESULTS / "cpu-latest.json")]
    if "--markdown" not in argv and "--quick" not in argv:
        argv += ["--markdown", str(RESULTS / "cpu-latest.md")]
    return fcnkit_main(["bench", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
