"""Joint transforms: label values, alignment, padding, RGB-only jitter, seeded randomness."""

from __future__ import annotations

import pickle

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from fcnkit.data import build_transforms, collate_pad
from fcnkit.data.transforms import TransformedDataset, resize_label, sample_seed
from fcnkit.preprocessing import CAFFE_VOC, TORCHVISION_IMAGENET, get_preprocessing

PRESETS = st.sampled_from(["caffe-voc", "torchvision-imagenet", "caffe-nyud-hha"])


def _sample(h: int = 20, w: int = 30, c: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=g),
        "label": torch.randint(0, 5, (h, w), generator=g),
        "id": "x",
    }


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def block_samples(draw: st.DrawFn) -> dict:
    """Labels in 8 x 8 blocks (values from a random subset, maybe with ignore), an image
    with random RGB and extra channels 3.. encoding the label (label * 10 + channel)."""
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = draw(st.integers(3, 6))
    values = draw(st.lists(st.sampled_from([0, 1, 2, 7, 19, 40, 255]), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = _gen(seed)
    pick = torch.randint(0, len(values), (rows, cols), generator=g)
    label = torch.tensor(values)[pick].repeat_interleave(8, 0).repeat_interleave(8, 1)
    rgb = torch.randint(0, 256, (3, rows * 8, cols * 8), generator=g).to(torch.uint8)
    extra = [(label % 25) * 10 + k for k in range(c - 3)]
    image = torch.cat([rgb, *[e[None].to(torch.uint8) for e in extra]])
    geo = torch.where(label == 255, label, label % 3)
    return {"image": image, "label": {"sem": label, "geo": geo}, "id": f"b{seed}"}


AUG = st.fixed_dictionaries(
    {
        "crop_size": st.one_of(
            st.none(), st.integers(1, 48), st.tuples(st.integers(1, 48), st.integers(1, 48))
        ),
        "scale_range": st.one_of(st.none(), st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 2.0))),
        "flip": st.booleans(),
        "color_jitter": st.sampled_from([0.0, 0.4]),
        "pad_image": st.sampled_from(["mean", "zero"]),
    }
)


@settings(max_examples=60, deadline=None)
@given(sample=block_samples(), aug=AUG, preset=PRESETS, seed=st.integers(0, 10**6))
def test_no_new_label_values_and_alignment(sample: dict, aug: dict, preset: str, seed: int) -> None:
    t = build_transforms(True, preset, **aug)
    out = t(sample, generator=_gen(seed))
    sem, geo = out["label"]["sem"], out["label"]["geo"]
    assert sem.dtype == torch.int64 and geo.dtype == torch.int64
    allowed = set(sample["label"]["sem"].unique().tolist()) | {255}
    assert set(sem.unique().tolist()) <= allowed
    assert set(geo.unique().tolist()) <= set(sample["label"]["geo"].unique().tolist()) | {255}
    # Every label map moved together: the per-pixel relation geo = sem % 3 survives.
    assert torch.equal(geo, torch.where(sem == 255, sem, sem % 3))
    # Image and labels stay aligned: where the 3 x 3 label neighbourhood is uniform and not
    # padding, the extra channels (untouched by jitter) still encode that label.
    raw = get_preprocessing(preset).denormalize(out["image"])
    assert raw.shape[0] == sample["image"].shape[0] and raw.shape[1:] == sem.shape
    if aug["crop_size"] is not None:
        crop = aug["crop_size"]
        assert tuple(sem.shape) == ((crop, crop) if isinstance(crop, int) else crop)
    s = sem[None, None].float()
    p = F.pad(s, (1, 1, 1, 1), mode="replicate")
    uniform = (F.max_pool2d(p, 3, 1) == -F.max_pool2d(-p, 3, 1))[0, 0]
    inside = uniform & (sem != 255)
    for k in range(raw.shape[0] - 3):
        expect = ((sem % 25) * 10 + k).float()
        assert torch.allclose(raw[3 + k][inside], expect[inside], atol=1e-2)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    oh=st.integers(1, 60),
    ow=st.integers(1, 60),
    values=st.lists(st.integers(0, 254), min_size=1, max_size=5),
)
def test_resize_label_is_nearest_exact(h: int, w: int, oh: int, ow: int, values: list) -> None:
    g = _gen(h * 100 + w)
    label = torch.tensor(values)[torch.randint(0, len(values), (h, w), generator=g)]
    out = resize_label(label, (oh, ow))
    assert out.dtype == label.dtype and out.shape == (oh, ow)
    assert set(out.unique().tolist()) <= set(values)
    # Output pixel centre (o + 0.5) * h / oh lies inside source pixel iy (exact integers).
    oy, ox = torch.arange(oh), torch.arange(ow)
    iy, ix = (2 * oy + 1) * h // (2 * oh), (2 * ox + 1) * w // (2 * ow)
    assert ((2 * oy + 1) * h >= iy * 2 * oh).all() and ((2 * oy + 1) * h < (iy + 1) * 2 * oh).all()
    assert torch.equal(out, label[iy[:, None], ix[None, :]])


def test_resize_label_matches_torch_nearest_exact() -> None:
    """Same pixel-centre convention as the bilinear image resize (away from float ties)."""
    label = torch.randint(0, 9, (7, 11))
    for size in ((10, 13), (3, 5), (14, 22)):
        ref = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")
        assert torch.equal(resize_label(label, size), ref[0, 0].long())


def test_eval_only_normalises() -> None:
    s = _sample(c=4)
    out = build_transforms(False, CAFFE_VOC, crop_size=8, scale_range=(2.0, 2.0))(s)
    assert torch.equal(out["image"], CAFFE_VOC.normalize(s["image"]))
    assert out["image"].dtype == torch.float32
    assert torch.equal(out["label"], s["label"]) and out["id"] == "x"
    assert s["image"].dtype == torch.uint8  # input sample is not modified


def test_preprocessing_follows_the_model() -> None:
    s = _sample()
    for spec in (TORCHVISION_IMAGENET, "torchvision-imagenet", TORCHVISION_IMAGENET.to_dict()):
        out = build_transforms(False, spec)(s)
        assert torch.allclose(out["image"], TORCHVISION_IMAGENET.normalize(s["image"]))
    caffe = build_transforms(False, "caffe-voc")(s)["image"]
    # BGR, 0..255 minus the BGR mean.
    assert torch.allclose(caffe[0], s["image"][2].float() - 104.00698793, atol=1e-4)


def test_scale_range_sets_the_size() -> None:
    s = _sample(20, 30)
    for factor, size in ((2.0, (40, 60)), (0.5, (10, 15))):
        t = build_transforms(True, CAFFE_VOC, scale_range=(factor, factor), flip=False)
        out = t(s, generator=_gen(0))
        assert out["image"].shape[-2:] == size and out["label"].shape == size
    t = build_transforms(True, CAFFE_VOC, scale_range=(0.5, 2.0), flip=False)
    heights = {t(s, generator=_gen(i))["label"].shape[0] for i in range(40)}
    assert min(heights) >= 10 and max(heights) <= 40 and len(heights) > 5
    assert min(heights) < 20 < max(heights)


def test_crop_pads_labels_with_ignore_and_image_with_mean_or_zero() -> None:
    s = _sample(10, 12)
    for pad_image, fill in (
        ("mean", CAFFE_VOC.normalize(torch.zeros(3, 1, 1)) * 0),
        ("zero", None),
    ):
        t = build_transforms(
            True, CAFFE_VOC, crop_size=(16, 20), scale_range=None, flip=False, pad_image=pad_image
        )
        out = t(s, generator=_gen(3))
        assert out["image"].shape == (3, 16, 20) and out["label"].shape == (16, 20)
        pad = out["label"] == 255
        assert pad.sum() == 16 * 20 - 10 * 12
        expected = fill if fill is not None else CAFFE_VOC.normalize(torch.zeros(3, 1, 1))
        assert torch.allclose(out["image"][:, pad], expected.view(3, 1).expand(3, int(pad.sum())))
        # The original content sits intact somewhere inside the canvas.
        ys, xs = torch.nonzero(~pad, as_tuple=True)
        y0, x0 = int(ys.min()), int(xs.min())
        assert torch.equal(out["label"][y0 : y0 + 10, x0 : x0 + 12], s["label"])
    offsets = set()
    t = build_transforms(True, CAFFE_VOC, crop_size=16, scale_range=None, flip=False)
    for i in range(30):
        ys, xs = torch.nonzero(t(s, generator=_gen(i))["label"] != 255, as_tuple=True)
        offsets.add((int(ys.min()), int(xs.min())))
    assert len(offsets) > 5  # random placement, not always top-left


def test_crop_of_a_larger_image_is_a_window() -> None:
    s = _sample(30, 40)
    t = build_transforms(True, CAFFE_VOC, crop_size=(12, 16), scale_range=None, flip=False)
    out = t(s, generator=_gen(5))
    assert 255 not in out["label"].unique()
    windows = s["label"].unfold(0, 12, 1).unfold(1, 16, 1)  # all 12 x 16 windows
    assert (windows == out["label"]).all(-1).all(-1).any()


def test_flip_is_horizontal_and_random() -> None:
    s = _sample(8, 9)
    t = build_transforms(True, CAFFE_VOC, scale_range=None, flip=True)
    flipped = 0
    for i in range(20):
        out = t(s, generator=_gen(i))
        if torch.equal(out["label"], s["label"].flip(-1)):
            flipped += 1
            assert torch.equal(out["image"], CAFFE_VOC.normalize(s["image"].flip(-1)))
        else:
            assert torch.equal(out["label"], s["label"])
            assert torch.equal(out["image"], CAFFE_VOC.normalize(s["image"]))
    assert 0 < flipped < 20


def test_color_jitter_touches_rgb_only() -> None:
    s = _sample(16, 16, c=6)
    t = build_transforms(True, CAFFE_VOC, scale_range=None, flip=False, color_jitter=0.5)
    out = t(s, generator=_gen(1))
    plain = CAFFE_VOC.normalize(s["image"])
    assert torch.equal(out["image"][3:], plain[3:])
    assert not torch.allclose(out["image"][:3], plain[:3])
    raw = CAFFE_VOC.denormalize(out["image"][:3])
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3
    assert torch.equal(out["label"], s["label"])


def test_same_generator_same_result_and_sample_seed_key() -> None:
    s = _sample(24, 24, c=4)
    t = build_transforms(True, CAFFE_VOC, crop_size=20, color_jitter=0.3)
    a, b = t(s, generator=_gen(42)), t(s, generator=_gen(42))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    outs = {t(s, generator=_gen(i))["image"].sum().item() for i in range(5)}
    assert len(outs) == 5
    seeded = dict(s, seed=42)
    assert torch.equal(t(seeded)["image"], a["image"])
    torch.manual_seed(7)
    c = t(s)
    torch.manual_seed(7)
    assert torch.equal(t(s)["image"], c["image"])  # global RNG fallback


class _Numbers(Dataset):
    classes = ["a", "b"]

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return _sample(10 + i % 3, 11, seed=i) | {"id": str(i)}


def test_transformed_dataset_is_order_and_worker_independent() -> None:
    t = build_transforms(True, CAFFE_VOC, crop_size=12, color_jitter=0.2)
    ds = TransformedDataset(_Numbers(), t, seed=5)
    assert ds.classes == ["a", "b"] and len(ds) == 12
    copy = pickle.loads(pickle.dumps(ds))  # spawn-started workers receive a pickled copy
    assert torch.equal(copy[3]["image"], ds[3]["image"])
    forward = [ds[i]["image"] for i in range(12)]
    backward = [ds[i]["image"] for i in reversed(range(12))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward, strict=True))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], forward[0])
    ds.set_epoch(0)

    def batches(workers: int, indices: list[int]) -> list[torch.Tensor]:
        loader = DataLoader(
            ds, batch_size=3, sampler=indices, num_workers=workers, collate_fn=collate_pad
        )
        return [b["image"] for b in loader]

    order = torch.randperm(12, generator=_gen(0)).tolist()
    single = batches(0, order)
    assert all(torch.equal(x, y) for x, y in zip(single, batches(2, order), strict=True))
    # Resume after two batches: replaying the remaining indices gives the same batches.
    assert all(torch.equal(x, y) for x, y in zip(single[2:], batches(0, order[6:]), strict=True))
    assert sample_seed(5, 0, 1) != sample_seed(5, 1, 0) and sample_seed(5, 0, 1) < 2**63


def test_bad_arguments() -> None:
    import pytest

    for kwargs in (
        {"crop_size": 0},
        {"scale_range": (2.0, 1.0)},
        {"color_jitter": 1.5},
        {"pad_image": "edge"},
    ):
        with pytest.raises(ValueError):
            build_transforms(True, CAFFE_VOC, **kwargs)
    bad = _sample()
    bad["label"] = bad["label"][:5]
    with pytest.raises(ValueError, match="differ"):
        build_transforms(True, CAFFE_VOC)(bad)


def test_scaled_crop_resamples_only_the_window(monkeypatch) -> None:
    import fcnkit.data.transforms as T

    seen: list[tuple[int, ...]] = []
    real = T.resize_image

    def spy(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        seen.append(tuple(image.shape))
        return real(image, size)

    monkeypatch.setattr(T, "resize_image", spy)
    big = _sample(400, 600)
    t = build_transforms(True, CAFFE_VOC, crop_size=32, scale_range=(2.0, 2.0), flip=False)
    out = t(big, generator=_gen(0))
    assert out["image"].shape == (3, 32, 32) and 255 not in out["label"].unique()
    assert seen and all(s[1] <= 17 and s[2] <= 17 for s in seen)  # 32 / 2 + 1 source pixels
