"""ConfusionMatrix against an independent numpy implementation of the reference score.py;
BoundaryFScore and SizeIU against hand-computed cases, a brute force of the boundary
definition and the confusion matrix's own counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnkit.metrics import (
    DEFAULT_SIZE_THRESHOLDS,
    BoundaryFScore,
    ConfusionMatrix,
    SizeIU,
    boundary_and_size_columns,
    boundary_tolerance_px,
    format_boundary_and_size,
    format_metrics,
    scores_to_labels,
    size_buckets,
)


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


# --------------------------------------------------------------------------- boundary F-score
def ref_boundary_counts(truth: np.ndarray, pred: np.ndarray, n: int, tol: float) -> np.ndarray:
    """Brute force of BoundaryFScore's definition, written out loop by loop: boundary = a
    labelled pixel with a labelled 4-neighbour of another label (truth 255 = unlabelled, in
    both maps); matched = some boundary pixel of the same class at Euclidean distance <= tol."""
    h, w = truth.shape
    valid = truth != 255

    def edges(m):
        out = []
        for y in range(h):
            for x in range(w):
                if not valid[y, x]:
                    continue
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and valid[yy, xx] and m[yy, xx] != m[y, x]:
                        out.append((y, x, int(m[y, x])))
                        break
        return out

    def hits(a, b, c):
        pts = [(y, x) for y, x, k in b if k == c]
        return sum(any(math.hypot(y - v, x - u) <= tol for v, u in pts) for y, x, k in a if k == c)

    t, p = edges(truth), edges(pred)
    counts = np.zeros((4, n), np.int64)
    for c in range(n):
        counts[:, c] = (
            hits(p, t, c), sum(k == c for *_, k in p), hits(t, p, c), sum(k == c for *_, k in t)
        )  # fmt: skip
    return counts


@st.composite
def label_pairs(draw):
    n = draw(st.integers(2, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))

    # Blocky maps (2x2 cells) so that regions and boundaries are not all single pixels.
    def cells(values):
        small = rng.choice(values, size=((h + 1) // 2, (w + 1) // 2))
        return small.repeat(2, 0).repeat(2, 1)[:h, :w]

    truth = cells(list(range(n)) + [255])
    pred = np.where(rng.random((h, w)) < 0.2, rng.integers(0, n, (h, w)), cells(range(n)))
    tol = draw(st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.5]))
    return n, truth, pred, tol


@settings(max_examples=40, deadline=None)
@given(label_pairs())
def test_boundary_counts_match_a_brute_force_of_the_definition(case) -> None:
    n, truth, pred, tol = case
    bf = BoundaryFScore(n, tolerance=tol)
    bf.update(torch.from_numpy(pred), torch.from_numpy(truth))
    np.testing.assert_array_equal(bf.counts, ref_boundary_counts(truth, pred, n, tol))


def test_boundary_hand_computed_with_ignore() -> None:
    # truth  0   0 1 1     pred  0 1 1 1      (255 = ignore: row 1, columns 0-1)
    #        255 255 1 1         0 0 0 1
    # True boundaries: class 0 {(0,1)}, class 1 {(0,2)}; the ignore pixels below (0,0), (0,1)
    # and left of (1,2) make none. Predicted (only where the truth is labelled): class 0
    # {(0,0) right of it a 1; (1,2) right of it a 1 and above it a 1}, class 1 {(0,1), (0,2)
    # above a 0, (1,3) left of a 0}; the 0s predicted in the ignore area make no boundary.
    truth = torch.tensor([[0, 0, 1, 1], [255, 255, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]])
    exact = BoundaryFScore(3, tolerance=0)
    exact.update(pred, truth)
    # counters: predicted matched, predicted, true matched, true; class 2 absent
    np.testing.assert_array_equal(exact.counts.T, [[0, 2, 0, 1], [1, 3, 1, 1], [0, 0, 0, 0]])
    m = exact.compute()
    # class 0: P = R = 0 -> F 0; class 1: P 1/3, R 1 -> F = 2/3 / (4/3) = 1/2; class 2: NaN
    np.testing.assert_allclose(m["per_class_boundary_f"], [0, 0.5, math.nan])
    assert m["boundary_f"] == pytest.approx(0.25)  # the NaN class is skipped
    assert m["boundary_precision"] == pytest.approx(1 / 6) and m["boundary_recall"] == 0.5
    # Tolerance 1: (0,0) is 1 from (0,1) (class 0), (0,1) is 1 from (0,2) (class 1); (1,2)
    # and (1,3) are sqrt(2) away and stay unmatched. F: 2(1/2)/(3/2) = 2/3, 2(2/3)/(5/3) = 4/5.
    near = BoundaryFScore(3, tolerance=1, class_names=["a", "b", "c"])
    near.update(pred[None], truth[None])  # a batch of one
    np.testing.assert_array_equal(near.counts.T[:2], [[1, 2, 1, 1], [2, 3, 1, 1]])
    np.testing.assert_allclose(near.compute()["per_class_boundary_f"][:2], [2 / 3, 4 / 5])
    assert near.compute(exclude=["b"])["boundary_f"] == pytest.approx(2 / 3)


def test_boundary_of_a_square_shifted_by_k_is_matched_from_tolerance_k() -> None:
    # A 8 x 8 square of class 1 (rows 6-13, columns 5-12) on class 0; the prediction moves it
    # k columns right. Every predicted boundary pixel lies within k of a true one (the
    # square's far columns are exactly k away), so F = 1 from tolerance k and < 1 below.
    truth = np.zeros((20, 24), np.int64)
    truth[6:14, 5:13] = 1
    for k in (1, 2, 3):
        pred = np.roll(truth, k, axis=1)
        for tol, whole in ((k, True), (k + 0.5, True), (k - 0.01, False)):
            bf = BoundaryFScore(2, tolerance=tol)
            bf.update(pred, truth)
            f = bf.compute()["per_class_boundary_f"]
            assert (f == [1.0, 1.0]) if whole else (max(f) < 1), (k, tol, f)
    # k = 1, tolerance 0, counted on paper: class 1's ring has 4 * 8 - 4 = 28 pixels in both
    # maps, shared: the top and bottom rows' columns 6-12 = 14. Class 0's ring (the pixels
    # 4-adjacent to the square: rows 5 and 14, columns 4 and 13, 8 each) has 32, shared: rows
    # 5 and 14 at columns 6-12 = 14.
    bf = BoundaryFScore(2, tolerance=0)
    bf.update(np.roll(truth, 1, axis=1), truth)
    np.testing.assert_array_equal(bf.counts.T, [[14, 32, 14, 32], [14, 28, 14, 28]])


def test_boundary_one_sided_classes_score_zero_and_empty_ones_nan() -> None:
    truth = torch.tensor([[0, 0, 1, 1]])
    bf = BoundaryFScore(4, tolerance=5)
    bf.update(torch.tensor([[0, 0, 0, 0]]), truth)  # class 1's boundary is never predicted
    bf.update(torch.tensor([[2, 2, 3, 3]]), torch.zeros(1, 4, dtype=torch.long))  # 2|3 invented
    m = bf.compute()
    # class 0: true 1 px (0,1), never matched by a predicted one (the 2|3 line is other classes)
    assert m["per_class_boundary_f"] == [0.0, 0.0, 0.0, 0.0]
    assert math.isnan(m["per_class_boundary_precision"][0])  # nothing predicted as class 0 edge
    assert m["per_class_boundary_recall"][1] == 0.0 and math.isnan(
        m["per_class_boundary_recall"][2]
    )
    empty = BoundaryFScore(2)
    empty.update(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), 255))
    assert math.isnan(empty.compute()["boundary_f"])  # nothing labelled: no boundary anywhere


def test_boundary_tolerance_in_pixels_or_percent_of_the_diagonal() -> None:
    assert boundary_tolerance_px(2, 10, 10) == 2.0
    assert boundary_tolerance_px("0.75%", 300, 400) == pytest.approx(3.75)  # 0.75% of 500
    assert boundary_tolerance_px("1.5", 300, 400) == 1.5
    for bad in ("abc", -1, "nan", "-2%", "inf"):
        with pytest.raises(ValueError, match="boundary tolerance"):
            boundary_tolerance_px(bad, 10, 10)
    with pytest.raises(ValueError, match="boundary tolerance"):
        BoundaryFScore(2, tolerance="2 px")
    # "0.75%" on a 256 x 256 image is 2.715 px: a 2-pixel shift matches, a 3-pixel one not.
    truth = np.zeros((256, 256), np.int64)
    truth[100:160, 100:160] = 1
    for shift, whole in ((2, True), (3, False)):
        bf = BoundaryFScore(2)
        bf.update(np.roll(truth, shift, axis=0), truth)
        assert (bf.compute()["boundary_f"] == 1.0) == whole


# --------------------------------------------------------------------------- IU by object size
def test_size_iu_hand_computed() -> None:
    # 10 x 10 image, thresholds 5% / 20% of 100 px: small < 5 px, medium < 20 px, large >= 20.
    # Truth: class 1 region A (2x2 = 4 px, small) at rows 0-1 x columns 0-1, region B (3x3 =
    # 9 px, medium) at rows 5-7 x columns 5-7; class 0 the rest (87 px, one large region).
    truth = np.zeros((10, 10), np.int64)
    truth[0:2, 0:2] = 1
    truth[5:8, 5:8] = 1
    # Prediction: A missed (4 px FN small); B right plus column 8 rows 5-7 (3 px FP, nearest
    # true class-1 region B: medium); (0,3) as 1 (1 px FP, 2 px from A, nearer than B: small);
    # class 2, absent from the truth, at (9,0)-(9,1): a 2 px false object, small.
    pred = truth.copy()
    pred[0:2, 0:2] = 0
    pred[5:8, 8] = 1
    pred[0, 3] = 1
    pred[9, 0:2] = 2
    size = SizeIU(3, thresholds=(0.05, 0.2))
    size.update(pred, truth)
    tp, fn, fp, regions = size.counts  # each buckets x classes
    np.testing.assert_array_equal(tp, [[0, 0, 0], [0, 9, 0], [81, 0, 0]])
    np.testing.assert_array_equal(fn, [[0, 4, 0], [0, 0, 0], [6, 0, 0]])  # class 0: 3 + 1 + 2
    np.testing.assert_array_equal(fp, [[0, 1, 2], [0, 3, 0], [4, 0, 0]])  # class 0: A's 4 px
    np.testing.assert_array_equal(regions, [[0, 1, 0], [0, 1, 0], [1, 0, 0]])
    m = size.compute()
    nan = math.nan
    np.testing.assert_allclose(m["per_class_size_iu"]["small"], [nan, 0.0, 0.0])
    np.testing.assert_allclose(m["per_class_size_iu"]["medium"], [nan, 9 / 12, nan])
    np.testing.assert_allclose(m["per_class_size_iu"]["large"], [81 / 91, nan, nan])
    assert m["size_iu"] == pytest.approx({"small": 0.0, "medium": 0.75, "large": 81 / 91})
    assert m["size_regions"]["small"] == [0, 1, 0]
    assert math.isnan(size.compute(exclude=[1])["size_iu"]["medium"])  # only class 1 there


def test_size_regions_are_8_connected_and_split_by_ignore() -> None:
    # Two 2x2 squares of class 1 touching at a corner are one 8-px region (medium at 5% / 20%
    # of 100 px), not two small ones; a 3x3 square cut by an ignore row is two regions.
    truth = np.zeros((10, 10), np.int64)
    truth[0:2, 0:2] = 1
    truth[2:4, 2:4] = 1
    truth[5:8, 5:8] = 2
    truth[6, 5:8] = 255  # the 3x3 class-2 square becomes two 1x3 strips of 3 px: small
    size = SizeIU(3, thresholds=(0.05, 0.2))
    size.update(truth.clip(0, 2), truth)  # a perfect prediction (the ignore row predicted 2)
    regions = size.counts[3]
    assert regions[:, 1].tolist() == [0, 1, 0] and regions[:, 2].tolist() == [2, 0, 0]
    iu = size.compute()["per_class_size_iu"]
    assert iu["medium"][1] == 1.0 and iu["small"][2] == 1.0 and math.isnan(iu["small"][1])
    # The size is a fraction of the image: the same 8-px region on 40 x 40 (1600 px) is small.
    big = np.zeros((40, 40), np.int64)
    big[:4, :4] = truth[:4, :4]
    on_big = SizeIU(3, thresholds=(0.05, 0.2))
    on_big.update(big, big)
    assert on_big.counts[3][:, 1].tolist() == [1, 0, 0]
    assert size_buckets(np.array([4, 5, 19, 20]), 100, (0.05, 0.2)).tolist() == [0, 1, 1, 2]


@settings(max_examples=30, deadline=None)
@given(label_pairs())
def test_size_buckets_split_the_confusion_matrix_counts(case) -> None:
    # Independent check: summed over the buckets, TP / FN / FP of each class are the
    # confusion matrix's diagonal, row sum - diagonal and column sum - diagonal.
    n, truth, pred, _ = case
    size = SizeIU(n, thresholds=(0.1, 0.3))
    size.update(torch.from_numpy(pred), torch.from_numpy(truth))
    cm = ConfusionMatrix(n)
    cm.update(torch.from_numpy(pred), torch.from_numpy(truth))
    hist = cm.matrix.numpy()
    tp, fn, fp, _ = size.counts.sum(axis=1)
    np.testing.assert_array_equal(tp, np.diag(hist))
    np.testing.assert_array_equal(fn, hist.sum(1) - np.diag(hist))
    np.testing.assert_array_equal(fp, hist.sum(0) - np.diag(hist))


def test_size_thresholds_are_checked() -> None:
    for bad in ((0.2, 0.1), (0.0, 0.1), (0.1, 1.5)):
        with pytest.raises(ValueError, match="size thresholds"):
            SizeIU(2, thresholds=bad)
    # The default: COCO's 32^2 and 96^2 px of a 640 x 480 image.
    np.testing.assert_allclose(DEFAULT_SIZE_THRESHOLDS, (1 / 300, 0.03))


# --------------------------------------------------------------------------- both
@pytest.mark.parametrize("kind", [BoundaryFScore, SizeIU])
def test_two_shards_merged_equal_one_pass(kind) -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (4, 8, 8)).repeat(2, 1).repeat(2, 2)
    truth[:, :2] = 255
    pred = np.where(rng.random(truth.shape) < 0.1, rng.integers(0, 3, truth.shape), truth)
    pred[pred == 255] = 0
    whole, first, second = kind(3), kind(3), kind(3)
    whole.update(pred, truth)
    first.update(pred[:1], truth[:1])
    second.update(pred[1:], truth[1:])
    assert np.array_equal(first.merge(second).counts, whole.counts)
    before = whole.counts.copy()
    whole.all_reduce()  # no process group: no-op
    assert np.array_equal(whole.counts, before)
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(kind(4))
    whole.reset()
    assert not whole.counts.any()


@pytest.mark.parametrize("kind", [BoundaryFScore, SizeIU])
def test_scores_and_bad_inputs(kind) -> None:
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.random((2, 3, 6, 6)))
    truth = torch.from_numpy(rng.integers(0, 3, (2, 6, 6)))
    a, b = kind(3), kind(3)
    a.update(scores, truth)  # scores are reduced by argmax over the class dimension
    b.update(scores.argmax(1), truth)
    assert np.array_equal(a.counts, b.counts)
    with pytest.raises(ValueError, match="channels"):
        a.update(scores[:, :2], truth)
    with pytest.raises(ValueError, match="shape"):
        a.update(scores.argmax(1)[:, :5], truth)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        a.update(torch.full((6, 6), 3), truth[0])
    with pytest.raises(TypeError):
        a.update(scores[:, 0], truth)


def test_table_columns_and_summary_line() -> None:
    cm = ConfusionMatrix(2, class_names=["sky", "road"])
    truth = torch.tensor([[0, 0, 1, 1]])
    cm.update(truth, truth)
    bf, size = BoundaryFScore(2, tolerance=0), SizeIU(2)
    bf.update(truth, truth)
    size.update(truth, truth)
    m = {**cm.compute(), **bf.compute(), **size.compute()}
    columns = boundary_and_size_columns(m)
    assert list(columns) == ["BF", "IU-S", "IU-M", "IU-L"]
    lines = cm.table(columns=columns).splitlines()
    assert lines[0].split() == ["class", "IU", "acc", "pixels", "BF", "IU-S", "IU-M", "IU-L"]
    # each class: 2 of 4 px = 50% of the image: large, and a 1-px boundary matched
    assert lines[1].split() == [
        "sky",
        "100.00",
        "100.00",
        "50.00",
        "100.00",
        "n/a",
        "n/a",
        "100.00",
    ]
    line = format_boundary_and_size(m)
    assert "boundary F 100.00" in line and "tolerance 0 px" in line and "large 100.00" in line
    assert format_boundary_and_size(cm.compute()) == ""
