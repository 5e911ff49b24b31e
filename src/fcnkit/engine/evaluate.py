"""Evaluation over a DataLoader with the paper's metrics (Sec. 5), on 1..N processes.

Under ``torch.distributed`` each rank evaluates its shard and the confusion matrices are
summed with ``all_reduce``, so N ranks give exactly the metrics of one process provided every
sample is counted once. :class:`fcnkit.engine.distributed.ShardSampler` (used by
:func:`make_eval_loader`) shards without padding; a loader using
``torch.utils.data.DistributedSampler`` (which pads the shards to equal length by repeating
samples) is handled too: the repeated samples at the end of a shard are skipped.

Batches must contain images of one size or be padded with the ignore label (``collate_pad``);
for exactly reproducible figures across batch sizes on mixed-size datasets evaluate one
image at a time (the paper's whole-image evaluation), since padding changes the context seen
near the bottom/right borders.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fcnkit.engine.distributed import ShardSampler, process_group
from fcnkit.inference import SlidingWindow, dense_scores
from fcnkit.metrics import ConfusionMatrix

MAIN = "main"  # head name used for single-output models


def make_eval_loader(
    dataset: Dataset,
    batch_size: int = 1,
    *,
    num_workers: int = 0,
    collate_fn: Any = None,
    pin_memory: bool = False,
    preprocessing: Any = None,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DataLoader:
    """A DataLoader over this rank's shard (:class:`ShardSampler`), padding mixed sizes.

    ``preprocessing`` (a :class:`~fcnkit.preprocessing.Preprocessing` or preset name): wrap
    the raw dataset in the evaluation transform (whole images, normalised). ``num_replicas``
    / ``rank`` default to the process group's. The loader has its own generator, so iterating
    it never consumes the global RNG (training stays reproducible).
    """
    if preprocessing is not None:
        from fcnkit.data.transforms import TransformedDataset, build_transforms

        dataset = TransformedDataset(dataset, build_transforms(False, preprocessing))
    if collate_fn is None:
        from fcnkit.data.collate import collate_pad

        collate_fn = collate_pad
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(dataset, num_replicas, rank),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )


def _shard_plan(loader: Iterable) -> tuple[bool, int | None]:
    """``(sharded, real_samples)``: whether the loader holds one rank's shard, and how many of
    its samples are real (``None`` = all) when a ``DistributedSampler`` padded the shard."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    for s in (sampler, inner):
        if isinstance(s, ShardSampler):
            return True, None
        if isinstance(s, DistributedSampler):
            if s.drop_last and len(s.dataset) % s.num_replicas:
                raise ValueError(
                    "DistributedSampler(drop_last=True) skips samples, so the metrics would not "
                    "cover the whole dataset: use drop_last=False or fcnkit's ShardSampler"
                )
            return True, len(range(s.rank, len(s.dataset), s.num_replicas))
    return False, None


def _unpack(batch: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError("a batch must be a dict with 'image' and 'label' or an (image, label) pair")


def _slice_batch(labels: Any, n: int) -> Any:
    if isinstance(labels, Mapping):
        return {k: v[:n] for k, v in labels.items()}
    return labels[:n]


def _pairs(out: Any, labels: Any, heads: Sequence[str] | None) -> dict[str, tuple]:
    """Pair the model's outputs with labels: dict by key, a plain label with the primary head."""
    if isinstance(out, torch.Tensor):
        if isinstance(labels, Mapping):
            if len(labels) != 1:
                raise ValueError(
                    f"the model has one output but the labels have several ({', '.join(labels)})"
                )
            labels = next(iter(labels.values()))
        return {MAIN: (out, labels)}
    if isinstance(labels, Mapping):
        names = list(heads) if heads is not None else [k for k in out if k in labels]
        missing = [k for k in names if k not in out or k not in labels]
        if missing or not names:
            raise ValueError(
                f"cannot pair heads {missing or names}: model heads {list(out)}, "
                f"label keys {list(labels)}"
            )
        return {k: (out[k], labels[k]) for k in names}
    primary = next(iter(out))
    if heads is not None and list(heads) != [primary]:
        raise ValueError(f"a plain label pairs with the primary head {primary!r} only")
    return {primary: (out[primary], labels)}


def _per_head(value: Any, head: str, primary: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(head)
    return value if head == primary else None


@torch.no_grad()
def evaluate_confusion(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    num_classes: int | Mapping[str, int] | None = None,
    ignore_index: int = 255,
    heads: Sequence[str] | None = None,
    class_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    sliding_window: SlidingWindow | int | None = None,
    flip: bool = False,
    amp: bool = False,
    reduce: bool | None = None,
) -> tuple[dict[str, ConfusionMatrix], int]:
    """Confusion matrices (one per evaluated head, primary first) and the image count.

    See :func:`evaluate` for the arguments. ``reduce=None`` all-reduces across ranks when the
    loader is sharded (:class:`ShardSampler` / ``DistributedSampler``) and a process group is
    initialised; an unsharded loader already sees every sample on every rank.
    """
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if device is None:
        device = next(module.parameters(), torch.empty(0)).device
    device = torch.device(device)
    if isinstance(sliding_window, int):
        sliding_window = SlidingWindow(sliding_window)
    sharded, real_samples = _shard_plan(loader)
    was_training = module.training
    module.eval()
    matrices: dict[str, ConfusionMatrix] = {}
    primary: str | None = None
    seen = 0  # samples of this shard so far, duplicates included
    counted = 0
    try:
        for batch in loader:
            images, labels = _unpack(batch)
            n = images.shape[0]
            if real_samples is not None:  # drop DistributedSampler's padding duplicates
                n = max(0, min(n, real_samples - seen))
                seen += images.shape[0]
                if n == 0:
                    continue
                images, labels = images[:n], _slice_batch(labels, n)
            x = images.to(device, non_blocking=True)
            if not x.is_floating_point():  # raw uint8 images: normalise as the model expects
                if getattr(module, "preprocessing", None) is None:
                    raise ValueError(
                        "the loader yields raw uint8 images but the model records no "
                        "preprocessing: normalise them in the dataset's transform"
                    )
                x = module.preprocessing.normalize(x)
            out = dense_scores(module, x, sliding_window=sliding_window, flip=flip, amp=amp)
            for head, (scores, label) in _pairs(out, labels, heads).items():
                primary = primary or head
                if head not in matrices:
                    expected = _per_head(num_classes, head, primary)
                    if expected is not None and expected != scores.shape[1]:
                        raise ValueError(
                            f"head {head!r} outputs {scores.shape[1]} classes, expected {expected}"
                        )
                    matrices[head] = ConfusionMatrix(
                        scores.shape[1],
                        ignore_index,
                        device=device,
                        class_names=_per_head(class_names, head, primary),
                    )
                matrices[head].update(scores, label.to(device, non_blocking=True))
            counted += n
    finally:
        module.train(was_training)
    _, world = process_group()
    if reduce is None:
        reduce = sharded and world > 1
    if reduce:
        # A rank with an empty shard has no matrices yet: agree on the heads first.
        specs: list[Any] = [None] * world
        local = [(h, m.num_classes, m.class_names) for h, m in matrices.items()]
        dist.all_gather_object(specs, local)
        for head, n, names in next((s for s in specs if s), []):
            if head not in matrices:
                matrices[head] = ConfusionMatrix(n, ignore_index, device, class_names=names)
        if not matrices:
            raise ValueError("nothing to evaluate: every rank's loader was empty")
        for m in matrices.values():
            m.all_reduce()
        count = torch.tensor(
            [counted], dtype=torch.int64, device=next(iter(matrices.values())).device
        )
        dist.all_reduce(count)
        counted = int(count.item())
    return matrices, counted


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    num_classes: int | Mapping[str, int] | None = None,
    ignore_index: int = 255,
    exclude: Sequence[int | str] | Mapping[str, Sequence[int | str]] = (),
    heads: Sequence[str] | None = None,
    class_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    sliding_window: SlidingWindow | int | None = None,
    flip: bool = False,
    amp: bool = False,
    reduce: bool | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` over ``loader`` with the reference metrics (paper Sec. 5).

    Args:
        model: returns scores ``N x C x H x W`` or a dict of them (primary head first); a
            DDP wrapper is unwrapped (ranks may run different numbers of batches).
        loader: yields dicts ``{"image", "label", ...}`` (or ``(image, label)`` pairs);
            float images are used as they are, ``uint8`` ones are normalised with
            ``model.preprocessing``. Labels: ``N x H x W`` or a dict by head name.
        device: where to run and accumulate (default: the model's).
        num_classes: expected classes (int for the primary head, or per head); checked
            against the outputs, which decide it when ``None``.
        ignore_index: label value left out (255).
        exclude: classes dropped from the means (indices or names), for the primary head, or
            a dict per head (SIFT Flow: ``{"sem": ["cow", "desert", "moon"]}``).
        heads: the heads to evaluate (default: all that have labels).
        class_names: names for the primary head, or a dict per head.
        sliding_window: tile size or :class:`SlidingWindow` for large images.
        flip: average with the horizontally flipped image's scores.
        amp: autocast on CUDA (ignored on CPU).
        reduce: all-reduce across ranks (default: when the loader is sharded).

    Returns the primary head's metrics (``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``,
    ``per_class_iu``, ``per_class_acc``, ...) plus ``num_images``, ``seconds``,
    ``images_per_s``; multi-head models add ``heads`` (head name -> metrics) and ``head``.
    """
    start = time.perf_counter()
    matrices, count = evaluate_confusion(
        model,
        loader,
        device,
        num_classes=num_classes,
        ignore_index=ignore_index,
        heads=heads,
        class_names=class_names,
        sliding_window=sliding_window,
        flip=flip,
        amp=amp,
        reduce=reduce,
    )
    seconds = time.perf_counter() - start
    return summarize(matrices, exclude, num_images=count, seconds=seconds)


def summarize(
    matrices: Mapping[str, ConfusionMatrix],
    exclude: Sequence[int | str] | Mapping[str, Sequence[int | str]] = (),
    *,
    num_images: int | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Metrics dict of :func:`evaluate` from per-head confusion matrices."""
    if not matrices:
        raise ValueError("nothing was evaluated (empty loader?)")
    primary = next(iter(matrices))
    per_head: dict[str, dict[str, Any]] = {}
    for head, m in matrices.items():
        excluded = _per_head(exclude, head, primary) or ()
        metrics = m.compute(excluded)
        if m.class_names is not None:
            metrics["classes"] = list(m.class_names)
        metrics["excluded"] = [str(e) for e in excluded]
        per_head[head] = metrics
    result = dict(per_head[primary])
    if num_images is not None:
        result["num_images"] = num_images
    if seconds is not None:
        result["seconds"] = seconds
        result["images_per_s"] = num_images / seconds if num_images and seconds > 0 else 0.0
    if primary != MAIN:
        result["head"] = primary
        result["heads"] = per_head
    return result
