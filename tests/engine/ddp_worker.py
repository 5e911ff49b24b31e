"""One rank of the 2-process test (``test_ddp.py``), started by ``torchrun``.

``torchrun --nproc_per_node 2 ddp_worker.py OUT_DIR -- fcnkit train ARGS...``: every rank

1. evaluates a small net over 5 images with several samplers (its own gloo group, file init)
   and writes ``OUT_DIR/eval-rank{r}.json``;
2. runs ``fcnkit train ARGS`` through the real command line (torchrun's environment, DDP,
   rank 0 writing), keeping its final weights in ``OUT_DIR/weights-rank{r}.pt``.

One launch for everything that needs 2 processes: starting processes dominates the cost.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_evaluate import TinyNet, synthetic_samples  # noqa: E402

from fcnkit.data import collate_pad  # noqa: E402
from fcnkit.engine.distributed import ShardSampler  # noqa: E402
from fcnkit.engine.evaluate import evaluate, evaluate_confusion  # noqa: E402


def evaluation_checks(rank: int, out_dir: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir / 'eval-init'}", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(TinyNet())
        data = synthetic_samples()
        results = {}
        for name, subset, sampler in [
            ("padded", data, DistributedSampler(data, shuffle=True, seed=3)),
            ("shard", data, ShardSampler(data)),
            ("explicit", data, ShardSampler(len(data), 2, rank)),
            ("empty-shard", data[:1], ShardSampler(data[:1])),  # rank 1 sees nothing
        ]:
            loader = DataLoader(subset, batch_size=2, sampler=sampler, collate_fn=collate_pad)
            matrices, count = evaluate_confusion(model, loader)
            metrics = evaluate(model, loader)
            results[name] = {
                "matrix": matrices["main"].matrix.tolist(),
                "count": count,
                "mean_iu": metrics["mean_iu"],
                "pixel_acc": metrics["pixel_acc"],
            }
        (out_dir / f"eval-rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def train_through_cli(rank: int, out_dir: Path, argv: list[str]) -> int:
    import fcnkit.engine.train as engine
    from fcnkit.cli import main

    weights: dict[str, torch.Tensor] = {}
    real_train = engine.train

    def keep(step: int, model: torch.nn.Module) -> None:
        weights.clear()
        weights.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    def train_keeping_weights(*args, **kwargs):  # the CLI looks `train` up when it runs
        return real_train(*args, callback=keep, **kwargs)

    engine.train = train_keeping_weights
    code = main(argv)
    torch.save(weights, out_dir / f"weights-rank{rank}.pt")
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    cli_argv = sys.argv[sys.argv.index("--") + 2 :]  # after "-- fcnkit"
    rank_ = int(os.environ["RANK"])
    evaluation_checks(rank_, out)
    sys.exit(train_through_cli(rank_, out, cli_argv))
