"""The built-in synthetic dataset: contract, determinism, difficulty (colour is not enough)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from fcnkit.data import create_dataset, get_dataset_entry, list_datasets
from fcnkit.data.synthetic import CLASSES, SyntheticShapes


def _digest(sample: dict) -> str:
    h = hashlib.sha256(sample["image"].numpy().tobytes())
    h.update(sample["label"].numpy().tobytes())
    return h.hexdigest()


def _miou(pred: np.ndarray, truth: np.ndarray, n: int) -> float:
    keep = truth < n
    hist = np.bincount(n * truth[keep] + pred[keep], minlength=n * n).reshape(n, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


def _pixels(ds: SyntheticShapes, n: int) -> tuple[np.ndarray, np.ndarray]:
    samples = [ds[i] for i in range(n)]
    rgb = np.concatenate([s["image"].reshape(3, -1).T.numpy() for s in samples])
    lab = np.concatenate([s["label"].reshape(-1).numpy() for s in samples])
    return rgb.astype(np.int64), lab.astype(np.int64)


def test_registered_without_root() -> None:
    assert "synthetic" in list_datasets()
    entry = get_dataset_entry("synthetic")
    assert not entry.needs_root
    assert entry.splits == ("train", "val", "test")
    ds = create_dataset("synthetic", split="val", num_samples=3, size=(40, 56), seed=1)
    assert len(ds) == 3 and ds.size == (40, 56)


def test_sample_contract_and_metadata() -> None:
    ds = create_dataset("synthetic", split="train", num_samples=5, size=(48, 64))
    assert ds.classes == CLASSES and len(ds.classes) == 7 and ds.classes[0] == "background"
    assert len(ds.palette) == len(ds.classes) and len(set(ds.palette)) == len(ds.palette)
    assert ds.ignore_index == 255 and ds.eval_exclude == []
    s = ds[4]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 48, 64)
    assert s["label"].dtype == torch.int64 and s["label"].shape == (48, 64)
    assert s["id"] == "synthetic-train-000004"
    assert int(s["label"].min()) >= 0 and int(s["label"].max()) < len(CLASSES)
    assert ds[-1]["id"] == s["id"]
    with pytest.raises(IndexError):
        ds[5]
    # Default sizes per split; int size means square.
    assert len(SyntheticShapes("train")) == 2000 and len(SyntheticShapes("test")) == 200
    assert SyntheticShapes("val", size=32)[0]["image"].shape == (3, 32, 32)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="split"):
        create_dataset("synthetic", split="trainval")
    with pytest.raises(ValueError):
        SyntheticShapes("train", size=4)
    with pytest.raises(ValueError):
        SyntheticShapes("train", radius=(0.3, 0.1))


def test_deterministic_and_independent_of_length_and_order() -> None:
    a = SyntheticShapes("train", num_samples=10, size=48, seed=7)
    b = SyntheticShapes("train", num_samples=1000, size=48, seed=7)
    assert [_digest(b[i]) for i in (9, 3, 0)] == [_digest(a[i]) for i in (9, 3, 0)]
    assert _digest(a[3]) != _digest(SyntheticShapes("train", size=48, seed=8)[3])


def test_identical_bytes_across_processes() -> None:
    code = (
        "import hashlib\n"
        "from fcnkit.data.synthetic import SyntheticShapes\n"
        "s = SyntheticShapes('val', size=48, seed=3)[11]\n"
        "h = hashlib.sha256(s['image'].numpy().tobytes())\n"
        "h.update(s['label'].numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(SyntheticShapes("val", size=48, seed=3)[11])


def test_splits_are_disjoint() -> None:
    digests = {
        split: {_digest(SyntheticShapes(split, size=32)[i]) for i in range(40)}
        for split in ("train", "val", "test")
    }
    assert all(len(d) == 40 for d in digests.values())
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_classes_scales_and_occlusion() -> None:
    ds = SyntheticShapes("train", size=64, seed=0)
    seen: set[int] = set()
    radii: list[float] = []
    occluded = 0
    for i in range(60):
        label = ds[i]["label"].numpy()
        seen |= set(np.unique(label).tolist())
        scene = ds.scene(i)
        radii += [s.r for s in scene]
        # An earlier object is occluded where its full mask shows a later object's class.
        for k, shape in enumerate(scene[:-1]):
            full = ds.shape_mask(shape)
            later = {s.cls for s in scene[k + 1 :]} - {shape.cls}
            if full.any() and np.isin(label[full], list(later)).any():
                occluded += 1
        # Painting follows the scene: the last object is fully visible with its class.
        last = ds.shape_mask(scene[-1])
        assert (label[last] == scene[-1].cls).all()
    assert seen == set(range(len(CLASSES)))
    assert max(radii) / min(radii) > 2.0
    assert occluded >= 5


def test_clutter_changes_only_background_pixels() -> None:
    plain = SyntheticShapes("test", size=64, clutter=False)
    busy = SyntheticShapes("test", size=64, clutter=True)
    changed_any = False
    for i in range(10):
        a, b = plain[i], busy[i]
        assert torch.equal(a["label"], b["label"])
        diff = (a["image"].int() - b["image"].int()).abs().amax(0) > 40
        assert (a["label"][diff] == 0).all()
        changed_any |= bool(diff.any())
    assert changed_any


def test_ignore_boundary_band() -> None:
    plain = SyntheticShapes("val", size=64)
    banded = SyntheticShapes("val", size=64, ignore_boundary=1)
    for i in range(5):
        a, b = plain[i]["label"], banded[i]["label"]
        assert 255 not in a.unique()
        band = b == 255
        assert band.any()
        assert torch.equal(a[~band], b[~band])  # outside the band nothing changes
        # Band pixels are exactly those with a different label in their 3 x 3 neighbourhood.
        p = torch.nn.functional.pad(a[None, None].float(), (1, 1, 1, 1), mode="replicate")
        hi = torch.nn.functional.max_pool2d(p, 3, 1)[0, 0]
        lo = -torch.nn.functional.max_pool2d(-p, 3, 1)[0, 0]
        assert torch.equal(band, hi != lo)
    assert torch.equal(plain[0]["image"], banded[0]["image"])


def test_object_outlines_are_visible() -> None:
    """Objects contrast with what they cover: colour changes more across label edges."""
    ds = SyntheticShapes("train", size=96, clutter=False)
    edge_diffs, flat_diffs = [], []
    for i in range(20):
        img = ds[i]["image"].float()
        lab = ds[i]["label"]
        dx = (img[:, :, 1:] - img[:, :, :-1]).abs().sum(0)
        edge = lab[:, 1:] != lab[:, :-1]
        edge_diffs.append(dx[edge])
        flat_diffs.append(dx[~edge])
    assert torch.cat(edge_diffs).median() > 3 * torch.cat(flat_diffs).median()


def test_colour_alone_does_not_decide_the_class() -> None:
    """Per-pixel colour classifiers fitted on train score a low mean IU on val.

    Two classifiers: a 16^3-bin RGB lookup table (majority class per colour bin, the best any
    per-pixel colour rule can do on the training pixels) and nearest class-mean colour.
    Among object pixels, the lookup table also fails to tell the six shapes apart.
    """
    n = len(CLASSES)
    rgb_tr, lab_tr = _pixels(SyntheticShapes("train", size=64), 150)
    rgb_va, lab_va = _pixels(SyntheticShapes("val", size=64), 60)

    def bins(rgb: np.ndarray) -> np.ndarray:
        q = rgb // 16
        return q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]

    counts = np.zeros((4096, n), np.int64)
    np.add.at(counts, (bins(rgb_tr), lab_tr), 1)
    table = counts.argmax(1)
    lookup_miou = _miou(table[bins(rgb_va)], lab_va, n)

    means = np.stack([rgb_tr[lab_tr == c].mean(0) for c in range(n)])
    dist = ((rgb_va[:, None, :] - means[None]) ** 2).sum(-1)
    nearest_miou = _miou(dist.argmin(1), lab_va, n)

    obj_tr, obj_va = lab_tr > 0, lab_va > 0
    obj_counts = np.zeros((4096, n), np.int64)
    np.add.at(obj_counts, (bins(rgb_tr[obj_tr]), lab_tr[obj_tr]), 1)
    obj_counts[:, 0] = -1
    obj_acc = float((obj_counts.argmax(1)[bins(rgb_va[obj_va])] == lab_va[obj_va]).mean())
    majority = np.bincount(lab_va[obj_va]).max() / obj_va.sum()

    assert lookup_miou < 0.2, lookup_miou
    assert nearest_miou < 0.15, nearest_miou
    assert obj_acc < majority + 0.1, (obj_acc, majority)


def test_is_a_segmentation_dataset_with_the_base_contract() -> None:
    from fcnkit.data import SegmentationDataset
    from fcnkit.data.check import check, check_dataset

    ds = create_dataset("synthetic", split="val", num_samples=4, size=32, strict=False)
    assert isinstance(ds, SegmentationDataset) and ds.root is None
    assert ds.files(2) == {} and ds.notes == [] and ds.index_problems == []
    assert ds.ids[3] == "synthetic-val-000003" and list(ds.ids)[0] == "synthetic-val-000000"
    assert torch.equal(ds.load(2)["label"], ds[2]["label"]) and ds.load(2)["id"] == ds[2]["id"]
    assert "synthetic-val-000001" in ds.describe_sample(1)
    assert check_dataset(ds, "synthetic", "val").ok
    assert all(
        r.ok and r.checked == 4 for r in check("synthetic", None, ["val"], {"num_samples": 4})
    )
