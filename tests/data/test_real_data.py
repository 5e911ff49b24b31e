"""Real SIFT Flow and ISBI 2012 copies (../shared/data): counts, label ranges, frequencies."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError, read_list

pytestmark = pytest.mark.integration


@pytest.fixture
def siftflow(shared_data: Path) -> Path:
    root = shared_data / "siftflow"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.fixture
def isbi(shared_data: Path) -> Path:
    root = shared_data / "isbi2012"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def _siftflow(root: Path, split: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no GeoLabels in this copy
        return create_dataset("siftflow", root, split)


def test_siftflow_split_counts_and_files(siftflow: Path) -> None:
    trainval, test = _siftflow(siftflow, "trainval"), _siftflow(siftflow, "test")
    assert len(trainval) == 2486 and len(test) == 200  # every listed file exists (strict)
    assert not set(trainval.ids) & set(test.ids)
    unannotated = {"highway_bost181", "street_urb506"}
    assert not unannotated & (set(trainval.ids) | set(test.ids))
    # the lists shipped with fcnkit are the reference ones
    shipped = Path(__file__).resolve().parents[2] / "src/fcnkit/data/splits/siftflow"
    assert read_list(shipped / "test.txt") == test.ids
    assert read_list(shipped / "trainval.txt") == trainval.ids


def test_siftflow_semantic_only_labels_and_ranges(siftflow: Path) -> None:
    with pytest.warns(UserWarning, match="GeoLabels"):
        from fcnkit.data.siftflow import _warned_no_geo

        _warned_no_geo.discard(str(siftflow))
        ds = create_dataset("siftflow", siftflow, "trainval")
    assert ds.targets is None and len(ds.classes) == 33 and ds.classes[27] == "sky"
    for i in (0, 1000, 2485):
        s = ds[i]
        assert s["image"].shape == (3, 256, 256) and s["image"].dtype == torch.uint8
        lab = s["label"]
        assert isinstance(lab, torch.Tensor) and lab.shape == (256, 256)
        values = set(lab.unique().tolist())
        assert values <= set(range(33)) | {255}


def test_siftflow_test_frequencies_exclude_cow_desert_moon(siftflow: Path) -> None:
    ds = _siftflow(siftflow, "test")
    counts = np.zeros(256, np.int64)
    for i in range(len(ds)):
        counts += np.bincount(ds.load(i)["label"].reshape(-1).numpy(), minlength=256)
    absent = {ds.classes[k] for k in range(33) if counts[k] == 0}
    assert absent == {"cow", "desert", "moon"} == set(ds.eval_exclude)
    assert counts[:33].sum() + counts[255] == 200 * 256 * 256
    freq = counts[:33] / counts[:33].sum()
    assert ds.classes[int(freq.argmax())] == "sky"
    assert freq[ds.classes.index("building")] > 0.1 and counts[255] > 0  # void exists


def test_isbi_through_the_folder_dataset_with_value_map(isbi: Path) -> None:
    opts = {"image_dir": "train/image", "mask_dir": "train/label"}
    with pytest.raises(DatasetError, match=r"only the values 0 and 255.*value_map"):
        create_dataset("folder", isbi, "all", **opts, classes="membrane,cell")
    ds = create_dataset(
        "folder", isbi, "all", **opts, classes="membrane,cell", value_map={0: 0, 255: 1}
    )
    assert len(ds) == 30 and ds.ids[:3] == ["0", "1", "10"]
    s = ds[0]
    assert s["image"].shape == (3, 512, 512)  # greyscale slices replicated to RGB
    assert torch.equal(s["image"][0], s["image"][2])
    lab = s["label"]
    assert set(lab.unique().tolist()) == {0, 1}  # no pixel is ignored
    membrane = float((lab == 0).float().mean())
    assert 0.1 < membrane < 0.4  # membranes are the thin minority class
    train, val = (
        create_dataset("folder", isbi, sp, **opts, value_map="0:0,255:1") for sp in ("train", "val")
    )
    assert len(train) == 27 and len(val) == 3 and not set(train.ids) & set(val.ids)
