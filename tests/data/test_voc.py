"""VOC: palette PNG labels read as indices, the 255 boundary band kept, seg11valid from lists."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError, SplitUnavailable
from fcnkit.data.voc import VOC_CLASSES, VOC_PALETTE


def voc_label(h: int, w: int, cls: int) -> np.ndarray:
    """Background with one object of ``cls`` surrounded by a 255 band, like VOC's masks."""
    lab = np.zeros((h, w), np.uint8)
    lab[2 : h - 2, 2 : w - 2] = 255
    lab[3 : h - 3, 3 : w - 3] = cls
    return lab


def save_palette_png(path: Path, lab: np.ndarray, palette: list) -> None:
    im = Image.fromarray(lab, mode="P")
    flat = [v for rgb in palette for v in rgb]
    im.putpalette(flat + [0] * (768 - len(flat)))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def make_year(root: Path, year: str, splits: dict[str, list[str]], cls: int = 15) -> Path:
    d = root / f"VOC{year}"
    (d / "JPEGImages").mkdir(parents=True)
    full_palette = VOC_PALETTE + [(224, 224, 192)] * (256 - len(VOC_PALETTE))
    for ids in splits.values():
        for i in ids:
            Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(d / "JPEGImages" / f"{i}.jpg")
            save_palette_png(
                d / "SegmentationClass" / f"{i}.png", voc_label(12, 10, cls), full_palette
            )
    (d / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, ids in splits.items():
        (d / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return d


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit"
    make_year(root, "2012", {"train": ["2007_000032", "2008_000001"], "val": ["2007_000033"]})
    make_year(root, "2011", {"val": ["2007_000033", "2007_000042", "2010_000005", "2011_000003"]})
    return root


def test_palette_png_indices_and_boundary_band(devkit: Path) -> None:
    ds = create_dataset("voc", devkit, "train")
    assert len(ds) == 2 and ds.classes == VOC_CLASSES and len(ds.classes) == 21
    assert ds.ignore_index == 255 and ds.eval_exclude == []
    s = ds[0]
    assert s["id"] == "2007_000032"
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 12, 10)
    lab = s["label"]
    assert lab.dtype == torch.int64 and lab.shape == (12, 10)
    assert lab[0, 0] == 0  # background
    assert lab[2, 2] == 255 and lab[2, 5] == 255  # boundary band stays ignore
    assert lab[6, 5] == 15  # person: the stored palette index, not a colour
    assert set(lab.unique().tolist()) == {0, 15, 255}


def test_year_folder_itself_as_root(devkit: Path) -> None:
    assert len(create_dataset("voc", devkit / "VOC2012", "val")) == 1


def test_voc_palette_matches_the_devkit_colours() -> None:
    assert VOC_PALETTE[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert VOC_PALETTE[15] == (192, 128, 128)  # person
    assert VOC_PALETTE[20] == (0, 64, 128)  # tvmonitor


def test_seg11valid_is_voc2011_val_minus_sbd_train(devkit: Path, tmp_path: Path) -> None:
    sbd = tmp_path / "sbd"
    sbd.mkdir()
    (sbd / "train.txt").write_text("2007_000042\n2011_000003\n2099_000001\n")
    ds = create_dataset("voc", devkit, "seg11valid", sbd_root=sbd)
    assert ds.ids == ["2007_000033", "2010_000005"]  # VOC2011 list order, SBD train removed
    assert ds.year == "2011" and ds.dir.name == "VOC2011"
    assert ds[1]["label"][6, 5] == 15


def test_seg11valid_needs_sbd_root(devkit: Path) -> None:
    with pytest.raises(SplitUnavailable, match="sbd_root"):
        create_dataset("voc", devkit, "seg11valid")


def test_out_of_range_value_raises_naming_the_file(devkit: Path) -> None:
    path = devkit / "VOC2012" / "SegmentationClass" / "2008_000001.png"
    save_palette_png(path, voc_label(12, 10, 21), VOC_PALETTE)
    ds = create_dataset("voc", devkit, "train")
    with pytest.raises(DatasetError, match=r"2008_000001\.png.*21.*expected 0\.\.20"):
        ds[1]


def test_rgb_label_png_is_refused(devkit: Path) -> None:
    path = devkit / "VOC2012" / "SegmentationClass" / "2007_000032.png"
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"2007_000032\.png.*mode RGB"):
        create_dataset("voc", devkit, "train")[0]


def test_missing_files_fail_at_construction_listing_all(devkit: Path) -> None:
    (devkit / "VOC2012" / "JPEGImages" / "2007_000032.jpg").unlink()
    (devkit / "VOC2012" / "SegmentationClass" / "2008_000001.png").unlink()
    with pytest.raises(DatasetError) as err:
        create_dataset("voc", devkit, "train")
    assert "2007_000032.jpg" in str(err.value) and "2008_000001.png" in str(err.value)
    ds = create_dataset("voc", devkit, "train", strict=False)
    assert len(ds) == 2 and len(ds.index_problems) == 2


@pytest.fixture
def sbd(tmp_path: Path) -> Path:
    d = tmp_path / "sbd"
    d.mkdir()
    (d / "train.txt").write_text("2007_000042\n2011_000003\n")
    return d


def test_year_folder_of_another_year_is_refused(devkit: Path, sbd: Path) -> None:
    # Before the fix VOC2012 val minus SBD train was silently returned as seg11valid.
    with pytest.raises(DatasetError, match=r"VOC2012 folder, but VOC2011 was requested"):
        create_dataset("voc", devkit / "VOC2012", "seg11valid", sbd_root=sbd)
    with pytest.raises(DatasetError, match=r"VOC2012 folder, but VOC2011"):
        create_dataset("voc", devkit / "VOC2012", "val", year=2011)
    with pytest.raises(DatasetError, match=r"VOC2011 folder, but VOC2012"):
        create_dataset("voc", devkit / "VOC2011", "val")


def test_seg11valid_from_devkit_root_with_recipe_options(devkit: Path, sbd: Path) -> None:
    # What a training config passes: val_root = VOCdevkit, val_options {year: 2011, sbd_root}.
    options = {"year": 2011, "sbd_root": str(sbd)}
    ds = create_dataset("voc", str(devkit), "seg11valid", **options)
    assert ds.dir == devkit / "VOC2011" and ds.ids == ["2007_000033", "2010_000005"]
    assert len(ds[0]["label"].shape) == 2
    same = create_dataset("voc", devkit / "VOC2011", "seg11valid", sbd_root=sbd)
    assert same.ids == ds.ids and same.notes == []


def test_seg11valid_requires_year_2011(devkit: Path, sbd: Path) -> None:
    with pytest.raises(ValueError, match="year must be 2011"):
        create_dataset("voc", devkit, "seg11valid", year=2012, sbd_root=sbd)


def test_unnamed_year_folder_is_taken_with_a_note(devkit: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "my_voc"
    (devkit / "VOC2012").rename(renamed)
    ds = create_dataset("voc", renamed, "train")
    assert len(ds) == 2 and "taken as VOC2012" in ds.notes[0]
