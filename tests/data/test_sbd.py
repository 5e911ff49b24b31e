"""SBD: cls/*.mat with the MATLAB struct GTcls, field Segmentation."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError
from fcnkit.data.voc import VOC_CLASSES


def write_sbd(root: Path, ids: dict[str, list[str]], seg: np.ndarray) -> None:
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    for split, names in ids.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i in names:
            Image.fromarray(np.zeros((*seg.shape, 3), np.uint8)).save(root / "img" / f"{i}.jpg")
            # As released: a 1x1 struct GTcls with Boundaries (cell), Segmentation (uint8),
            # CategoriesPresent.
            boundaries = np.empty((20, 1), dtype=object)
            for k in range(20):
                boundaries[k, 0] = np.zeros(seg.shape, np.uint8)
            gtcls = {
                "Boundaries": boundaries,
                "Segmentation": seg.astype(np.uint8),
                "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8),
            }
            scipy.io.savemat(root / "cls" / f"{i}.mat", {"GTcls": gtcls})


@pytest.fixture
def seg() -> np.ndarray:
    s = np.zeros((9, 7), np.uint8)
    s[2:5, 1:4] = 7  # car
    s[6:, 5:] = 20  # tvmonitor
    return s


def test_gtcls_segmentation_read_unchanged(tmp_path: Path, seg: np.ndarray) -> None:
    write_sbd(tmp_path, {"train": ["2008_000002", "2008_000003"], "val": ["2008_000004"]}, seg)
    ds = create_dataset("sbd", tmp_path, "train")
    assert len(ds) == 2 and ds.classes == VOC_CLASSES
    s = ds[1]
    assert s["id"] == "2008_000003" and s["image"].shape == (3, 9, 7)
    assert s["label"].dtype == torch.int64
    assert np.array_equal(s["label"].numpy(), seg.astype(np.int64))
    assert len(create_dataset("sbd", tmp_path, "val")) == 1


def test_mat_without_gtcls_names_file_and_expectation(tmp_path: Path, seg: np.ndarray) -> None:
    write_sbd(tmp_path, {"train": ["a"]}, seg)
    scipy.io.savemat(tmp_path / "cls" / "a.mat", {"GTinst": {"Segmentation": seg}})
    with pytest.raises(DatasetError, match=r"a\.mat: no variable 'GTcls' \(found: GTinst\)"):
        create_dataset("sbd", tmp_path, "train")[0]


def test_value_above_20_is_an_error(tmp_path: Path, seg: np.ndarray) -> None:
    seg[0, 0] = 21
    write_sbd(tmp_path, {"train": ["a"]}, seg)
    with pytest.raises(DatasetError, match=r"a\.mat.*21.*expected 0\.\.20"):
        create_dataset("sbd", tmp_path, "train")[0]
