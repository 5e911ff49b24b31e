"""Interruptions (issue 12 §3): SIGINT / SIGTERM, kill -9 at several points, temporaries of
a killed save, failed starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_train import tiny

from fcnkit.engine.train import RunDirExistsError, train
from fcnkit.weights import load_checkpoint

QUICK = {"eval_every": 1000, "num_sample_images": 0, "log_every": 1}


def environment() -> dict[str, str]:
    """Subprocesses compute with this process's thread count (bit-equal float sums)."""
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED="1")


def train_events(run: Path) -> list[dict]:
    log = run / "log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return [e for e in map(json.loads, lines) if e["event"] == "train"]


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, sig, code) -> None:
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(tiny(train={"steps": 500, "checkpoint_every": 400, **QUICK})))
    cmd = [sys.executable, "-m", "fcnkit", "train", str(config), "--run-dir", str(run)]
    proc = subprocess.Popen([*cmd, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment())  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not train_events(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert train_events(run), "the run logged no step"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert f"fcnkit train --resume --run-dir {run}" in err
    assert "Traceback" not in err and signal.Signals(sig).name in err
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    steps = [e["step"] for e in train_events(run)]
    assert last["step"] == steps[-1] < 500 and all_finite(last["model"])
    interrupted = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()][-1]
    assert interrupted["event"] == "interrupted" and interrupted["step"] == last["step"]
    assert (run / ".lock").read_text() == ""  # released


def test_second_signal_stops_at_once_keeping_the_last_checkpoint(tmp_path) -> None:
    """In-process: the first SIGINT asks for a stop after the step, a second one abandons
    it; last.pt stays the last one written, and the handler from before is back afterwards
    (Python's own, or SIG_IGN where the suite runs in the background under nohup)."""
    from fcnkit.engine.errors import TrainingInterrupted

    def twice(step: int, model: torch.nn.Module) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    config = tiny(train={"steps": 4, "checkpoint_every": 1, **QUICK})
    with pytest.raises(
        TrainingInterrupted, match="at once by a second SIGINT after step 2; .*holds step 1"
    ):
        train(config, run, progress=False, callback=twice)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert signal.getsignal(signal.SIGINT) is before
    assert (run / ".lock").read_text() == ""


# Runs `fcnkit train ARGS` and SIGKILLs itself at POINT (step AT): "after-step" (the step
# done, its checkpoint not yet written), "mid-save" (the step's checkpoint half written),
# "mid-step" (after the first of the step's micro-batches).
KILLER = r"""
import os, signal, sys
import torch
import fcnkit.engine.train as engine
from fcnkit.cli import main

point, at = sys.argv[1], int(sys.argv[2])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after-step":
    real_train = engine.train
    def train(*args, **kwargs):
        return real_train(*args, callback=lambda step, model: step == at and die(), **kwargs)
    engine.train = train
elif point == "mid-save":
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == at and "optimizer" in obj:
            f.write(b"half a checkpoint")
            f.flush()
            die()
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
elif point == "mid-step":
    real_step = engine.train_step
    def train_step(run, batches):
        if run.state.step + 1 == at:
            engine.accumulate_gradients(run, batches[:1])
            die()
        return real_step(run, batches)
    engine.train_step = train_step
sys.exit(main(sys.argv[3:]))
"""


def test_kill_9_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    config = tiny(train={"steps": 6, "checkpoint_every": 1, **QUICK})
    straight = tmp_path / "straight"
    train(config, straight, progress=False)
    path, run = tmp_path / "tiny.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    resume = ["train", "--resume", "--run-dir", str(run), "--no-progress"]
    chain = [
        ("after-step", 2, ["train", str(path), "--run-dir", str(run), "--no-progress"], 1),
        ("mid-save", 3, resume, 2),
        ("mid-step", 5, resume, 4),
        ("none", 0, resume, 6),
    ]
    checkpoints = run / "checkpoints"
    for point, at, args, saved in chain:
        cmd = [sys.executable, "-c", KILLER, point, str(at), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=environment(), timeout=300)
        assert proc.returncode == (0 if point == "none" else -signal.SIGKILL), proc.stderr[-3000:]
        assert load_checkpoint(checkpoints / "last.pt")["step"] == saved, point
        temporaries = list(checkpoints.glob(".last.pt.*.tmp"))
        assert len(temporaries) == (point == "mid-save"), point  # removed at the next start
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(checkpoints / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                      strict=True):  # fmt: skip
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(tmp_path) -> None:
    run = tmp_path / "run"
    config = tiny(train={"steps": 2, **QUICK})
    train(config, run, progress=False, stop_at_step=1)
    fake = run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    fake.write_bytes(b"\0" * 4096)
    (run / ".meta.json.tmp").write_text("{")
    train(config, run, progress=False, resume=True)
    assert not fake.exists() and not (run / ".meta.json.tmp").exists()
    assert not list(run.rglob("*.tmp"))


# ------------------------------------------------------------------------- failed starts


def test_missing_data_root_leaves_no_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny()
    config["data"].update(dataset="voc", root=str(tmp_path / "no-such-root"), options={})
    with pytest.raises((FileNotFoundError, ValueError), match="no-such-root"):
        train(config, run, progress=False)
    assert not run.exists()
    train(tiny(train={"steps": 1, **QUICK}), run, progress=False)  # the retry


def test_bad_init_from_leaves_a_directory_the_retry_reuses(tmp_path: Path) -> None:
    run, junk = tmp_path / "run", tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    config = tiny(train={"steps": 1, **QUICK})
    with pytest.raises(Exception, match="junk.pt"):
        train(config, run, progress=False, init_from=junk)
    with pytest.warns(UserWarning, match="no checkpoint"):
        train(config, run, progress=False)  # the retry, without init_from: not refused
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert "init_from" not in (run / "log.jsonl").read_text()  # the failed start is gone


@pytest.fixture
def broken_dataset():
    """``broken``: synthetic shapes whose training images cannot be read."""
    from fcnkit.data import register_dataset
    from fcnkit.data.base import DatasetError
    from fcnkit.data.registry import unregister_dataset
    from fcnkit.data.synthetic import SyntheticShapes

    class Broken(SyntheticShapes):
        def __getitem__(self, index: int):
            raise DatasetError(f"images/{index:04d}.png: cannot identify image file")

    def build(root=None, split="train", **options):
        return (Broken if split == "train" else SyntheticShapes)(split, **options)

    register_dataset("broken", description="test", splits=("train", "val"), needs_root=False)(build)
    yield "broken"
    unregister_dataset("broken")


def test_bad_sample_leaves_a_directory_the_retry_reuses(tmp_path, broken_dataset) -> None:
    from fcnkit.data.base import DatasetError

    run = tmp_path / "run"
    config = tiny(train={"steps": 1, **QUICK})
    config["data"]["dataset"] = broken_dataset
    with pytest.raises(DatasetError, match="cannot identify"):
        train(config, run, progress=False)
    assert (run / "config.yaml").is_file()  # the record of the failed start
    with pytest.raises(FileNotFoundError, match="nothing to resume.*without resume=True"):
        train(config, run, progress=False, resume=True)
    fixed = tiny(train={"steps": 1, **QUICK})
    with pytest.warns(UserWarning, match="no checkpoint"):
        train(fixed, run, progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    # a directory with other files than a run's is never taken for a failed start
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirExistsError):
        train(fixed, other, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"
