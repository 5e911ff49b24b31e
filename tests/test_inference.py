"""Segmenter, sliding window, shift-and-stitch (paper Sec. 3.2) and flip TTA."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fcnkit.data.base import voc_palette
from fcnkit.inference import (
    Segmenter,
    SlidingWindow,
    colorize,
    dense_scores,
    load_image,
    overlay,
    shift_and_stitch,
    sliding_window_forward,
    stitched_scores,
)
from fcnkit.models import create_model, register_model, unregister_model
from fcnkit.preprocessing import get_preprocessing
from fcnkit.weights import save_checkpoint


class TinyFCN(nn.Module):
    """conv - pool/2 - conv - bilinear upsampling: any input size, input-sized output."""

    def __init__(self, num_classes: int = 3, heads: tuple[str, ...] = (), in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.input_channels = in_channels
        self.score = nn.Conv2d(8, num_classes, 3, padding=1)
        self.geo = nn.Conv2d(8, 2, 1) if heads else None
        self.heads = heads

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        y = F.max_pool2d(torch.relu(self.conv1(x)), 2, ceil_mode=True)
        sem = F.interpolate(self.score(y), size=(h, w), mode="bilinear", align_corners=False)
        if not self.heads:
            return sem
        geo = F.interpolate(self.geo(y), size=(h, w), mode="bilinear", align_corners=False)
        return {"sem": sem, "geo": geo}


def _tiny(num_classes: int, heads: tuple[str, ...] = (), in_channels: int = 3) -> nn.Module:
    return TinyFCN(num_classes, tuple(heads), in_channels)


@pytest.fixture(autouse=True, scope="module")
def _test_model():
    """Register the tiny model while this module runs only."""
    register_model("test-inference-tiny", description="test model", default_num_classes=3)(_tiny)
    yield
    unregister_model("test-inference-tiny")


class Recorder(nn.Module):
    """Wraps a model and records the input shapes it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.shapes = model, []

    def forward(self, x: torch.Tensor):
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_label(model: nn.Module, image: np.ndarray, preprocessing: str) -> np.ndarray:
    x = get_preprocessing(preprocessing).normalize(torch.from_numpy(image).permute(2, 0, 1)[None])
    with torch.no_grad():
        return model(x)[0].argmax(0).numpy()


# --------------------------------------------------------------------------- images
def test_load_image_accepts_paths_pil_numpy_tensors(tmp_path) -> None:
    array = rand_image(5, 7)
    Image.fromarray(array).save(tmp_path / "a.png")
    Image.fromarray(array[..., 0]).save(tmp_path / "grey.png")
    expected = torch.from_numpy(array).permute(2, 0, 1)
    assert torch.equal(load_image(tmp_path / "a.png"), expected)
    assert torch.equal(load_image(str(tmp_path / "a.png")), expected)
    assert torch.equal(load_image(Image.fromarray(array)), expected)
    assert torch.equal(load_image(array), expected)
    assert torch.equal(load_image(expected), expected)
    assert load_image(tmp_path / "grey.png").shape == (3, 5, 7)
    assert load_image(np.zeros((4, 6, 4), np.uint8)).shape == (4, 4, 6)  # extra modality kept
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_palette_colorize_overlay() -> None:
    label = np.array([[0, 1], [2, 1]], np.uint8)
    # classes beyond the given palette fall back to the VOC colour map (fcnkit.data.base)
    full = colorize(label).getpalette()
    assert [tuple(full[i : i + 3]) for i in range(0, 15, 3)] == voc_palette(5)
    png = colorize(label, [(10, 20, 30), (40, 50, 60)])
    assert png.mode == "P" and np.array_equal(np.asarray(png), label)
    assert png.getpalette()[:9] == [10, 20, 30, 40, 50, 60, 0, 128, 0]
    blended = overlay(np.full((2, 2, 3), 100, np.uint8), label, [(0, 0, 0), (200, 0, 0)])
    assert blended[0, 1].tolist() == [150, 50, 50] and blended[0, 0].tolist() == [50, 50, 50]


# --------------------------------------------------------------------------- Segmenter
def test_segmenter_from_checkpoint_uses_its_preprocessing(tmp_path) -> None:
    model = create_model("test-inference-tiny", preprocessing="torchvision-imagenet").eval()
    palette = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    save_checkpoint(
        tmp_path / "run/checkpoints/best.pt", model, classes=list("abc"), palette=palette
    )
    seg = Segmenter(tmp_path / "run")  # a run directory
    assert seg.preprocessing.name == "torchvision-imagenet"
    assert seg.classes == ["a", "b", "c"] and seg.palette == palette
    image = rand_image(13, 21)
    label = seg.predict(image)
    assert label.dtype == np.uint8 and label.shape == (13, 21)
    assert np.array_equal(label, reference_label(model, image, "torchvision-imagenet"))
    # With the wrong preprocessing the labels differ: the checkpoint's is really used.
    assert not np.array_equal(label, reference_label(model, image, "caffe-voc"))
    tensor_label = seg.predict(torch.from_numpy(image).permute(2, 0, 1))
    assert tensor_label.dtype == torch.int64 and np.array_equal(tensor_label.numpy(), label)
    scores = seg.scores(image)
    assert scores.shape == (3, 13, 21) and scores.dtype == torch.float32


def test_channels_last_holds_one_copy_of_the_weights(tmp_path) -> None:
    """A segmenter that loads its model converts it in place (one copy of the weights: 537 MB
    for VGG16); a module handed in is copied, unless copy_model=False, and keeps its format."""
    model = create_model("test-inference-tiny", preprocessing="caffe-voc").eval()
    save_checkpoint(tmp_path / "run/checkpoints/best.pt", model)
    loaded = Segmenter(tmp_path / "run", channels_last=True)
    assert loaded.runner.model is loaded.model
    handed = Segmenter(model, channels_last=True)
    assert handed.runner.model is not model
    weight = next(p for p in model.parameters() if p.dim() == 4)
    assert weight.is_contiguous()  # the caller's module keeps its memory format
    owned = Segmenter(model, channels_last=True, copy_model=False)
    assert owned.runner.model is model
    image = rand_image(13, 21)
    assert np.array_equal(loaded.predict(image), handed.predict(image))


def test_predict_batch_any_sizes_equals_one_by_one() -> None:
    model = Recorder(create_model("test-inference-tiny").eval())
    seg = Segmenter(model, preprocessing="caffe-voc", batch_size=2)
    images = [
        rand_image(9, 11, 0),
        rand_image(16, 8, 1),
        rand_image(9, 11, 2),
        rand_image(9, 11, 3),
    ]
    batched = seg.predict_batch(images)
    # Grouped by size: the 3 images of 9x11 in batches of 2 and 1, the 16x8 one alone.
    assert sorted(model.shapes) == sorted([(2, 3, 9, 11), (1, 3, 9, 11), (1, 3, 16, 8)])
    for image, label in zip(images, batched, strict=True):
        assert np.array_equal(label, seg.predict(image))
        assert np.array_equal(label, reference_label(model.model, image, "caffe-voc"))


def test_multi_head_models_default_to_the_primary_head() -> None:
    model = create_model("test-inference-tiny", heads=("sem", "geo")).eval()
    seg = Segmenter(model, preprocessing="caffe-voc")
    image = rand_image(10, 10)
    assert seg.scores(image).shape[0] == 3
    assert seg.scores(image, head="geo").shape[0] == 2
    assert seg.predict(image, head="geo").max() <= 1
    with pytest.raises(ValueError, match="unknown head"):
        seg.predict(image, head="depth")


def test_segmenter_uses_each_heads_names_and_palette(tmp_path) -> None:
    model = create_model("test-inference-tiny", heads=("sem", "geo")).eval()
    sem_pal, geo_pal = [(1, 2, 3), (4, 5, 6), (7, 8, 9)], [(9, 9, 9), (8, 8, 8)]
    save_checkpoint(
        tmp_path / "two.pt",
        model,
        classes=list("abc"),
        palette=sem_pal,
        targets={"sem": list("abc"), "geo": ["sky", "ground"]},
        palettes={"sem": sem_pal, "geo": geo_pal},
    )
    seg = Segmenter(tmp_path / "two.pt")
    assert seg.classes_for() == seg.classes_for("sem") == ["a", "b", "c"]
    assert seg.classes_for("geo") == ["sky", "ground"]
    assert seg.palette_for() == sem_pal and seg.palette_for("geo") == geo_pal


def test_multi_modal_models_need_stacked_inputs(tmp_path) -> None:
    """An RGB + HHA model (6 channels): an RGB file fails naming the expected input; the
    modalities stacked as an H x W x 6 array or a 6 x H x W tensor work."""
    model = create_model(
        "test-inference-tiny", in_channels=6, preprocessing="caffe-nyud-color-hha"
    ).eval()
    seg = Segmenter(model)
    Image.fromarray(rand_image(8, 9)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"expects 6-channel input \(RGB then HHA\).*3 channels"):
        seg.predict(tmp_path / "rgb.png")
    stacked = np.concatenate([rand_image(8, 9, 0), rand_image(8, 9, 1)], axis=2)
    label = seg.predict(stacked)
    assert label.shape == (8, 9)
    assert np.array_equal(label, reference_label(model, stacked, "caffe-nyud-color-hha"))
    tensor = torch.from_numpy(stacked).permute(2, 0, 1)
    assert np.array_equal(seg.predict(tensor).numpy(), label)


def test_segmenter_is_exported_lazily_from_the_package() -> None:
    import fcnkit

    assert fcnkit.Segmenter is Segmenter


def test_model_without_preprocessing_needs_one() -> None:
    with pytest.raises(ValueError, match="preprocessing"):
        Segmenter(nn.Conv2d(3, 2, 1))


# --------------------------------------------------------------------------- sliding window
def test_windows_cover_the_image_with_overlap() -> None:
    window = SlidingWindow(tile=8, overlap=0.5)
    boxes = window.windows(20, 8)
    assert [b[0] for b in boxes] == [0, 4, 8, 12]
    assert all(b[2] - b[0] == 8 and b[3] - b[1] == 8 for b in boxes)
    covered = np.zeros((20, 8), int)
    for t, l, b, r in boxes:
        covered[t:b, l:r] += 1
    assert covered.min() >= 1 and covered.max() == 2
    assert SlidingWindow(tile=32).windows(10, 12) == [(0, 0, 10, 12)]
    assert SlidingWindow.for_budget(1000).tile == 31


def test_sliding_window_equals_whole_image_for_a_pointwise_net() -> None:
    net = nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 23, 17)
    with torch.no_grad():
        tiled = sliding_window_forward(net, x, SlidingWindow(tile=(8, 6), overlap=0.25))
        torch.testing.assert_close(tiled, net(x))
        tiled2 = sliding_window_forward(net, x, SlidingWindow(tile=8, overlap=0.5, batch_size=3))
        torch.testing.assert_close(tiled2, net(x))


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "batch"),
    [((37, 53), 16, 0.5, 1), ((37, 53), 16, 0.25, 3), ((64, 20), 12, 0.5, 2), ((9, 70), 8, 0.0, 4)],
)
def test_bands_put_together_are_the_whole_sliding_window(size, tile, overlap, batch) -> None:
    """sliding_window_bands (one reused band buffer, rows shifted up in place) gives, band
    after band, exactly what sliding_window_forward gives for the whole image, flipped too."""
    from fcnkit.inference import sliding_window_bands

    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, 5, padding=2).eval()  # not pointwise: each tile's border differs
    x = torch.randn(2, 3, *size)
    window = SlidingWindow(tile=tile, overlap=overlap, batch_size=batch)
    with torch.no_grad():
        whole = sliding_window_forward(net, x, window)
        mirrored = sliding_window_forward(net, x.flip(-1), window).flip(-1)
        for flip, expected in ((False, whole), (True, (whole + mirrored) / 2)):
            bands = list(sliding_window_bands(net, x, window, flip=flip))
            assert [b[0] for b in bands][0] == 0 and bands[-1][1] == size[0]
            assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
            torch.testing.assert_close(torch.cat([b[2] for b in bands], 2), expected)


def test_memory_budget_tiles_large_images_only() -> None:
    model = Recorder(create_model("test-inference-tiny").eval())
    seg = Segmenter(model, preprocessing="caffe-voc", max_pixels=16 * 16)
    assert seg.predict(rand_image(40, 30)).shape == (40, 30)
    assert len(model.shapes) > 1 and all(s[2] * s[3] <= 256 for s in model.shapes)
    model.shapes.clear()
    seg.predict(rand_image(12, 12))
    assert model.shapes == [(1, 3, 12, 12)]


# --------------------------------------------------------------------------- shift-and-stitch
def _centroid(profile: torch.Tensor) -> float:
    positions = torch.arange(profile.numel(), dtype=profile.dtype)
    return float((profile * positions).sum() / profile.sum())


@pytest.mark.parametrize("f", [32, 8])
@pytest.mark.parametrize(("h", "w"), [(101, 77), (128, 96)])
def test_shift_and_stitch_puts_an_impulse_back_where_it_was(f: int, h: int, w: int) -> None:
    # Paper Sec. 3.2: the stitched outputs lie at their receptive fields' centres. A fixed
    # f x f average pool of stride f is a coarse net whose cell i is centred on pixel
    # f i + (f - 1) / 2; its dense response to an impulse is the f x f box around the impulse.
    # Placing each output at its window's origin instead (fcnkit before issue 13) centred the
    # response at row 48.5 / column 21.5 for f = 32 (60.5 / 33.5 for f = 8): (f - 1) / 2 off.
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, 64, 37] = 1.0
    response = shift_and_stitch(nn.AvgPool2d(f), x, f)[0, 0]
    assert response.shape == (h, w)
    assert _centroid(response.sum(1)) == 64.0 and _centroid(response.sum(0)) == 37.0
    assert torch.equal(response[64 - 20 : 64 + 21], response[64 - 20 : 64 + 21].flip(0))
    assert torch.equal(response[:, 37 - 20 : 37 + 21], response[:, 37 - 20 : 37 + 21].flip(1))
    # the box: f - 1 full rows and columns around the impulse and a half one on either side
    # (the half-pixel offset (f - 1) / 2 of an even pool, placed by linear interpolation)
    box = response[64 - f // 2 : 64 + f // 2 + 1, 37 - f // 2 : 37 + f // 2 + 1] * f * f
    edge = torch.tensor([0.5] + [1.0] * (f - 1) + [0.5], dtype=torch.float64)
    torch.testing.assert_close(box, edge[:, None] * edge[None, :], rtol=0, atol=1e-12)
    assert float(response.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize(("h", "w"), [(12, 15), (13, 11)])
def test_shift_and_stitch_of_an_odd_pool_is_the_centred_stride_one_pool(h: int, w: int) -> None:
    # A 3 x 3 max pool of stride 3 (ceil mode: partial windows at the border) has its cell i
    # on pixel 3 i + 1; stitched, pixel p is the max over p - 1 .. p + 1: the stride-1 pool
    # with padding 1, at every pixel of odd and even sizes (inputs positive: the zeros
    # shifted in never win).
    x = torch.rand(2, 3, h, w) + 0.1
    dense = shift_and_stitch(nn.MaxPool2d(3, 3, ceil_mode=True), x, 3)
    expected = F.max_pool2d(x, 3, stride=1, padding=1)
    torch.testing.assert_close(dense, expected, rtol=0, atol=0)


def test_shift_and_stitch_of_a_function_needs_its_offset() -> None:
    def coarse(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 4)

    x = torch.rand(1, 2, 17, 14)
    with pytest.raises(ValueError, match="offset="):
        shift_and_stitch(coarse, x, 4)
    torch.testing.assert_close(
        shift_and_stitch(coarse, x, 4, offset=1.5), shift_and_stitch(nn.AvgPool2d(4), x, 4)
    )
    dense, maps = stitched_scores(coarse, x, 4, offset=(1.5, 1.5))
    assert [(m.scale, m.shift) for m in maps] == [(1, Fraction(-3, 2))] * 2  # 1.5 - (4 - 1)


def test_shift_and_stitch_refuses_what_it_cannot_serve() -> None:
    x = torch.rand(1, 3, 16, 16)
    tiny = create_model("test-inference-tiny").eval()  # input-sized output, no coarse scores
    with pytest.raises(ValueError, match="input-sized"):
        shift_and_stitch(tiny, x, 2, offset=0.5)
    with pytest.raises(ValueError, match="coarse_scores"):
        shift_and_stitch(tiny, x, 2)
    with pytest.raises(ValueError, match="does not match"):
        shift_and_stitch(nn.AvgPool2d(8), x, 32)
    with pytest.raises(ValueError, match="input-sized"):
        shift_and_stitch(nn.Conv2d(3, 3, 3, padding=1), x)
    with pytest.raises(ValueError, match="factor must divide"):
        shift_and_stitch(nn.AvgPool2d(8), x, factor=3)
    with pytest.raises(ValueError, match="coarse_scores"):
        Segmenter(tiny, preprocessing="caffe-voc", shift_and_stitch=2)
    with pytest.raises(ValueError, match="does not match"):
        Segmenter(nn.AvgPool2d(8), preprocessing="caffe-voc", shift_and_stitch=4)


def test_shift_and_stitch_serves_the_fcn32s_coarse_scores() -> None:
    # A VGG16 FCN-32s is input-sized; shift-and-stitch takes its score_fr (stride 32, cell i
    # on pixel 32 i + 12.5) through coarse_scores / coarse_map. The full trick is 1024
    # passes: the Segmenter accepts it (and refuses another stride) without running it here;
    # the VGG16 stitching itself is compared with filter rarefaction in
    # tests/models/test_rarefaction.py.
    model = create_model("fcn32s", 3).eval()
    assert Segmenter(model, preprocessing="caffe-voc", shift_and_stitch=32).shift_and_stitch == 32
    with pytest.raises(ValueError, match="stride 16 does not match fcn32s's output stride 32"):
        Segmenter(model, preprocessing="caffe-voc", shift_and_stitch=16)


def test_segmenter_stitches_a_coarse_net_and_upsamples_without_stitching() -> None:
    pool = nn.Sequential(nn.MaxPool2d(2, 2), nn.Conv2d(3, 3, 1))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        stitched = dense_scores(pool, x, shift_and_stitch_stride=2)
        torch.testing.assert_close(stitched, shift_and_stitch(pool, x, 2))
        upsampled = dense_scores(pool, x)
        expected = F.interpolate(pool(x), size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(upsampled, expected)
    seg = Segmenter(pool, preprocessing="caffe-voc", shift_and_stitch=2)
    assert seg.predict(rand_image(6, 10)).shape == (6, 10)


def test_shift_and_stitch_handles_multi_head_outputs() -> None:
    def two_heads(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": F.max_pool2d(x, 2), "b": F.avg_pool2d(x, 2)}

    x = torch.rand(1, 2, 6, 6)
    out = shift_and_stitch(two_heads, x, 2, offset=0.5)
    torch.testing.assert_close(out["a"], shift_and_stitch(nn.MaxPool2d(2), x, 2))
    torch.testing.assert_close(out["b"], shift_and_stitch(nn.AvgPool2d(2), x, 2))


# --------------------------------------------------------------------------- flip TTA
def test_flip_tta_averages_with_the_mirrored_prediction() -> None:
    model = create_model("test-inference-tiny").eval()
    seg = Segmenter(model, preprocessing="caffe-voc", tta=True)
    image = rand_image(9, 14)
    x = get_preprocessing("caffe-voc").normalize(torch.from_numpy(image).permute(2, 0, 1)[None])
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1)).flip(-1))[0] / 2
        plain = model(x)[0]
    torch.testing.assert_close(seg.scores(image), expected)
    assert not torch.allclose(seg.scores(image), plain)


def test_sliding_window_handles_multi_head_outputs() -> None:
    a, b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 1)

    def two_heads(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sem": a(x), "geo": b(x)}

    x = torch.randn(1, 3, 19, 26)
    with torch.no_grad():
        out = dense_scores(two_heads, x, sliding_window=SlidingWindow(tile=8, overlap=0.5))
        torch.testing.assert_close(out["sem"], a(x))
        torch.testing.assert_close(out["geo"], b(x))


# --------------------------------------------------------------------------- real models
@pytest.mark.parametrize("name", ["fcn8s-mobilenet_v3_large", "fcn8s-efficientnet_lite0"])
def test_registered_models_predict_any_size(name: str) -> None:
    model = create_model(name, 4).eval()
    seg = Segmenter(model, batch_size=2)
    images = [rand_image(45, 67, 0), rand_image(45, 67, 1), rand_image(33, 20, 2)]
    labels = seg.predict_batch(images)
    assert [lab.shape for lab in labels] == [(45, 67), (45, 67), (33, 20)]
    assert np.array_equal(labels[2], seg.predict(images[2]))
    tiled = Segmenter(model, sliding_window=SlidingWindow(tile=32, overlap=0.5))
    assert tiled.predict(images[0]).shape == (45, 67)


# ------------------------------------------------------------- images as users have them
ORIENTATION = 0x0112  # EXIF tag


def save_with_orientation(array: np.ndarray, path, orientation: int, **options) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif, **options)


def test_exif_orientation_of_a_jpeg_photo_is_applied(tmp_path) -> None:
    """A phone photo stored landscape with Orientation 6 (rotate 90 CW) is displayed portrait:
    the image read, the scores and the label map are in the displayed orientation."""
    array = rand_image(20, 30)
    save_with_orientation(array, tmp_path / "phone.jpg", 6, quality=95)
    with Image.open(tmp_path / "phone.jpg") as im:
        assert im.size == (30, 20) and im.getexif()[ORIENTATION] == 6
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 30, 20)
    seg = Segmenter(create_model("test-inference-tiny").eval(), preprocessing="caffe-voc")
    assert seg.predict(tmp_path / "phone.jpg").shape == (30, 20)
    assert seg.scores(tmp_path / "phone.jpg").shape == (3, 30, 20)


@pytest.mark.parametrize(
    "orientation, displayed",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, -1)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_exact_on_lossless_files(tmp_path, orientation, displayed) -> None:
    array = rand_image(5, 8)
    save_with_orientation(array, tmp_path / "a.png", orientation)
    expected = np.ascontiguousarray(displayed(array))
    assert np.array_equal(load_image(tmp_path / "a.png").permute(1, 2, 0).numpy(), expected)
    with Image.open(tmp_path / "a.png") as im:  # a PIL image opened by the user: the same
        assert np.array_equal(load_image(im).permute(1, 2, 0).numpy(), expected)


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path) -> None:
    values = np.array([[0, 128, 129, 257], [1000, 32768, 65278, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode == "I;16"
    image = load_image(tmp_path / "deep.png")
    expected = np.round(values / 257).astype(np.uint8)  # 65535 -> 255: 257 = 65535 / 255
    assert image.dtype == torch.uint8 and image.shape == (3, 2, 4)
    for channel in image:
        assert np.array_equal(channel.numpy(), expected)


def _mode_image(mode: str) -> tuple[Image.Image, np.ndarray]:
    """A PIL image of ``mode`` and the RGB array load_image must return for it."""
    rgb = rand_image(4, 6, seed=3)
    grey = rgb[..., 0]
    if mode == "RGBA":  # alpha is ignored: the colours as stored
        alpha = np.tile(np.array([0, 128, 255], np.uint8), 8).reshape(4, 6, 1)
        return Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), rgb
    if mode == "LA":
        la = np.stack([grey, 255 - grey], 2)
        return Image.fromarray(la, "LA"), np.repeat(grey[..., None], 3, 2)
    if mode == "L":
        return Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, 2)
    if mode == "1":
        bits = grey > 127
        return Image.fromarray(bits), np.repeat(np.where(bits, 255, 0)[..., None], 3, 2)
    if mode == "P":  # the palette's colours
        palette = rand_image(256, 1, seed=4).reshape(-1)
        im = Image.fromarray(grey, "P")
        im.putpalette(palette.tolist())
        return im, palette.reshape(256, 3)[grey]
    if mode == "CMYK":  # PIL's conversion, no colour profile: R = (255 - C)(255 - K) / 255
        data = rand_image(4, 6, seed=5)[..., :2]
        c, m = data[..., 0].astype(float), data[..., 1].astype(float)
        cmyk = np.stack([c, m, np.zeros_like(c), np.full_like(c, 40)], 2).astype(np.uint8)
        expected = np.stack([(255 - c) * 215 / 255, (255 - m) * 215 / 255, np.full_like(c, 215)], 2)
        im = Image.fromarray(cmyk, "CMYK")
        assert np.abs(np.asarray(im.convert("RGB")) - expected).max() <= 1
        return im, np.asarray(im.convert("RGB"))
    if mode == "I":  # 32-bit integers in 0..65535: read as 16-bit
        values = grey.astype(np.int32) * 257
        return Image.fromarray(values, "I"), np.repeat(grey[..., None], 3, 2)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I"])
def test_each_image_mode_is_converted_by_the_documented_rule(tmp_path, mode: str) -> None:
    im, expected = _mode_image(mode)
    assert im.mode == mode
    got = load_image(im).permute(1, 2, 0).numpy()
    assert got.dtype == np.uint8 and np.array_equal(got, expected.astype(np.uint8))
    suffix = {"CMYK": ".tif", "I": ".tif", "LA": ".png"}.get(mode, ".png")
    im.save(tmp_path / f"image{suffix}")
    with Image.open(tmp_path / f"image{suffix}") as saved:
        assert saved.mode == mode
    assert np.array_equal(load_image(tmp_path / f"image{suffix}").permute(1, 2, 0).numpy(), got)


def test_float_and_out_of_range_integer_images_are_refused(tmp_path) -> None:
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif.*32-bit float"):
        load_image(tmp_path / "f.tif")
    wide = np.array([[0, 70000]], np.int32)
    Image.fromarray(wide, "I").save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide\.tif.*0\.\.70000"):
        load_image(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match="32-bit float"):
        load_image(Image.fromarray(np.zeros((2, 2), np.float32)))


def _png_declaring(path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12 : 17 + 12])  # "IHDR" + 13 bytes of header
    ihdr = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))


def test_pixel_limit_refuses_huge_images_before_decoding(tmp_path) -> None:
    _png_declaring(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 gigapixels, a few bytes
    with pytest.raises(ValueError, match=r"bomb\.png.*40000 x 40000.*limit of 200,000,000"):
        load_image(tmp_path / "bomb.png")
    Image.fromarray(rand_image(20, 30)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png.*30 x 20 = 600 pixels.*limit of 500"):
        load_image(tmp_path / "small.png", max_image_pixels=500)
    seg = Segmenter(nn.Conv2d(3, 2, 1), preprocessing="caffe-voc", max_image_pixels=500)
    with pytest.raises(ValueError, match="limit of 500"):
        seg.predict(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png", max_image_pixels=600).shape == (3, 20, 30)


def test_pixel_limit_replaces_pils_own_and_leaves_it_as_it_was(tmp_path, monkeypatch) -> None:
    Image.fromarray(rand_image(20, 30)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone: DecompressionBombError
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png", max_image_pixels=1000).shape == (3, 20, 30)
    assert load_image(tmp_path / "small.png", max_image_pixels=None).shape == (3, 20, 30)
    assert Image.MAX_IMAGE_PIXELS == 100


# --------------------------------------------------------------------------- banded labels
class LargestFloatTensor:
    """Records the largest float storage (bytes) any torch operation returns while active."""

    def __enter__(self) -> LargestFloatTensor:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.is_floating_point():
                        size = t.untyped_storage().nbytes()
                        recorder.largest = max(recorder.largest, size)
                return out

        self.largest = 0
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("window", [SlidingWindow(16, 0.4), SlidingWindow((12, 20), 0.5, 3)])
def test_tiled_label_maps_equal_the_full_score_maps_argmax(tta: bool, window) -> None:
    torch.manual_seed(0)
    model = create_model("test-inference-tiny", heads=("sem", "geo")).eval()
    seg = Segmenter(model, preprocessing="caffe-voc", sliding_window=window, tta=tta)
    images = [rand_image(70, 53, 1), rand_image(70, 53, 2), rand_image(9, 40, 3)]
    for head in (None, "geo"):
        labels = seg.predict_batch(images, head=head)
        for image, label in zip(images, labels, strict=True):
            expected = seg.scores(image, head=head).argmax(0).numpy()
            assert label.dtype == np.uint8 and np.array_equal(label, expected)
    tensor = torch.from_numpy(images[0]).permute(2, 0, 1)
    label = seg.predict(tensor)
    assert label.dtype == torch.int64
    assert torch.equal(label, seg.scores(tensor).argmax(0))


def test_tiled_prediction_never_holds_a_full_size_score_map() -> None:
    """--max-pixels bounds the whole prediction: float scores live for one band of tiles
    (the full map of a 144-megapixel image would take > 6 GB)."""
    model = create_model("test-inference-tiny").eval()
    grad_modes = []
    model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    seg = Segmenter(model, preprocessing="caffe-voc", max_pixels=16 * 16)
    image = rand_image(400, 48)
    full_map = 3 * 400 * 48 * 4  # classes x H x W float32
    with LargestFloatTensor() as scores:
        label = seg.predict(image)
    assert label.shape == (400, 48)
    assert grad_modes and not any(grad_modes)  # no autograd graph kept across the bands
    assert scores.largest <= 3 * 16 * 48 * 4 < full_map / 8
    with LargestFloatTensor() as whole:
        seg.scores(image)  # the scores themselves: a full map, by definition
    assert whole.largest >= full_map


def test_segmenter_runs_an_exported_onnx_file_with_its_metadata(tmp_path) -> None:
    from fcnkit.export import export_onnx

    torch.manual_seed(0)
    model = TinyFCN(3, heads=("sem", "geo")).eval()
    model.preprocessing = get_preprocessing("caffe-siftflow")
    meta = {"classes": ["a", "b", "c"], "palette": [(1, 2, 3), (4, 5, 6), (7, 8, 9)]}
    meta |= {"targets": {"sem": ["a", "b", "c"], "geo": ["sky", "ground"]}}
    meta |= {"palettes": {"geo": [(9, 9, 9), (8, 8, 8)]}}
    export_onnx(model, tmp_path / "m.onnx", example_size=(16, 16), metadata=meta)
    from_file = Segmenter(tmp_path / "m.onnx")
    faithful = Segmenter(model, meta=meta)
    assert from_file.model is None and from_file.runner.name == "onnxruntime-fp32"
    assert from_file.preprocessing == model.preprocessing and from_file.input_channels == 3
    assert from_file.classes == ["a", "b", "c"] and from_file.classes_for("geo") == [
        "sky",
        "ground",
    ]
    assert from_file.palette_for("geo") == [(9, 9, 9), (8, 8, 8)]
    assert from_file.palette == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    image = np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    openvino = Segmenter(tmp_path / "m.onnx", backend="openvino")  # heads named by output
    assert openvino.runner.name == "openvino-fp32" and openvino.classes_for("geo") == [
        "sky",
        "ground",
    ]
    for head in ("sem", "geo"):
        for segmenter in (from_file, openvino):
            torch.testing.assert_close(
                segmenter.scores(image, head), faithful.scores(image, head), rtol=1e-4, atol=1e-4
            )


def test_segmenter_backend_options(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FCNKIT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = TinyFCN(3).eval()
    model.preprocessing = get_preprocessing("caffe-voc")
    image = np.random.default_rng(1).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    faithful = Segmenter(model)
    assert faithful.runner is None  # eager fp32: the model itself, bit for bit
    for options in ({"backend": "onnxruntime"}, {"backend": "openvino"}, {"channels_last": True}):
        fast = Segmenter(model, **options)
        assert fast.runner is not None and fast.runner.name in repr(fast)
        torch.testing.assert_close(fast.scores(image), faithful.scores(image), rtol=1e-4, atol=1e-4)
        tiled, tiled_fast = (
            Segmenter(model, max_pixels=400),
            Segmenter(model, max_pixels=400, **options),
        )
        torch.testing.assert_close(
            tiled_fast.scores(image), tiled.scores(image), rtol=1e-4, atol=1e-4
        )
        assert np.mean(tiled_fast.predict(image) != tiled.predict(image)) <= 0.001
    int8 = Segmenter(model, backend="onnxruntime", precision="int8", calibration=[image] * 2)
    assert int8.predict(image).shape == (40, 36)
    assert not list(tmp_path.glob("**/*int8*"))  # the quantized graph is not left behind
    with pytest.raises(ValueError, match="did you mean 'onnxruntime'"):
        Segmenter(model, backend="onnxrunime")
    with pytest.raises(ValueError, match="eager fp32 backend only"):
        Segmenter(model, backend="onnxruntime", shift_and_stitch=2)
