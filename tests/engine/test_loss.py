"""Pixelwise cross-entropy: mean vs sum, ignore, loss sampling (Sec. 4.3), weights, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcnkit.engine.loss import (
    SegmentationLoss,
    compensated_accumulate,
    pixel_cross_entropy,
    sample_keep_mask,
)


def _data(n: int = 2, c: int = 4, h: int = 5, w: int = 6):
    logits = torch.randn(n, c, h, w)
    target = torch.randint(0, c, (n, h, w))
    target[0, 0, :3] = 255  # ignored (VOC boundary band)
    return logits, target


def test_mean_is_mean_over_labelled_pixels() -> None:
    logits, target = _data()
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(pixel_cross_entropy(logits, target), expected)


def test_sum_is_summed_over_pixels_averaged_over_images() -> None:
    logits, target = _data(n=3)
    total = F.cross_entropy(logits, target, ignore_index=255, reduction="sum")
    got = pixel_cross_entropy(logits, target, normalize=False)
    assert torch.allclose(got, total / 3)  # Caffe normalize: false divides by the batch only
    # The summed loss grows with the image, the mean does not: why the lrs differ by ~#pixels.
    big_logits, big_target = logits.repeat(1, 1, 4, 4), target.repeat(1, 4, 4)
    assert torch.allclose(pixel_cross_entropy(big_logits, big_target, normalize=False), 16 * got)
    assert torch.allclose(
        pixel_cross_entropy(big_logits, big_target), pixel_cross_entropy(logits, target)
    )


def test_ignored_pixels_do_not_contribute() -> None:
    logits, target = _data()
    logits.requires_grad_(True)
    loss = pixel_cross_entropy(logits, target, normalize=False)
    loss.backward()
    assert logits.grad[0, :, 0, :3].abs().sum() == 0  # no gradient at ignored pixels
    changed = logits.detach().clone()
    changed[0, :, 0, :3] = 100.0
    assert torch.equal(pixel_cross_entropy(changed, target), pixel_cross_entropy(logits, target))


def test_ignore_index_is_honoured_and_other_out_of_range_labels_raise() -> None:
    logits, target = _data()  # 4 classes, some pixels 255
    other = target.clone()
    other[other == 255] = 9  # a dataset whose void label is 9
    assert torch.equal(
        pixel_cross_entropy(logits, other, ignore_index=9), pixel_cross_entropy(logits, target)
    )
    with pytest.raises(ValueError, match=r"labels 9 are outside \[0, 4\).*4 classes"):
        pixel_cross_entropy(logits, other)  # 9 is not the ignore label: not silently dropped
    bad = target.clone()
    bad[1, 1, 1], bad[1, 2, 2] = 7, -1  # e.g. a 21-class dataset on a 4-class model
    with pytest.raises(ValueError, match=r"labels -1, 7 are outside \[0, 4\)"):
        pixel_cross_entropy(logits, bad)
    with pytest.raises(ValueError, match="outside"):
        SegmentationLoss()(logits, bad)


def test_all_ignored_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    loss = pixel_cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_loss_sampling_expectation() -> None:
    """Per pixel (``sample_unit="pixel"``), keeping each term w.p. p: sum -> p x full sum,
    mean unbiased (Sec. 4.3)."""
    logits = torch.randn(1, 3, 32, 32)
    target = torch.randint(0, 3, (1, 32, 32))
    full_sum = pixel_cross_entropy(logits, target, normalize=False)
    full_mean = pixel_cross_entropy(logits, target)
    g = torch.Generator().manual_seed(0)
    p, draws = 0.25, 400
    sums = torch.stack(
        [
            pixel_cross_entropy(
                logits, target, normalize=False, sample_prob=p, sample_unit="pixel", generator=g
            )
            for _ in range(draws)
        ]
    )
    means = torch.stack(
        [
            pixel_cross_entropy(logits, target, sample_prob=p, sample_unit="pixel", generator=g)
            for _ in range(draws)
        ]
    )
    assert sums.mean() == pytest.approx(p * full_sum.item(), rel=0.02)
    assert means.mean() == pytest.approx(full_mean.item(), rel=0.02)
    assert sums.std() > 0  # really random


def test_loss_sampling_drops_gradients_of_dropped_pixels() -> None:
    logits = torch.randn(1, 3, 40, 40, requires_grad=True)
    target = torch.randint(0, 3, (1, 40, 40))
    g = torch.Generator().manual_seed(1)
    pixel_cross_entropy(
        logits, target, normalize=False, sample_prob=0.3, sample_unit="pixel", generator=g
    ).backward()
    kept = logits.grad.abs().sum(1) > 0
    assert kept.float().mean().item() == pytest.approx(0.3, abs=0.05)


# Loss sampling as the paper has it (Sec. 4.3): each final-layer cell (a 32 x 32 block of the
# output at FCN-32s's stride) is ignored with probability 1 - p, the images per batch raised
# by 1/p.


def _blocks(mask: torch.Tensor, cell: int) -> list[torch.Tensor]:
    """Every cell of the grid anchored at pixel (0, 0), partial edge cells included."""
    _, h, w = mask.shape
    return [
        mask[:, i : i + cell, j : j + cell] for i in range(0, h, cell) for j in range(0, w, cell)
    ]


def test_cell_mask_keeps_or_drops_whole_cells() -> None:
    g = torch.Generator().manual_seed(0)
    mask = sample_keep_mask((3, 70, 100), 0.5, unit="cell", cell=32, generator=g)
    assert mask.shape == (3, 70, 100) and mask.dtype == torch.bool
    blocks = _blocks(mask, 32)
    assert len(blocks) == 3 * 4  # ceil(70 / 32) x ceil(100 / 32) cells, partial ones included
    for block in blocks:  # per image: a cell is all kept or all dropped
        for one in block:
            assert bool(one.all()) or not bool(one.any())
    cells = torch.stack([b.flatten(1)[:, 0] for b in blocks], 1)  # image x cell
    assert cells.any() and not cells.all()  # both outcomes occur (48 draws at p = 0.5)
    # the loss follows the mask: every pixel of a kept cell has a gradient, of a dropped none
    logits = torch.randn(3, 4, 70, 100, requires_grad=True)
    target = torch.randint(0, 4, (3, 70, 100))
    pixel_cross_entropy(logits, target, normalize=False, keep=mask).backward()
    assert torch.equal(logits.grad.abs().sum(1) > 0, mask)
    # pixel units do not: a 32 x 32 block of independent draws is (almost surely) mixed
    pixels = sample_keep_mask((1, 32, 32), 0.5, unit="pixel", generator=g)
    assert pixels.any() and not pixels.all()


def test_cell_size_sets_the_grid() -> None:
    g = torch.Generator().manual_seed(3)
    mask = sample_keep_mask((50, 16, 16), 0.5, unit="cell", cell=8, generator=g)
    for block in _blocks(mask, 8):
        assert all(bool(one.all()) or not bool(one.any()) for one in block)
    whole = sample_keep_mask((200, 20, 20), 0.5, cell=32, generator=g)  # one cell per image
    per_image = whole.flatten(1)
    assert torch.equal(per_image.all(1), per_image.any(1))
    with pytest.raises(ValueError, match="sample unit"):
        sample_keep_mask((1, 4, 4), 0.5, unit="patch")
    with pytest.raises(ValueError, match="sample cell"):
        sample_keep_mask((1, 4, 4), 0.5, cell=0)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_cell_keep_rate_is_p(p: float) -> None:
    """Over 6,400 cells the kept fraction is p within 4 binomial SDs (sqrt(p(1-p)/n))."""
    g = torch.Generator().manual_seed(12)
    mask = sample_keep_mask((64, 320, 320), p, unit="cell", cell=32, generator=g)
    cells = mask[:, ::32, ::32]  # one pixel per cell (the grid is anchored at (0, 0))
    n = cells.numel()
    assert n == 64 * 10 * 10
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(cells.float().mean().item() - p) < 4 * sd
    assert mask.float().mean().item() == pytest.approx(cells.float().mean().item())


def test_cell_sampled_mean_loss_is_unbiased_exactly() -> None:
    """Over equal, fully labelled cells the mean over kept pixels is an unbiased estimate of
    the full mean (given a cell is kept): every subset of the 4 cells of a 64 x 64 map,
    weighted by its probability p^k (1-p)^(4-k), averages to the full mean."""
    logits, target = torch.randn(1, 5, 64, 64), torch.randint(0, 5, (1, 64, 64))
    full = pixel_cross_entropy(logits, target).item()
    p = 0.3
    expected, mass = 0.0, 0.0
    for subset in range(1, 16):  # the empty subset gives no loss term: conditioned away
        bits = torch.tensor([(subset >> k) & 1 for k in range(4)], dtype=torch.bool)
        keep = bits.view(1, 2, 2).repeat_interleave(32, 1).repeat_interleave(32, 2)
        k = int(bits.sum())
        prob = p**k * (1 - p) ** (4 - k)
        expected += prob * pixel_cross_entropy(logits, target, keep=keep).item()
        mass += prob
    assert expected / mass == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_cell_sampled_loss_expectation(normalize: bool) -> None:
    """Monte Carlo over the sampler's own masks (fixed seed): the mean loss averages to the
    full mean, the summed loss to p x the full sum, each within 4 standard errors."""
    logits, target = torch.randn(2, 3, 64, 96), torch.randint(0, 3, (2, 64, 96))
    full = pixel_cross_entropy(logits, target, normalize=normalize).item()
    p, draws = 0.25, 4000
    # the loss draws exactly sample_keep_mask's mask from the same generator state
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    mask = sample_keep_mask((2, 64, 96), p, cell=16, generator=g2)
    drawn = pixel_cross_entropy(
        logits, target, normalize=normalize, sample_prob=p, sample_cell=16, generator=g1
    )
    assert drawn.item() == pytest.approx(
        pixel_cross_entropy(logits, target, normalize=normalize, keep=mask).item()
    )
    # many draws at once: per-pixel terms x each draw's mask, reduced as the loss reduces
    terms = F.cross_entropy(logits, target, reduction="none")
    g = torch.Generator().manual_seed(8)
    masks = sample_keep_mask((draws * 2, 64, 96), p, cell=16, generator=g).view(draws, 2, 64, 96)
    kept = (masks * terms).sum((1, 2, 3))
    if normalize:  # P(none of the 48 cells kept) = 0.75^48 ~ 1e-6: no loss term, no sample
        count = masks.sum((1, 2, 3))
        values = kept[count > 0] / count[count > 0]
        expected = full
    else:
        values, expected = kept / 2, p * full
    se = values.std().item() / len(values) ** 0.5
    assert se > 0  # really random
    assert abs(values.mean().item() - expected) < 4 * se


def test_heads_share_the_cell_mask() -> None:
    """A dropped final-layer cell is dropped for every head (one draw per forward)."""
    torch.manual_seed(5)
    sem = torch.randn(2, 5, 64, 96, requires_grad=True)
    geo = torch.randn(2, 3, 64, 96, requires_grad=True)
    ls, lg = torch.randint(0, 5, (2, 64, 96)), torch.randint(0, 3, (2, 64, 96))
    crit = SegmentationLoss(normalize=False, sample_prob=0.5)
    crit({"sem": sem, "geo": geo}, {"sem": ls, "geo": lg}).backward()
    kept_sem, kept_geo = sem.grad.abs().sum(1) > 0, geo.grad.abs().sum(1) > 0
    assert torch.equal(kept_sem, kept_geo)
    assert kept_sem.any() and not kept_sem.all()
    with pytest.raises(ValueError, match="sample_unit"):
        SegmentationLoss(sample_prob=0.5, sample_unit="patch")
    with pytest.raises(ValueError, match="sample_cell"):
        SegmentationLoss(sample_prob=0.5, sample_cell=0)


@pytest.mark.parametrize(
    "accumulate, p, compensate, expected",
    [(1, 1.0, True, 1), (1, 0.5, True, 2), (1, 0.25, True, 4), (2, 0.7, True, 3),
     (3, 0.3, True, 10), (20, 0.25, True, 80), (4, 0.25, False, 4)],
)  # fmt: skip
def test_compensated_accumulate(accumulate: int, p: float, compensate: bool, expected: int) -> None:
    """ceil(accumulate / p) micro-batches (3 / 0.3 is 10.000000000000002 in floats: 10)."""
    assert compensated_accumulate(accumulate, p, compensate) == expected


def test_class_weights_match_torch() -> None:
    logits, target = _data()
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    expected = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert torch.allclose(pixel_cross_entropy(logits, target, class_weights=w), expected)
    crit = SegmentationLoss(class_weights=[0.5, 2.0, 1.0, 3.0])
    assert torch.allclose(crit(logits, target), expected)


def test_wrong_length_class_weights_raise() -> None:
    logits, target = _data()  # 4 classes
    with pytest.raises(ValueError, match="class_weights has 3 values but the model outputs 4"):
        pixel_cross_entropy(logits, target, class_weights=torch.ones(3))
    with pytest.raises(ValueError, match="class_weights has 5 values"):
        SegmentationLoss(class_weights=[1.0] * 5)(logits, target)
    # multi-head: the weights belong to the primary head; a wrong length still raises there
    geo, lg = torch.randn(2, 3, 5, 6), torch.randint(0, 3, (2, 5, 6))
    crit = SegmentationLoss(class_weights=[1.0, 2.0, 1.0, 1.0])
    crit({"sem": logits, "geo": geo}, {"sem": target, "geo": lg})  # 4 sem classes: fine
    with pytest.raises(ValueError, match="class_weights has 4 values but the model outputs 3"):
        crit({"geo": geo, "sem": logits}, {"sem": target, "geo": lg})


def test_multi_head_losses_are_summed() -> None:
    """SIFT Flow: the semantic and geometric losses are added (reference)."""
    sem, geo = torch.randn(2, 5, 6, 6), torch.randn(2, 3, 6, 6)
    ls, lg = torch.randint(0, 5, (2, 6, 6)), torch.randint(0, 3, (2, 6, 6))
    crit = SegmentationLoss(normalize=False)
    total = crit({"sem": sem, "geo": geo}, {"sem": ls, "geo": lg})
    expected = pixel_cross_entropy(sem, ls, normalize=False) + pixel_cross_entropy(
        geo, lg, normalize=False
    )
    assert torch.allclose(total, expected)
    # a plain tensor label pairs with the primary (first) head
    assert torch.allclose(
        crit({"sem": sem, "geo": geo}, ls), pixel_cross_entropy(sem, ls, normalize=False)
    )
    weighted = SegmentationLoss(head_weights={"geo": 0.5})(
        {"sem": sem, "geo": geo}, {"sem": ls, "geo": lg}
    )
    assert torch.allclose(
        weighted, pixel_cross_entropy(sem, ls) + 0.5 * pixel_cross_entropy(geo, lg)
    )
    with pytest.raises(ValueError, match="heads"):
        crit({"sem": sem}, {"depth": ls})


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="spatial size"):
        pixel_cross_entropy(torch.randn(1, 3, 4, 4), torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"sample_prob"):
        SegmentationLoss(sample_prob=0.0)
