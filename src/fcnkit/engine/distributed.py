"""One code path for 1..N processes: ``torchrun --nproc_per_node N -m fcnkit train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is a single
process and no process group is created. Backend: NCCL when training on CUDA, gloo on CPU.
Only rank 0 writes (run directory, logs, checkpoints, progress bar).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler


@dataclass
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup(device: str = "auto") -> DistInfo:
    """Read torchrun's environment, pick the device, init the process group if N > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    info = DistInfo(rank, world_size, local_rank, dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        info.initialized_here = True
    elif dist.is_initialized():
        info.rank, info.world_size = dist.get_rank(), dist.get_world_size()
    return info


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over processes (identity for one process)."""
    if not info.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / info.world_size


def all_reduce_max(value: int, info: DistInfo) -> int:
    """The largest of the processes' ``value`` (identity for one process)."""
    if not info.distributed:
        return value
    flag = torch.tensor(value, dtype=torch.int64, device=info.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    Each rank's last forward pass updated its own statistics; evaluating (and checkpointing)
    with rank 0's makes the reduced metrics those of the one saved model.
    """
    if info.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order a function of ``(seed, epoch)``) that can skip a prefix.

    ``skip`` drops the first indices of this rank's epoch order: a run resumed mid-epoch
    continues with exactly the batches the interrupted run had not consumed yet.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r gets indices r, r + N, r + 2N, ...

    Unlike ``DistributedSampler`` no sample is repeated, so metrics reduced over ranks equal
    single-process metrics exactly (shards may differ in length by one). ``data`` is a
    dataset or its length; ``num_replicas`` / ``rank`` default to the process group's
    (1 / 0 without one).
    """

    def __init__(
        self, data: Sized | int, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        default_rank, default_world = process_group()
        length = data if isinstance(data, int) else len(data)
        self.num_replicas = default_world if num_replicas is None else int(num_replicas)
        self.rank = default_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} not in [0, {self.num_replicas})")
        self.indices = range(self.rank, length, self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
