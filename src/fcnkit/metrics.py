"""Segmentation metrics of the FCN paper (Sec. 5, "Metrics"), from a confusion matrix.

The matrix ``hist[t, p]`` counts pixels of true class ``t`` predicted as ``p`` over labels in
``[0, n)`` (anything else, e.g. the ignore value 255, is skipped), exactly as the reference
``score.py``. It is accumulated on the device the predictions live on (one ``bincount`` per
batch), reduced across processes with :meth:`ConfusionMatrix.all_reduce`, and turned into:

- pixel accuracy ``sum_i n_ii / sum_i t_i``
- mean accuracy ``(1/n_cl) sum_i n_ii / t_i``
- mean IU ``(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
- frequency-weighted IU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes absent from the labels have no accuracy and classes absent from both labels and
predictions have no IU (NaN); the means skip NaNs (``nanmean``) and any ``exclude``-d classes
(SIFT Flow's cow, desert and moon are absent from its test split).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fcnkit.data.base import IGNORE_INDEX

METRIC_NAMES = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def _checked_classes(num_classes: int, class_names: Sequence[str] | None) -> list[str] | None:
    """``class_names`` as a list after checking them against ``num_classes`` (ValueError)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return list(class_names) if class_names is not None else None


class ConfusionMatrix:
    """An ``n x n`` confusion matrix (rows = truth, columns = prediction) on ``device``.

    Args:
        num_classes: number of classes ``n``; labels outside ``[0, n)`` are ignored.
        ignore_index: label value to skip (also skipped when it lies inside ``[0, n)``).
        device: where the counts live; ``None`` = the device of the first update.
        class_names: optional names, for ``exclude`` by name and for :meth:`table`.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        device: torch.device | str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = _checked_classes(num_classes, class_names)
        self._device = torch.device(device) if device is not None else None
        self.mat: torch.Tensor | None = None
        if self._device is not None:
            self.mat = self._zeros(self._device)

    def _zeros(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.mat.device if self.mat is not None else torch.device("cpu")

    @property
    def matrix(self) -> torch.Tensor:
        """The counts as an ``int64`` tensor (zeros before any update)."""
        if self.mat is None:
            self.mat = self._zeros(torch.device("cpu"))
        return self.mat

    # ----------------------------------------------------------------- accumulate
    @torch.no_grad()
    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Count one batch.

        ``pred`` is a label map shaped like ``label`` (integer dtype) or scores with one more
        dimension, the class dimension just before ``H, W`` (``N x C x H x W`` for
        ``N x H x W`` labels, ``C x H x W`` for ``H x W``), reduced by argmax.
        """
        n = self.num_classes
        if pred.dim() == label.dim() + 1:
            if pred.shape[-3] != n:
                raise ValueError(f"scores have {pred.shape[-3]} channels, expected {n}")
            pred = scores_to_labels(pred, dim=-3)
            from_scores = True
        elif pred.is_floating_point() or pred.is_complex():
            raise TypeError(
                "pred must be an integer label map shaped like label, or scores with a class "
                f"dimension; got {pred.dtype} of shape {tuple(pred.shape)}"
            )
        else:
            from_scores = False
        if pred.shape != label.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}"
            )
        if self.mat is None:
            self.mat = self._zeros(pred.device)
        device = self.mat.device
        pred = pred.to(device=device, dtype=torch.int64).reshape(-1)
        label = label.to(device=device, dtype=torch.int64).reshape(-1)
        keep = (label >= 0) & (label < n)
        if self.ignore_index is not None:
            keep &= label != self.ignore_index
        if not from_scores:  # argmax is always in range; a given label map may not be
            bad = keep & ((pred < 0) | (pred >= n))
            if bool(bad.any()):
                raise ValueError(f"predicted classes must lie in [0, {n}), got {pred[bad][0]}")
        # Skipped pixels go to an extra bin n*n (no boolean indexing: no device sync).
        index = torch.where(keep, label * n + pred, torch.full_like(label, n * n))
        self.mat += torch.bincount(index, minlength=n * n + 1)[: n * n].view(n, n)

    def update_matrix(self, counts: torch.Tensor) -> None:
        """Add raw counts (an ``n x n`` matrix, rows = truth)."""
        if tuple(counts.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"expected a {self.num_classes}^2 matrix, got {tuple(counts.shape)}")
        self.matrix.add_(counts.to(device=self.matrix.device, dtype=torch.int64))

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another shard); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.update_matrix(other.matrix)
        return self

    def reset(self) -> None:
        if self.mat is not None:
            self.mat.zero_()

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all processes (no-op unless torch.distributed is initialised).

        Every rank must call it (a collective); afterwards each holds the global matrix.
        """
        all_reduce_sum(self.matrix)
        return self

    # ----------------------------------------------------------------- metrics
    def _exclude_indices(self, exclude: Iterable[int | str] | None) -> list[int]:
        return exclude_indices(exclude, self.num_classes, self.class_names)

    def compute(self, exclude: Iterable[int | str] | None = None) -> dict[str, Any]:
        """The reference metrics (paper Sec. 5) as Python floats.

        Returns ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu`` and per-class lists
        ``per_class_iu``, ``per_class_acc`` (NaN for classes without truth / without truth
        and prediction), ``per_class_freq`` and ``num_pixels``. ``exclude`` (indices, or names
        when ``class_names`` were given) drops classes from ``mean_acc``, ``mean_iu`` and
        ``fw_iu``; ``pixel_acc`` counts every labelled pixel as the reference does. With no
        labelled pixel at all, every metric is NaN.
        """
        hist = self.matrix.detach().to("cpu", torch.float64)
        diag = hist.diagonal()
        truth = hist.sum(dim=1)  # t_i
        predicted = hist.sum(dim=0)
        total = truth.sum()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        with torch.no_grad():
            acc = torch.where(truth > 0, diag / truth.clamp(min=1), nan)
            union = truth + predicted - diag
            iu = torch.where(union > 0, diag / union.clamp(min=1), nan)
            freq = truth / total if total > 0 else torch.zeros_like(truth)
        keep = torch.ones(self.num_classes, dtype=torch.bool)
        keep[self._exclude_indices(exclude)] = False
        counted = keep & (freq > 0) & ~iu.isnan()
        return {
            "pixel_acc": float(diag.sum() / total) if total > 0 else math.nan,
            "mean_acc": _nanmean(acc[keep]),
            "mean_iu": _nanmean(iu[keep]),
            "fw_iu": float((freq[counted] * iu[counted]).sum()) if total > 0 else math.nan,
            "per_class_iu": iu.tolist(),
            "per_class_acc": acc.tolist(),
            "per_class_freq": freq.tolist(),
            "num_pixels": int(total),
        }

    def normalized(self) -> torch.Tensor:
        """Row-normalised matrix (each truth row sums to 1; rows without truth are 0)."""
        hist = self.matrix.detach().to("cpu", torch.float64)
        return hist / hist.sum(dim=1, keepdim=True).clamp(min=1)

    def table(
        self,
        exclude: Iterable[int | str] | None = None,
        class_names: Sequence[str] | None = None,
        columns: Mapping[str, Sequence[float]] | None = None,
    ) -> str:
        """A per-class text table (IU, accuracy, share of pixels, then any further ``columns``:
        header -> per-class fractions, e.g. boundary F) and the four metrics."""
        names = list(class_names or self.class_names or [str(i) for i in range(self.num_classes)])
        excluded = set(self._exclude_indices(exclude))
        m = self.compute(exclude)
        columns = dict(columns or {})
        width = max(8, *(len(s) for s in names))
        more = "".join(f"  {head:>6}" for head in columns)
        lines = [f"{'class':<{width}}  {'IU':>6}  {'acc':>6}  {'pixels':>6}{more}"]
        for i, name in enumerate(names):
            note = "  (excluded)" if i in excluded else ""
            values = "".join(f"  {_pct(column[i])}" for column in columns.values())
            lines.append(
                f"{name:<{width}}  {_pct(m['per_class_iu'][i])}  {_pct(m['per_class_acc'][i])}"
                f"  {_pct(m['per_class_freq'][i])}{values}{note}"
            )
        lines.append("-" * len(lines[0]))
        lines.append(format_metrics(m))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self.device}, pixels={int(self.matrix.sum())})"
        )


def scores_to_labels(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Argmax over the class dimension (first index on ties, as ``argmax``).

    ``max(dim).indices`` gives the same labels several times faster than ``argmax`` over a
    non-innermost dimension on the CPU (3-10x measured for 7-33 classes).
    """
    return scores.max(dim=dim).indices


def _nanmean(values: torch.Tensor) -> float:
    values = values[~values.isnan()]
    return float(values.mean()) if values.numel() else math.nan


def _pct(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """``pixel acc 91.20  mean acc 80.01  mean IU 70.55  f.w. IU 85.10`` (percent)."""
    labels = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "mean_iu": "mean IU"}
    labels["fw_iu"] = "f.w. IU"
    return "  ".join(f"{labels[k]} {_pct(metrics[k]).strip()}" for k in METRIC_NAMES)


# ----------------------------------------------------------------- shared helpers


def exclude_indices(
    exclude: Iterable[int | str] | None, num_classes: int, class_names: Sequence[str] | None
) -> list[int]:
    """The sorted class indices named by ``exclude`` (indices, or names in ``class_names``)."""
    indices = []
    for item in exclude or ():
        if isinstance(item, str):
            if class_names is None or item not in class_names:
                known = ", ".join(class_names) if class_names else "none given"
                raise ValueError(f"cannot exclude unknown class {item!r} (classes: {known})")
            indices.append(list(class_names).index(item))
        else:
            index = int(item)
            if not 0 <= index < num_classes:
                raise ValueError(f"excluded class index {index} not in [0, {num_classes})")
            indices.append(index)
    return sorted(set(indices))


def all_reduce_sum(counts: torch.Tensor) -> None:
    """Sum ``counts`` in place over all processes (a collective every rank must call; a no-op
    unless torch.distributed is initialised with more than one process). Under NCCL, CPU
    counts travel through the current CUDA device."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and counts.device.type != "cuda":
            cuda = counts.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(cuda)
            counts.copy_(cuda.to(counts.device))
        else:
            dist.all_reduce(counts)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as floats, NaN where ``den`` is 0."""
    out = np.full(np.shape(num), math.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean_kept(values: np.ndarray, keep: np.ndarray) -> float:
    kept = values[keep]
    kept = kept[~np.isnan(kept)]
    return float(kept.mean()) if kept.size else math.nan


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


# ----------------------------------------------------------------- per-image accumulators


class _ImageCounts:
    """Per-class integer counts accumulated image by image on the CPU (NumPy/SciPy), summed
    over processes like :class:`ConfusionMatrix`. Subclasses define ``_shape`` (the counts'
    shape, classes last), ``_settings`` (what must agree to merge) and ``_count_image``."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = _checked_classes(num_classes, class_names)
        self.counts = np.zeros(self._shape(), dtype=np.int64)

    def _shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _settings(self) -> tuple[Any, ...]:
        return (self.num_classes, self.ignore_index)

    def _count_image(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        raise NotImplementedError

    def update(self, pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Count a batch (``N x H x W``) or one image (``H x W``): ``pred`` a label map shaped
        like ``label``, or scores with a class dimension just before ``H, W`` (argmax)."""
        pred, label = torch.as_tensor(pred), torch.as_tensor(label)
        n = self.num_classes
        if pred.dim() == label.dim() + 1:
            if pred.shape[-3] != n:
                raise ValueError(f"scores have {pred.shape[-3]} channels, expected {n}")
            pred = scores_to_labels(pred, dim=-3)
        elif pred.is_floating_point() or pred.is_complex():
            raise TypeError(
                "pred must be an integer label map shaped like label, or scores with a class "
                f"dimension; got {pred.dtype} of shape {tuple(pred.shape)}"
            )
        if pred.shape != label.shape or label.dim() not in (2, 3):
            raise ValueError(
                f"expected H x W or N x H x W label maps of one shape, got prediction "
                f"{tuple(pred.shape)} and label {tuple(label.shape)}"
            )
        preds = pred.detach().cpu().reshape(-1, *pred.shape[-2:]).numpy()
        truths = label.detach().cpu().reshape(-1, *label.shape[-2:]).numpy()
        for p, t in zip(preds, truths, strict=True):
            valid = (t >= 0) & (t < n)
            if self.ignore_index is not None:
                valid &= t != self.ignore_index
            bad = valid & ((p < 0) | (p >= n))
            if bad.any():
                raise ValueError(f"predicted classes must lie in [0, {n}), got {p[bad][0]}")
            self._count_image(p.astype(np.int64), t.astype(np.int64), valid)

    def merge(self, other: _ImageCounts) -> _ImageCounts:
        """Add another accumulator's counts (e.g. another shard's); returns self."""
        if type(other) is not type(self) or other._settings() != self._settings():
            raise ValueError(f"cannot merge {other!r} into {self!r}: different settings")
        self.counts += other.counts
        return self

    def all_reduce(self) -> _ImageCounts:
        """Sum the counts over all processes (see :func:`all_reduce_sum`); returns self."""
        shared = torch.from_numpy(self.counts)  # shares memory: reduced in place
        all_reduce_sum(shared)
        return self

    def reset(self) -> None:
        self.counts[...] = 0

    def _keep(self, exclude: Iterable[int | str] | None) -> np.ndarray:
        keep = np.ones(self.num_classes, dtype=bool)
        keep[exclude_indices(exclude, self.num_classes, self.class_names)] = False
        return keep

    def __repr__(self) -> str:
        settings = ", ".join(repr(s) for s in self._settings())
        return f"{type(self).__name__}({settings})"


# ----------------------------------------------------------------- boundary F-score

DEFAULT_BOUNDARY_TOLERANCE = "0.75%"  # of the image diagonal, as Csurka et al. (BMVC 2013)


def boundary_tolerance_px(tolerance: float | str, height: int, width: int) -> float:
    """The matching distance in pixels for an ``height x width`` image: a number is pixels, a
    string ``"X%"`` is X percent of the image diagonal (``"0.75%"``: 2.7 px at 256 x 256, 4.7
    px at 500 x 375)."""
    text = str(tolerance).strip()
    try:
        value = float(text[:-1]) if text.endswith("%") else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            "the boundary tolerance must be pixels (e.g. 2) or a percentage of the image "
            f"diagonal (e.g. 0.75%), at least 0; got {tolerance!r}"
        )
    return value / 100 * math.hypot(height, width) if text.endswith("%") else value


def label_boundaries(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The boundary pixels of an ``H x W`` label map: valid pixels with a valid 4-neighbour
    (up, down, left, right) of another label. Pixels outside ``valid`` (the ignore label) are
    never boundary pixels and never make their neighbours one; the image edge is no boundary.
    Each boundary pixel belongs to its own label's boundary: a line between classes a and b
    gives a's boundary on a's side and b's on b's side."""
    edges = np.zeros(labels.shape, dtype=bool)
    down = (labels[1:, :] != labels[:-1, :]) & valid[1:, :] & valid[:-1, :]
    edges[1:, :] |= down
    edges[:-1, :] |= down
    right = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    edges[:, 1:] |= right
    edges[:, :-1] |= right
    return edges


def match_boundaries(
    true_yx: tuple[np.ndarray, np.ndarray], pred_yx: tuple[np.ndarray, np.ndarray], tolerance: float
) -> tuple[int, int]:
    """``(predicted matched, true matched)``: predicted boundary pixels with a true one within
    Euclidean distance ``tolerance`` (inclusive), and true ones with a predicted one within it.

    Distances come from ``scipy.ndimage.distance_transform_edt`` on the bounding box of both
    pixel sets (exact: every pixel that can be nearest lies inside it)."""
    if len(true_yx[0]) == 0 or len(pred_yx[0]) == 0:
        return 0, 0
    from scipy import ndimage

    ys = np.concatenate([true_yx[0], pred_yx[0]])
    xs = np.concatenate([true_yx[1], pred_yx[1]])
    y0, x0 = int(ys.min()), int(xs.min())
    shape = (int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1)
    true_at = (true_yx[0] - y0, true_yx[1] - x0)
    pred_at = (pred_yx[0] - y0, pred_yx[1] - x0)
    not_true = np.ones(shape, dtype=bool)
    not_true[true_at] = False
    not_pred = np.ones(shape, dtype=bool)
    not_pred[pred_at] = False
    to_true = ndimage.distance_transform_edt(not_true)
    to_pred = ndimage.distance_transform_edt(not_pred)
    return int((to_true[pred_at] <= tolerance).sum()), int((to_pred[true_at] <= tolerance).sum())


class BoundaryFScore(_ImageCounts):
    """Boundary F-score per class and its mean (Csurka, Larlus & Perronnin, "What is a good
    evaluation measure for semantic segmentation?", BMVC 2013; the DAVIS contour measure).

    A class's boundary in a label map is :func:`label_boundaries` (4-neighbours) of that map
    restricted to the class. Ignore handling: pixels whose truth is the ignore label (or out of
    ``[0, n)``) are removed from *both* maps before boundaries are traced, so they are never
    boundary pixels, a pixel next to them is a boundary only if a labelled 4-neighbour has
    another label, and predictions inside the ignored area are not looked at. (On datasets
    that draw a void band along object contours, as PASCAL VOC does, most object boundaries
    therefore vanish from both maps; the score then measures the boundaries between touching
    labelled regions only.)

    A predicted boundary pixel of class c is matched when a true boundary pixel of c lies within
    ``tolerance`` (Euclidean, inclusive; :func:`boundary_tolerance_px`: pixels, or ``"X%"`` of
    the image diagonal; default 0.75% as Csurka et al., who chose it as the distance up to
    which human annotations of one contour agree), and symmetrically for recall. Per class the
    counts (matched / all predicted boundary pixels, matched / all true ones) are summed over
    the images, so precision, recall and F are dataset-level ratios (Csurka et al. average
    per-image scores instead; sums keep it additive over shards and batches).

    F = 2PR / (P + R); a class with true boundary pixels but no predicted ones (or the
    reverse) scores 0; a class with neither is NaN and, like ``exclude``-d classes, skipped
    by the mean (as :meth:`ConfusionMatrix.compute`).
    """

    COUNTERS = ("pred_matched", "pred_total", "true_matched", "true_total")

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        *,
        tolerance: float | str = DEFAULT_BOUNDARY_TOLERANCE,
    ) -> None:
        boundary_tolerance_px(tolerance, 1, 1)  # a clear error now, not at the first image
        self.tolerance = tolerance
        super().__init__(num_classes, ignore_index, class_names)

    def _shape(self) -> tuple[int, ...]:
        return (len(self.COUNTERS), self.num_classes)

    def _settings(self) -> tuple[Any, ...]:
        return (self.num_classes, self.ignore_index, self.tolerance)

    def _count_image(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        tolerance = boundary_tolerance_px(self.tolerance, *truth.shape)
        ty, tx = np.nonzero(label_boundaries(truth, valid))
        py, px = np.nonzero(label_boundaries(pred, valid))
        true_class, pred_class = truth[ty, tx], pred[py, px]
        for c in np.union1d(true_class, pred_class):
            t, p = true_class == c, pred_class == c
            pred_hit, true_hit = match_boundaries((ty[t], tx[t]), (py[p], px[p]), tolerance)
            self.counts[:, c] += (pred_hit, int(p.sum()), true_hit, int(t.sum()))

    def compute(self, exclude: Iterable[int | str] | None = None) -> dict[str, Any]:
        """``boundary_f`` (mean over classes), ``boundary_precision``, ``boundary_recall`` (their
        means), ``per_class_boundary_{f,precision,recall}`` (NaN: undefined), the
        ``boundary_tolerance`` and the raw ``boundary_counts`` (per counter, per class)."""
        pred_hit, pred_all, true_hit, true_all = self.counts
        precision, recall = _ratio(pred_hit, pred_all), _ratio(true_hit, true_all)
        p, r = np.nan_to_num(precision), np.nan_to_num(recall)
        f = _ratio(2 * p * r, p + r)
        f[np.isnan(f)] = 0.0  # one side has no matched pixel (or no pixel at all)
        f[(pred_all == 0) & (true_all == 0)] = math.nan
        keep = self._keep(exclude)
        return {
            "boundary_f": _mean_kept(f, keep),
            "boundary_precision": _mean_kept(precision, keep),
            "boundary_recall": _mean_kept(recall, keep),
            "per_class_boundary_f": _floats(f),
            "per_class_boundary_precision": _floats(precision),
            "per_class_boundary_recall": _floats(recall),
            "boundary_tolerance": self.tolerance,
            "boundary_counts": {
                k: v.tolist() for k, v in zip(self.COUNTERS, self.counts, strict=True)
            },
        }


# ----------------------------------------------------------------- IU by object size

SIZE_BUCKETS = ("small", "medium", "large")
# COCO's object areas 32^2 and 96^2 px (Lin et al., ECCV 2014, "Microsoft COCO", the
# detection evaluation) relative to COCO's typical 640 x 480 image: 1/300 and 3% of the area.
DEFAULT_SIZE_THRESHOLDS = (32**2 / (640 * 480), 96**2 / (640 * 480))
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def size_buckets(areas: np.ndarray, image_area: int, thresholds: Sequence[float]) -> np.ndarray:
    """Bucket index (0 small, 1 medium, 2 large) of regions of ``areas`` pixels: small below
    ``thresholds[0] * image_area``, large from ``thresholds[1] * image_area``."""
    limits = np.asarray(thresholds, dtype=np.float64) * image_area
    return np.searchsorted(limits, np.asarray(areas, dtype=np.float64), side="right")


class SizeIU(_ImageCounts):
    """IU by object size: per class and per size bucket (small / medium / large).

    Objects: the connected regions (8-connected) of each class in the ground truth of each
    image. Buckets by area as a fraction of the image's area (``thresholds``, default COCO's
    32² and 96² px scaled from a 640 x 480 image: small < 1/300 of the image, medium < 3%,
    large the rest; 218 / 1966 px at 256 x 256), so a bucket means the same share of the
    view on any image size.

    Counts, for class c and bucket b, over labelled pixels only (the truth not the ignore
    label, as the confusion matrix):

    - TP: pixels of c's bucket-b regions predicted c; FN: the other pixels of those regions;
    - FP: pixels predicted c whose truth is another class, each given to the true c-region
      nearest to it (Euclidean, ``scipy.ndimage.distance_transform_edt``; exact ties as it
      breaks them) and counted in that region's bucket; in an image without any true c pixel
      each connected region of the c prediction (inside the labelled area) is a false
      object, counted in the bucket of its own area.

    Every pixel of the confusion matrix's TP, FN and FP of c is counted in exactly one bucket,
    so the buckets split c's IU: IU_b(c) = TP / (TP + FN + FP), NaN without any count (and
    skipped, like ``exclude``-d classes, by the mean over classes of each bucket).
    """

    COUNTERS = ("tp", "fn", "fp", "regions")

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        *,
        thresholds: Sequence[float] = DEFAULT_SIZE_THRESHOLDS,
    ) -> None:
        small, large = (float(t) for t in thresholds)
        if not 0 < small <= large <= 1:
            raise ValueError(
                "size thresholds must be two fractions of the image area with "
                f"0 < small <= large <= 1; got {tuple(thresholds)!r}"
            )
        self.thresholds = (small, large)
        super().__init__(num_classes, ignore_index, class_names)

    def _shape(self) -> tuple[int, ...]:
        return (len(self.COUNTERS), len(SIZE_BUCKETS), self.num_classes)

    def _settings(self) -> tuple[Any, ...]:
        return (self.num_classes, self.ignore_index, self.thresholds)

    def _count_image(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        from scipy import ndimage

        nb = len(SIZE_BUCKETS)
        present = np.unique(truth[valid])
        for c in present:
            mine = valid & (truth == c)
            regions, k = ndimage.label(mine, structure=_EIGHT_NEIGHBOURS)
            bucket = size_buckets(np.bincount(regions.ravel())[1:], truth.size, self.thresholds)
            hit = mine & (pred == c)
            self.counts[0, :, c] += np.bincount(bucket[regions[hit] - 1], minlength=nb)
            self.counts[1, :, c] += np.bincount(bucket[regions[mine & ~hit] - 1], minlength=nb)
            self.counts[3, :, c] += np.bincount(bucket, minlength=nb)
            false = valid & (pred == c) & ~mine
            if false.any():
                iy, ix = ndimage.distance_transform_edt(
                    ~mine, return_distances=False, return_indices=True
                )
                nearest = regions[iy[false], ix[false]]
                self.counts[2, :, c] += np.bincount(bucket[nearest - 1], minlength=nb)
        for c in np.setdiff1d(np.unique(pred[valid]), present):
            blobs, _ = ndimage.label(valid & (pred == c), structure=_EIGHT_NEIGHBOURS)
            areas = np.bincount(blobs.ravel())[1:]
            bucket = size_buckets(areas, truth.size, self.thresholds)
            np.add.at(self.counts[2, :, c], bucket, areas)

    def compute(self, exclude: Iterable[int | str] | None = None) -> dict[str, Any]:
        """``size_iu`` (bucket -> mean IU over classes), ``per_class_size_iu`` (bucket ->
        per-class IU, NaN without counts), ``size_regions`` (bucket -> true regions per class)
        and the ``size_thresholds``."""
        tp, fn, fp, regions = self.counts
        iu = _ratio(tp, tp + fn + fp)
        keep = self._keep(exclude)
        return {
            "size_iu": {b: _mean_kept(iu[i], keep) for i, b in enumerate(SIZE_BUCKETS)},
            "per_class_size_iu": {b: _floats(iu[i]) for i, b in enumerate(SIZE_BUCKETS)},
            "size_regions": {b: regions[i].tolist() for i, b in enumerate(SIZE_BUCKETS)},
            "size_thresholds": list(self.thresholds),
        }


def boundary_and_size_columns(metrics: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-class table columns for the metrics present: ``BF`` (boundary F) and ``IU-S``,
    ``IU-M``, ``IU-L`` (IU by object size)."""
    columns = {}
    if "per_class_boundary_f" in metrics:
        columns["BF"] = list(metrics["per_class_boundary_f"])
    for bucket, values in (metrics.get("per_class_size_iu") or {}).items():
        columns[f"IU-{bucket[0].upper()}"] = list(values)
    return columns


def format_boundary_and_size(metrics: Mapping[str, Any]) -> str:
    """``boundary F 61.20 (P 60.10 R 62.30, tolerance 0.75%)  IU small 20.10 medium ...``
    (percent) for the metrics present; empty when neither was computed."""
    parts = []
    if "boundary_f" in metrics:
        tolerance = str(metrics["boundary_tolerance"])
        tolerance += " of the diagonal" if tolerance.endswith("%") else " px"
        parts.append(
            f"boundary F {_pct(metrics['boundary_f']).strip()} (P "
            f"{_pct(metrics['boundary_precision']).strip()} R "
            f"{_pct(metrics['boundary_recall']).strip()}, tolerance {tolerance})"
        )
    if "size_iu" in metrics:
        sizes = " ".join(f"{b} {_pct(v).strip()}" for b, v in metrics["size_iu"].items())
        parts.append(f"IU by size: {sizes}")
    return "  ".join(parts)
