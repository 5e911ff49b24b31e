"""Pixelwise cross-entropy for FCNs (paper Sec. 3 and 4.3).

The loss is a sum over the spatial output of per-pixel softmax losses; pixels labelled
``ignore_index`` (255: VOC's boundary band, padding) contribute nothing; any other label
outside ``[0, C)`` is an error (a dataset / model class-count mismatch), never silently
dropped. Two normalisations:

- ``normalize=True``: mean over labelled pixels (goes with lr ~1e-4 for VGG16, SGD, Sec. 4.3);
- ``normalize=False``: summed over pixels, averaged over the images of the batch (the Caffe
  reference's "heavy" ``normalize: false`` loss; goes with lr 1e-10 / 1e-12 / 1e-14).

**Loss sampling** (Sec. 4.3, "patchwise training is loss sampling"): the paper ignores each
*final-layer cell* with probability ``1 - p``, i.e. each block of ``sample_cell x sample_cell``
output pixels (32: one block per position of FCN-32s's stride-32 score map) is kept or
dropped as a whole (``sample_unit="cell"``, the default); ``sample_unit="pixel"`` keeps each
pixel's term independently instead (a finer, less correlated sampling the paper does not
use). Dropped pixels are treated like ignored ones, so the mean loss stays an unbiased
estimate of the full mean (exactly so over equal, fully labelled cells, given one is kept)
and the summed loss is ``p`` times the full sum in expectation. The paper also raises the
images per batch by ``1/p`` to keep the effective batch: :func:`compensated_accumulate`,
applied by the training loop (``loss.sample_compensate``).

The cell grid is anchored at the image origin: cell ``(i, j)`` covers input pixels
``[c*i, c*(i+1)) x [c*j, c*(j+1))``, partial cells at the bottom and right edges. Why there:
it is the one anchor that needs no model (the loss sees only labels) and that stays put
when the mask is drawn on the tensor the net sees (after the augmentation's crop) and under
batching (``collate_pad`` pads at the bottom and right, leaving pixel coordinates
unchanged). The net's own score cells sit a fraction of a cell away (cell ``i`` is centred
on input pixel ``32 i + b``: ``b = 12.5`` for the VGG16 FCN-32s, ``b = 31`` for the
EfficientNet-Lite0 trunk at 256 px, see ``fcnkit.coord_map``), and that shift does not
matter: the keep rate, the unbiasedness and the block size of the dropped terms are the
same for every anchor, and no block partition of the output is exactly one cell's footprint
anyway (the 64-px bilinear upsampler spreads each cell's score over two cells' width).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnkit.data.base import IGNORE_INDEX

#: what a loss-sampling draw keeps or drops (Sec. 4.3): a final-layer cell, or one pixel
SAMPLE_UNITS = ("cell", "pixel")


def compensated_accumulate(accumulate: int, sample_prob: float, compensate: bool = True) -> int:
    """Micro-batches per optimiser step under loss sampling (Sec. 4.3): ``ceil(accumulate/p)``
    with ``compensate`` (the paper's "increase the number of images per batch by 1/p" to keep
    the effective batch), else ``accumulate``."""
    if not compensate or sample_prob >= 1.0:
        return accumulate
    return math.ceil(accumulate / sample_prob - 1e-9)  # 3 / 0.3 is 10.000000000000002


def sample_keep_mask(
    shape: Sequence[int],
    sample_prob: float,
    *,
    unit: str = "cell",
    cell: int = 32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boolean ``N x H x W`` mask of the loss terms kept by loss sampling (Sec. 4.3).

    ``unit="cell"``: one Bernoulli(``sample_prob``) draw per ``cell x cell`` block of the
    grid anchored at pixel (0, 0) (partial blocks at the bottom / right edges), shared by
    every pixel of the block; ``unit="pixel"``: one draw per pixel.
    """
    if unit not in SAMPLE_UNITS:
        raise ValueError(f"sample unit must be one of {', '.join(SAMPLE_UNITS)}, got {unit!r}")
    n, h, w = (int(s) for s in shape)
    if unit == "pixel":
        return torch.rand((n, h, w), device=device, generator=generator) < sample_prob
    if cell < 1:
        raise ValueError(f"sample cell must be an integer >= 1, got {cell}")
    grid = (n, -(-h // cell), -(-w // cell))
    keep = torch.rand(grid, device=device, generator=generator) < sample_prob
    return keep.repeat_interleave(cell, dim=1)[:, :h].repeat_interleave(cell, dim=2)[..., :w]


def pixel_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    normalize: bool = True,
    sample_prob: float = 1.0,
    sample_unit: str = "cell",
    sample_cell: int = 32,
    keep: Tensor | None = None,
    class_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of ``N x C x H x W`` logits against ``N x H x W`` int labels.

    Pixels labelled ``ignore_index`` are ignored; any other label outside ``[0, C)`` raises
    ``ValueError`` naming the values and ``C``. With ``class_weights`` (``C`` values) each
    pixel's term is weighted by its class's weight and the mean divides by the summed
    weights. A batch with no labelled pixel gives 0 (not NaN). Loss sampling (Sec. 4.3):
    ``keep`` (an ``N x H x W`` bool mask), else, with ``sample_prob < 1``, a fresh
    :func:`sample_keep_mask` (``sample_unit``, ``sample_cell``, ``generator``).
    """
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(
            f"expected logits N x C x H x W and labels N x H x W, got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(target.shape)} differ in batch "
            "or spatial size (the model must output the input's size)"
        )
    num_classes = logits.shape[1]
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise ValueError(
            f"labels {shown} are outside [0, {num_classes}): the model outputs {num_classes} "
            f"classes and {ignore_index} is the ignore label. Does model.num_classes match "
            "the dataset (or loss.ignore_index its void label)?"
        )
    if class_weights is not None and class_weights.numel() != num_classes:
        raise ValueError(
            f"class_weights has {class_weights.numel()} values but the model outputs "
            f"{num_classes} classes"
        )
    if keep is None and sample_prob < 1.0:
        keep = sample_keep_mask(target.shape, sample_prob, unit=sample_unit, cell=sample_cell,
                                device=target.device, generator=generator)  # fmt: skip
    if keep is not None:
        if keep.shape != target.shape:
            raise ValueError(f"keep mask {tuple(keep.shape)} differs from labels "
                             f"{tuple(target.shape)}")  # fmt: skip
        valid = valid & keep
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.float(), safe_target, reduction="none")
    weight = valid.to(per_pixel.dtype)
    if class_weights is not None:
        weight = weight * class_weights.to(per_pixel)[safe_target]
    total = (per_pixel * weight).sum()
    if normalize:
        return total / weight.sum().clamp_min(1e-12)  # no labelled pixel: 0 / eps = 0
    return total / target.shape[0]


class SegmentationLoss(nn.Module):
    """Pixelwise cross-entropy, summed over the heads of multi-head nets (SIFT Flow).

    ``forward(outputs, labels)``: ``outputs`` is a tensor or a ``{head: tensor}`` dict (primary
    head first); ``labels`` a tensor (paired with the primary head) or a ``{head: tensor}``
    dict. Heads without a label are skipped; the reference sums the two SIFT Flow losses.
    ``class_weights`` apply to the primary head and must have one value per class.

    Loss sampling (Sec. 4.3): with ``sample_prob < 1`` each forward draws one
    :func:`sample_keep_mask` (``sample_unit`` ``"cell"``: blocks of ``sample_cell`` pixels,
    the paper's final-layer cells; ``"pixel"``: independent pixels) from the global RNG of
    the labels' device (saved with checkpoints: exact resume), shared by the heads whose
    labels have the primary's size (a dropped cell is dropped for every head).
    """

    def __init__(
        self,
        *,
        normalize: bool = True,
        sample_prob: float = 1.0,
        sample_unit: str = "cell",
        sample_cell: int = 32,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        head_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be in (0, 1], got {sample_prob}")
        if sample_unit not in SAMPLE_UNITS:
            raise ValueError(f"sample_unit must be one of {', '.join(SAMPLE_UNITS)}, "
                             f"got {sample_unit!r}")  # fmt: skip
        if sample_cell < 1:
            raise ValueError(f"sample_cell must be an integer >= 1, got {sample_cell}")
        self.normalize = normalize
        self.sample_prob = sample_prob
        self.sample_unit = sample_unit
        self.sample_cell = sample_cell
        self.ignore_index = ignore_index
        self.head_weights = dict(head_weights or {})
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weights, persistent=False)

    def _keep(self, target: Tensor) -> Tensor | None:
        """A fresh loss-sampling mask for labels ``target`` (None when not sampling)."""
        if self.sample_prob >= 1.0:
            return None
        return sample_keep_mask(target.shape, self.sample_prob, unit=self.sample_unit,
                                cell=self.sample_cell, device=target.device)  # fmt: skip

    def _one(
        self, logits: Tensor, target: Tensor, weights: Tensor | None, keep: Tensor | None
    ) -> Tensor:
        return pixel_cross_entropy(
            logits,
            target,
            normalize=self.normalize,
            keep=keep,
            class_weights=weights,
            ignore_index=self.ignore_index,
        )

    def forward(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor | Mapping) -> Tensor:
        if isinstance(outputs, Tensor):
            if not isinstance(labels, Tensor):
                raise ValueError("a single-output model needs a tensor label, got a dict")
            return self._one(outputs, labels, self.class_weights, self._keep(labels))
        heads = list(outputs)
        if isinstance(labels, Tensor):
            labels = {heads[0]: labels}
        missing = [h for h in labels if h not in outputs]
        if missing:
            raise ValueError(f"labels for heads {missing} but the model outputs {heads}")
        total, keep = None, None
        for head in heads:
            if head not in labels:
                continue
            weights = self.class_weights if head == heads[0] else None  # primary head only
            target = labels[head]
            if keep is None or keep.shape != target.shape:  # one draw for same-size heads
                keep = self._keep(target)
            term = self.head_weights.get(head, 1.0) * self._one(
                outputs[head], target, weights, keep
            )
            total = term if total is None else total + term
        assert total is not None
        return total
