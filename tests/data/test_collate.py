"""collate_pad: pad to the largest size (images: mean pixel, labels ignore), ids, multiples."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.data import DataLoader

from fcnkit.data import build_transforms, collate_pad, create_dataset
from fcnkit.preprocessing import CAFFE_VOC, TORCHVISION_IMAGENET


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
    batch = collate_pad([a, b], image_fill=0)
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
    with pytest.raises(ValueError, match="black"):  # raw uint8 synthetic images
        list(loader)
    pad = functools.partial(collate_pad, size_multiple=8, preprocessing=CAFFE_VOC)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=pad))
    assert batches[0]["image"].shape == (2, 3, 24, 32) and batches[0]["id"][1] == ds[1]["id"]
    # Batch size 1 (the paper's whole-image training) needs no padding at all.
    one = next(iter(DataLoader(ds, batch_size=1, collate_fn=collate_pad)))
    assert torch.equal(one["label"][0], ds[0]["label"])


def test_image_fill_is_the_mean_pixel_for_raw_and_normalised_images() -> None:
    raw = [_s(4, 4, dtype=torch.uint8), _s(2, 3, dtype=torch.uint8)]
    # Raw uint8: padding with 0 would be black, not the mean, so it must be made explicit.
    with pytest.raises(ValueError, match="black, not the mean pixel"):
        collate_pad(raw)
    assert (collate_pad(raw, image_fill=0)["image"][1, :, 3:] == 0).all()
    per_channel = collate_pad(raw, image_fill=(1, 2, 3))["image"][1, :, 3, 3]
    assert per_channel.tolist() == [1, 2, 3]
    for prep in (CAFFE_VOC, TORCHVISION_IMAGENET):
        batch = collate_pad(raw, preprocessing=prep)
        pad = batch["image"][1, :, 3:, :]
        assert batch["image"].dtype == torch.uint8
        # the raw pad pixel is the model's mean (RGB order): it normalises to ~0
        assert prep.normalize(pad).abs().max() < 0.5 / min(prep.std) / 255 * prep.scale + 1e-3
    assert collate_pad(raw, preprocessing=CAFFE_VOC)["image"][1, :, 3, 0].tolist() == [
        123,
        117,
        104,
    ]
    # Normalised floats (what build_transforms yields) pad with 0 = that same mean pixel.
    t = build_transforms(False, CAFFE_VOC)
    norm = collate_pad([t(dict(s)) for s in raw])["image"]
    assert norm.dtype == torch.float32 and (norm[1, :, 3:] == 0).all()
    with pytest.raises(ValueError, match="3 values for 6-channel"):
        collate_pad([_s(2, 2, c=6), _s(3, 3, c=6)], image_fill=(1, 2, 3))
