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

One assembly serves validation during training, ``fcnkit eval`` and the demo: a dataset's
:func:`dataset_scoring` (class names, classes left out of the means, its ``ignore_index``),
then :func:`evaluate_model` -> :class:`EvalResult` (per-head confusion matrices, metrics,
per-class tables). :func:`evaluate` is its metrics dict alone. On request
(:class:`ExtraMetrics`, on in ``fcnkit eval``) each head also gets the boundary F-score and IU
by object size of :mod:`fcnkit.metrics`, counted per image and summed over the ranks.

Bad samples: a loader made with ``make_eval_loader(..., catch_bad_samples=True)`` hands a
sample that cannot be read (in a worker process too) to :func:`evaluate_model` as a
:class:`BadSample` naming its files; ``on_bad_sample="stop"`` raises :class:`BadSampleError`
with that sentence, ``"skip"`` scores the others and lists it in ``EvalResult.skipped``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from fcnkit.data.base import IGNORE_INDEX, DatasetError
from fcnkit.engine.distributed import ShardSampler, process_group
from fcnkit.inference import SlidingWindow, dense_scores
from fcnkit.metrics import (
    DEFAULT_BOUNDARY_TOLERANCE,
    DEFAULT_SIZE_THRESHOLDS,
    BoundaryFScore,
    ConfusionMatrix,
    SizeIU,
    boundary_and_size_columns,
    format_boundary_and_size,
    scores_to_labels,
)
from fcnkit.models import outputs
from fcnkit.models.outputs import SINGLE_HEAD, Outputs
from fcnkit.plots import SamplePrediction

MAIN = SINGLE_HEAD  # deprecated alias of fcnkit.models.outputs.SINGLE_HEAD (one release)

# class names / excluded classes: the primary head's, or a dict per head
Names = Union[Sequence[str], Mapping[str, Sequence[str]]]  # noqa: UP007 (runtime alias, 3.10)
Exclude = Union[Sequence[Union[int, str]], Mapping[str, Sequence[Union[int, str]]]]  # noqa: UP007
Accumulator = Union[BoundaryFScore, SizeIU]  # noqa: UP007 (runtime alias, 3.10)


@dataclass(frozen=True)
class ExtraMetrics:
    """Metrics beyond the paper's four, per evaluated head (:mod:`fcnkit.metrics`): boundary
    F-score (:class:`~fcnkit.metrics.BoundaryFScore`; ``boundary_tolerance`` in pixels or
    ``"X%"`` of the image diagonal, ``None``: off) and IU by object size
    (:class:`~fcnkit.metrics.SizeIU`; ``size_iu``, ``size_thresholds``).

    They are counted image by image on the CPU after the model's output is cropped to the
    label (each batch's predictions are copied to the host), so they are off unless asked for:
    ``fcnkit eval`` asks, validation during training does not (about 13 ms of CPU per 256 x 256
    SIFT Flow image). A batch padded to one size (``collate_pad``) is scored at the padded
    size (the tolerance's diagonal, the buckets' image area); one image a batch, ``fcnkit
    eval``'s default, scores each image at its own size.
    """

    boundary_tolerance: float | str | None = DEFAULT_BOUNDARY_TOLERANCE
    size_iu: bool = True
    size_thresholds: tuple[float, float] = DEFAULT_SIZE_THRESHOLDS

    def accumulators(
        self, num_classes: int, ignore_index: int, class_names: Sequence[str] | None
    ) -> list[Accumulator]:
        """Fresh accumulators for one head."""
        made: list[Accumulator] = []
        if self.boundary_tolerance is not None:
            made.append(
                BoundaryFScore(
                    num_classes, ignore_index, class_names, tolerance=self.boundary_tolerance
                )
            )
        if self.size_iu:
            made.append(
                SizeIU(num_classes, ignore_index, class_names, thresholds=self.size_thresholds)
            )
        return made


# ------------------------------------------------------------------------ bad samples

ON_BAD_SAMPLE = ("stop", "skip")


class BadSampleError(DatasetError):
    """A sample that could not be read during evaluation; the message names its file(s)."""


class BadSample(NamedTuple):
    """Stands in for a sample that failed to load: the sentence naming its files and why."""

    message: str


class CheckedBatch(NamedTuple):
    """A batch of a ``catch_bad_samples`` loader: the good samples collated (``None`` when
    there were none) and the bad ones' sentences."""

    batch: Any
    bad: list[str]


def _sample_name(dataset: Any, index: int) -> str | None:
    """``describe_sample`` of the dataset under the wrappers (Subset, TransformedDataset)."""
    for _ in range(32):
        if isinstance(dataset, Subset):
            index, dataset = dataset.indices[index], dataset.dataset
        elif "dataset" in vars(dataset):  # TransformedDataset and other wrappers
            dataset = dataset.dataset
        elif callable(getattr(dataset, "describe_sample", None)):
            try:
                return str(dataset.describe_sample(index))
            except Exception:
                return None
        else:
            return None
    return None


class _CatchBadSamples(Dataset):
    """``dataset`` whose failing samples become :class:`BadSample` (picklable to workers)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:  # unreadable file, bad label, a transform failing on it
            text = str(err).strip() or type(err).__name__
            name = _sample_name(self.dataset, index)
            if name is not None and not _names_a_file(text, name):
                text = f"{name}: {text}"
            return BadSample(text)


def _names_a_file(text: str, name: str) -> bool:
    """Whether ``text`` already names the sample: its description or one of its files."""
    files = [part.split("=", 1)[1] for part in name.strip(")").split(", ") if "=" in part]
    return name in text or any(f in text for f in files)


class _CollateChecked:
    """Collate the good samples of a batch, keep the bad ones' sentences beside them."""

    def __init__(self, collate_fn: Any) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> CheckedBatch:
        good = [s for s in samples if not isinstance(s, BadSample)]
        bad = [s.message for s in samples if isinstance(s, BadSample)]
        return CheckedBatch(self.collate_fn(good) if good else None, bad)


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
    catch_bad_samples: bool = False,
) -> DataLoader:
    """A DataLoader over this rank's shard (:class:`ShardSampler`), padding mixed sizes.

    ``preprocessing`` (a :class:`~fcnkit.preprocessing.Preprocessing` or preset name): wrap
    the raw dataset in the evaluation transform (whole images, normalised). ``num_replicas``
    / ``rank`` default to the process group's. The loader has its own generator, so iterating
    it never consumes the global RNG (training stays reproducible). ``catch_bad_samples``:
    a sample that fails to load is passed on as a :class:`BadSample` (see
    :func:`evaluate_model`'s ``on_bad_sample``) instead of raising, in worker processes too.
    """
    if preprocessing is not None:
        from fcnkit.data.transforms import TransformedDataset, build_transforms

        dataset = TransformedDataset(dataset, build_transforms(False, preprocessing))
    if collate_fn is None:
        from fcnkit.data.collate import collate_pad

        collate_fn = collate_pad
    if catch_bad_samples:
        dataset, collate_fn = _CatchBadSamples(dataset), _CollateChecked(collate_fn)
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


def _pairs(out: Outputs, labels: Any, wanted: Sequence[str] | None) -> dict[str, tuple]:
    """Pair the model's heads with labels: by key for dict labels, a plain label map with the
    primary head; a single-output model pairs with the one label map there is."""
    named = outputs.heads(out)
    if list(named) == [SINGLE_HEAD]:
        if isinstance(labels, Mapping):
            if len(labels) != 1:
                raise ValueError(
                    f"the model has one output but the labels have several ({', '.join(labels)})"
                )
            labels = next(iter(labels.values()))
        return {SINGLE_HEAD: (named[SINGLE_HEAD], labels)}
    if isinstance(labels, Mapping):
        names = list(wanted) if wanted is not None else [k for k in named if k in labels]
        missing = [k for k in names if k not in named or k not in labels]
        if missing or not names:
            raise ValueError(
                f"cannot pair heads {missing or names}: model heads {list(named)}, "
                f"label keys {list(labels)}"
            )
        return {k: (named[k], labels[k]) for k in names}
    first = outputs.primary_name(out)
    if wanted is not None and list(wanted) != [first]:
        raise ValueError(f"a plain label pairs with the primary head {first!r} only")
    return {first: (named[first], labels)}


def _per_head(value: Any, head: str, primary: str) -> Any:
    """``value`` for ``head``: a dict's entry, or a plain value for the primary head only."""
    if isinstance(value, Mapping):
        return value.get(head)
    return value if head == primary else None


def _model_input(module: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The batch on ``device``; raw ``uint8`` images normalised as the model expects."""
    x = images.to(device, non_blocking=True)
    if x.is_floating_point():
        return x
    if getattr(module, "preprocessing", None) is None:
        raise ValueError(
            "the loader yields raw uint8 images but the model records no "
            "preprocessing: normalise them in the dataset's transform"
        )
    return module.preprocessing.normalize(x)


def _count(
    matrices: dict[str, ConfusionMatrix],
    pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int | Mapping[str, int] | None,
    class_names: Names | None,
    ignore_index: int,
    device: torch.device,
    extras: dict[str, list[Accumulator]] | None = None,
    extra: ExtraMetrics | None = None,
) -> None:
    """Add one batch's ``head -> (scores, labels)`` to the per-head matrices (made on first use)
    and, with ``extra``, to the per-head ``extras`` accumulators (each image on the CPU)."""
    for head, (scores, label) in pairs.items():
        if head not in matrices:
            primary = next(iter(matrices), head)
            expected = _per_head(num_classes, head, primary)
            if expected is not None and expected != scores.shape[1]:
                raise ValueError(
                    f"head {head!r} outputs {scores.shape[1]} classes, expected {expected}"
                )
            names = _per_head(class_names, head, primary)
            matrices[head] = ConfusionMatrix(
                scores.shape[1], ignore_index, device=device, class_names=names
            )
        matrices[head].update(scores, label.to(device, non_blocking=True))
        if extra is not None and extras is not None:
            m = matrices[head]
            if head not in extras:
                extras[head] = extra.accumulators(m.num_classes, ignore_index, m.class_names)
            predicted = scores_to_labels(scores).cpu()
            for accumulator in extras[head]:
                accumulator.update(predicted, label.cpu())


def _all_reduce(
    matrices: dict[str, ConfusionMatrix],
    counted: int,
    ignore_index: int,
    device: torch.device,
    extras: tuple[dict[str, list[Accumulator]], ExtraMetrics] | None = None,
) -> int:
    """Sum the matrices (and ``extras``' counts) and the image count over the ranks; returns
    the total count."""
    _, world = process_group()
    # A rank with an empty shard has no matrices yet: agree on the heads first.
    specs: list[Any] = [None] * world
    local = [(h, m.num_classes, m.class_names) for h, m in matrices.items()]
    dist.all_gather_object(specs, local)
    for head, n, names in next((s for s in specs if s), []):
        if head not in matrices:
            matrices[head] = ConfusionMatrix(n, ignore_index, device, class_names=names)
    if not matrices:
        raise ValueError("nothing to evaluate: every rank's loader was empty")
    for head, m in matrices.items():
        m.all_reduce()
        if extras is not None:
            accumulators, extra = extras
            if head not in accumulators:  # this rank saw no image: zeros to add
                accumulators[head] = extra.accumulators(m.num_classes, ignore_index, m.class_names)
            for accumulator in accumulators[head]:
                accumulator.all_reduce()
    count = torch.tensor([counted], dtype=torch.int64, device=next(iter(matrices.values())).device)
    dist.all_reduce(count)
    return int(count.item())


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_confusion(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    num_classes: int | Mapping[str, int] | None = None,
    ignore_index: int = IGNORE_INDEX,
    heads: Sequence[str] | None = None,
    class_names: Names | None = None,
    sliding_window: SlidingWindow | int | None = None,
    flip: bool = False,
    amp: bool = False,
    reduce: bool | None = None,
    scales: Sequence[float] = (1.0,),
) -> tuple[dict[str, ConfusionMatrix], int]:
    """Confusion matrices (one per evaluated head, primary first) and the image count.

    See :func:`evaluate` for the arguments. ``reduce=None`` all-reduces across ranks when the
    loader is sharded (:class:`ShardSampler` / ``DistributedSampler``) and a process group is
    initialised; an unsharded loader already sees every sample on every rank.
    """
    counted = _confusion(
        model, loader, device, num_classes=num_classes, ignore_index=ignore_index, heads=heads,
        class_names=class_names, sliding_window=sliding_window, flip=flip, amp=amp,
        reduce=reduce, on_bad_sample="stop", scales=scales,
    )  # fmt: skip
    return counted.matrices, counted.num_images


def _bad_samples(batch: CheckedBatch, on_bad_sample: str, skipped: list[str]) -> None:
    """Stop at the batch's first bad sample, or note them all as skipped."""
    if on_bad_sample not in ON_BAD_SAMPLE:
        raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
    if batch.bad and on_bad_sample == "stop":
        raise BadSampleError(batch.bad[0])
    skipped.extend(batch.bad)


@torch.no_grad()
def _confusion(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None,
    *,
    num_classes: int | Mapping[str, int] | None,
    ignore_index: int,
    heads: Sequence[str] | None,
    class_names: Names | None,
    sliding_window: SlidingWindow | int | None,
    flip: bool,
    amp: bool,
    reduce: bool | None,
    on_bad_sample: str,
    extra: ExtraMetrics | None = None,
    scales: Sequence[float] = (1.0,),
) -> _Counted:
    """:func:`evaluate_confusion` plus the ``extra`` metrics' accumulators and the sentences of
    the samples skipped as bad."""
    module = _unwrap(model)
    if device is None:
        device = next(module.parameters(), torch.empty(0)).device
    device = torch.device(device)
    if isinstance(sliding_window, int):
        sliding_window = SlidingWindow(sliding_window)
    sharded, real_samples = _shard_plan(loader)
    was_training = module.training
    module.eval()
    matrices: dict[str, ConfusionMatrix] = {}
    extras: dict[str, list[Accumulator]] = {}
    seen = 0  # samples of this shard so far, duplicates included
    counted = 0
    skipped: list[str] = []
    try:
        for batch in loader:
            if isinstance(batch, CheckedBatch):
                _bad_samples(batch, on_bad_sample, skipped)
                seen += len(batch.bad)
                if batch.batch is None:
                    continue
                batch = batch.batch
            images, labels = _unpack(batch)
            n = images.shape[0]
            if real_samples is not None:  # drop DistributedSampler's padding duplicates
                n = max(0, min(n, real_samples - seen))
                seen += images.shape[0]
                if n == 0:
                    continue
                images, labels = images[:n], _slice_batch(labels, n)
            x = _model_input(module, images, device)
            out = dense_scores(
                module, x, sliding_window=sliding_window, flip=flip, amp=amp, scales=scales
            )
            _count(matrices, _pairs(out, labels, heads), num_classes=num_classes,
                   class_names=class_names, ignore_index=ignore_index, device=device,
                   extras=extras, extra=extra)  # fmt: skip
            counted += n
    finally:
        module.train(was_training)
    if reduce is None:
        reduce = sharded and process_group()[1] > 1
    if reduce:
        if on_bad_sample == "skip":  # every rank's skipped samples, in rank order
            gathered: list[Any] = [None] * process_group()[1]
            dist.all_gather_object(gathered, skipped)
            skipped = [line for part in gathered for line in part]
        reduced_extras = (extras, extra) if extra is not None else None
        counted = _all_reduce(matrices, counted, ignore_index, device, reduced_extras)
    if not matrices and skipped:
        raise BadSampleError(
            f"no sample could be read ({len(skipped)} skipped); the first: {skipped[0]}"
        )
    return _Counted(matrices, extras, counted, skipped)


class _Counted(NamedTuple):
    """What one pass over the loader counted (reduced over the ranks when sharded)."""

    matrices: dict[str, ConfusionMatrix]
    extras: dict[str, list[Accumulator]]  # head -> accumulators of ExtraMetrics (or empty)
    num_images: int
    skipped: list[str]


# ------------------------------------------------------------------------ one assembly


@dataclass(frozen=True)
class Scoring:
    """How labels are scored (Sec. 5): class names, classes left out of the means, the ignore
    label. ``class_names`` and ``exclude`` are the primary head's, or dicts per head."""

    class_names: Names | None = None
    exclude: Exclude = ()
    ignore_index: int = IGNORE_INDEX


def dataset_scoring(
    dataset: Any, num_classes: int | None = None, *, strict: bool = False
) -> Scoring:
    """The scoring ``dataset`` asks for: its classes (per head for multi-target datasets such
    as SIFT Flow), its ``eval_exclude`` and its ``ignore_index`` (default
    :data:`~fcnkit.data.base.IGNORE_INDEX`). ``Subset`` wrappers are looked through.

    ``num_classes`` (the model's): class names of another count are dropped, or with
    ``strict`` raise ``ValueError`` (the wrong dataset or model).
    """
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    excluded = list(getattr(dataset, "eval_exclude", []) or [])
    ignore_index = int(getattr(dataset, "ignore_index", IGNORE_INDEX))
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, Mapping) and targets:
        names = {head: list(classes) for head, classes in targets.items()}
        exclude = {h: [e for e in excluded if e in c] for h, c in names.items()}
        return Scoring(names, exclude, ignore_index)
    classes = list(getattr(dataset, "classes", []) or []) or None
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        if strict:
            raise ValueError(
                f"the model predicts {num_classes} classes but the dataset has "
                f"{len(classes)} ({', '.join(classes[:5])}, ...): wrong dataset or model?"
            )
        classes = None
    return Scoring(classes, excluded, ignore_index)


@dataclass
class EvalResult:
    """What :func:`evaluate_model` found: per-head confusion matrices (primary head first),
    their metrics (:func:`summarize`) and the scoring they were computed with."""

    matrices: dict[str, ConfusionMatrix]
    metrics: dict[str, Any]
    scoring: Scoring
    num_images: int
    seconds: float
    skipped: list[str] = field(default_factory=list)  # bad samples left out (on_bad_sample)
    extras: dict[str, list[Accumulator]] = field(default_factory=dict)  # head -> ExtraMetrics'

    @property
    def primary(self) -> str:
        """The primary head's name (:data:`~fcnkit.models.outputs.SINGLE_HEAD` for one)."""
        return next(iter(self.matrices))

    @property
    def matrix(self) -> ConfusionMatrix:
        """The primary head's confusion matrix."""
        return self.matrices[self.primary]

    def excluded(self, head: str | None = None) -> list[int | str]:
        """The classes left out of ``head``'s means (default: the primary head's)."""
        head = head or self.primary
        return list(_per_head(self.scoring.exclude, head, self.primary) or ())

    def head_metrics(self, head: str | None = None) -> dict[str, Any]:
        """The metrics of ``head`` (default: the primary head's)."""
        head = head or self.primary
        return self.metrics["heads"][head] if "heads" in self.metrics else self.metrics

    def table(self, head: str | None = None) -> str:
        """Per-class IU, accuracy and share of pixels (and boundary F ``BF``, IU by object size
        ``IU-S/M/L`` when computed), then the four metrics, as text."""
        head = head or self.primary
        metrics = self.head_metrics(head)
        columns = boundary_and_size_columns(metrics)
        text = self.matrices[head].table(self.excluded(head), columns=columns)
        more = format_boundary_and_size(metrics)
        return f"{text}\n{more}" if more else text

    def predicted_classes(self, head: str | None = None) -> int:
        """How many classes ``head`` predicted for at least one labelled pixel."""
        return int((self.matrices[head or self.primary].matrix.sum(0) > 0).sum())


def evaluate_model(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    scoring: Scoring | None = None,
    num_classes: int | Mapping[str, int] | None = None,
    heads: Sequence[str] | None = None,
    sliding_window: SlidingWindow | int | None = None,
    flip: bool = False,
    amp: bool = False,
    reduce: bool | None = None,
    on_bad_sample: str = "stop",
    extra: ExtraMetrics | None = None,
    scales: Sequence[float] = (1.0,),
) -> EvalResult:
    """Evaluate ``model`` over ``loader`` (paper Sec. 5) as ``scoring`` says (default: every
    class, ignore label :data:`~fcnkit.data.base.IGNORE_INDEX`); see :func:`evaluate`.

    ``on_bad_sample`` (loaders made with ``catch_bad_samples=True``): ``"stop"`` raises
    :class:`BadSampleError` naming the first bad sample's files, ``"skip"`` scores the others
    and lists the bad ones in ``EvalResult.skipped``. ``extra``: also the boundary F-score
    and IU by object size (:class:`ExtraMetrics`), in each head's metrics.
    """
    scoring = scoring or Scoring()
    start = time.perf_counter()
    counted = _confusion(
        model,
        loader,
        device,
        num_classes=num_classes,
        ignore_index=scoring.ignore_index,
        heads=heads,
        class_names=scoring.class_names,
        sliding_window=sliding_window,
        flip=flip,
        amp=amp,
        reduce=reduce,
        on_bad_sample=on_bad_sample,
        extra=extra,
        scales=scales,
    )
    seconds = time.perf_counter() - start
    matrices, count = counted.matrices, counted.num_images
    metrics = summarize(
        matrices, scoring.exclude, num_images=count, seconds=seconds, extras=counted.extras
    )
    return EvalResult(matrices, metrics, scoring, count, seconds, counted.skipped, counted.extras)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    num_classes: int | Mapping[str, int] | None = None,
    ignore_index: int = IGNORE_INDEX,
    exclude: Exclude = (),
    heads: Sequence[str] | None = None,
    class_names: Names | None = None,
    sliding_window: SlidingWindow | int | None = None,
    flip: bool = False,
    amp: bool = False,
    reduce: bool | None = None,
    extra: ExtraMetrics | None = None,
    scales: Sequence[float] = (1.0,),
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
        ignore_index: label value left out (:data:`~fcnkit.data.base.IGNORE_INDEX`).
        exclude: classes dropped from the means (indices or names), for the primary head, or
            a dict per head (SIFT Flow: ``{"sem": ["cow", "desert", "moon"]}``).
        heads: the heads to evaluate (default: all that have labels).
        class_names: names for the primary head, or a dict per head.
        sliding_window: tile size or :class:`SlidingWindow` for large images.
        flip: average with the horizontally flipped image's scores.
        amp: autocast on CUDA (ignored on CPU).
        reduce: all-reduce across ranks (default: when the loader is sharded).
        extra: also boundary F-score and IU by object size (:class:`ExtraMetrics`).
        scales: multi-scale test-time augmentation (with ``flip``: each scale flipped too),
            :func:`fcnkit.inference.dense_scores` -- the path ``Segmenter`` runs.

    Returns the primary head's metrics (``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``,
    ``per_class_iu``, ``per_class_acc``, ...) plus ``num_images``, ``seconds``,
    ``images_per_s``; multi-head models add ``heads`` (head name -> metrics) and ``head``.
    :func:`evaluate_model` returns the confusion matrices as well.
    """
    scoring = Scoring(class_names, exclude, ignore_index)
    return evaluate_model(
        model,
        loader,
        device,
        scoring=scoring,
        num_classes=num_classes,
        heads=heads,
        sliding_window=sliding_window,
        flip=flip,
        amp=amp,
        reduce=reduce,
        extra=extra,
        scales=scales,
    ).metrics


def summarize(
    matrices: Mapping[str, ConfusionMatrix],
    exclude: Exclude = (),
    *,
    num_images: int | None = None,
    seconds: float | None = None,
    extras: Mapping[str, Sequence[Accumulator]] | None = None,
) -> dict[str, Any]:
    """Metrics dict of :func:`evaluate` from per-head confusion matrices, with each head's
    ``extras`` (:class:`ExtraMetrics` accumulators) computed into its metrics."""
    if not matrices:
        raise ValueError("nothing was evaluated (empty loader?)")
    primary = next(iter(matrices))
    per_head: dict[str, dict[str, Any]] = {}
    for head, m in matrices.items():
        excluded = _per_head(exclude, head, primary) or ()
        metrics = m.compute(excluded)
        for accumulator in (extras or {}).get(head, ()):
            metrics.update(accumulator.compute(excluded))
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
    if primary != SINGLE_HEAD:
        result["head"] = primary
        result["heads"] = per_head
    return result


# ---------------------------------------------------------------------- sample pictures


@torch.no_grad()
def predict_samples(
    model: nn.Module, dataset: Any, n: int, device: torch.device | str | None = None
) -> list[SamplePrediction]:
    """The primary head's predictions for the first ``n`` samples of ``dataset``, whole images
    one at a time; ``dataset`` yields normalised images (the evaluation transform)."""
    module = _unwrap(model)
    if device is None:
        device = next(module.parameters(), torch.empty(0)).device
    was_training = module.training
    module.eval()
    samples = []
    try:
        for i in range(min(n, len(dataset))):
            sample = dataset[i]
            out = module(sample["image"][None].to(device))
            label = sample["label"]
            truth = next(iter(label.values())) if isinstance(label, Mapping) else label
            image = module.preprocessing.denormalize(sample["image"][:3].float())
            image = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            pred = outputs.primary(out)[0].argmax(0)
            samples.append(SamplePrediction(image.cpu().numpy(), truth.numpy(), pred.cpu().numpy()))
    finally:
        module.train(was_training)
    return samples
