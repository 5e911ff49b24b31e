"""NYUDv2 (FCN layout): 40 classes from segmentation .mat, modalities rgb/hha/rgbd/rgb+hha."""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError
from fcnkit.data.nyud import (
    DEPTH_CODE_MEAN,
    DEPTH_CODE_STD,
    depth_code_to_log_depth,
    depth_to_code,
)

H, W = 5, 6


def write_nyud(root: Path, n: int, seg: np.ndarray, depth: np.ndarray) -> None:
    for d in ("data/images", "data/hha", "data/depth", "segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    Image.fromarray(rgb).save(root / "data/images" / f"img_{n}.png")
    hha = np.zeros((H, W, 3), np.uint8)
    hha[..., 0], hha[..., 1], hha[..., 2] = 101, 102, 103
    Image.fromarray(hha).save(root / "data/hha" / f"img_{n}.png")
    Image.fromarray(depth.astype(np.uint16)).save(root / "data/depth" / f"img_{n}.png")
    scipy.io.savemat(root / "segmentation" / f"img_{n}.mat", {"segmentation": seg.astype(np.uint8)})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    seg = np.zeros((H, W), np.uint8)
    seg[0, 1], seg[0, 2], seg[1, :] = 1, 40, 22
    depth = np.full((H, W), 2551, np.uint16)
    depth[0, 0], depth[0, 1], depth[0, 2] = 0, 256, 16384
    write_nyud(tmp_path, 5003, seg, depth)
    write_nyud(tmp_path, 5004, seg, depth)
    (tmp_path / "train.txt").write_text("5003\n")
    (tmp_path / "test.txt").write_text("5004\n")
    return tmp_path


def test_labels_0_void_1_to_40(root: Path) -> None:
    ds = create_dataset("nyud", root, "train")
    assert len(ds) == 1 and len(ds.classes) == 40 and ds.classes[0] == "wall"
    s = ds[0]
    assert s["id"] == "5003"
    lab = s["label"]
    assert lab.dtype == torch.int64 and lab.shape == (H, W)
    assert lab[0, 0] == 255 and lab[0, 1] == 0 and lab[0, 2] == 39 and lab[1, 0] == 21
    assert len(create_dataset("nyud", root, "test")) == 1


@pytest.mark.parametrize(
    ("modality", "channels", "firsts"),
    [
        ("rgb", 3, [10, 20, 30]),
        ("hha", 3, [101, 102, 103]),
        ("rgbd", 4, [10, 20, 30]),
        ("rgb+hha", 6, [10, 20, 30, 101, 102, 103]),
    ],
)
def test_modalities_concatenate_in_name_order(root: Path, modality, channels, firsts) -> None:
    image = create_dataset("nyud", root, "train", modality=modality)[0]["image"]
    assert image.dtype == torch.uint8 and image.shape == (channels, H, W)
    assert image[: len(firsts), 2, 2].tolist() == firsts


def test_rgbd_depth_code_reproduces_reference_log_depth(root: Path) -> None:
    code = create_dataset("nyud", root, "train", modality="rgbd")[0]["image"][3]
    assert code[0, 0] == 0  # missing depth
    assert code[0, 1] == 0 and code[0, 2] == 255  # 256 mm and 16.384 m: the code's range
    # the reference input ln(d) - 7.844, recovered within half a quantisation step
    recovered = depth_code_to_log_depth(code[2, 2])
    assert abs(float(recovered) - (math.log(2551) - 7.844)) < 0.5 / DEPTH_CODE_STD + 1e-6
    assert DEPTH_CODE_MEAN / DEPTH_CODE_STD + 8 * math.log(2) == pytest.approx(7.844)
    assert abs(DEPTH_CODE_MEAN - 140.95) < 0.01
    d = np.array([400, 1000, 3000, 9000])
    back = np.exp(depth_code_to_log_depth(torch.from_numpy(depth_to_code(d))).numpy() + 7.844)
    assert np.allclose(back, d, rtol=0.02)


# The reference's input for the HHA pixel (200, 100, 50): nyud_layers.py load_hha subtracts
# mean_hha (132.431, 94.076, 118.477) in the PNG's channel order and does not reverse it.
REFERENCE_HHA_IN = [200 - 132.431, 100 - 94.076, 50 - 118.477]  # (67.569, 5.924, -68.477)


@pytest.mark.parametrize(("modality", "hha_at"), [("hha", 0), ("rgb+hha", 3)])
def test_hha_pixel_fed_as_the_reference_feeds_it(root: Path, modality: str, hha_at: int) -> None:
    """PNG -> reader -> the input fcnkit feeds (the model's preprocessing, the released
    weights' preprocessing, the evaluation transform): HHA channel order and mean as the
    reference's load_hha; colour RGB -> BGR minus mean_bgr as its load_image."""
    from fcnkit.data import build_transforms
    from fcnkit.models import create_model
    from fcnkit.preprocessing import get_preprocessing
    from fcnkit.weights import get_weight_entry

    hha = np.zeros((H, W, 3), np.uint8)
    hha[2, 2] = (200, 100, 50)
    Image.fromarray(hha).save(root / "data/hha/img_5003.png")
    sample = create_dataset("nyud", root, "train", modality=modality)[0]
    with torch.device("meta"):
        model = create_model("fcn32s-nyud", 40, modality=modality)
    entry = {"hha": "nyud-fcn32s-hha-heavy", "rgb+hha": "nyud-fcn32s-color-hha-heavy"}[modality]
    preps = [model.preprocessing, get_preprocessing(get_weight_entry(entry).preprocessing)]
    colour = [30 - 116.190, 20 - 97.203, 10 - 92.318]  # the RGB pixel (10, 20, 30) as B, G, R
    expected = REFERENCE_HHA_IN if modality == "hha" else colour + REFERENCE_HHA_IN
    for prep in preps:
        fed = prep.normalize(sample["image"])[:, 2, 2].tolist()
        assert fed == pytest.approx(expected, abs=1e-4), prep.name
    fed = build_transforms(False, preps[0])(dict(sample))["image"][:, 2, 2]
    assert fed[hha_at:].tolist() == pytest.approx(REFERENCE_HHA_IN, abs=1e-4)


def test_label_out_of_range_and_size_mismatch(root: Path) -> None:
    scipy.io.savemat(
        root / "segmentation/img_5003.mat", {"segmentation": np.full((H, W), 41, np.uint8)}
    )
    with pytest.raises(DatasetError, match=r"img_5003\.mat.*41.*1\.\.40"):
        create_dataset("nyud", root, "train")[0]
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(root / "data/hha/img_5004.png")
    with pytest.raises(DatasetError, match=r"differ in size.*img_5004"):
        create_dataset("nyud", root, "test", modality="rgb+hha")[0]


def test_unknown_modality(root: Path) -> None:
    with pytest.raises(ValueError, match="rgb\\+hha"):
        create_dataset("nyud", root, "train", modality="depth")


def test_split_lists_are_the_layouts_own_files(root: Path) -> None:
    from fcnkit.data.base import SplitUnavailable

    # Read as they are: one number per line, in file order; a short list gets a note.
    test = create_dataset("nyud", root, "test")
    assert test.ids == ["5004"] and "654" in test.notes[0]
    with pytest.raises(SplitUnavailable, match=r"val\.txt: missing"):
        create_dataset("nyud", root, "val")
    with pytest.raises(SplitUnavailable, match=r"trainval\.txt: missing"):
        create_dataset("nyud", root, "trainval")  # no val.txt to build it from
    # The FCN repository ships train.txt + val.txt only: trainval is their concatenation.
    (root / "val.txt").write_text("5004\n")
    trainval = create_dataset("nyud", root, "trainval")
    assert trainval.ids == ["5003", "5004"]
    assert any("train.txt + val.txt" in n for n in trainval.notes)
    assert any("795" in n for n in trainval.notes)
    # An explicit trainval.txt wins.
    (root / "trainval.txt").write_text("5004\n")
    assert create_dataset("nyud", root, "trainval").ids == ["5004"]
    # The paper's sizes (795 / 654) give no note; files are checked as for any list.
    (root / "test.txt").write_text("".join(f"{n}\n" for n in range(1, 655)))
    full = create_dataset("nyud", root, "test", strict=False)
    assert len(full) == 654 and full.notes == [] and full.ids[:2] == ["1", "2"]
    assert len(full.index_problems) == 654 * 2  # rgb + label of each, none written here
