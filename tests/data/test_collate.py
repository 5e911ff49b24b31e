"""collate_pad: pad to the largest size (images 0, labels ignore), keep ids, multiples."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.data import DataLoader

from fcnkit.data import collate_pad, create_dataset


def _s(h: int, w: int, c: int = 3, value: int = 1, dtype: torch.dtype = torch.float32) -> dict:
    return {
        "image": torch.full((c, h, w), 7, dtype=dtype),
        "label": torch.full((h, w), value, dtype=torch.int64),
        "id": f"{h}x{w}",
    }


def test_pads_to_largest_bottom_right() -> None:
    batch = collate_pad([_s(4, 6), _s(5, 3, value=2)])
    assert batch["image"].shape == (2, 3, 5, 6) and batch["label"].shape == (2, 5, 6)
    assert batch["id"] == ["4x6", "5x3"]
    img, lab = batch["image"], batch["label"]
    assert (img[0, :, :4, :6] == 7).all() and (img[0, :, 4:] == 0).all()
    assert (lab[0, :4, :6] == 1).all() and (lab[0, 4:] == 255).all()
    assert (img[1, :, :5, :3] == 7).all() and (img[1, :, :, 3:] == 0).all()
    assert (lab[1, :5, :3] == 2).all() and (lab[1, :, 3:] == 255).all()
    assert lab.dtype == torch.int64


def test_same_size_is_a_plain_stack() -> None:
    samples = [_s(4, 4, value=v) for v in range(3)]
    batch = collate_pad(samples)
    assert torch.equal(batch["image"], torch.stack([s["image"] for s in samples]))
    assert torch.equal(batch["label"], torch.stack([s["label"] for s in samples]))


def test_size_multiple_and_custom_fill() -> None:
    batch = collate_pad([_s(33, 10), _s(20, 40)], size_multiple=32, ignore_index=99)
    assert batch["image"].shape[-2:] == (64, 64) and batch["label"].shape[-2:] == (64, 64)
    assert (batch["label"][0, 33:] == 99).all()
    batch = collate_pad([_s(2, 2), _s(3, 3)], image_fill=-1.0)
    assert (batch["image"][0, :, 2:] == -1).all()


def test_dict_labels_extra_channels_uint8_and_other_keys() -> None:
    a, b = _s(4, 5, c=6, dtype=torch.uint8), _s(6, 2, c=6, dtype=torch.uint8)
    for s in (a, b):
        s["label"] = {"sem": s["label"], "geo": s["label"] * 0 + 2}
        s["seed"] = 3
    batch = collate_pad([a, b])
    assert batch["image"].shape == (2, 6, 6, 5) and batch["image"].dtype == torch.uint8
    assert list(batch["label"]) == ["sem", "geo"]
    assert batch["label"]["geo"].shape == (2, 6, 5)
    assert (batch["label"]["geo"][1, :, 2:] == 255).all()
    assert batch["seed"] == [3, 3]


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        collate_pad([])
    with pytest.raises(ValueError, match="height and width"):
        collate_pad([_s(4, 4, c=3), _s(4, 4, c=4)])
    bad = _s(4, 4)
    bad["label"] = bad["label"][:3]
    with pytest.raises(ValueError, match="label size"):
        collate_pad([bad])
    with pytest.raises(ValueError):
        collate_pad([_s(2, 2)], size_multiple=0)


def test_as_dataloader_collate_fn_and_batch_size_one() -> None:
    ds = create_dataset("synthetic", split="val", num_samples=4, size=(24, 30))
    loader = DataLoader(
        ds, batch_size=2, collate_fn=functools.partial(collate_pad, size_multiple=8)
    )
    batches = list(loader)
    assert batches[0]["image"].shape == (2, 3, 24, 32) and batches[0]["id"][1] == ds[1]["id"]
    # Batch size 1 (the paper's whole-image training) needs no padding at all.
    one = next(iter(DataLoader(ds, batch_size=1, collate_fn=collate_pad)))
    assert torch.equal(one["label"][0], ds[0]["label"])
