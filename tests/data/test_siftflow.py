"""SIFT Flow: original layout, semantic 0 void / 1..33 -> 0..32, geometric -1 void / 1..3."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError
from fcnkit.data.siftflow import EVAL_EXCLUDE, SEMANTIC_CLASSES, SUBDIR, _warned_no_geo

NAMES = np.array([[np.array([c]) for c in SEMANTIC_CLASSES]], dtype=object)


def write_sample(root: Path, name: str, sem: np.ndarray, geo: np.ndarray | None) -> None:
    for d in ("Images", "SemanticLabels"):
        (root / d / SUBDIR).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*sem.shape, 3), 120, np.uint8)).save(
        root / "Images" / SUBDIR / f"{name}.jpg"
    )
    scipy.io.savemat(
        root / "SemanticLabels" / SUBDIR / f"{name}.mat",
        {"S": sem.astype(np.uint16), "names": NAMES},
    )
    if geo is not None:
        (root / "GeoLabels" / SUBDIR).mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "GeoLabels" / SUBDIR / f"{name}.mat", {"S": geo.astype(np.int16)})


SEM = np.array([[0, 1, 2, 9], [11, 16, 28, 33]])
GEO = np.array([[-1, 0, 1, 1], [2, 2, 3, 3]])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_sample(tmp_path, "coast_a1", SEM, GEO)
    write_sample(tmp_path, "street_b2", SEM[::-1].copy(), GEO[::-1].copy())
    (tmp_path / "trainval.txt").write_text("coast_a1\n")
    (tmp_path / "test.txt").write_text("street_b2\n")
    return tmp_path


def test_semantic_and_geometric_conventions(root: Path) -> None:
    ds = create_dataset("siftflow", root, "trainval")
    assert len(ds) == 1 and ds.targets is not None and list(ds.targets) == ["sem", "geo"]
    s = ds[0]
    assert s["id"] == "coast_a1" and s["image"].shape == (3, 2, 4)
    sem, geo = s["label"]["sem"], s["label"]["geo"]
    assert sem.dtype == torch.int64 and geo.dtype == torch.int64
    # 0 void -> 255; k -> k - 1
    assert sem.tolist() == [[255, 0, 1, 8], [10, 15, 27, 32]]
    # -1 void -> 255; 0 is void too (the reference's uint8 arithmetic); 1..3 -> 0..2
    assert geo.tolist() == [[255, 255, 0, 0], [1, 1, 2, 2]]
    assert ds.targets["geo"] == ["sky", "horizontal", "vertical"]


def test_class_names_and_excluded_classes(root: Path) -> None:
    ds = create_dataset("siftflow", root, "test")
    assert len(ds.classes) == 33 and ds.classes[0] == "awning" and ds.classes[32] == "window"
    assert ds.classes[8] == "cow" and ds.classes[10] == "desert" and ds.classes[15] == "moon"
    assert ds.eval_exclude == EVAL_EXCLUDE == ["cow", "desert", "moon"]
    assert len(ds.palette) == 33


def test_semantic_only_without_geolabels_warns_once(root: Path) -> None:
    import shutil

    shutil.rmtree(root / "GeoLabels")
    _warned_no_geo.discard(str(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = create_dataset("siftflow", root, "trainval")
        test = create_dataset("siftflow", root, "test")
    assert len([w for w in caught if "GeoLabels" in str(w.message)]) == 1
    assert "no GeoLabels" in ds.notes[0] and "no GeoLabels" in test.notes[0]  # for the CLI
    assert ds.targets is None
    label = ds[0]["label"]
    assert isinstance(label, torch.Tensor) and label.tolist()[0] == [255, 0, 1, 8]
    with pytest.raises(DatasetError, match="GeoLabels"):
        create_dataset("siftflow", root, "trainval", geo=True)


def test_geo_false_skips_geolabels(root: Path) -> None:
    ds = create_dataset("siftflow", root, "trainval", geo=False)
    assert isinstance(ds[0]["label"], torch.Tensor) and "geo" not in ds.files(0)


def test_shipped_split_lists_used_when_root_lacks_them(root: Path) -> None:
    (root / "trainval.txt").unlink()
    (root / "test.txt").unlink()
    ds = create_dataset("siftflow", root, "test", strict=False)
    assert len(ds) == 200 and "coast_natu975" in ds.ids
    assert len(create_dataset("siftflow", root, "trainval", strict=False)) == 2486
    with pytest.raises(DatasetError, match="missing"):
        create_dataset("siftflow", root, "test")  # its files are not under this root


def test_classes_txt_in_root_is_parsed(root: Path) -> None:
    body = "\n".join(f"{k + 1:02d} {c.upper()}" for k, c in enumerate(SEMANTIC_CLASSES))
    (root / "classes.txt").write_text(
        f"Semantic: 0 is void.\n\n{body}\n\n"
        "Geometric: -1 is void.\n\n01 sky\n02 horizontal\n03 vertical\n"
    )
    ds = create_dataset("siftflow", root, "trainval")
    assert ds.classes[0] == "AWNING" and ds.targets["geo"] == ["sky", "horizontal", "vertical"]


def test_out_of_range_values_raise(root: Path) -> None:
    write_sample(root, "coast_a1", np.array([[34, 1]]), np.array([[1, 1]]))
    with pytest.raises(DatasetError, match=r"SemanticLabels.*coast_a1\.mat.*34.*1\.\.33"):
        create_dataset("siftflow", root, "trainval")[0]
    write_sample(root, "coast_a1", np.array([[1, 1]]), np.array([[4, 1]]))
    with pytest.raises(DatasetError, match=r"GeoLabels.*coast_a1\.mat.*4.*1\.\.3"):
        create_dataset("siftflow", root, "trainval")[0]


def test_missing_variable_s(root: Path) -> None:
    scipy.io.savemat(root / "SemanticLabels" / SUBDIR / "coast_a1.mat", {"T": SEM})
    with pytest.raises(DatasetError, match=r"coast_a1\.mat: no variable 'S'"):
        create_dataset("siftflow", root, "trainval")[0]


def test_stats_and_check_with_two_targets(root: Path, tmp_path: Path) -> None:
    from fcnkit.data.check import check
    from fcnkit.data.stats import sample_overlays, target_palettes, write_stats
    from fcnkit.plots import plot_class_frequency

    ds = create_dataset("siftflow", root, "trainval")
    stats = write_stats(ds, tmp_path / "stats")
    assert (tmp_path / "stats" / "class_frequency.csv").is_file()
    plot_class_frequency(stats, target_palettes(ds), tmp_path / "stats" / "class_frequency.png", "")
    assert sample_overlays(ds, [0])[0][1].shape[-1] == 3
    assert list(stats.targets) == ["sem", "geo"]
    assert stats.targets["geo"].pixels.tolist() == [2, 2, 2]  # sky, horizontal, vertical
    assert stats.targets["geo"].ignore_pixels == 2
    assert stats.targets["sem"].pixels.sum() == 7 and stats.targets["sem"].ignore_pixels == 1
    assert (tmp_path / "stats" / "class_frequency.png").is_file()
    write_sample(root, "street_b2", SEM, np.array([[9, 1, 1, 1], [1, 1, 1, 1]]))
    reports = check("siftflow", root, splits=["trainval", "test"])
    assert [r.ok for r in reports] == [True, False]
    assert "GeoLabels" in reports[1].problems[0] and "street_b2.mat" in reports[1].problems[0]


def test_validation_carve_out_is_every_tenth_sorted_trainval_name():
    from fcnkit.data.siftflow import split_list

    nowhere = Path("/nonexistent")  # no local lists: fcnkit's shipped FCN lists
    trainval, test = split_list(nowhere, "trainval"), split_list(nowhere, "test")
    train, val = split_list(nowhere, "train"), split_list(nowhere, "val")
    assert val == sorted(trainval)[::10] and len(val) == 249
    assert train == [n for n in trainval if n not in set(val)] and len(train) == 2237
    assert not set(val) & set(test) and not set(train) & set(test)


def test_carve_out_of_a_one_image_trainval_is_refused(tmp_path: Path) -> None:
    from fcnkit.data.base import SplitUnavailable
    from fcnkit.data.siftflow import split_list

    (tmp_path / "trainval.txt").write_text("coast_a1\n")
    with pytest.raises(SplitUnavailable, match="too few to carve"):
        split_list(tmp_path, "train")
