"""SIFT Flow results table (issue 6): evaluate saved runs on test, write the Markdown tables.

For every run of the shipped EfficientNet-Lite0 recipes found under ``--runs`` this calls
``fcnkit eval RUN --dataset siftflow --root ROOT --split test`` (the run's ``best.pt``,
chosen on the ``val`` carve-out during training) unless ``RUN/eval-siftflow-test/metrics.json``
already exists (``--reeval`` forces it), then prints (and with ``--write FILE`` puts between the
``<!-- results:begin -->`` / ``<!-- results:end -->`` markers of FILE) three tables: the four
metrics per model beside the paper's VGG16 FCN-16s and the naive-script baseline, with the
training time taken from the run's own log; per-class IU; and the paper's pattern checked.

    python -m benchmarks.siftflow_results --root ../shared/data/siftflow
    python -m benchmarks.siftflow_results --root ../shared/data/siftflow --write docs/results.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from fcnkit.data.siftflow import EVAL_EXCLUDE, SEMANTIC_CLASSES
from fcnkit.metrics import SIZE_BUCKETS

#: (recipe, short label) in table order
ROWS = (
    ("siftflow-fcn32s-fixed-lite0", "FCN-32s-fixed-Lite0"),
    ("siftflow-fcn32s-lite0", "FCN-32s-Lite0"),
    ("siftflow-fcn16s-lite0", "FCN-16s-Lite0"),
    ("siftflow-fcn8s-lite0", "FCN-8s-Lite0"),
    ("siftflow-fcn8s-lite0-scratch", "FCN-8s-Lite0, scratch"),
)
#: (recipe, label, ``fcnkit eval`` arguments): test-time options of a run, each chosen on
#: val before test was scored (docs/results.md says how)
TEST_TIME_ROWS = (
    ("siftflow-fcn8s-lite0", "FCN-8s-Lite0 + multi-scale & flip test",
     ("--scales", "0.75", "1", "1.25", "--tta")),
)  # fmt: skip
#: the recipe chains' last stages, whose model is set against the paper's FCN-16s
FINAL_RECIPES = ("siftflow-fcn8s-lite0",)
#: published / given figures: (label, pixel acc, mean acc, mean IU, f.w. IU) in percent
REFERENCE_ROWS = (
    ("paper: FCN-16s VGG16 (Table 3)", 85.2, 51.7, 39.5, 76.1),
    ("naive script (issue 6)", 84.7, 41.0, 32.7, 75.0),
)
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass
class RunResult:
    recipe: str
    label: str
    run_dir: Path
    metrics: dict[str, Any]
    train_seconds: float | None
    steps: int | None
    best_step: int | None
    best_val: float | None
    command: str


def evaluate_run(
    run_dir: Path,
    root: Path,
    reeval: bool = False,
    limit: int | None = None,
    extra: tuple[str, ...] = (),
) -> dict:
    """The run's test metrics (``fcnkit eval`` of its best checkpoint, with ``extra``
    arguments), cached in the run."""
    name = "eval-siftflow-test" + "".join(f"-{a.lstrip('-')}" for a in extra)
    out = run_dir / (name if limit is None else f"{name}-{limit}")
    path = out / "metrics.json"
    if path.is_file() and "boundary_f" not in json.loads(path.read_text())["metrics"]:
        reeval = True  # cached before boundary F and IU by size existed
    if reeval or not path.is_file():
        from fcnkit.cli import main

        argv = [str(run_dir), "--dataset", "siftflow", "--root", str(root), "--split", "test"]
        argv += ["--batch-size", "8", "--out", str(out), *extra]
        if limit is not None:
            argv += ["--limit", str(limit)]
        if main(["eval", *argv]) != 0:
            raise RuntimeError(f"fcnkit eval {' '.join(argv)} failed")
    return json.loads(path.read_text())


def training_record(
    run_dir: Path,
) -> tuple[float | None, int | None, int | None, float | None, str]:
    """(wall seconds of training, steps, best step, its val mean IU, command).

    The time runs from the start to the last logged event. A run stopped and continued with
    ``--resume`` (exact: same weights as an uninterrupted run) is timed without the pause and
    without the steps it redid: each ``resume`` event at step k removes the time from the last
    event at or before step k (its checkpoint) to the resume. The command is the recorded
    ``argv``, followed by each resume's.
    """
    meta = json.loads((run_dir / "meta.json").read_text())
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    started = meta.get("started_unix")
    if started is None:  # runs before started_unix was recorded: local time, this machine's zone
        started = datetime.strptime(meta["started"], "%Y-%m-%d %H:%M:%S").timestamp()
    seconds = events[-1]["time"] - started if events else None
    for i, event in enumerate(events):  # (no events: no resume either)
        if event["event"] == "resume":
            before = [e for e in events[:i] if e.get("step", math.inf) <= event["step"]]
            seconds -= event["time"] - (before[-1]["time"] if before else started)
    steps = max((e["step"] for e in events if e["event"] == "train"), default=None)
    metrics_file = run_dir / "metrics.json"
    best = json.loads(metrics_file.read_text()).get("best", {}) if metrics_file.is_file() else {}
    commands = []
    for record in (meta, *meta.get("resumes", [])):
        argv = list(record.get("argv", [])) or ["fcnkit"]
        argv[0] = Path(argv[0]).name
        commands.append(" ".join(argv))
    return seconds, steps, best.get("step"), best.get("mean_iu"), "  &&  ".join(commands)


def collect(runs: Path, root: Path, reeval: bool = False, limit: int | None = None) -> list:
    results = []
    for recipe, label in ROWS:
        run_dir = runs / recipe
        if not (run_dir / "checkpoints").is_dir():
            print(f"skipping {recipe}: no run at {run_dir}")
            continue
        record = evaluate_run(run_dir, root, reeval, limit)
        training = training_record(run_dir)
        results.append(RunResult(recipe, label, run_dir, record["metrics"], *training))
    for recipe, label, extra in TEST_TIME_ROWS:
        run_dir = runs / recipe
        if (run_dir / "checkpoints").is_dir():
            record = evaluate_run(run_dir, root, reeval, limit, extra)
            training = training_record(run_dir)
            results.append(RunResult(recipe, label, run_dir, record["metrics"], *training))
    return results


class Lever(NamedTuple):
    """One row of the val ablation: a run under ``--runs`` and what it changes."""

    label: str
    run: str
    eval_args: tuple[str, ...] = ()
    change: str = "-"
    start: str | None = None  # its own FCN-32s start, timed with it (None: the base's)


#: issue 15 §2, on ``val`` only. Every lever changes one thing of the base run, the shipped
#: model's own FCN-8s stage (tools/siftflow_ablation.sh: 700 steps from the FCN-32s run
#: loss-sampling/p1); the backbone levers also train their own FCN-32s start like p1.
ABLATION = (
    Lever("base: FCN-8s-Lite0 stage, 700 steps", "ship-fcn8s-lite0"),
    Lever("class balance (median frequency)", "ablation/class-balance",
          change="loss.class_weights: median_frequency"),
    Lever("class balance, tempered (power 0.5)", "ablation/class-balance-sqrt",
          change="... and loss.class_weight_power: 0.5"),
    Lever("schedule x2 (1,400 steps)", "ablation/schedule-x2", change="train.steps: 1400"),
    Lever("input x1.5 (train and test)", "ablation/scale-x1.5", ("--scales", "1.5"),
          "crops of 384 from images x1.125-1.875; eval --scales 1.5"),
    Lever("backbone EfficientNet-Lite1", "ablation/backbone-lite1",
          change="both stages on Lite1", start="ablation/backbone-lite1-fcn32s"),
    Lever("backbone EfficientNet-Lite2", "ablation/backbone-lite2",
          change="both stages on Lite2", start="ablation/backbone-lite2-fcn32s"),
    Lever("multi-scale + flip test (0.75, 1, 1.25)", "ship-fcn8s-lite0",
          ("--scales", "0.75", "1", "1.25", "--tta"), "eval only: 6 passes per image"),
)  # fmt: skip

#: the paper's controls at the ablation's budget, scored on test: (label, run, what it is)
CONTROLS = (
    ("FCN-32s-Lite0, fine-tuned", "loss-sampling/p1", "ImageNet trunk, 1,229 steps"),
    ("FCN-32s-fixed-Lite0", "ablation/control-fixed", "frozen ImageNet trunk, 1,229 steps"),
    ("FCN-8s-Lite0", "ship-fcn8s-lite0", "the fine-tuned FCN-32s + 700 steps"),
    ("FCN-8s-Lite0, scratch", "ablation/control-scratch", "random init, 1,929 steps"),
)


def evaluate_val(run_dir: Path, root: Path, extra: tuple[str, ...]) -> dict:
    """``fcnkit eval RUN --split val EXTRA`` (cached in the run, one folder per argument list)."""
    suffix = "-".join(a.lstrip("-") for a in extra)
    out = run_dir / ("eval-siftflow-val" + (f"-{suffix}" if suffix else ""))
    path = out / "metrics.json"
    if not path.is_file():
        from fcnkit.cli import main

        argv = [str(run_dir), "--dataset", "siftflow", "--root", str(root), "--split", "val"]
        argv += ["--batch-size", "8", "--out", str(out), *extra]
        if main(["eval", *argv]) != 0:
            raise RuntimeError(f"fcnkit eval {' '.join(argv)} failed")
    return json.loads(path.read_text())


def ablation_table(runs: Path, root: Path) -> str | None:
    """The levers of :data:`ABLATION` on the ``val`` carve-out: four metrics, the change of
    mean IU against the base, boundary F, training and evaluation time."""
    lines = [
        "| lever (val, 249 images) | changes | pixel acc. | mean acc. | mean IU | f.w. IU "
        "| Δ mean IU | boundary F | IU small / medium / large | training (wall) | eval s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_iu = None
    for lever in ABLATION:
        run_dir = runs / lever.run
        if not (run_dir / "metrics.json").is_file():  # absent, or still training
            print(f"ablation: skipping {lever.label}: no finished run at {run_dir}")
            continue
        m = evaluate_val(run_dir, root, lever.eval_args)["metrics"]
        base_iu = m["mean_iu"] if base_iu is None else base_iu
        stages = [runs / lever.start, run_dir] if lever.start else [run_dir]
        minutes = " + ".join(_minutes(training_record(d)[0]) for d in stages)
        delta = f"{100 * (m['mean_iu'] - base_iu):+.1f}"
        scores = " | ".join(_pct(m[k]) for k in METRICS)
        boundary_f = _pct(m.get("boundary_f"))
        by_size = " / ".join(map(_pct, _size_ius(m)))
        lines.append(f"| {lever.label} | {lever.change} | {scores} | {delta} | {boundary_f} "
                     f"| {by_size} | {minutes} | {m['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else None


def controls_table(runs: Path, root: Path, reeval: bool = False) -> str | None:
    """The paper's controls at the ablation's budget (:data:`CONTROLS`), on test: the four
    metrics, boundary F, IU by size, and the findings checked."""
    lines = [
        "| model (test, 200 images) | init and steps | pixel acc. | mean acc. | mean IU | f.w. IU "
        "| boundary F | IU small | IU medium | IU large | training (wall) | val mean IU (best) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    iu = {}
    for label, sub, what in CONTROLS:
        run_dir = runs / sub
        if not (run_dir / "metrics.json").is_file():  # absent, or still training
            print(f"controls: skipping {label}: no finished run at {run_dir}")
            continue
        m = evaluate_run(run_dir, root, reeval)["metrics"]
        iu[sub] = 100 * m["mean_iu"]
        seconds, _, _, best_val, _ = training_record(run_dir)
        values = [*(m[k] for k in METRICS), m.get("boundary_f"), *_size_ius(m)]
        lines.append(f"| {label} | {what} | " + " | ".join(map(_pct, values))
                     + f" | {_minutes(seconds)} | {_pct(best_val)} |")  # fmt: skip
    if len(lines) == 2:
        return None
    checks = ["| paper's finding, at this budget (mean IU on test) | ours | holds |"]
    checks.append("|---|---|---|")
    fine_tuned, fixed, fcn8s, scratch = (sub for _, sub, _ in CONTROLS)
    pairs = (
        ("fine-tuned > fixed (32s)", fine_tuned, fixed),
        ("pretrained > scratch (8s)", fcn8s, scratch),
        ("8s >= 32s", fcn8s, fine_tuned),
    )
    for text, a, b in pairs:
        if a in iu and b in iu:
            ok = iu[a] >= iu[b] if ">=" in text else iu[a] > iu[b]
            checks.append(f"| {text} | {iu[a]:.1f} vs {iu[b]:.1f} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n\n" + "\n".join(checks)


def _size_ius(metrics: dict) -> list[float | None]:
    """IU of small, medium and large regions (``None`` for an eval from before they existed)."""
    size = metrics.get("size_iu") or {}
    return [size.get(b) for b in SIZE_BUCKETS]


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def _pct(value: float | None) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{100 * value:.1f}")
    )


def main_table(results: list[RunResult]) -> str:
    lines = [
        "| model | pixel acc. | mean acc. | mean IU | f.w. IU | training (wall) | steps (best) "
        "| val mean IU (best) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.metrics
        minutes = "-" if r.train_seconds is None else f"{r.train_seconds / 60:.0f} min"
        scores = " | ".join(_pct(m[k]) for k in METRICS)
        steps = f"{r.steps} ({r.best_step})"
        lines.append(f"| {r.label} | {scores} | {minutes} | {steps} | {_pct(r.best_val)} |")
    for label, *values in REFERENCE_ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " | | | |")
    return "\n".join(lines)


def beyond_mean_iu_table(results: list[RunResult]) -> str:
    """Boundary F-score (mean over classes, with precision / recall) and IU by object size,
    as ``fcnkit eval`` reports them; ``-`` for a run evaluated before they existed."""
    lines = [
        "| model | boundary F | precision | recall | IU small | IU medium | IU large |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.metrics
        values = [m.get("boundary_f"), m.get("boundary_precision"), m.get("boundary_recall")]
        values += _size_ius(m)
        lines.append(f"| {r.label} | " + " | ".join(map(_pct, values)) + " |")
    tolerance = next((r.metrics.get("boundary_tolerance") for r in results), None)
    thresholds = next((r.metrics.get("size_thresholds") for r in results), None)
    notes = f"Boundary tolerance: {tolerance} of the image diagonal" if tolerance else ""
    if thresholds:
        small, large = thresholds
        notes += (f"; object sizes: connected regions of the true map, small below {small:.2%} "
                  f"of the image, large above {large:.0%}")  # fmt: skip
    return "\n".join(lines) + (f"\n\n{notes}." if notes else "")


def per_class_table(results: list[RunResult]) -> str:
    head = "| class | test freq. % | " + " | ".join(r.label for r in results) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(results)]
    freq = results[0].metrics["per_class_freq"]
    for i, name in enumerate(SEMANTIC_CLASSES):
        ious = [r.metrics["per_class_iu"][i] for r in results]
        label = f"{name} (excluded)" if name in EVAL_EXCLUDE else name
        lines.append(f"| {label} | {100 * freq[i]:.2f} | " + " | ".join(map(_pct, ious)) + " |")
    return "\n".join(lines)


def pattern_checks(results: list[RunResult]) -> str:
    test_time = {label for _, label, _ in TEST_TIME_ROWS}
    by = {r.recipe: r.metrics for r in results if r.label not in test_time}

    def check(text: str, a: str, b: str, strict: bool = True) -> str | None:
        if a not in by or b not in by:
            return None
        x, y = 100 * by[a]["mean_iu"], 100 * by[b]["mean_iu"]
        ok = x > y if strict else x >= y
        return f"| {text} | {x:.1f} vs {y:.1f} | {'yes' if ok else '**no**'} |"

    rows = [
        check("fine-tuned > fixed (32s)", "siftflow-fcn32s-lite0", "siftflow-fcn32s-fixed-lite0"),
        check("pretrained > scratch (8s)", "siftflow-fcn8s-lite0", "siftflow-fcn8s-lite0-scratch"),
        check("16s >= 32s", "siftflow-fcn16s-lite0", "siftflow-fcn32s-lite0", strict=False),
        check("8s >= 32s", "siftflow-fcn8s-lite0", "siftflow-fcn32s-lite0", strict=False),
        check("8s >= 16s", "siftflow-fcn8s-lite0", "siftflow-fcn16s-lite0", strict=False),
    ]
    final = next((r for r in reversed(results) if r.recipe in FINAL_RECIPES), None)
    if final is not None:  # the chain's final model (issue 15's target)
        m = final.metrics
        _, *paper = REFERENCE_ROWS[0]
        beats = [100 * m[k] > p for k, p in zip(METRICS, paper, strict=True)]
        rows.append(
            f"| {final.label} > paper FCN-16s VGG16, all four metrics | "
            + " / ".join(f"{100 * m[k]:.1f}" for k in METRICS)
            + f" vs {' / '.join(map(str, paper))} | "
            + ("yes" if all(beats) else f"**no** ({sum(beats)} of 4)")
            + " |"
        )
    lines = ["| paper's finding (mean IU on test) | ours | holds |", "|---|---|---|"]
    return "\n".join(lines + [r for r in rows if r])


def render(
    results: list[RunResult], ablation: str | None = None, controls: str | None = None
) -> str:
    commands = "\n".join(f"    {r.command}" for r in results)
    sections = [
        main_table(results),
        pattern_checks(results),
        "Beyond mean IU (test, percent):\n\n" + beyond_mean_iu_table(results),
        "Commands (each row's run, as recorded in its `meta.json`; `&&` joins a `--resume`):"
        "\n\n" + commands,
        "Per-class IU (%) on the 200 test images; `-` = no pixel of the class in truth or "
        "prediction:\n\n" + per_class_table(results),
    ]
    if controls:
        sections.append("The paper's controls at the ablation's budget (the same FCN-32s start "
                        "and FCN-8s stage as the levers below, `tools/siftflow_ablation.sh "
                        "control-fixed control-scratch`), on test:\n\n" + controls)  # fmt: skip
    if ablation:
        sections.append("What moves the class-averaged metrics (issue 15 §2), on the `val` "
                        "carve-out only (test never read for it):\n\n" + ablation)  # fmt: skip
    return "\n\n".join(sections)


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the markers of ``path`` (atomically: temp file + rename)."""
    old = path.read_text()
    if BEGIN not in old or END not in old:
        raise SystemExit(f"{path}: needs the lines {BEGIN} and {END} around the tables")
    before, rest = old.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the SIFT Flow folder (original layout)")
    parser.add_argument("--runs", default="runs", help="folder holding the runs (default runs)")
    parser.add_argument("--write", help="Markdown file whose results markers get the tables")
    parser.add_argument("--reeval", action="store_true", help="evaluate again even if cached")
    parser.add_argument("--limit", type=int, help="only the first N test images (a smoke test)")
    parser.add_argument("--no-ablation", action="store_true", help="leave out the val ablation")
    args = parser.parse_args(argv)
    results = collect(Path(args.runs), Path(args.root), args.reeval, args.limit)
    if not results:
        raise SystemExit(f"no runs of {', '.join(r for r, _ in ROWS)} under {args.runs}")
    runs, root = Path(args.runs), Path(args.root)
    ablation = None if args.no_ablation else ablation_table(runs, root)
    controls = None if args.no_ablation else controls_table(runs, root, args.reeval)
    text = render(results, ablation, controls)
    print(text)
    if args.write:
        write_between_markers(Path(args.write), text)
        print(f"wrote the tables into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
