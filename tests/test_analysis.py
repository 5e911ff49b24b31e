"""The stride-label upper bound (paper Appendix A): fcnkit.analysis and `fcnkit analyze`.

Every expectation comes from an independent computation: hand-made label maps with the
answer written out, and plain numpy loops for the majority vote, the nearest sampling and
the paper's four metrics (the formulas of Sec. 5 / the reference ``score.py``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fcnkit.analysis import (
    PAPER_STRIDE_BOUND,
    coarse_labels,
    stride_bound,
    stride_labels,
    upsample_cells,
)
from fcnkit.cli import main

IGN = 255


# --------------------------------------------------------------------------- references


def loop_majority(label: np.ndarray, s: int, n: int, ignore: int, empty: int) -> np.ndarray:
    """Majority per s x s cell by counting in Python; ties -> smallest class."""
    h, w = label.shape
    hc, wc = -(-h // s), -(-w // s)
    out = np.empty((hc, wc), np.int64)
    for i in range(hc):
        for j in range(wc):
            votes: dict[int, int] = {}
            for v in label[i * s : (i + 1) * s, j * s : (j + 1) * s].ravel():
                v = int(v)
                if v != ignore and 0 <= v < n:
                    votes[v] = votes.get(v, 0) + 1
            if not votes:
                out[i, j] = empty
            else:
                top = max(votes.values())
                out[i, j] = min(c for c, k in votes.items() if k == top)
    return out


def loop_nearest(label: np.ndarray, s: int, n: int, ignore: int, empty: int) -> np.ndarray:
    h, w = label.shape
    hc, wc = -(-h // s), -(-w // s)
    out = np.empty((hc, wc), np.int64)
    for i in range(hc):
        for j in range(wc):
            v = int(label[min(i * s + s // 2, h - 1), min(j * s + s // 2, w - 1)])
            out[i, j] = v if (v != ignore and 0 <= v < n) else empty
    return out


def loop_upsample(coarse: np.ndarray, s: int, h: int, w: int) -> np.ndarray:
    out = np.empty((h, w), np.int64)
    for r in range(h):
        for c in range(w):
            out[r, c] = coarse[r // s, c // s]
    return out


def loop_metrics(pairs, n: int, ignore: int, exclude=()) -> dict[str, float]:
    """The paper's four metrics from (truth, prediction) pairs; a prediction outside [0, n)
    ("no prediction") is an error counted for no class."""
    hits, truth, predicted = [0] * n, [0] * n, [0] * n
    total = 0
    for t_map, p_map in pairs:
        for t, p in zip(t_map.ravel().tolist(), p_map.ravel().tolist(), strict=True):
            if t == ignore or not 0 <= t < n:
                continue
            total += 1
            truth[t] += 1
            if 0 <= p < n:
                predicted[p] += 1
                hits[t] += t == p
    keep = [i for i in range(n) if i not in exclude]
    acc = [hits[i] / truth[i] for i in keep if truth[i] > 0]
    ius = {
        i: hits[i] / (truth[i] + predicted[i] - hits[i])
        for i in keep
        if truth[i] + predicted[i] - hits[i] > 0
    }
    return {
        "pixel_acc": sum(hits) / total,
        "mean_acc": sum(acc) / len(acc),
        "mean_iu": sum(ius.values()) / len(ius),
        "fw_iu": sum(truth[i] / total * iu for i, iu in ius.items() if truth[i] > 0),
    }


class LabelsOnly:
    """A dataset of label maps (the bound never looks at images)."""

    def __init__(self, labels, classes, ignore_index=IGN, eval_exclude=(), targets=None):
        self.labels = labels
        self.classes = list(classes)
        self.ignore_index = ignore_index
        self.eval_exclude = list(eval_exclude)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        lab = self.labels[i]
        if isinstance(lab, dict):
            return {"label": {k: torch.as_tensor(v) for k, v in lab.items()}}
        return {"label": torch.as_tensor(lab)}


# --------------------------------------------------------------------------- hand-made


def test_majority_by_hand_ties_and_ignore() -> None:
    # 5 x 6 at stride 2: 3 x 3 cells, the last row of cells one pixel tall
    label = torch.tensor(
        [
            [1, 1, 2, 2, IGN, IGN],
            [1, 0, 2, 0, IGN, IGN],
            [3, 3, 0, 1, IGN, 2],
            [2, 2, 1, 0, IGN, IGN],
            [4, IGN, 3, 3, 0, 5],
        ]
    )
    coarse = coarse_labels(label, 2, 6)
    assert coarse.tolist() == [
        [1, 2, IGN],  # 3 votes for 1; 2 beats 0 (2 vs 1); no labelled pixel -> ignore
        [2, 0, 2],  # 3,3,2,2: tie -> 2 (smaller); 0,1,1,0: tie -> 0; one vote for 2
        [4, 3, 0],  # ignore does not vote; 3,3; 0 vs 5: tie -> 0
    ]
    # classes outside [0, n) do not vote either; `unlabelled` marks empty cells
    assert coarse_labels(label, 2, 3, unlabelled=-7).tolist() == [
        [1, 2, -7],
        [2, 0, 2],
        [-7, -7, 0],
    ]
    up = stride_labels(label, 2, 6)
    assert up.shape == label.shape
    assert up[4].tolist() == [4, 4, 3, 3, 0, 0] and up[:2, 4:].eq(IGN).all()


def test_nearest_by_hand() -> None:
    label = torch.arange(35).view(5, 7) % 6
    label[2, 1] = IGN
    # stride 3: centres at rows 1, 4 and columns 1, 4, 7 -> clamped to 6
    assert coarse_labels(label, 3, 6, method="nearest").tolist() == [
        [label[1, 1].item(), label[1, 4].item(), label[1, 6].item()],
        [label[4, 1].item(), label[4, 4].item(), label[4, 6].item()],
    ]
    # stride 2: centre row 2 * i + 1: cell (1, 0) samples (3, 1); cell (1, 0) of stride 4
    # samples (2, 2); an unlabelled centre gives the `unlabelled` value
    label[3, 1] = IGN
    assert coarse_labels(label, 2, 6, method="nearest", unlabelled=6)[1, 0] == 6
    assert coarse_labels(label, 4, 6, method="nearest")[0, 0] == label[2, 2]


def test_upsample_is_nearest_and_cropped() -> None:
    coarse = torch.tensor([[1, 2], [3, 4]])
    assert upsample_cells(coarse, 3, (4, 5)).tolist() == [
        [1, 1, 1, 2, 2],
        [1, 1, 1, 2, 2],
        [1, 1, 1, 2, 2],
        [3, 3, 3, 4, 4],
    ]


def test_stride_one_is_exact_and_settings_are_checked() -> None:
    label = torch.randint(0, 4, (9, 11))
    label[0, :3] = IGN
    for method in ("majority", "nearest"):
        assert torch.equal(stride_labels(label, 1, 4, method=method), label)
    with pytest.raises(ValueError, match="stride"):
        coarse_labels(label, 0, 4)
    with pytest.raises(ValueError, match="method"):
        coarse_labels(label, 2, 4, method="mode")
    with pytest.raises(ValueError, match="H x W"):
        coarse_labels(label[None], 2, 4)


@pytest.mark.parametrize("seed", range(4))
def test_majority_and_nearest_match_loops_on_random_labels(seed: int) -> None:
    g = np.random.default_rng(seed)
    h, w = g.integers(1, 40, size=2)
    n = int(g.integers(2, 6))
    # few classes and blocky labels make ties frequent
    label = g.integers(0, n, size=(h, w))
    label[g.random((h, w)) < 0.2] = IGN
    for s in (1, 2, 3, 4, 7, 16, 64):
        for method, loop in (("majority", loop_majority), ("nearest", loop_nearest)):
            got = coarse_labels(torch.from_numpy(label), s, n, method=method, unlabelled=n)
            want = loop(label, s, n, IGN, n)
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{method} stride {s}")
            full = stride_labels(torch.from_numpy(label), s, n, method=method)
            np.testing.assert_array_equal(
                full.numpy(), loop_upsample(loop(label, s, n, IGN, IGN), s, h, w)
            )


# --------------------------------------------------------------------------- the bound


def _close(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12), (k, got[k], v)


def test_bound_metrics_match_loops_with_ignore_and_exclusion() -> None:
    g = np.random.default_rng(7)
    n = 5
    labels = []
    for h, w in ((13, 17), (8, 8), (21, 6)):
        lab = np.repeat(np.repeat(g.integers(0, n, size=(h // 2 + 1, w // 3 + 1)), 2, 0), 3, 1)
        lab = lab[:h, :w].copy()
        lab[g.random((h, w)) < 0.15] = IGN
        labels.append(lab)
    classes = ["a", "b", "c", "d", "e"]
    ds = LabelsOnly(labels, classes, eval_exclude=["d"])
    result = stride_bound(ds, (2, 4, 8))
    assert result.num_images == 3 and result.exclude == {"": ["d"]}
    for method, loop in (("majority", loop_majority), ("nearest", loop_nearest)):
        for s in (2, 4, 8):
            pairs = [
                (lab, loop_upsample(loop(lab, s, n, IGN, -1), s, *lab.shape)) for lab in labels
            ]
            want = loop_metrics(pairs, n, IGN, exclude={3})
            _close(result.metrics[""][method][s], want)
            assert len(result.metrics[""][method][s]["per_class_iu"]) == n
    # the nearest bound charges unlabelled centres as errors, so some error exists here
    assert result.metrics[""]["nearest"][8]["pixel_acc"] < 1.0


def test_bound_is_perfect_at_stride_one_and_honours_ignore_index_zero() -> None:
    label = np.array([[0, 1, 1, 2], [0, 0, 2, 2], [1, 1, 0, 2]])
    ds = LabelsOnly([label], ["void", "x", "y"], ignore_index=0)
    result = stride_bound(ds, (1, 2))
    m1 = result.metrics[""]["majority"][1]
    assert m1["pixel_acc"] == m1["mean_acc"] == m1["mean_iu"] == m1["fw_iu"] == 1.0
    assert m1["num_pixels"] == 8  # the four 0 pixels are ignored
    # stride 2 by hand (0 ignored, does not vote): cells {1} -> 1, {1,2,2,2} -> 2, {1,1} -> 1,
    # {2} -> 2, so every row predicts 1 1 2 2; the one miss is truth 1 at (0, 2)
    m2 = result.metrics[""]["majority"][2]
    want = loop_metrics([(label, np.array([[1, 1, 2, 2]] * 3))], 3, 0)
    _close(m2, want)
    assert m2["pixel_acc"] == 7 / 8


def test_multi_target_labels_and_target_choice() -> None:
    sem = np.array([[0, 0, 1, 1], [0, 2, 1, 1]])
    geo = np.array([[0, 0, 0, 1], [1, 1, 1, 1]])
    ds = LabelsOnly(
        [{"sem": sem, "geo": geo}],
        ["s0", "s1", "s2"],
        eval_exclude=["s2"],
        targets={"sem": ["s0", "s1", "s2"], "geo": ["sky", "ground"]},
    )
    result = stride_bound(ds, (2,))
    assert set(result.metrics) == {"sem", "geo"}
    assert result.exclude == {"sem": ["s2"], "geo": []}
    for name, lab, n, excl in (("sem", sem, 3, {2}), ("geo", geo, 2, set())):
        pred = loop_upsample(loop_majority(lab, 2, n, IGN, IGN), 2, *lab.shape)
        _close(result.metrics[name]["majority"][2], loop_metrics([(lab, pred)], n, IGN, excl))
    assert set(stride_bound(ds, (2,), targets=["geo"]).metrics) == {"geo"}
    with pytest.raises(ValueError, match="unknown target"):
        stride_bound(ds, (2,), targets=["depth"])


def test_boundary_f_and_size_iu_bounds_by_hand() -> None:
    # 8 x 8, class 0 in columns 0-2 and class 1 in 3-7. At stride 1 everything is perfect; at
    # stride 4 each row's first cell (three 0s, one 1) votes 0, so the edge moves one column
    # right: mean IU stays high (0: 24/32, 1: 32/40) but no boundary pixel is where it was
    # (tolerance 0.75% of the diagonal, under a pixel here), so boundary F is 0.
    label = np.zeros((8, 8), np.int64)
    label[:, 3:] = 1
    result = stride_bound(LabelsOnly([label], ["a", "b"]), (1, 4), ("majority",))
    exact, coarse = result.metrics[""]["majority"][1], result.metrics[""]["majority"][4]
    assert exact["boundary_f"] == 1.0 and exact["size_iu"]["large"] == 1.0
    assert coarse["mean_iu"] == pytest.approx((24 / 32 + 32 / 40) / 2)
    assert coarse["boundary_f"] == 0.0 and coarse["per_class_boundary_f"] == [0.0, 0.0]
    assert coarse["size_iu"]["large"] == pytest.approx((24 / 32 + 32 / 40) / 2)  # two large regions
    assert math.isnan(coarse["size_iu"]["small"])  # no small region, no false one
    assert "bound. F" in result.beyond_table() and "IU large" in result.beyond_table()
    bare = stride_bound(LabelsOnly([label], ["a", "b"]), (4,), boundary_f=False, size_iu=False)
    assert "boundary_f" not in bare.metrics[""]["majority"][4] and bare.beyond_table() == ""


def test_beyond_bounds_leave_out_the_no_prediction_column() -> None:
    # nearest sampling with unlabelled centres predicts "no prediction" (class n): its
    # boundaries and regions are errors of the true classes, never a class of their own
    g = np.random.default_rng(3)
    label = np.repeat(np.repeat(g.integers(0, 3, size=(5, 5)), 4, 0), 4, 1)
    label[g.random(label.shape) < 0.3] = IGN
    m = stride_bound(LabelsOnly([label], ["a", "b", "c"]), (4,), ("nearest",)).metrics[""]
    m = m["nearest"][4]
    assert len(m["per_class_boundary_f"]) == 3 and len(m["per_class_size_iu"]["large"]) == 3
    assert 0 <= m["boundary_f"] < 1 and "boundary_counts" not in m


def test_paper_values() -> None:
    # Appendix A of the paper: mean IU at each downsampling factor
    assert PAPER_STRIDE_BOUND == {128: 50.9, 64: 73.3, 32: 86.1, 16: 92.8, 8: 96.4, 4: 98.5}


# --------------------------------------------------------------------------- the command


def test_cli_stride_bound_on_synthetic(tmp_path, capsys) -> None:
    out = tmp_path / "bound.json"
    args = ["analyze", "stride-bound", "synthetic", "--split", "val"]
    args += ["--option", "num_samples=3", "--strides", "4,32", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "majority" in text and "nearest" in text and "mean IU" in text
    assert "98.5" in text  # the paper's row is quoted
    record = json.loads(out.read_text())
    assert record["strides"] == [4, 32] and record["num_images"] == 3
    assert record["command"].startswith("fcnkit analyze stride-bound synthetic")
    m4 = record["metrics"][""]["majority"]["4"]
    m32 = record["metrics"][""]["majority"]["32"]
    assert 0 < m32["mean_iu"] < m4["mean_iu"] <= 1  # coarser output, lower bound
    assert 0 <= m32["boundary_f"] < m4["boundary_f"] <= 1 and "size_iu" in m32
    assert "bound. F" in text


def test_cli_stride_bound_errors(tmp_path, capsys) -> None:
    assert main(["analyze", "stride-bound", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["analyze", "stride-bound", "siftflow"]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["analyze", "stride-bound", "synthetic", "--split", "bogus"]) == 2
    assert "no split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "stride-bound", "synthetic", "--strides", "4,x"])
