"""Every shipped recipe's training and validation sets build from small files in the real layouts.

The fake files are written with the data tests' own writers (``tests/data/test_*.py``), so a
recipe whose ``data`` section does not fit its reader (root, split, options; e.g. VOC's
``seg11valid`` needs ``year: 2011`` and ``sbd_root``) fails here, not hours into a run.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fcnkit.engine.config import list_recipes, load_config
from fcnkit.engine.train import build_datasets

DATA_TESTS = Path(__file__).resolve().parents[1] / "data"


def _helpers(name: str) -> ModuleType:
    """``tests/data/<name>.py`` as a module (its writers only; its tests are not collected)."""
    key = f"_recipe_data_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, DATA_TESTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _voc_and_sbd(root: Path) -> None:
    voc, sbd = _helpers("test_voc"), _helpers("test_sbd")
    devkit = root / "data" / "VOCdevkit"
    voc.make_year(devkit, "2012", {"train": ["2008_000001"], "val": ["2007_000033"]})
    voc.make_year(devkit, "2011", {"val": ["2007_000033", "2011_000003"]})
    seg = np.zeros((12, 10), np.uint8)
    seg[3:8, 2:6] = 7
    # SBD train holds 2011_000003, so seg11valid = VOC2011 val - SBD train = [2007_000033]
    ids = {"train": ["2011_000003", "2008_000002"], "val": ["2008_000004"]}
    sbd.write_sbd(root / "data" / "sbd", ids, seg)


def _siftflow(root: Path) -> None:
    sf = _helpers("test_siftflow")
    d = root / "data" / "siftflow"
    sf.write_sample(d, "coast_a1", sf.SEM, sf.GEO)
    sf.write_sample(d, "street_b2", sf.SEM[::-1].copy(), sf.GEO[::-1].copy())
    sf.write_sample(d, "forest_c3", sf.SEM[::-1].copy(), sf.GEO)
    # two trainval images: the train/val carve-out keeps one for each
    (d / "trainval.txt").write_text("coast_a1\nforest_c3\n")
    (d / "test.txt").write_text("street_b2\n")


def _nyud(root: Path) -> None:
    ny = _helpers("test_nyud")
    d = root / "data" / "nyud"
    seg = np.zeros((ny.H, ny.W), np.uint8)
    seg[1, :] = 22
    for n in (5003, 5004):
        ny.write_nyud(d, n, seg, np.full((ny.H, ny.W), 2551, np.uint16))
    (d / "trainval.txt").write_text("5003\n")
    (d / "test.txt").write_text("5004\n")


def _camvid(root: Path) -> None:
    cv = _helpers("test_camvid")
    for split in ("train", "val", "test"):
        cv.write_pair(root / "data" / "camvid", split, f"0001TP_{split}", cv.ANNOT)


def _folder(root: Path) -> None:
    fo = _helpers("test_folder")
    d = root / "data" / "my_dataset"
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 2
    for k in range(6):
        fo.write(d, f"img{k}", mask)
    (d / "classes.txt").write_text("background\nleaf\nstem\n")


def _pascal_context(root: Path) -> None:
    pc = _helpers("test_pascal_context")
    pc.write_context(root / "data", pc.IDS, pc.LABEL)


WRITERS: dict[str, Callable[[Path], None]] = {
    "sbd": _voc_and_sbd,
    "voc": _voc_and_sbd,
    "siftflow": _siftflow,
    "nyud": _nyud,
    "camvid": _camvid,
    "folder": _folder,
    "pascal-context": _pascal_context,
    "synthetic": lambda root: None,  # built in
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recipe-data")
    for write in dict.fromkeys(WRITERS.values()):
        write(root)
    return root


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_datasets_build_from_the_real_layouts(
    name: str, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(name)
    d = config.data
    for dataset in {d.dataset, d.val_dataset or d.dataset}:
        assert dataset in WRITERS, f"{name}: no fake-data writer for dataset {dataset!r}: add one"
    if name == "demo":  # keep it small: the demo's own sizes are tested elsewhere
        d.options["num_samples"] = d.val_options["num_samples"] = 2
    monkeypatch.chdir(data_root)  # recipe roots are relative (data/sbd, data/VOCdevkit, ...)
    data = build_datasets(config)
    assert len(data.train) > 0 and len(data.val) > 0, name
    for split in (data.train, data.val):
        sample = split[0]
        assert sample["image"].dim() == 3 and sample["image"].shape[0] >= 3
    n = config.model.num_classes
    if n is not None:  # the model's classes are the dataset's
        assert data.classes is not None and len(data.classes) == n, name
        val_classes = getattr(data.val, "classes", None)
        assert val_classes is None or len(val_classes) == n, name
    modality = config.model.options.get("modality")
    if modality is not None:  # NYUD: the data's channels are the ones the model takes
        from fcnkit.models import build_model

        assert d.options.get("modality") == modality, name
        with torch.device("meta"):
            model = build_model(config.model.name, n, **config.model.options)
        for split in (data.train, data.val):
            assert split[0]["image"].shape[0] == model.input_channels, name
    if d.val_split == "seg11valid":
        assert data.val.ids == ["2007_000033"] and data.val.dir.name == "VOC2011"
