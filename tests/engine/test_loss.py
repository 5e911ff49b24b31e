"""Pixelwise cross-entropy: mean vs sum, ignore, loss sampling (Sec. 4.3), weights, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcnkit.engine.loss import SegmentationLoss, pixel_cross_entropy


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
    """Keeping each pixel's term w.p. p: sum -> p x full sum, mean unbiased (Sec. 4.3)."""
    logits = torch.randn(1, 3, 32, 32)
    target = torch.randint(0, 3, (1, 32, 32))
    full_sum = pixel_cross_entropy(logits, target, normalize=False)
    full_mean = pixel_cross_entropy(logits, target)
    g = torch.Generator().manual_seed(0)
    p, draws = 0.25, 400
    sums = torch.stack(
        [
            pixel_cross_entropy(logits, target, normalize=False, sample_prob=p, generator=g)
            for _ in range(draws)
        ]
    )
    means = torch.stack(
        [pixel_cross_entropy(logits, target, sample_prob=p, generator=g) for _ in range(draws)]
    )
    assert sums.mean() == pytest.approx(p * full_sum.item(), rel=0.02)
    assert means.mean() == pytest.approx(full_mean.item(), rel=0.02)
    assert sums.std() > 0  # really random


def test_loss_sampling_drops_gradients_of_dropped_pixels() -> None:
    logits = torch.randn(1, 3, 40, 40, requires_grad=True)
    target = torch.randint(0, 3, (1, 40, 40))
    g = torch.Generator().manual_seed(1)
    pixel_cross_entropy(logits, target, normalize=False, sample_prob=0.3, generator=g).backward()
    kept = logits.grad.abs().sum(1) > 0
    assert kept.float().mean().item() == pytest.approx(0.3, abs=0.05)


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
