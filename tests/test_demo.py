"""A shortened `fcnkit demo` produces the full report and never overwrites a run silently."""

from __future__ import annotations

import json
from pathlib import Path

from fcnkit.demo import demo_config, free_run_dir, run_demo
from fcnkit.metrics import format_metrics


def test_demo_recipe_is_an_fcn8s_on_synthetic_data() -> None:
    config = demo_config()
    assert config.model.name.startswith("fcn8s") and config.data.dataset == "synthetic"
    assert config.train.device == "cpu" and config.train.time_limit <= 270  # 5-minute budget
    short = demo_config(steps=3, size=32)
    assert short.train.steps == 3 and short.train.eval_every == 3
    assert short.data.options["size"] == 32 and short.data.val_options["size"] == 32


def test_short_demo_writes_report(tmp_path: Path, capsys) -> None:
    base = tmp_path / "demo"
    result = run_demo(base, steps=2, size=32, num_test=4, progress=False)
    out = capsys.readouterr().out
    for label in ("pixel acc", "mean acc", "mean IU", "f.w. IU"):
        assert label in out
    assert format_metrics(result) in out  # the one shared formatter, not a copy
    run = Path(result["run_dir"])
    assert run == base
    for name in ("report.md", "overlays.png", "curves.png", "confusion.png", "metrics.json"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "checkpoints" / "best.pt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 4 and metrics["steps"] == 2
    assert 0.0 <= metrics["mean_iu"] <= 1.0 and "val" in metrics
    report = (run / "report.md").read_text()
    assert "mean IU" in report and "overlays.png" in report and "confusion.png" in report
    assert format_metrics(metrics) in report

    # A second demo goes to a new directory; the first run is untouched.
    assert free_run_dir(base, overwrite=False) == tmp_path / "demo-2"
    assert free_run_dir(base, overwrite=True) == base
