"""CamVid (SegNet layout): 11 classes, annotation value 11 = void -> 255."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError
from fcnkit.data.camvid import CAMVID_CLASSES


def write_pair(root: Path, split: str, name: str, annot: np.ndarray) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*annot.shape, 3), np.uint8)).save(root / split / f"{name}.png")
    Image.fromarray(annot.astype(np.uint8), mode="L").save(root / f"{split}annot" / f"{name}.png")


ANNOT = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])


def test_values_and_void(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_pair(tmp_path, split, "0001TP_006690", ANNOT)
    write_pair(tmp_path, "train", "Seq05VD_f00000", ANNOT)
    ds = create_dataset("camvid", tmp_path, "train")
    assert ds.ids == ["0001TP_006690", "Seq05VD_f00000"]
    assert ds.classes == CAMVID_CLASSES and len(ds.classes) == 11
    assert ds.classes[0] == "Sky" and ds.classes[10] == "Bicyclist"
    lab = ds[0]["label"]
    assert lab.dtype == torch.int64
    assert lab.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 255]]
    assert len(create_dataset("camvid", tmp_path, "val")) == 1
    assert len(create_dataset("camvid", tmp_path, "test")) == 1


def test_value_12_is_an_error(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", "a", np.array([[12, 0]]))
    with pytest.raises(DatasetError, match=r"trainannot/a\.png.*12.*11 \(void\)"):
        create_dataset("camvid", tmp_path, "train")[0]


def test_unpaired_files_are_reported(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", "a", ANNOT)
    write_pair(tmp_path, "train", "b", ANNOT)
    (tmp_path / "trainannot" / "a.png").unlink()
    (tmp_path / "train" / "b.png").unlink()
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "train" / "c.png")
    ds = create_dataset("camvid", tmp_path, "train", strict=False)
    text = "\n".join(ds.index_problems)
    assert "trainannot/a.png: missing" in text
    assert "trainannot/b.png: annotation without an image" in text
    assert "trainannot/c.png: missing" in text
    with pytest.raises(DatasetError, match="3 problem"):
        create_dataset("camvid", tmp_path, "train")
