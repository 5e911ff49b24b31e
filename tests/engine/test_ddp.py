"""DDP on 2 CPU processes (gloo): trains, ranks stay identical, evaluation equals 1 process."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fcnkit.engine.checkpoint import load_model
from fcnkit.engine.config import from_dict
from fcnkit.engine.distributed import DistInfo
from fcnkit.engine.evaluate import make_eval_loader
from fcnkit.engine.train import build_datasets, train, validate

CONFIG = {
    "name": "ddp",
    "model": {
        "name": "fcn8s-efficientnet_lite0",
        "num_classes": 7,
        "options": {"backbone_weights": None},
    },
    "data": {
        "dataset": "synthetic",
        "options": {"size": 32, "num_samples": 16},
        "val_options": {"size": 32, "num_samples": 5},  # odd: ranks get 3 and 2 images
        "batch_size": 2,
        "val_batch_size": 2,
        "augment": {"crop_size": 32, "flip": True, "scale_range": None},
    },
    "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
    "train": {
        "steps": 8,
        "log_every": 2,
        "eval_every": 8,
        "checkpoint_every": 8,
        "device": "cpu",
        "zero_check_step": 1000,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, run_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    weights: dict = {}

    def keep(step: int, model: torch.nn.Module) -> None:
        if step == CONFIG["train"]["steps"]:
            weights.update({k: v.clone() for k, v in model.state_dict().items()})

    metrics = train(copy.deepcopy(CONFIG), run_dir, progress=False, callback=keep)
    torch.save({"metrics": metrics, "weights": weights}, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_train_identically_and_evaluate_like_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(run), str(tmp_path)), nprocs=2, join=True)
    out0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    out1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    r0, r1 = out0["metrics"], out1["metrics"]
    # The ranks' parameters stay identical (DDP averages gradients).
    params = [k for k in out0["weights"] if "running" not in k and "num_batches" not in k]
    assert params and all(torch.equal(out0["weights"][k], out1["weights"][k]) for k in params)
    # Metrics are reduced across ranks: both ranks report the same confusion matrix.
    assert r0["confusion"] == r1["confusion"]
    assert sum(map(sum, r0["confusion"])) == 5 * 32 * 32  # every val image counted once

    # It trained: the loss went down, and the score layers moved off zero.
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    model, meta = load_model(run / "checkpoints" / "last.pt")
    assert meta["world_size"] == 2
    assert model.score_fr.weight.abs().sum() > 0

    # The same weights evaluated by one process give exactly the 2-process metrics.
    config = from_dict(copy.deepcopy(CONFIG))
    data = build_datasets(config)
    info = DistInfo()
    loader = make_eval_loader(data.val, 2, preprocessing=model.preprocessing)
    single = validate(model, loader, 7, data, info)
    assert single["confusion"] == r0["confusion"]
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert single[key] == pytest.approx(r0[key], abs=0, rel=0)


def test_torchrun_cli_two_processes(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m fcnkit train ...`: one run dir, written by rank 0 only."""
    import subprocess
    import sys

    run = tmp_path / "run"
    sets = {
        "model.options.backbone_weights": "null",
        "train.steps": "2",
        "train.eval_every": "2",
        "train.log_every": "1",
        "data.options": "{size: 32, num_samples: 8}",
        "data.val_options": "{size: 32, num_samples: 3}",
        "data.batch_size": "2",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), "-m", "fcnkit", "train", "demo"]
    cmd += ["--run-dir", str(run), "--no-progress"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final evaluation") == 1  # rank 0 prints
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2]  # written once
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # every rank's RNG state
