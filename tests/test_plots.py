"""fcnkit.plots: every figure (curves, confusion, per-class bars, sample grids) in one module."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit import plots
from fcnkit.metrics import ConfusionMatrix
from fcnkit.plots import SamplePrediction

PALETTE = [(0, 0, 0), (200, 10, 10), (10, 200, 10)]


def samples() -> list[SamplePrediction]:
    """Two samples of different widths; the second has an ignore (255) pixel."""
    g = np.random.default_rng(0)
    first = SamplePrediction(
        g.integers(0, 256, (4, 6, 3), dtype=np.uint8), np.ones((4, 6), int), np.zeros((4, 6), int)
    )
    truth = np.full((3, 5), 2)
    truth[0, 0] = 255
    second = SamplePrediction(g.integers(0, 256, (3, 5, 3), dtype=np.uint8), truth, truth % 3)
    return [first, second]


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, fcnkit.plots, fcnkit.engine.train; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_curves_skips_null_metrics(tmp_path: Path) -> None:
    """NaN losses / metrics are logged as null; the plot leaves them out instead of crashing."""
    run = tmp_path / "run"
    run.mkdir()
    events = [
        {"event": "train", "step": 1, "loss": 2.0},
        {"event": "train", "step": 2, "loss": None},
        {"event": "eval", "step": 2, "mean_iu": None, "pixel_acc": 0.5},
        {"event": "train", "step": 3, "loss": 1.0},
        {"event": "eval", "step": 3, "mean_iu": 0.25},
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert plots.plot_curves(run, run / "curves.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no training log"):
        plots.plot_curves(tmp_path / "nothing", tmp_path / "x.png")


def test_plot_metric_vs_time_counts_training_seconds(tmp_path: Path, monkeypatch) -> None:
    """x: seconds from meta.json's start to each eval event, less the logged evaluation
    seconds so far (Sec. 4.3 loss-sampling curves); null metrics are left out."""
    runs = {}
    for name, start in (("p=1", 100.0), ("p=0.5", None)):
        run = tmp_path / name
        run.mkdir()
        if start is not None:
            (run / "meta.json").write_text(json.dumps({"started_unix": start}))
        events = [
            {"event": "train", "time": 101.0, "step": 5, "loss": 2.0},
            {"event": "eval", "time": 112.0, "step": 10, "mean_iu": 0.2, "seconds": 2.0},
            {"event": "eval", "time": 130.0, "step": 20, "mean_iu": None, "seconds": 3.0},
            {"event": "eval", "time": 150.0, "step": 30, "mean_iu": 0.4, "seconds": 5.0},
        ]
        (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        runs[name] = run
    drawn = {}
    save = plots._save

    def keep(fig, path, dpi):
        drawn["axes"] = [[(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                          for line in ax.get_lines()] for ax in fig.axes]  # fmt: skip
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    out = plots.plot_metric_vs_time(runs, tmp_path / "docs" / "curve.png", title="sampling")
    assert out.stat().st_size > 1000
    by_time, by_step = drawn["axes"]
    # meta start 100: 112 - 100 - 2 = 10; 150 - 100 - (2 + 3 + 5) = 40. No meta: first event
    assert by_time[0] == ("p=1", [10.0, 40.0], [20.0, 40.0])
    assert by_time[1] == ("p=0.5", [9.0, 39.0], [20.0, 40.0])
    assert by_step[0] == ("p=1", [10, 30], [20.0, 40.0])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "log.jsonl").write_text(json.dumps({"event": "train", "time": 1.0}) + "\n")
    with pytest.raises(ValueError, match="no eval event with 'mean_iu'"):
        plots.plot_metric_vs_time({"x": empty}, tmp_path / "x.png")


def test_plot_confusion_names_and_folder(tmp_path: Path) -> None:
    matrix = ConfusionMatrix(3, class_names=["sky", "road", "car"])
    matrix.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 1, 2]]))
    path = plots.plot_confusion(matrix, tmp_path / "new" / "c.png", "title")
    assert path == tmp_path / "new" / "c.png"  # the folder is created
    image = Image.open(path)
    assert image.size[0] > 200 and image.size[1] > 200
    other = plots.plot_confusion(matrix, tmp_path / "d.png", class_names=["a", "b", "c"])
    assert other.stat().st_size > 1000


def test_plot_per_class_marks_missing_and_excluded(tmp_path: Path) -> None:
    path = plots.plot_per_class(
        ["sky", "road", "car", "moon"],
        [0.5, None, math.nan, 0.25],
        tmp_path / "bars.png",
        excluded=["moon", 1],
        palette=PALETTE,
    )
    assert Image.open(path).size[0] > 200


def test_plot_per_class_groups_boundary_f_and_size_iu(tmp_path: Path, monkeypatch) -> None:
    drawn = {}

    def keep(fig, path, dpi):  # look at the figure instead of the PNG
        drawn["fig"] = fig
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    metrics = {
        "per_class_boundary_f": [0.5, math.nan, 0.25],
        "per_class_size_iu": {"small": [None, 0.1, 0.2], "medium": [0.3] * 3, "large": [1.0] * 3},
    }
    more = plots.boundary_and_size_series(metrics)
    assert list(more) == ["boundary F", "IU small", "IU medium", "IU large"]
    plots.plot_per_class(["a", "b", "c"], [0.9, 0.8, None], tmp_path / "g.png", more=more)
    ax = drawn["fig"].axes[0]
    bars = ax.patches
    assert len(bars) == 3 * 5  # IU and 4 more per class
    heights = np.array([b.get_height() for b in bars]).reshape(5, 3)  # series x class
    np.testing.assert_allclose(heights[0], [90, 80, 0])  # no bar for a missing value
    np.testing.assert_allclose(heights[1], [50, 0, 25])
    np.testing.assert_allclose(heights[2], [0, 10, 20])
    centres = np.array([b.get_x() + b.get_width() / 2 for b in bars]).reshape(5, 3)
    np.testing.assert_allclose(centres.mean(0), [0, 1, 2])  # each group around its class tick
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["IU", *more]
    assert plots.boundary_and_size_series({"per_class_iu": [0.5]}) == {}


def test_prediction_grid_rows_are_image_truth_prediction() -> None:
    grid = plots.prediction_grid(samples(), PALETTE)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 4 + 3, 3 * 6)
    first, second = samples()
    hwc = grid.permute(1, 2, 0).numpy()
    assert np.array_equal(hwc[:4, :6], first.image)
    assert tuple(hwc[0, 6]) == PALETTE[1] and tuple(hwc[0, 12]) == PALETTE[0]  # truth, pred
    assert np.array_equal(hwc[4:, :5], second.image)
    assert not hwc[4:, 15:].any()  # the narrower row is padded with black
    ignore = tuple(plots.color_labels(np.array([[255]]), PALETTE)[0, 0])
    assert tuple(hwc[4, 5]) == ignore  # the ignore label has a colour of its own


def test_plot_overlays_writes_a_grid_with_legend(tmp_path: Path) -> None:
    path = plots.plot_overlays(samples(), PALETTE, ["bg", "red", "green"], tmp_path / "o.png")
    assert Image.open(path).size == (600, 2 * 200)  # three panels wide, 200 px per sample
