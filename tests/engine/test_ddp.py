"""2 CPU processes (gloo) under ``torchrun``, started once for every 2-process check.

- ``fcnkit train`` under ``torchrun --nproc_per_node 2``: DDP trains (loss down, score layers
  off zero), ranks keep identical parameters, rank 0 alone writes and prints, and the metrics
  reduced over 2 ranks equal exactly those of 1 process evaluating the same weights;
- ``evaluate()`` over 2 ranks (ShardSampler, a padded DistributedSampler, an empty shard)
  gives exactly the 1-process confusion matrix and metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from test_evaluate import TinyNet, synthetic_samples
from torch.utils.data import DataLoader

from fcnkit.data import collate_pad
from fcnkit.engine.config import load_config
from fcnkit.engine.distributed import DistInfo
from fcnkit.engine.evaluate import evaluate, evaluate_confusion, make_eval_loader
from fcnkit.engine.train import build_datasets, validate
from fcnkit.weights import load_model

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


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``torchrun --nproc_per_node 2 ddp_worker.py OUT -- fcnkit train CONFIG ...``, once."""
    if not dist.is_available() or sys.platform == "win32":
        pytest.skip("torch.distributed with gloo file init is needed")
    out = tmp_path_factory.mktemp("ddp")
    config = out / "ddp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = out / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), str(Path(__file__).with_name("ddp_worker.py"))]
    cmd += [str(out), "--", "fcnkit", "train", str(config), "--run-dir", str(run)]
    cmd += ["--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "run": run, "config": config, "stdout": proc.stdout}


def test_torchrun_trains_with_identical_ranks_and_rank0_writing(launch: dict) -> None:
    run, out = launch["run"], launch["out"]
    assert launch["stdout"].count("final evaluation") == 1  # rank 0 prints
    # The ranks' parameters stay identical (DDP averages gradients).
    w0 = torch.load(out / "weights-rank0.pt", weights_only=True)
    w1 = torch.load(out / "weights-rank1.pt", weights_only=True)
    params = [k for k in w0 if "running" not in k and "num_batches" not in k]
    assert params and all(torch.equal(w0[k], w1[k]) for k in params)
    # Rank 0 alone wrote the run: each event once, every rank's RNG state in the checkpoint.
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [2, 4, 6, 8]
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # It trained: the loss went down, and the score layers moved off zero.
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert losses[-1] < losses[0]
    assert ckpt["model"]["score_fr.weight"].abs().sum() > 0
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in params)


def test_two_rank_metrics_equal_one_process_metrics(launch: dict) -> None:
    """The same weights evaluated by one process give exactly the 2-process metrics."""
    run = launch["run"]
    reduced = json.loads((run / "metrics.json").read_text())
    assert sum(map(sum, reduced["confusion"])) == 5 * 32 * 32  # every val image counted once
    model, meta = load_model(run / "checkpoints" / "last.pt")
    assert meta["world_size"] == 2
    config = load_config(launch["config"])
    data = build_datasets(config)
    loader = make_eval_loader(data.val, 2, preprocessing=model.preprocessing)
    single = validate(model, loader, 7, data, DistInfo())
    assert single["confusion"] == reduced["confusion"]
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert single[key] == pytest.approx(reduced[key], abs=0, rel=0)


def test_evaluate_over_two_ranks_equals_one_process(launch: dict) -> None:
    """ShardSampler, a padded DistributedSampler and an empty shard: exact 1-process figures."""
    torch.manual_seed(0)
    model = TinyNet()  # the workers' net (same seed)
    loader = DataLoader(synthetic_samples(), batch_size=2, collate_fn=collate_pad)
    single, count = evaluate_confusion(model, loader)
    metrics = evaluate(model, loader)
    first, _ = evaluate_confusion(
        model, DataLoader(synthetic_samples()[:1], collate_fn=collate_pad)
    )
    for rank in range(2):
        results = json.loads((launch["out"] / f"eval-rank{rank}.json").read_text())
        for name in ("padded", "shard", "explicit"):
            r = results[name]
            assert r["matrix"] == single["main"].matrix.tolist(), (rank, name)
            assert r["count"] == count == 5
            assert r["mean_iu"] == metrics["mean_iu"] and r["pixel_acc"] == metrics["pixel_acc"]
        assert results["empty-shard"]["matrix"] == first["main"].matrix.tolist()
        assert results["empty-shard"]["count"] == 1
