"""``fcnkit data list | check | stats`` on small datasets written in tmp_path."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnkit.cli import main
from fcnkit.cli.data import parse_options
from fcnkit.engine.config import load_config


def write(root: Path, stem: str, mask: np.ndarray, image_shape: tuple | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    shape = image_shape or (*mask.shape, 3)
    Image.fromarray(np.full(shape, 100, np.uint8)).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")


MASK = np.array([[0, 0, 1, 1], [0, 2, 2, 255], [0, 0, 0, 0]])


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    for k in range(5):
        write(root, f"img{k}", MASK)
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    return root


def test_list(capsys) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("voc", "sbd", "siftflow", "nyud", "camvid", "cityscapes", "folder"):
        assert name in out
    assert "seg11valid" in out


def test_check_clean_dataset(clean: Path, capsys) -> None:
    assert main(["data", "check", "folder", "--root", str(clean), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "checked all 5 samples: OK" in out and "no problems found" in out


def test_check_reports_every_problem_at_once(clean: Path, capsys) -> None:
    write(clean, "bad_value", np.array([[0, 7]]))  # 7 is not a class
    write(clean, "bad_size", MASK, image_shape=(5, 5, 3))  # image 5x5, mask 3x4
    (clean / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    Image.fromarray(MASK.astype(np.uint8)).save(clean / "masks" / "corrupt.png")
    Image.fromarray(MASK.astype(np.uint8)).save(clean / "masks" / "orphan.png")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(clean / "images" / "nomask.png")
    code = main(["data", "check", "folder", "--root", str(clean), "--split", "all"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1
    assert "5 problem(s)" in out and "5 problem(s) found" in captured.err
    assert "masks/bad_value.png" in out and "value(s) 7; expected 0..2" in out
    assert "bad_size" in out and "3x4 (HxW) but the image is 5x5" in out
    assert "images/corrupt.png: cannot decode" in out
    assert "masks/orphan.png: mask without an image" in out
    assert "masks/nomask.png: missing" in out
    # the healthy samples are still checked and not reported
    assert "img0" not in out


def test_check_binary_masks_explains_value_map(tmp_path: Path, capsys) -> None:
    for k in range(3):
        write(tmp_path, f"s{k}", np.array([[0, 255]]))
    args = ["data", "check", "folder", "--root", str(tmp_path), "--split", "all"]
    assert main([*args, "--option", "classes=membrane,cell"]) == 1
    assert "value_map=0:0,255:1" in capsys.readouterr().out
    opts = ["--option", "classes=membrane,cell", "--option", "value_map=0:0,255:1"]
    assert main([*args, *opts]) == 0


def test_check_all_splits_skips_absent_lists(clean: Path, capsys) -> None:
    assert main(["data", "check", "folder", "--root", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "[all] checked all 5" in out and "[val] checked all 1" in out
    assert "[test] skipped" in out


def test_check_user_errors(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", "nope", "--root", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["data", "check", "folder", "--root", str(tmp_path / "absent")]) == 2
    assert main(["data", "check", "voc", "--root", str(tmp_path), "--split", "bogus"]) == 2
    assert main(["data", "check", "folder", "--root", str(tmp_path), "--option", "novalue"]) == 2


def test_check_wrong_layout_is_a_problem(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", "camvid", "--root", str(tmp_path), "--split", "train"]) == 1
    assert "train: missing" in capsys.readouterr().out


def test_stats_writes_table_chart_and_grid(clean: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "stats"
    args = ["data", "stats", "folder", "--root", str(clean), "--split", "all"]
    assert main([*args, "--out", str(out_dir), "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "road" in out and "5 images, 5 ignore pixels" in out
    rows = list(csv.DictReader((out_dir / "class_frequency.csv").open()))
    pixels = {r["class"]: int(r["pixels"]) for r in rows}
    assert pixels == {"background": 5 * 7, "road": 5 * 2, "car": 5 * 2}
    assert {r["class"]: int(r["images"]) for r in rows}["car"] == 5
    # every image holds every class: f = 35/55, 10/55, 10/55, median 10/55 -> 10/35, 1, 1
    weights = [float(r["median_frequency_weight"]) for r in rows]
    assert weights == pytest.approx([10 / 35, 1.0, 1.0], rel=1e-5)
    assert "loss.class_weights: [0.285714, 1, 1]" in out
    fragment = load_config(out_dir / "class_weights.yaml")
    assert fragment.loss.class_weights == pytest.approx(weights)
    for name in ("class_frequency.png", "samples.png"):
        with Image.open(out_dir / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_parse_options() -> None:
    opts = parse_options(
        ["value_map=0:0,255:1", "geo=false", "year=2011", "classes=a,b", "x-y=[1]"]
    )
    assert opts == {
        "value_map": "0:0,255:1",
        "geo": False,
        "year": 2011,
        "classes": "a,b",
        "x_y": [1],
    }


@pytest.mark.integration
def test_check_and_stats_on_real_siftflow(shared_data: Path, tmp_path: Path, capsys) -> None:
    root = shared_data / "siftflow"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    assert main(["data", "check", "siftflow", "--root", str(root), "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "[trainval] checked 20 of 2486 samples: OK" in out
    assert "[test] checked 20 of 200 samples: OK" in out and "GeoLabels" in out
    args = ["data", "stats", "siftflow", "--root", str(root), "--split", "test"]
    assert main([*args, "--limit", "20", "--samples", "4", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "(excluded from evaluation)" in out and "sky" in out
    assert (tmp_path / "s" / "samples.png").is_file()


def test_check_and_stats_see_plain_datasets_through_the_adapter(tmp_path: Path) -> None:
    import torch

    from fcnkit.data.base import DatasetAdapter, as_segmentation_dataset
    from fcnkit.data.check import check_dataset
    from fcnkit.data.stats import class_statistics

    class Plain(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict:
            label = torch.full((3, 4), i + (2 if i else 0), dtype=torch.int64)  # 0, then 3 = bad
            return {"image": torch.zeros(3, 3, 4, dtype=torch.uint8), "label": label}

    view = as_segmentation_dataset(Plain())
    assert isinstance(view, DatasetAdapter) and view.files(0) == {} and view.palette
    report = check_dataset(Plain(), "plain")
    assert report.checked == 2 and len(report.problems) == 1
    assert "sample '1'" in report.problems[0] and "value(s) 3" in report.problems[0]
    assert class_statistics(Plain()).targets["label"].pixels.tolist() == [12, 0]


def test_help_documents_limit_split_and_defaults(capsys) -> None:
    from fcnkit.data.check import sample_indices

    texts = {}
    for action in ("check", "stats"):
        with pytest.raises(SystemExit):
            main(["data", action, "--help"])
        texts[action] = " ".join(capsys.readouterr().out.split())
    for text in texts.values():
        assert "spread evenly" in text and "not the first N" in text
    assert "repeatable (--split train --split val)" in texts["check"]
    assert "Default: every split" in texts["check"]
    assert "problems printed per split; all are counted (default: 200)" in texts["check"]
    assert "(default: the dataset's first split" in texts["stats"]
    assert "overlay grid, spread evenly like --limit (default: 16)" in texts["stats"]
    assert sample_indices(5, 2) == [0, 4] and sample_indices(5, 3) == [0, 2, 4]


def test_limit_checks_evenly_spread_samples(clean: Path, capsys) -> None:
    write(clean, "img9", np.array([[0, 7]]))  # sorted last: only an evenly spread limit sees it
    args = ["data", "check", "folder", "--root", str(clean), "--split", "all", "--limit", "2"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "checked 2 of 6 samples: 1 problem(s)" in out and "img9.png" in out
