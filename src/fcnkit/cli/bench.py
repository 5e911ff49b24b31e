"""``fcnkit bench``: fcnkit's FCNs against named baselines in one run (issue 14).

    fcnkit bench [--quick | --full] [--threads N] [--runs N] [--modes MODE ...]
                 [--json PATH] [--markdown PATH] [--siftflow-root DIR --checkpoint RUN]

Prints the machine, every case and the targets (met / not met / not measured) as Markdown;
``--json`` / ``--markdown`` also write them. See :mod:`fcnkit.bench` for what is measured.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from fcnkit.cli import CLIError, check_out_file, writing


def register(subparsers: argparse._SubParsersAction) -> None:
    from fcnkit.bench import DEFAULT_MODES, QUICK_MODES

    p = subparsers.add_parser(
        "bench",
        help="time fcnkit's FCNs against the port-style and torchvision baselines",
        description="Latency, throughput, peak memory, FLOPs and training steps of fcnkit's "
        "VGG16 FCN-8s (faithful and fast modes) and Lite0 FCN-8s against a port-style eager "
        "VGG16 FCN-8s and torchvision's fcn_resnet50, in one run, with the targets of issue 14.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="a tiny smoke run (about a minute, in one process): structure, not numbers",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="the whole 128^2..2048^2 sweep and training at 500x500 (slow on a CPU)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--runs",
        type=int,
        default=10,
        help="timed runs per latency case (default 10, as the issue asks)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        metavar="MODE",
        help="fcnkit's fast modes besides eager-fp32: BACKEND-PRECISION[-nhwc][-compile] "
        f"(default: {' '.join(DEFAULT_MODES)}; with --quick: {' '.join(QUICK_MODES)})",
    )
    p.add_argument(
        "--memory-processes",
        type=int,
        default=3,
        metavar="N",
        help="fresh processes whose median peak memory the memory targets read (default 3)",
    )
    p.add_argument("--no-train", action="store_true", help="skip the training steps")
    p.add_argument("--no-frame", action="store_true", help="skip the 1024x2048 frame")
    p.add_argument("--no-sweep", action="store_true", help="skip the size sweep")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every case in this process (peak memory less isolated)",
    )
    p.add_argument(
        "--siftflow-root",
        default=None,
        help="with --checkpoint: each mode's mean IU on SIFT Flow test (slow)",
    )
    p.add_argument("--checkpoint", default=None, help="a trained SIFT Flow run or checkpoint")
    p.add_argument(
        "--accuracy-json",
        default=None,
        metavar="PATH",
        help="instead: each mode's mean IU read from an earlier run's --json",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the Markdown table")
    p.set_defaults(func=run_bench_command)  # fmt: skip


def _options(args: argparse.Namespace):
    from fcnkit.backends import check_backend
    from fcnkit.bench import DEFAULT_MODES, QUICK_MODES, BenchOptions, parse_mode

    if min(args.runs, args.memory_processes, 1 if args.threads is None else args.threads) < 1:
        raise CLIError("--runs, --memory-processes and --threads must be at least 1")
    modes = args.modes or (QUICK_MODES if args.quick else DEFAULT_MODES)
    for mode in modes:
        try:
            options = parse_mode(mode)
            check_backend(options["backend"], options["precision"])
        except ValueError as err:
            raise CLIError(f"--modes: {err}") from None
    if bool(args.siftflow_root) != bool(args.checkpoint):
        raise CLIError("--siftflow-root and --checkpoint go together (the accuracy of each mode)")
    if args.siftflow_root and not Path(args.siftflow_root).is_dir():
        raise CLIError(f"--siftflow-root {args.siftflow_root} is not a folder")
    if args.accuracy_json and args.siftflow_root:
        raise CLIError("--accuracy-json reads what --siftflow-root/--checkpoint measure: one")
    if args.accuracy_json:
        from fcnkit.bench import load_accuracy

        try:
            load_accuracy(args.accuracy_json)
        except ValueError as err:
            raise CLIError(str(err)) from None
    return BenchOptions(
        quick=args.quick, full=args.full, threads=args.threads, runs=args.runs,
        modes=tuple(modes), isolate=False if args.in_process else None,
        memory_processes=args.memory_processes,
        train=not args.no_train, frame=not args.no_frame, sweep=not args.no_sweep,
        siftflow_root=args.siftflow_root, checkpoint=args.checkpoint,
        accuracy_json=args.accuracy_json,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip


def _write_json(path: str, report: dict) -> None:
    with writing(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=1) + "\n")


def run_bench_command(args: argparse.Namespace) -> int:
    from fcnkit.bench import report_markdown, run_bench

    outputs = [(args.json, "--json", "bench.json"), (args.markdown, "--markdown", "bench.md")]
    for path, flag, example in outputs:
        if path is not None:
            check_out_file(path, flag, example)
    options = _options(args)
    if args.json:  # each finished section, in case the run is cut short
        options.on_section = lambda partial: _write_json(args.json, {**partial, "partial": True})
    command = "fcnkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    report = run_bench(options, command=command or "fcnkit bench")
    markdown = report_markdown(report)
    print(markdown)
    if args.json:
        _write_json(args.json, report)
    if args.markdown:
        with writing(args.markdown):
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text(markdown)
    return 0
