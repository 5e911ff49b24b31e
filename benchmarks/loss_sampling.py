"""Loss sampling on real SIFT Flow (issue 13 §1f; paper Sec. 4.3 and its figure).

The paper ignores each final-layer cell with probability ``1 - p`` and raises the images per
batch by ``1/p``, and reports that sampling "does not have a significant effect on
convergence rate compared to whole image training, but takes significantly more time due
to the larger number of images that need to be considered per batch". This trains the
``siftflow-fcn32s-lite0`` recipe (ImageNet EfficientNet-Lite0 FCN-32s) once per ``p`` for the
same wall-clock budget (``train.time_limit``), one run after the other, with
``loss.sample_unit=cell``, ``loss.sample_cell=32`` and the compensation on (the defaults),
evaluating on the fixed ``val`` carve-out (249 images) every ``round(eval_images /
images_per_step)`` steps, i.e. after the same number of *images* for every ``p`` (so about
the same number of evaluations in the budget). The lr schedule is the same per step for
every run (the recipe's AdamW lr 1e-3, fixed after a 25-step warm-up): the paper's setting
(fixed lr), where a sampled step differs only in the cells it sees and the images it costs.

    R=/work/shared/data/siftflow
    python -m benchmarks.loss_sampling run --root $R                     # p = 1, 0.5, 0.25
    python -m benchmarks.loss_sampling run --root $R --ps 1 --accumulate 2   # controls: no
    python -m benchmarks.loss_sampling run --root $R --ps 1 --accumulate 4   # sampling, 16 / 32
    python -m benchmarks.loss_sampling run --root $R --ps 1 0.25 --seed 1    # images a step
    python -m benchmarks.loss_sampling report --runs p1 p0.5 p0.25 p1-acc2 p1-acc4 \
        --png docs/loss_sampling.png --root $R

``run`` writes ``OUT/p<p>/`` (a normal run directory) and ``OUT/loads.json`` (the 1-, 5- and
15-minute load averages at the start and end of each run: the CPU may be shared).
``report`` prints the Markdown table and draws :func:`fcnkit.plots.plot_metric_vs_time`; with
``--root`` it also scores each run's best checkpoint on ``val`` with every metric of
``fcnkit eval`` (boundary F, IU by object size), cached in the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RECIPE = "siftflow-fcn32s-lite0"
PS = (1.0, 0.5, 0.25)


def run_name(p: float, accumulate: int = 1, seed: int = 0) -> str:
    """``p0.5``; a control with more micro-batches per step ``p1-acc2``; ``-seed1``."""
    return (
        f"p{p:g}"
        + (f"-acc{accumulate}" if accumulate != 1 else "")
        + (f"-seed{seed}" if seed else "")
    )


def train_command(p: float, root: str, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``fcnkit train`` command line of one run (batch 8 from the recipe)."""
    batch = 8
    # images per compensated step: ceil(accumulate / p) micro-batches of 8
    per_step = math.ceil(args.accumulate / p - 1e-9) * batch
    eval_every = max(1, round(args.eval_images / per_step))
    sets = {
        "data.root": root,
        "optim.accumulate": args.accumulate,
        "loss.sample_prob": p,
        "loss.sample_unit": "cell",
        "loss.sample_cell": 32,
        "loss.sample_compensate": True,
        "schedule.name": "fixed",
        "schedule.warmup_steps": args.warmup,
        "train.seed": args.seed,
        "train.steps": 100000,  # the budget stops it
        "train.time_limit": args.budget,
        "train.eval_every": eval_every,
        "train.log_every": eval_every,  # a train event at every eval step too
        "train.checkpoint_every": 100000,
        "train.num_sample_images": 0,
    }
    run_dir = out / run_name(p, args.accumulate, args.seed)
    cmd = [sys.executable, "-m", "fcnkit", "train", RECIPE, "--run-dir", str(run_dir)]
    cmd += ["--overwrite", "--no-progress"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"time": round(time.time(), 1), "load": [one, five, fifteen], "cpus": os.cpu_count()}


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loads_path = out / "loads.json"
    loads = json.loads(loads_path.read_text()) if loads_path.is_file() else {}
    for p in args.ps:
        cmd = train_command(p, args.root, out, args)
        print(" ".join(cmd), flush=True)
        entry = {"command": cmd, "start": load()}
        result = subprocess.run(cmd, check=False)
        entry.update(end=load(), returncode=result.returncode)
        name = run_name(p, args.accumulate, args.seed)
        loads[name] = entry
        loads_path.write_text(json.dumps(loads, indent=1))
        print(f"{name}: rc {result.returncode}, load {entry['start']['load'][0]:.2f} -> "
              f"{entry['end']['load'][0]:.2f}", flush=True)  # fmt: skip


def summary(run_dir: Path) -> dict[str, Any]:
    """Steps, images, final / best val mean IU, training and total seconds of one run."""
    events = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    loss = config["loss"]
    per_step = config["optim"]["accumulate"]
    if loss.get("sample_compensate", False) and loss["sample_prob"] < 1:
        per_step = math.ceil(per_step / loss["sample_prob"] - 1e-9)
    evals = [e for e in events if e["event"] == "eval"]
    train_ev = [e for e in events if e["event"] == "train"]
    steps = max(e["step"] for e in train_ev)
    eval_seconds = sum(e.get("seconds") or 0.0 for e in evals)
    total = evals[-1]["time"] - meta["started_unix"]
    ious = [e["mean_iu"] for e in evals if e.get("mean_iu") is not None]
    images = steps * per_step * config["data"]["batch_size"]
    return {
        "p": loss["sample_prob"],
        "accumulate": config["optim"]["accumulate"],
        "seed": config["train"]["seed"],
        "steps": steps,
        "micro_batches_per_step": per_step,
        "images": images,
        "final_iu": ious[-1],
        "last3_iu": sum(ious[-3:]) / len(ious[-3:]),
        "best_iu": max(ious),
        "best_step": evals[ious.index(max(ious))]["step"],
        "evals": len(evals),
        "train_seconds": total - eval_seconds,
        "total_seconds": total,
        "images_per_s": images / (total - eval_seconds),
    }


def best_checkpoint_cells(run_dir: Path, root: str) -> str:
    """`` boundary F | IU small / medium / large |`` of the run's best checkpoint on ``val``
    (``fcnkit eval``, the same evaluation and cache as the ablation table's)."""
    from benchmarks.siftflow_results import _pct, _size_ius, evaluate_val

    m = evaluate_val(run_dir, Path(root), ())["metrics"]
    return f" {_pct(m.get('boundary_f'))} | {' / '.join(map(_pct, _size_ius(m)))} |"


def report(args: argparse.Namespace) -> None:
    from fcnkit.plots import plot_metric_vs_time

    out = Path(args.out)
    loads_path = out / "loads.json"
    loads = json.loads(loads_path.read_text()) if loads_path.is_file() else {}
    dirs = {}
    for name in args.runs:
        s = summary(out / name)
        label = f"p = {s['p']:g}, {8 * s['micro_batches_per_step']} images/step"
        dirs[label + (f", seed {s['seed']}" if s["seed"] else "")] = out / name
    extra = " best checkpoint on val: boundary F | IU small / medium / large |"
    rows = [
        "| run | p | micro-batches / step | steps done | images seen | final val mean IU "
        "(mean of the last 3 evals) | "
        "best val mean IU (step) | training s (+ eval s) | images / training s | load avg 1 min, "
        "start -> end |" + (extra if args.root else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.root else ""),
    ]
    for run_dir in dirs.values():
        s = summary(run_dir)
        ld = loads.get(run_dir.name, {})
        start, end = ld.get("start", {}).get("load"), ld.get("end", {}).get("load")
        load_text = f"{start[0]:.2f} -> {end[0]:.2f}" if start and end else "n/a"
        rows.append(
            f"| `{run_dir.name}` | {s['p']:g} | {s['micro_batches_per_step']} | {s['steps']} | "
            f"{s['images']} | {100 * s['final_iu']:.2f} ({100 * s['last3_iu']:.2f}) | "
            f"{100 * s['best_iu']:.2f} ({s['best_step']}) | "
            f"{s['train_seconds']:.0f} (+ {s['total_seconds'] - s['train_seconds']:.0f}) | "
            f"{s['images_per_s']:.1f} | {load_text} |"
            + (best_checkpoint_cells(run_dir, args.root) if args.root else "")
        )
    print("\n".join(rows))
    if args.png:
        title = "Loss sampling (Sec. 4.3), SIFT Flow val, FCN-32s-Lite0, same wall-clock budget"
        print(plot_metric_vs_time(dirs, args.png, title=title))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train one run per p, one after the other")
    run_p.add_argument("--root", default="../shared/data/siftflow", help="SIFT Flow folder")
    run_p.add_argument("--budget", type=float, default=780.0, help="train.time_limit, seconds")
    run_p.add_argument("--eval-images", type=int, default=800, help="images between evals")
    run_p.add_argument("--warmup", type=int, default=25, help="warm-up steps (every p)")
    run_p.add_argument("--ps", type=float, nargs="+", default=list(PS), help="sample probs")
    run_p.add_argument("--accumulate", type=int, default=1, help="optim.accumulate (controls)")
    run_p.add_argument("--seed", type=int, default=0, help="train.seed")
    rep_p = sub.add_parser("report", help="the Markdown table and the plot")
    rep_p.add_argument("--png", default=None, help="write the plot here")
    rep_p.add_argument(
        "--root",
        default=None,
        help="SIFT Flow folder: also score each best checkpoint on val (boundary F, IU by size)",
    )
    rep_p.add_argument("--runs", nargs="+", default=[run_name(p) for p in PS], help="names")
    for sp in (run_p, rep_p):
        sp.add_argument("--out", default="runs/loss-sampling", help="folder of the runs")
    args = parser.parse_args(argv)
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
