"""Resume does what the user says (issue 12 §1); one writer per run directory (§2)."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import tiny

from fcnkit.cli import main
from fcnkit.engine.config import ScheduleConfig, from_dict
from fcnkit.engine.errors import ResumeConfigError, RunInUseError
from fcnkit.engine.optim import lr_factor
from fcnkit.engine.train import train
from fcnkit.weights import load_checkpoint

QUICK = {"eval_every": 100, "num_sample_images": 0, "log_every": 1}


def events(run: Path, kind: str | None = None) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if kind is None or e["event"] == kind]


def logged_lr(run: Path) -> dict[int, float]:
    """step -> the lr logged after it (the rate of the next step); the last log wins."""
    return {e["step"]: e["lr"] for e in events(run, "train")}


def test_resume_applies_new_rate_schedule_and_length(tmp_path: Path) -> None:
    """optim.lr, the schedule and train.steps changed on resume are what the resumed steps
    use (not the checkpoint's optimiser and scheduler), and the run's record says so."""
    run = tmp_path / "run"
    config = tiny(train={"steps": 4, **QUICK})
    train(config, run, progress=False, stop_at_step=2)
    changed = copy.deepcopy(config)
    changed["optim"]["lr"] = 1e-4
    changed["schedule"] = {"name": "step", "step_size": 2, "gamma": 0.5}
    changed["train"]["steps"] = 5
    with pytest.warns(UserWarning, match=r"optim.lr: 0.003 -> 0.0001"):
        train(changed, run, progress=False, resume=True)
    lrs = logged_lr(run)
    old = lr_factor(ScheduleConfig(name="poly", warmup_steps=2), 4)
    new = lr_factor(ScheduleConfig(name="step", step_size=2, gamma=0.5), 5)
    assert lrs[1] == pytest.approx(0.003 * old(1))  # before the resume: the old config
    for step in (3, 4, 5):
        assert lrs[step] == pytest.approx(1e-4 * new(step)), step
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 5
    groups = {g["kind"]: g for g in ckpt["optimizer"]["param_groups"]}
    assert groups["weight"]["initial_lr"] == 1e-4 and groups["bias"]["initial_lr"] == 2e-4
    # the record: the config before, the config in force, and from which step it applied
    before = yaml.safe_load((run / "config.before-resume-1.yaml").read_text())
    assert before["optim"]["lr"] == 0.003 and before["train"]["steps"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 1e-4
    resume = json.loads((run / "meta.json").read_text())["resumes"][-1]
    assert resume["step"] == 2 and resume["previous_config"] == "config.before-resume-1.yaml"
    assert "optim.lr: 0.003 -> 0.0001" in resume["changes"]
    assert [e["step"] for e in events(run, "resume")] == [2]


def test_resume_with_new_rate_keeps_the_momentum(tmp_path: Path) -> None:
    """The optimiser's state (SGD momentum buffers) survives a change of optim.lr: one
    resumed step equals a hand-computed SGD step from the checkpoint's buffers."""
    from fcnkit.engine.distributed import DistInfo
    from fcnkit.engine.train import setup_run

    run = tmp_path / "run"
    config = tiny(train={"steps": 4, **QUICK})
    train(config, run, progress=False, stop_at_step=2)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    changed = copy.deepcopy(config)
    changed["optim"]["lr"] = 1e-4
    with pytest.warns(UserWarning, match="optim.lr"):
        session = setup_run(from_dict(changed), run, DistInfo(), resume=True)
    try:
        opt = session.optimizer
        assert all(g["lr"] < 2e-4 for g in opt.param_groups)  # 1e-4 x poly, bias x 2
        buffers = [opt.state[p]["momentum_buffer"] for g in opt.param_groups for p in g["params"]]
        expected = [s["momentum_buffer"] for s in saved["optimizer"]["state"].values()]
        assert len(buffers) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(buffers, expected, strict=True))
    finally:
        session.log.close()
        if session.lock is not None:
            session.lock.release()


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("fixed") / "run"
    config = tiny(train={"steps": 2, **QUICK})
    train(config, run, progress=False, stop_at_step=1)
    return run, config


@pytest.mark.parametrize(
    "key, value",
    [
        ("data.batch_size", 1),  # the position in the data stream is step x batch x accumulate
        ("optim.accumulate", 1),
        ("data.options", {"size": 32, "num_samples": 12}),  # another training set
        ("train.seed", 1),  # another sample order
        ("model.options", {"backbone_weights": None, "dropout": 0.5}),  # another model
        ("optim.name", "adamw"),  # the optimiser state is SGD's
    ],
)
def test_resume_refuses_what_cannot_change(one_step_run, key: str, value) -> None:
    run, config = one_step_run
    changed = copy.deepcopy(config)
    section, name = key.split(".")
    changed[section][name] = value
    before = (run / "config.yaml").read_text(), (run / "meta.json").read_text()
    with pytest.raises(ResumeConfigError, match=rf"cannot change on resume: {key}") as err:
        train(changed, run, progress=False, resume=True)
    assert "init_from=" in str(err.value)  # the way to start a new run from these weights
    # nothing was written: the record still says what ran
    assert ((run / "config.yaml").read_text(), (run / "meta.json").read_text()) == before
    assert not list(run.glob("config.before-resume-*"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1


def test_resume_may_change_the_pretrained_download() -> None:
    """model.weights / model.options.backbone_weights only seed a fresh model: a resume may
    switch them (e.g. off, offline): the checkpoint holds every weight."""
    from fcnkit.engine.rundir import resume_conflicts

    saved = tiny()
    saved["model"]["options"]["backbone_weights"] = "imagenet"
    saved["model"]["weights"] = "some-weights"
    assert resume_conflicts(from_dict(saved).to_dict(), from_dict(tiny())) == []
    other = tiny(model={"num_classes": 5})
    assert resume_conflicts(from_dict(saved).to_dict(), from_dict(other)) == [
        "model.num_classes: 7 -> 5"
    ]


# A run that diverges on every CPU: summed loss; step 1 runs at lr 1e38 x 1e-44 = 1e-6 (about
# lr 1e-3 for the mean loss), step 2 (warm-up half way: 5e37) overflows every weight whose
# gradient exceeds 7. The last good state is step 1's.
DIVERGES = tiny(
    loss={"normalize": False},
    optim={"lr": 1e38},
    schedule={"name": "poly", "warmup_steps": 2, "warmup_factor": 1e-44},
    train={"steps": 4, "checkpoint_every": 1, **QUICK},
)


def test_non_finite_stop_advice_works(tmp_path: Path, capsys) -> None:
    """Issue 12 §1: follow the NaN message (lower optim.lr, --resume, --set optim.lr=...):
    the run continues from the last good step at the new rate and ends finite."""
    config, run = tmp_path / "diverges.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(DIVERGES))
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "--resume and --set optim.lr=..." in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    with pytest.warns(UserWarning, match="optim.lr"):
        code = main(["train", "--resume", "--run-dir", str(run), "--set", "optim.lr=2e-6",
                     "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    factor = lr_factor(ScheduleConfig(name="poly", warmup_steps=2, warmup_factor=1e-44), 4)
    lrs = logged_lr(run)
    for step in (2, 3):
        assert lrs[step] == pytest.approx(2e-6 * factor(step)), step
    assert all(e["loss"] is not None for e in events(run, "train") if e["step"] > 1)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


# ------------------------------------------------------------------- one writer per run


def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    """While a run trains, a resume or an overwrite of its directory is refused at once."""
    run = tmp_path / "run"
    config = tiny(train={"steps": 2, **QUICK})
    train(config, run, progress=False, stop_at_step=1)
    refused: list[str] = []

    def second_writer(step: int, model: torch.nn.Module) -> None:
        for option in ("resume", "overwrite"):
            with pytest.raises(RunInUseError) as err:
                train(config, run, progress=False, **{option: True})
            refused.append(str(err.value))

    train(config, run, progress=False, resume=True, callback=second_writer)
    assert len(refused) == 2
    for message in refused:
        assert f"process {os.getpid()}" in message and "started" in message
        assert "in use" in message
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2  # the run went on
    assert [e["step"] for e in events(run, "train")] == [1, 2]  # one writer: no duplicates
    assert (run / ".lock").read_text() == ""  # released on exit


def test_lock_is_released_when_the_run_fails(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny(train={"steps": 2, **QUICK})

    def fail(step: int, model: torch.nn.Module) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(config, run, progress=False, callback=fail)
    assert (run / ".lock").read_text() == ""


def test_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny(train={"steps": 2, **QUICK})
    train(config, run, progress=False, stop_at_step=1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(gone.stdout)
    holder = {"pid": pid, "host": socket.gethostname(), "started": "2001-02-03 04:05:06",
              "argv": ["fcnkit", "train", "demo"]}  # fmt: skip
    (run / ".lock").write_text(json.dumps(holder))
    with pytest.warns(UserWarning, match=rf"stale lock .*process {pid}.*2001-02-03 04:05:06"):
        train(config, run, progress=False, resume=True)
    assert [e["pid"] for e in events(run, "stale_lock")] == [pid]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert (run / ".lock").read_text() == ""
