"""Cityscapes: gtFine labelIds -> the 19 train ids, every other id -> 255."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError
from fcnkit.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE


def write_frame(root: Path, split: str, city: str, frame: str, ids: np.ndarray) -> None:
    img = root / "leftImg8bit" / split / city
    gt = root / "gtFine" / split / city
    img.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    stem = f"{city}_{frame}"
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(img / f"{stem}_leftImg8bit.png")
    Image.fromarray(ids.astype(np.uint8), mode="L").save(gt / f"{stem}_gtFine_labelIds.png")
    # Sibling files of the real release that must not be read as labels.
    Image.fromarray(np.zeros(ids.shape, np.uint8)).save(gt / f"{stem}_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(gt / f"{stem}_gtFine_color.png")


def test_label_ids_to_train_ids(tmp_path: Path) -> None:
    ids = np.arange(34).reshape(2, 17)
    write_frame(tmp_path, "train", "aachen", "000000_000019", ids)
    write_frame(tmp_path, "train", "bochum", "000000_000313", ids)
    write_frame(tmp_path, "val", "frankfurt", "000000_000294", ids)
    ds = create_dataset("cityscapes", tmp_path, "train")
    assert ds.ids == ["aachen_000000_000019", "bochum_000000_000313"]
    assert len(ds.classes) == 19 and ds.classes[0] == "road" and ds.classes[18] == "bicycle"
    lab = ds[0]["label"].reshape(-1).tolist()
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    assert lab == [expected.get(i, 255) for i in range(34)]
    assert len(create_dataset("cityscapes", tmp_path, "val")) == 1


def test_official_palette() -> None:
    assert len(CITYSCAPES_PALETTE) == len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128)  # road
    assert CITYSCAPES_PALETTE[10] == (70, 130, 180)  # sky
    assert CITYSCAPES_PALETTE[13] == (0, 0, 142)  # car


def test_id_above_33_is_an_error(tmp_path: Path) -> None:
    write_frame(tmp_path, "train", "aachen", "000000_000019", np.array([[7, 34]]))
    with pytest.raises(DatasetError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*34"):
        create_dataset("cityscapes", tmp_path, "train")[0]


def test_missing_label_is_named(tmp_path: Path) -> None:
    write_frame(tmp_path, "train", "aachen", "000000_000019", np.zeros((2, 2)))
    (tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=r"aachen_000000_000019_gtFine_labelIds\.png: missing"):
        create_dataset("cityscapes", tmp_path, "train")
