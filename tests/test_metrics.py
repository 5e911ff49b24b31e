"""ConfusionMatrix against an independent numpy implementation of the reference score.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnkit.metrics import ConfusionMatrix, format_metrics, scores_to_labels


# --------------------------------------------------------------------------- reference
def ref_hist(label: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """score.py's fast_hist: rows = truth, labels outside [0, n) skipped."""
    k = (label >= 0) & (label < n)
    return np.bincount(n * label[k].astype(int) + pred[k], minlength=n**2).reshape(n, n)


def ref_scores(hist: np.ndarray, exclude: tuple[int, ...] = ()) -> dict[str, float]:
    keep = np.ones(len(hist), bool)
    keep[list(exclude)] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        pixel_acc = np.diag(hist).sum() / hist.sum()
    sel = (freq > 0) & keep
    # With no labelled pixel score.py's sum would be 0; fcnkit reports NaN (nothing measured).
    fw_iu = (freq[sel] * iu[sel]).sum() if hist.sum() else math.nan
    return {
        "pixel_acc": pixel_acc,
        "mean_acc": np.nanmean(acc[keep]) if (~np.isnan(acc[keep])).any() else math.nan,
        "mean_iu": np.nanmean(iu[keep]) if (~np.isnan(iu[keep])).any() else math.nan,
        "fw_iu": fw_iu,
        "per_class_iu": iu,
        "per_class_acc": acc,
    }


def assert_same(got: dict, want: dict) -> None:
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert got[key] == pytest.approx(want[key], nan_ok=True, abs=1e-12), key
    for key in ("per_class_iu", "per_class_acc"):
        np.testing.assert_allclose(np.array(got[key]), want[key], atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- random data
@st.composite
def batches(draw):
    n = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    batch = draw(st.integers(1, 3))
    # Draw from a subset of classes so that some are absent from truth and/or prediction.
    label_classes = draw(st.lists(st.sampled_from(list(range(n)) + [255]), min_size=1))
    pred_classes = draw(st.lists(st.integers(0, n - 1), min_size=1))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    label = rng.choice(label_classes, size=(batch, h, w))
    pred = rng.choice(pred_classes, size=(batch, h, w))
    exclude = tuple(draw(st.sets(st.integers(0, n - 1), max_size=n)))
    return n, label, pred, exclude


@settings(max_examples=60, deadline=None)
@given(batches())
def test_matches_reference_on_random_data(case) -> None:
    n, label, pred, exclude = case
    cm = ConfusionMatrix(n)
    for i in range(len(label)):  # accumulate batch by batch
        cm.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(label[i : i + 1]))
    hist = ref_hist(label.ravel(), pred.ravel(), n)
    assert cm.matrix.numpy().tolist() == hist.tolist()
    assert_same(cm.compute(), ref_scores(hist))
    assert_same(cm.compute(exclude=exclude), ref_scores(hist, exclude))


@settings(max_examples=25, deadline=None)
@given(batches())
def test_scores_are_reduced_by_argmax(case) -> None:
    n, label, pred, _ = case
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), n).permute(0, 3, 1, 2).float()
    logits = logits + 0.1 * torch.rand_like(logits)  # argmax unchanged
    a, b = ConfusionMatrix(n), ConfusionMatrix(n)
    a.update(logits, torch.from_numpy(label))
    b.update(torch.from_numpy(pred), torch.from_numpy(label))
    assert torch.equal(a.matrix, b.matrix)


# --------------------------------------------------------------------------- by hand
def test_hand_computed_case() -> None:
    label = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, label)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    m = cm.compute()
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["per_class_acc"] == pytest.approx([1 / 2, 1, 0])
    assert m["mean_acc"] == pytest.approx(1 / 2)
    assert m["per_class_iu"] == pytest.approx([1 / 3, 2 / 3, 0])
    assert m["mean_iu"] == pytest.approx(1 / 3)
    assert m["fw_iu"] == pytest.approx(0.4 * 1 / 3 + 0.4 * 2 / 3)
    assert m["num_pixels"] == 5


def test_absent_classes_are_nan_and_skipped_by_the_means() -> None:
    # class 3 is in neither labels nor predictions: NaN, skipped.
    # class 2 is predicted but absent from labels: accuracy NaN, IU 0 (counted in mean IU
    # unless excluded, as in the reference; SIFT Flow excludes such classes by name).
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2])
    cm = ConfusionMatrix(4, class_names=["a", "b", "cow", "moon"])
    cm.update(pred, label)
    m = cm.compute()
    assert math.isnan(m["per_class_iu"][3]) and math.isnan(m["per_class_acc"][3])
    assert math.isnan(m["per_class_acc"][2]) and m["per_class_iu"][2] == 0
    assert m["mean_acc"] == pytest.approx((1 + 0.5) / 2)
    assert m["mean_iu"] == pytest.approx((1 + 0.5 + 0) / 3)
    excluded = cm.compute(exclude=["cow", "moon"])
    assert excluded["mean_iu"] == pytest.approx((1 + 0.5) / 2)
    assert excluded["mean_iu"] == cm.compute(exclude=[2, 3])["mean_iu"]
    assert excluded["pixel_acc"] == m["pixel_acc"] == 0.75
    with pytest.raises(ValueError, match="unknown class 'dog'"):
        cm.compute(exclude=["dog"])


def test_ignore_index_and_out_of_range_labels_are_skipped() -> None:
    label = torch.tensor([0, 1, 255, 7, -1])
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 1, 1, 1]), label)
    assert cm.matrix.tolist() == [[1, 0], [1, 0]]
    inside = ConfusionMatrix(3, ignore_index=0)  # an ignore value inside [0, n)
    inside.update(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 2]))
    assert inside.matrix.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_bad_inputs_raise() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="must lie in"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    cm.update(torch.tensor([0, 3]), torch.tensor([0, 255]))  # ignored pixel: no error
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        cm.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


def test_empty_matrix_gives_nan() -> None:
    m = ConfusionMatrix(2).compute()
    assert all(math.isnan(m[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))


def test_merge_reset_and_all_reduce_without_process_group() -> None:
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, 4, (2, 5, 5)))
    pred = torch.from_numpy(rng.integers(0, 4, (2, 5, 5)))
    whole, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(pred, label)
    a.update(pred[:1], label[:1])
    b.update(pred[1:], label[1:])
    assert torch.equal(a.merge(b).matrix, whole.matrix)
    before = whole.matrix.clone()
    whole.all_reduce()  # no process group: no-op
    assert torch.equal(whole.matrix, before)
    whole.reset()
    assert whole.matrix.sum() == 0


def test_counts_live_on_the_device_of_the_predictions() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert cm.matrix.device.type == "cpu" and cm.matrix.dtype == torch.int64
    meta = ConfusionMatrix(2, device="meta")
    assert meta.device.type == "meta"
    if torch.cuda.is_available():
        gpu = ConfusionMatrix(2)
        gpu.update(torch.tensor([0, 1], device="cuda"), torch.tensor([0, 1], device="cuda"))
        assert gpu.matrix.is_cuda


def test_table_lists_classes_and_metrics() -> None:
    cm = ConfusionMatrix(3, class_names=["sky", "road", "cow"])
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    text = cm.table(exclude=["cow"])
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["sky", "50.00", "50.00"]
    assert lines[3].split()[1:3] == ["n/a", "n/a"] and "(excluded)" in lines[3]
    assert "mean IU" in text and format_metrics(cm.compute(["cow"])) in text
    np.testing.assert_allclose(cm.normalized().sum(1).numpy(), [1, 1, 0])


def test_scores_to_labels_matches_argmax_including_ties() -> None:
    scores = torch.randint(0, 3, (2, 9, 7, 5)).float()  # many ties
    assert torch.equal(scores_to_labels(scores), scores.argmax(1))
    assert torch.equal(scores_to_labels(torch.zeros(4, 3, 3), dim=0), torch.zeros(3, 3).long())
