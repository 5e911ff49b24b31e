"""`fcnkit train`, `fcnkit plot` from the command line (recipes: test_recipes_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_fixtures import TINY_TRAIN as TINY
from fcnkit.cli import main
from fcnkit.engine.config import load_config


def test_help_texts_show_defaults(capsys) -> None:
    demo = load_config("demo")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        f"(default: {demo.train.steps}" in out and f"(default: {demo.data.options['size']}" in out
    )


def test_bad_override_is_a_clear_error(capsys) -> None:
    assert main(["train", "demo", "--set", "optim.lr_rate=1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lr_rate'" in err and "valid keys in 'optim'" in err


def test_train_resume_and_plot(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "mean IU" in out and str(run) in out
    assert (run / "checkpoints" / "last.pt").is_file()
    # the same run dir again: refused, with the ways out
    assert main(["train", "demo", "--run-dir", str(run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    # resume from the run's own config, extending it by overriding the step count
    with pytest.warns(UserWarning, match="train.steps: 2 -> 3"):
        assert main(["train", "--resume", "--run-dir", str(run), "--set", "train.steps=3",
                     "--no-progress"]) == 0  # fmt: skip
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3]
    assert "steps: 3" in (run / "config.yaml").read_text()
    assert "steps: 2" in (run / "config.before-resume-1.yaml").read_text()  # kept, not lost
    # with the recipe name too: the run's saved config is used (not the recipe's 1400 steps,
    # full-size images, ...), with a warning listing the differences
    capsys.readouterr()
    with pytest.warns(UserWarning, match="train.steps: 3 -> 4"):
        assert main(["train", "demo", "--resume", "--run-dir", str(run), "--set",
                     "train.steps=4", "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "resuming with" in err and "config.yaml" in err and "data.options.size" in err
    saved = load_config(run / "config.yaml")
    assert saved.train.steps == 4 and saved.data.options["size"] == 32
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()
            if json.loads(x)["event"] == "train"] == [1, 2, 3, 4]  # fmt: skip
    # --resume without a run: say how to name it
    assert main(["train", "--resume", "--no-progress"]) == 2
    assert "--name" in (err := capsys.readouterr().err) and "--run-dir" in err
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "--run-dir" in capsys.readouterr().err
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 1000
    assert main(["plot", str(tmp_path / "nothing")]) == 2


def test_staged_recipe_without_previous_stage_says_what_to_do(tmp_path: Path, capsys) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        code = main(
            ["train", "voc-fcn16s", "--name", "x", "--set", "data.dataset=synthetic",
             "--set", "data.val_dataset=null", "--set", "data.root=null",
             "--set", "data.val_root=null", "--set", "data.val_split=val",
             "--set", "data.options={size: 32, num_samples: 2}", "--set", "model.num_classes=7",
             "--set", "model.name=fcn16s-efficientnet_lite0", "--set", "model.options={}",
             "--no-progress"]
        )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "runs/voc-fcn32s" in err and "--init-from" in err
    assert not (tmp_path / "runs" / "x").exists()  # failed before creating the run dir


def test_plot_skips_null_metrics(tmp_path: Path) -> None:
    """`fcnkit plot RUN` on a log with null (NaN when logged) losses and metrics."""
    run = tmp_path / "run"
    run.mkdir()
    events = [
        {"event": "train", "step": 1, "loss": 2.0},
        {"event": "train", "step": 2, "loss": None},
        {"event": "eval", "step": 2, "mean_iu": None, "pixel_acc": 0.5},
        {"event": "eval", "step": 3, "mean_iu": 0.25},
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["plot", str(run), "--out", str(run / "cli.png")]) == 0
    assert (run / "cli.png").stat().st_size > 1000


def test_engine_errors_are_reworded_with_flags(tmp_path: Path, capsys) -> None:
    """The engine names options (resume=True); the CLI names the flags that set them."""
    from fcnkit.engine.config import load_config as load

    run = tmp_path / "run"
    run.mkdir()  # a run directory with its config but no checkpoint yet
    config = load("demo", [a for a in TINY if a.startswith(("model.", "data.", "train."))])
    (run / "config.yaml").write_text(config.to_yaml())
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--resume: no checkpoint at" in err and "nothing to resume" in err
    assert "resume=True" not in err


def test_second_writer_and_refused_resume_changes_are_sentences(tmp_path: Path, capsys) -> None:
    """Issue 12 §2: a run directory in use is refused at once, naming the holder (exit 2);
    §1: what a resume cannot change is refused with the flags that do it another way."""
    import os

    from fcnkit.engine.rundir import RunLock

    run = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run), *TINY]) == 0
    capsys.readouterr()
    lock = RunLock(run).acquire()  # another writer at work
    try:
        for argv in (["--resume", "--run-dir", str(run)], ["demo", "--run-dir", str(run),
                     "--overwrite", *TINY[:-1]]):  # fmt: skip
            assert main(["train", *argv, "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert f"in use by process {os.getpid()}" in err and "started" in err
            assert "--name/--run-dir" in err and "Traceback" not in err
    finally:
        lock.release()
    assert (run / "checkpoints" / "last.pt").is_file()  # the overwrite was refused
    code = main(["train", "--resume", "--run-dir", str(run), "--set", "data.batch_size=1",
                 "--no-progress"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot change on resume: data.batch_size: 2 -> 1" in err and "--init-from" in err
