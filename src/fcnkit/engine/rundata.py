"""The datasets of a training run and its endless, resumable stream of micro-batches.

Exact resume (Sec. 4.3 training, interrupted and continued): the order of the training
samples is a function of ``(seed, epoch)`` (:class:`~fcnkit.engine.distributed.ResumableSampler`)
and their augmentation a function of ``(seed, epoch, index)``
(:class:`~fcnkit.data.transforms.TransformedDataset`), so the stream can restart at any
micro-batch and yield exactly what an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fcnkit.engine.config import Config
from fcnkit.engine.distributed import DistInfo, ResumableSampler


@dataclass
class DataBundle:
    """The raw training and validation datasets and the metadata checkpoints record."""

    train: Dataset
    val: Dataset
    classes: list[str] | None
    palette: list | None
    eval_exclude: list[str]
    targets: dict[str, list[str]] | None  # multi-head datasets: head -> class names
    palettes: dict[str, list] | None = None  # multi-head datasets: head -> colours

    def label_metadata(self) -> dict[str, Any]:
        """The class names and colours every checkpoint of the run records."""
        return {
            "classes": self.classes,
            "palette": self.palette,
            "targets": self.targets,
            "palettes": self.palettes,
        }


def build_datasets(config: Config) -> DataBundle:
    """The raw (untransformed) training and validation datasets, with their metadata."""
    from fcnkit.data import create_dataset

    d = config.data
    train = create_dataset(d.dataset, d.root, d.split, **d.options)
    val_name = d.val_dataset or d.dataset
    val_root = d.val_root if d.val_root is not None else d.root
    val_options = d.val_options if (d.val_dataset or d.val_options) else d.options
    val = create_dataset(val_name, val_root, d.val_split, **val_options)
    if d.val_limit is not None and d.val_limit < len(val):
        val = torch.utils.data.Subset(val, range(d.val_limit))
    return DataBundle(
        train,
        val,
        classes=list(getattr(train, "classes", []) or []) or None,
        palette=getattr(train, "palette", None),
        eval_exclude=list(getattr(_base(val), "eval_exclude", []) or []),
        targets=getattr(train, "targets", None),
        palettes=getattr(train, "target_palettes", None),
    )


def _base(dataset: Dataset) -> Dataset:
    """The dataset under any ``Subset`` wrappers (``data.val_limit``)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def build_train_set(raw: Dataset, model: nn.Module, config: Config) -> Dataset:
    """Training samples with augmentation reproducible per ``(seed, epoch, index)``."""
    from fcnkit.data.transforms import TransformedDataset, build_transforms

    transform = build_transforms(True, model.preprocessing, **config.data.augment)
    return TransformedDataset(raw, transform, seed=config.train.seed)


def micro_batches(
    dataset: Dataset, config: Config, info: DistInfo, start: int
) -> Iterator[tuple[int, dict]]:
    """Endless ``(epoch, batch)`` stream starting at micro-batch ``start`` of the run.

    The order depends only on ``(seed, epoch)``; resuming mid-epoch skips what was consumed.
    """
    from fcnkit.data.collate import collate_pad

    bs = config.data.batch_size
    sampler = ResumableSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, seed=config.train.seed
    )
    per_epoch = sampler.num_samples // bs
    if per_epoch == 0:
        raise ValueError(
            f"the training set has {len(dataset)} images: fewer than one batch of "
            f"{bs} per process ({info.world_size} processes)"
        )
    epoch, position = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = position * bs
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=bs,
            sampler=sampler,
            drop_last=True,
            num_workers=config.data.num_workers,
            collate_fn=collate_pad,
            pin_memory=info.device.type == "cuda",
            generator=torch.Generator().manual_seed(config.train.seed + epoch),
        )
        for batch in loader:
            yield epoch, batch
        epoch, position = epoch + 1, 0


def to_device(labels: Any, device: torch.device) -> Any:
    """A label map, or a dict of them (one per head), on ``device``."""
    if isinstance(labels, dict):
        return {k: v.to(device, non_blocking=True) for k, v in labels.items()}
    return labels.to(device, non_blocking=True)
