"""Folder dataset: images/ + masks/ by stem, index or colour masks, value maps, 0/255 masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError, SplitUnavailable
from fcnkit.data.folder import deterministic_split, parse_value_map

MASK = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)


def write(root: Path, stem: str, mask: np.ndarray, image_ext: str = ".jpg", grey: bool = False):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    shape = mask.shape[:2] if grey else (*mask.shape[:2], 3)
    Image.fromarray(np.full(shape, 77, np.uint8)).save(root / "images" / f"{stem}{image_ext}")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def test_index_masks_with_classes_txt(tmp_path: Path) -> None:
    write(tmp_path, "b", MASK)
    write(tmp_path, "a", MASK, image_ext=".png", grey=True)
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    ds = create_dataset("folder", tmp_path, "all")
    assert ds.ids == ["a", "b"] and ds.classes == ["background", "road", "car"]
    s = ds[0]
    assert s["image"].shape == (3, 2, 3) and s["image"].dtype == torch.uint8  # grey -> RGB
    assert s["label"].dtype == torch.int64 and s["label"].tolist() == MASK.tolist()


def test_palette_index_png_read_as_indices(tmp_path: Path) -> None:
    write(tmp_path, "a", MASK)
    im = Image.fromarray(MASK, mode="P")
    im.putpalette([9, 9, 9, 200, 0, 0, 0, 200, 0] + [255] * (768 - 9))
    im.save(tmp_path / "masks" / "a.png")
    ds = create_dataset("folder", tmp_path, "all", classes="bg,x,y")
    assert ds[0]["label"].tolist() == MASK.tolist()


def test_index_value_beyond_classes_raises(tmp_path: Path) -> None:
    write(tmp_path, "a", np.array([[0, 3]], np.uint8))
    with pytest.raises(DatasetError, match=r"masks/a\.png.*value\(s\) 3; expected 0\.\.2"):
        create_dataset("folder", tmp_path, "all", classes=["a", "b", "c"])[0]


def test_colour_masks_with_palette_file(tmp_path: Path) -> None:
    mask = MASK.copy()
    colours = {0: (0, 0, 0), 1: (128, 64, 128), 2: (0, 0, 142), 255: (255, 255, 255)}
    rgb = np.zeros((*MASK.shape, 3), np.uint8)
    for v, c in colours.items():
        rgb[mask == v] = c
    write(tmp_path, "a", rgb)
    (tmp_path / "palette.txt").write_text(
        "# R G B name\n0 0 0 background\n128 64 128 road\n0,0,142 car\n255 255 255 ignore\n"
    )
    ds = create_dataset("folder", tmp_path, "all")
    assert ds.classes == ["background", "road", "car"]
    assert ds.palette == [(0, 0, 0), (128, 64, 128), (0, 0, 142)]
    assert ds[0]["label"].tolist() == MASK.tolist()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: colour\(s\) \(1, 2, 3\) not in the palette"):
        ds[0]


def test_colour_mask_without_palette_is_explained(tmp_path: Path) -> None:
    write(tmp_path, "a", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DatasetError, match="colour .* no palette"):
        create_dataset("folder", tmp_path, "all", classes="a,b")[0]


def test_binary_0_255_masks_are_refused_with_the_fix(tmp_path: Path) -> None:
    for k in range(3):
        write(tmp_path, f"s{k}", np.array([[0, 255], [255, 255]], np.uint8))
    with pytest.raises(
        DatasetError, match=r"only the values 0 and 255.*value_map=\{0: 0, 255: 1\}"
    ):
        create_dataset("folder", tmp_path, "all", classes="membrane,cell")
    ds = create_dataset("folder", tmp_path, "all", classes="membrane,cell", value_map="0:0,255:1")
    assert ds[0]["label"].tolist() == [[0, 1], [1, 1]]  # 255 is a real class, not ignore
    ds = create_dataset("folder", tmp_path, "all", classes="bg", allow_binary_255=True)
    assert ds[0]["label"].tolist() == [[0, 255], [255, 255]]


def test_value_map_is_strict_and_names_classes(tmp_path: Path) -> None:
    write(tmp_path, "a", np.array([[0, 128, 255]], np.uint8))
    ds = create_dataset("folder", tmp_path, "all", value_map={0: 0, 128: 255, 255: 1})
    assert ds.classes == ["class_0", "class_1"]
    assert ds[0]["label"].tolist() == [[0, 255, 1]]
    ds = create_dataset("folder", tmp_path, "all", value_map='{"0": 0, "255": 1}')
    with pytest.raises(DatasetError, match=r"a\.png: unexpected label value\(s\) 128"):
        ds[0]


def test_parse_value_map_forms() -> None:
    assert parse_value_map("0:0, 255:1") == {0: 0, 255: 1}
    assert parse_value_map({"0": "1"}) == {0: 1}
    assert parse_value_map(None) is None
    with pytest.raises(ValueError, match="integers"):
        parse_value_map("a:b")


def test_explicit_split_files(tmp_path: Path) -> None:
    for stem in "abcd":
        write(tmp_path, stem, MASK)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("c\na\n")
    (tmp_path / "splits" / "test.txt").write_text("d\nzz\n")
    assert create_dataset("folder", tmp_path, "train", classes="x,y,z").ids == ["c", "a"]
    with pytest.raises(DatasetError, match=r"images/zz\.\*: missing \(image of sample 'zz'\)"):
        create_dataset("folder", tmp_path, "test", classes="x,y,z")


def test_val_without_its_list_never_overlaps_listed_splits(tmp_path: Path) -> None:
    stems = [f"img{k:02d}" for k in range(12)]
    for stem in stems:
        write(tmp_path, stem, MASK)
    (tmp_path / "splits").mkdir()
    kw = {"classes": "x,y,z"}
    # Only test.txt: train/val partition the stems not in test (before: all stems, overlap).
    (tmp_path / "splits" / "test.txt").write_text("img00\nimg01\nimg02\n")
    train = create_dataset("folder", tmp_path, "train", **kw).ids
    val = create_dataset("folder", tmp_path, "val", **kw).ids
    assert sorted(train + val) == stems[3:] and val and not set(train) & set(val)
    # train.txt as well: val = all - train - test (before: a CRC share of all, overlapping).
    (tmp_path / "splits" / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    ds = create_dataset("folder", tmp_path, "val", **kw)
    assert ds.ids == stems[8:] and "not listed" in ds.notes[0]
    (tmp_path / "splits" / "test.txt").unlink()
    assert create_dataset("folder", tmp_path, "val", **kw).ids == stems[8:]
    # Only val.txt: train is the complement.
    (tmp_path / "splits" / "train.txt").unlink()
    (tmp_path / "splits" / "val.txt").write_text("img03\n")
    train = create_dataset("folder", tmp_path, "train", **kw).ids
    assert train == [s for s in stems if s != "img03"]
    # Nothing left: an error, not an empty or overlapping split.
    (tmp_path / "splits" / "val.txt").write_text("\n".join(stems) + "\n")
    with pytest.raises(SplitUnavailable, match="no stems left for 'train'"):
        create_dataset("folder", tmp_path, "train", **kw)


def test_deterministic_fraction_split(tmp_path: Path) -> None:
    stems = [f"img{k:03d}" for k in range(30)]
    val = deterministic_split(stems, "val", 0.1)
    train = deterministic_split(stems, "train", 0.1)
    assert len(val) == 3 and len(train) == 27 and sorted(val + train) == stems
    assert deterministic_split(list(reversed(stems)), "val", 0.1) == val  # order-independent
    assert deterministic_split(stems[:2], "val", 0.1) != []  # at least one when n > 1
    for stem in stems[:5]:
        write(tmp_path, stem, MASK)
    assert len(create_dataset("folder", tmp_path, "val", classes="x,y,z")) == 1
    assert len(create_dataset("folder", tmp_path, "train", classes="x,y,z")) == 4
    with pytest.raises(SplitUnavailable, match="test"):
        create_dataset("folder", tmp_path, "test", classes="x,y,z")


def test_unmatched_files_and_missing_classes(tmp_path: Path) -> None:
    write(tmp_path, "a", MASK)
    write(tmp_path, "b", MASK)
    (tmp_path / "masks" / "a.png").unlink()
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match="no class names"):
        create_dataset("folder", tmp_path, "all")
    ds = create_dataset("folder", tmp_path, "all", classes="x,y,z", strict=False)
    text = "\n".join(ds.index_problems)
    assert "masks/b.png: mask without an image" in text and "masks/a.png: missing" in text
