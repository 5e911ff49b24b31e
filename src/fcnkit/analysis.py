"""The paper's stride-label upper bound (Long et al., CVPR 2015, Appendix A, "Upper Bounds
on IU").

A net whose output has stride ``s`` predicts one label per ``s x s`` cell at best. The paper
bounds what such a net can score by downsampling the ground truth by ``s`` and upsampling it
back, and scoring these labels against the originals: mean IU 50.9 / 73.3 / 86.1 / 92.8 /
96.4 / 98.5 at factors 128 / 64 / 32 / 16 / 8 / 4 on a subset of PASCAL VOC 2011 val, i.e.
mean IU tolerates coarse output and stride 8 is near perfect.

Here, for a label map ``H x W`` and a stride ``s``:

- the cells are the ``s x s`` blocks of a grid anchored at pixel (0, 0); the last row and
  column of cells hold what is left (``ceil(H / s) x ceil(W / s)`` cells);
- **majority** (the best single label of a cell): the class with the most labelled pixels
  in the cell; pixels with the ignore label do not vote. **Ties go to the smallest class
  index.** A cell without labelled pixels has no label (it scores nothing: all its pixels
  are ignored in the truth);
- **nearest** (plain subsampling): the label of the cell's centre pixel, row ``i s + s // 2``
  (the lower/right of the two middle pixels for even ``s``), clamped to the last row of the
  image for a partial cell, likewise for columns. When that pixel is unlabelled the cell
  predicts nothing: its labelled pixels count as errors charged to no class (they lower their
  class's accuracy and IU, and no other class's IU);
- upsampling back is nearest: every pixel takes its cell's label.

The four metrics are :class:`fcnkit.metrics.ConfusionMatrix`'s (the reference ``score.py``),
with the dataset's ``ignore_index`` and ``eval_exclude``; beyond them (by default, as
``fcnkit eval``), the boundary F-score and IU by object size of :mod:`fcnkit.metrics`, which
bound what a stride-``s`` net can score on those too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fcnkit.data.base import IGNORE_INDEX
from fcnkit.metrics import METRIC_NAMES, SIZE_BUCKETS, BoundaryFScore, ConfusionMatrix, SizeIU

__all__ = [
    "BOUND_METHODS",
    "DEFAULT_STRIDES",
    "PAPER_STRIDE_BOUND",
    "StrideBound",
    "coarse_labels",
    "stride_bound",
    "stride_labels",
    "upsample_cells",
]

DEFAULT_STRIDES = (4, 8, 16, 32, 64, 128)
BOUND_METHODS = ("majority", "nearest")
# Appendix A of the paper (arXiv v2+): mean IU (%) of ground truth downsampled by each factor
# and upsampled again, on a subset of PASCAL VOC 2011 val.
PAPER_STRIDE_BOUND = {128: 50.9, 64: 73.3, 32: 86.1, 16: 92.8, 8: 96.4, 4: 98.5}


def _check_setting(stride: int, method: str) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if method not in BOUND_METHODS:
        raise ValueError(f"method must be one of {', '.join(BOUND_METHODS)}, got {method!r}")


def _check(label: torch.Tensor, stride: int, method: str) -> None:
    if label.dim() != 2:
        raise ValueError(f"expected an H x W label map, got shape {tuple(label.shape)}")
    _check_setting(stride, method)


def coarse_labels(
    label: torch.Tensor,
    stride: int,
    num_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    method: str = "majority",
    unlabelled: int | None = None,
) -> torch.Tensor:
    """One label per ``stride x stride`` cell: ``ceil(H / s) x ceil(W / s)``, int64.

    ``method``: ``"majority"`` (most frequent labelled class, ties to the smallest index) or
    ``"nearest"`` (the cell's centre pixel), see the module docstring. Pixels equal to
    ``ignore_index`` or outside ``[0, num_classes)`` are unlabelled; a cell with no label
    gets ``unlabelled`` (default: ``ignore_index``, or ``num_classes`` when that is ``None``).
    """
    _check(label, stride, method)
    if unlabelled is None:
        unlabelled = num_classes if ignore_index is None else ignore_index
    label = label.to(torch.int64)
    valid = (label >= 0) & (label < num_classes)
    if ignore_index is not None:
        valid &= label != ignore_index
    h, w = label.shape
    hc, wc = -(-h // stride), -(-w // stride)
    if method == "nearest":
        rows = torch.clamp(torch.arange(hc) * stride + stride // 2, max=h - 1)
        cols = torch.clamp(torch.arange(wc) * stride + stride // 2, max=w - 1)
        picked = label[rows][:, cols]
        return torch.where(valid[rows][:, cols], picked, torch.full_like(picked, unlabelled))
    # majority: a histogram per cell; unlabelled pixels go to an extra bin that never wins
    bins = num_classes + 1
    cls = torch.where(valid, label, torch.full_like(label, num_classes))
    cell = (torch.arange(h) // stride)[:, None] * wc + (torch.arange(w) // stride)[None, :]
    counts = torch.bincount((cell * bins + cls).reshape(-1), minlength=hc * wc * bins)
    counts = counts.view(hc, wc, bins)[..., :num_classes]
    best = counts.argmax(dim=-1)  # the first maximal index: ties go to the smallest class
    return torch.where(counts.sum(dim=-1) > 0, best, torch.full_like(best, unlabelled))


def upsample_cells(coarse: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of a cell map: pixel ``(r, c)`` takes cell ``(r // s, c // s)``."""
    h, w = size
    rows = torch.arange(h) // stride
    cols = torch.arange(w) // stride
    return coarse[rows][:, cols]


def stride_labels(
    label: torch.Tensor,
    stride: int,
    num_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    method: str = "majority",
    unlabelled: int | None = None,
) -> torch.Tensor:
    """``label`` downsampled by ``stride`` (:func:`coarse_labels`) and upsampled back to its
    size: the best prediction a stride-``s`` predictor can make under ``method``."""
    coarse = coarse_labels(
        label,
        stride,
        num_classes,
        ignore_index=ignore_index,
        method=method,
        unlabelled=unlabelled,
    )
    return upsample_cells(coarse, stride, (label.shape[0], label.shape[1]))


@dataclass
class StrideBound:
    """The bound on one dataset split: ``metrics[target][method][stride]`` -> the four
    metrics (fractions) and per-class lists of :meth:`fcnkit.metrics.ConfusionMatrix.compute`.

    ``target`` is ``""`` for single-label datasets, else the label name (SIFT Flow ``sem``,
    ``geo``). ``classes[target]`` and ``exclude[target]`` are the classes and the classes
    left out of the means.
    """

    strides: tuple[int, ...]
    methods: tuple[str, ...]
    classes: dict[str, list[str]]
    exclude: dict[str, list[str]]
    ignore_index: int | None
    num_images: int = 0
    seconds: float = 0.0
    metrics: dict[str, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)

    def table(self, target: str | None = None) -> str:
        """A text table (percent): one row per stride, each method's four metrics."""
        return self._table(target, {k: _HEADER[k] for k in METRIC_NAMES})

    def beyond_table(self, target: str | None = None) -> str:
        """Boundary F and IU small / medium / large per stride and method (percent); empty
        when neither was computed."""
        target = next(iter(self.metrics)) if target is None else target
        first = self.metrics[target][self.methods[0]][self.strides[0]]
        columns = {"boundary_f": "bound. F"} if "boundary_f" in first else {}
        if "size_iu" in first:
            columns.update({f"size_iu.{b}": f"IU {b}" for b in SIZE_BUCKETS})
        return self._table(target, columns) if columns else ""

    def _table(self, target: str | None, columns: dict[str, str]) -> str:
        """One row per stride; for each method the ``columns`` (key -> header)."""
        target = next(iter(self.metrics)) if target is None else target
        top = " " * 6 + "".join(f" | {method:<40}" for method in self.methods)
        head = "stride |" + " |".join(
            "".join(f"{name:>10}" for name in columns.values()) for _ in self.methods
        )
        lines = [top.rstrip(), head]
        for s in self.strides:
            cells = [
                "".join(f"{_pct(_value(self.metrics[target][m][s], k)):>10}" for k in columns)
                for m in self.methods
            ]
            lines.append(f"{s:>6} |" + " |".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the four metrics per target, method and stride (fractions), per-class
        IU, and the setting."""
        return {
            "strides": list(self.strides),
            "methods": list(self.methods),
            "classes": self.classes,
            "exclude": self.exclude,
            "ignore_index": self.ignore_index,
            "num_images": self.num_images,
            "seconds": self.seconds,
            "metrics": {
                t: {
                    method: {
                        str(s): {
                            **{k: m[k] for k in METRIC_NAMES},
                            "per_class_iu": m["per_class_iu"],
                            "num_pixels": m["num_pixels"],
                            **{k: m[k] for k in _BEYOND_KEYS if k in m},
                        }
                        for s, m in by_stride.items()
                    }
                    for method, by_stride in by_method.items()
                }
                for t, by_method in self.metrics.items()
            },
        }


_HEADER = {
    "pixel_acc": "pixel acc",
    "mean_acc": "mean acc",
    "mean_iu": "mean IU",
    "fw_iu": "f.w. IU",
}


#: what the bound keeps of the boundary F-score's and size IU's ``compute()``
_BEYOND_KEYS = (
    "boundary_f", "boundary_precision", "boundary_recall", "per_class_boundary_f",
    "boundary_tolerance", "size_iu", "per_class_size_iu", "size_thresholds",
)  # fmt: skip


def _value(metrics: dict[str, Any], key: str) -> float:
    """``mean_iu``, ``boundary_f`` or ``size_iu.small`` ... of one bound's metrics."""
    name, _, bucket = key.partition(".")
    return metrics[name][bucket] if bucket else metrics[name]


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _targets(dataset: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Classes and excluded classes per target (``""`` for a single-label dataset)."""
    excluded = list(getattr(dataset, "eval_exclude", []) or [])
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, Mapping) and targets:
        classes = {t: list(c) for t, c in targets.items()}
    else:
        classes = {"": list(dataset.classes)}
    return classes, {t: [e for e in excluded if e in c] for t, c in classes.items()}


_NO_PREDICTION = "(no prediction)"


def stride_bound(
    dataset: Any,
    strides: Sequence[int] = DEFAULT_STRIDES,
    methods: Sequence[str] = BOUND_METHODS,
    *,
    targets: Iterable[str] | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    boundary_f: bool = True,
    size_iu: bool = True,
) -> StrideBound:
    """The stride-label upper bound of ``dataset`` (samples ``{"label": ...}``, a tensor or a
    dict of tensors per target) at each stride, for each method.

    Each confusion matrix has one column more than the target has classes: the "no
    prediction" of a nearest-sampled cell whose centre is unlabelled (an error charged to no
    class); it is left out of every mean. ``targets`` picks labels of a multi-target dataset
    (default: all); ``limit`` the first N samples; ``progress(done, total)`` is called after
    each sample. ``boundary_f`` / ``size_iu``: also the boundary F-score and IU by object
    size (default tolerance and size buckets of :mod:`fcnkit.metrics`).
    """
    strides, methods = tuple(strides), tuple(methods)
    if not strides or not methods:
        raise ValueError("give at least one stride and one method")
    for s in strides:
        for method in methods:
            _check_setting(s, method)
    classes, exclude = _pick_targets(dataset, targets)
    ignore_index = getattr(dataset, "ignore_index", IGNORE_INDEX)
    kinds = [ConfusionMatrix]
    kinds += [BoundaryFScore] if boundary_f else []
    kinds += [SizeIU] if size_iu else []
    # one column more than the classes: "no prediction" (see above), in every accumulator
    matrices = {
        t: {
            method: {
                s: [kind(len(names) + 1, ignore_index, class_names=[*names, _NO_PREDICTION])
                    for kind in kinds]
                for s in strides
            }
            for method in methods
        }
        for t, names in classes.items()
    }  # fmt: skip
    total = len(dataset) if limit is None else min(limit, len(dataset))
    start = time.perf_counter()
    for i in range(total):
        label = dataset[i]["label"]
        for t, names in classes.items():
            _score_sample(label if t == "" else label[t], i, len(names), ignore_index, matrices[t])
        if progress is not None:
            progress(i + 1, total)
    result = StrideBound(strides, methods, classes, exclude, ignore_index, total)
    result.seconds = time.perf_counter() - start
    for t, by_method in matrices.items():
        result.metrics[t] = {
            method: {
                s: _drop_last_class(
                    {
                        k: v
                        for acc in accs
                        for k, v in acc.compute([*exclude[t], _NO_PREDICTION]).items()
                    }
                )
                for s, accs in by_stride.items()
            }
            for method, by_stride in by_method.items()
        }
    return result


def _pick_targets(
    dataset: Any, targets: Iterable[str] | None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(classes, excluded classes)`` per target, restricted to ``targets`` when given."""
    classes, exclude = _targets(dataset)
    if targets is None:
        return classes, exclude
    wanted = list(targets)
    unknown = [t for t in wanted if t not in classes]
    if unknown:
        known = ", ".join(t for t in classes if t) or "none (a single label map)"
        raise ValueError(f"unknown target(s) {', '.join(unknown)}; the dataset has {known}")
    return {t: classes[t] for t in wanted}, {t: exclude[t] for t in wanted}


def _score_sample(truth: Any, index: int, n: int, ignore_index: int | None, matrices: dict) -> None:
    """Add one label map's stride labels to ``matrices[method][stride]``."""
    if not isinstance(truth, torch.Tensor):  # a dict label without target "" etc.
        raise ValueError(f"sample {index}: the label is not a tensor")
    truth = truth.to(torch.int64)
    valid = (truth >= 0) & (truth < n)
    if ignore_index is not None:
        valid &= truth != ignore_index
    # truth outside the classes is ignored (as by the metrics), never class n
    scored = torch.where(valid, truth, torch.full_like(truth, -1))
    for method, by_stride in matrices.items():
        for s, accumulators in by_stride.items():
            pred = stride_labels(
                truth, s, n, ignore_index=ignore_index, method=method, unlabelled=n
            )
            for accumulator in accumulators:
                accumulator.update(pred, scored)


def _drop_last_class(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without the per-class entries of the "no prediction" column."""
    out = dict(metrics)
    for key in ("per_class_iu", "per_class_acc", "per_class_freq", "per_class_boundary_f",
                "per_class_boundary_precision", "per_class_boundary_recall"):  # fmt: skip
        if key in out:
            out[key] = list(out[key][:-1])
    for key in ("per_class_size_iu", "size_regions"):
        if key in out:
            out[key] = {b: list(v[:-1]) for b, v in out[key].items()}
    out.pop("boundary_counts", None)  # raw counts with the extra column
    return out
