"""Pixelwise cross-entropy for FCNs (paper Sec. 3 and 4.3).

The loss is a sum over the spatial output of per-pixel softmax losses; pixels labelled
``ignore_index`` (255: VOC's boundary band, padding) contribute nothing; any other label
outside ``[0, C)`` is an error (a dataset / model class-count mismatch), never silently
dropped. Two normalisations:

- ``normalize=True``: mean over labelled pixels (goes with lr ~1e-4 for VGG16, SGD, Sec. 4.3);
- ``normalize=False``: summed over pixels, averaged over the images of the batch (the Caffe
  reference's "heavy" ``normalize: false`` loss; goes with lr 1e-10 / 1e-12 / 1e-14).

**Loss sampling** (Sec. 4.3, "patchwise training is loss sampling"): each labelled pixel's
term is kept independently with probability ``sample_prob``; dropped pixels are treated like
ignored ones, so the mean loss stays an unbiased estimate of the full mean and the summed
loss is ``sample_prob`` times the full sum in expectation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnkit.data.base import IGNORE_INDEX


def pixel_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    normalize: bool = True,
    sample_prob: float = 1.0,
    class_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of ``N x C x H x W`` logits against ``N x H x W`` int labels.

    Pixels labelled ``ignore_index`` are ignored; any other label outside ``[0, C)`` raises
    ``ValueError`` naming the values and ``C``. With ``class_weights`` (``C`` values) each
    pixel's term is weighted by its class's weight and the mean divides by the summed
    weights. A batch with no labelled pixel gives 0 (not NaN).
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
    if sample_prob < 1.0:
        keep = torch.rand(target.shape, device=target.device, generator=generator) < sample_prob
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
    """

    def __init__(
        self,
        *,
        normalize: bool = True,
        sample_prob: float = 1.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        head_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be in (0, 1], got {sample_prob}")
        self.normalize = normalize
        self.sample_prob = sample_prob
        self.ignore_index = ignore_index
        self.head_weights = dict(head_weights or {})
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weights, persistent=False)

    def _one(self, logits: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
        return pixel_cross_entropy(
            logits,
            target,
            normalize=self.normalize,
            sample_prob=self.sample_prob,
            class_weights=weights,
            ignore_index=self.ignore_index,
        )

    def forward(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor | Mapping) -> Tensor:
        if isinstance(outputs, Tensor):
            if not isinstance(labels, Tensor):
                raise ValueError("a single-output model needs a tensor label, got a dict")
            return self._one(outputs, labels, self.class_weights)
        heads = list(outputs)
        if isinstance(labels, Tensor):
            labels = {heads[0]: labels}
        missing = [h for h in labels if h not in outputs]
        if missing:
            raise ValueError(f"labels for heads {missing} but the model outputs {heads}")
        total = None
        for head in heads:
            if head not in labels:
                continue
            weights = self.class_weights if head == heads[0] else None  # primary head only
            term = self.head_weights.get(head, 1.0) * self._one(
                outputs[head], labels[head], weights
            )
            total = term if total is None else total + term
        assert total is not None
        return total
