"""A shortened `fcnkit demo` produces the full report and never overwrites a run silently."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnkit.cli import main
from fcnkit.cli.data import parse_options
from fcnkit.demo import demo_config, eval_command, free_run_dir, run_demo
from fcnkit.metrics import METRIC_NAMES, format_metrics

README = Path(__file__).resolve().parents[1] / "README.md"


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

    assert "stopped early" not in out and "stopped early" not in report
    assert metrics["stopped_early"] is False

    # The report's hints work as printed: predict (with its --out) and eval (the demo's own
    # test settings: the same figures as the demo's)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(photos / "p.png")
    hints = {c.split()[1]: c for c in report.split("`") if c.startswith("fcnkit ")}
    predict = shlex.split(hints["predict"].replace("IMAGES", shlex.quote(str(photos))))
    assert "--out" in predict and main(predict[1:]) == 0
    out_dir = Path(predict[predict.index("--out") + 1])
    assert (out_dir / "labels" / "p.png").is_file() and (out_dir / "overlays" / "p.png").is_file()
    rescore = shlex.split(hints["eval"])
    assert main(rescore[1:]) == 0
    again = json.loads((run / "eval-synthetic-test/metrics.json").read_text())["metrics"]
    assert again["num_images"] == 4
    for key in METRIC_NAMES:
        assert again[key] == pytest.approx(metrics[key], abs=2e-3)

    # A second demo goes to a new directory; the first run is untouched.
    assert free_run_dir(base, overwrite=False) == tmp_path / "demo-2"
    assert free_run_dir(base, overwrite=True) == base


def test_demo_stopped_by_time_limit_says_so_with_the_full_command(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_demo(
        Path("runs/demo"), steps=3, size=32, num_test=4, progress=False,
        overrides=["train.time_limit=1e-9"],
    )  # fmt: skip
    assert result["steps"] == 1 and result["steps_planned"] == 3 and result["stopped_early"]
    out = capsys.readouterr().out
    report = " ".join(Path("runs/demo/report.md").read_text().split())
    full = "fcnkit demo --steps 3 --size 32 --set train.time_limit=null"
    for text in (" ".join(out.split()), report):
        assert "stopped early" in text and "train.time_limit" in text
        assert "1 of 3 planned steps" in text and f"`{full}`" in text
    # the command runs it in full, into a new run directory (the short run is kept)
    assert main([*shlex.split(full)[1:], "--no-progress"]) == 0
    metrics = json.loads(Path("runs/demo-2/metrics.json").read_text())
    assert metrics["steps"] == metrics["steps_planned"] == 3 and not metrics["stopped_early"]
    assert "stopped early" not in capsys.readouterr().out


def readme_commands() -> list[str]:
    """The command lines of the README's ``bash`` blocks, comments dropped."""
    commands, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside and line.strip() == "```bash"
        elif inside and line.split("#")[0].strip():
            commands.append(line.split("  #")[0].strip())
    return commands


def test_readme_commands_on_the_demo_run_work_as_printed(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    run_demo(Path("runs/demo"), steps=2, size=32, num_test=4, progress=False)
    Path("photos").mkdir()
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save("photos/p.png")
    on_demo = [c for c in readme_commands() if "runs/demo" in shlex.split(c)]
    assert {shlex.split(c)[1] for c in on_demo} >= {"eval", "predict", "export"}
    for command in on_demo:
        assert main(shlex.split(command)[1:]) == 0, command
    # eval: the demo's own test split and settings, as the demo's report prints them
    (readme_eval,) = [c for c in on_demo if shlex.split(c)[1] == "eval"]
    assert readme_eval == eval_command(demo_config(), Path("runs/demo"), None)
    argv = shlex.split(readme_eval)
    options = parse_options([argv[i + 1] for i, a in enumerate(argv) if a == "--option"])
    assert options == dict(demo_config().data.val_options)
    assert argv[argv.index("--split") + 1] == "test"


def test_readme_torchrun_example_has_its_own_run_directory() -> None:
    torchrun = [shlex.split(c) for c in readme_commands() if c.startswith("torchrun")]
    assert torchrun
    for argv in torchrun:
        if "--run-dir" in argv:
            run = Path(argv[argv.index("--run-dir") + 1])
        else:
            name = argv[argv.index("--name") + 1] if "--name" in argv else "demo"
            run = Path("runs") / name
        assert run != Path("runs/demo"), argv  # `fcnkit demo`'s run directory
