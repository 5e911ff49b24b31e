"""EfficientNet-Lite0 (and Lite1/Lite2, issue 15 §1): real classifiers on real photos (their
weights: tests/weights/test_backbones.py), the convolutionalized classifier (Fig. 2) and
FCN-32s/16s/8s on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fcnkit
from fcnkit.coord_map import CoordMap
from fcnkit.models import efficientnet as E
from fcnkit.models.modern import ModernFCN
from fcnkit.preprocessing import get_preprocessing
from fcnkit.surgery import convolutionalize
from fcnkit.weights import efficientnet_lite0_imagenet, imagenet_classes
from fcnkit.weights.backbones import efficientnet_lite_imagenet

CLASSES = imagenet_classes()


@pytest.fixture
def skimage_data():
    """scikit-image's sample photos; only the photo tests need (and skip without) it."""
    return pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def classifier() -> E.EfficientNetLite0:
    torch.set_num_threads(1)
    return efficientnet_lite0_imagenet().eval()


def _prepare(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """Resize the shorter side to ``size``, centre-crop, ``tf-efficientnet-lite`` normalise."""
    x = torch.from_numpy(np.ascontiguousarray(image))
    if x.dim() == 2:
        x = x[..., None].expand(-1, -1, 3)
    x = x[..., :3].permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top : top + size, left : left + size]
    return get_preprocessing("tf-efficientnet-lite").normalize(x)


def _topk(model: torch.nn.Module, image: np.ndarray, k: int = 5, size: int = 224) -> list[str]:
    with torch.no_grad():
        logits = model(_prepare(image, size))
    return [CLASSES[i] for i in logits[0].topk(k).indices.tolist()]


def test_batch_norm_matches_efficientnet_pytorch() -> None:
    bn = E.EfficientNetLite0()._bn0
    assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)


def test_imagenet_class_file_is_torchvision_order() -> None:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = imagenet_classes()
    assert names == list(_IMAGENET_CATEGORIES)
    assert (names[0], names[281], names[967], names[999]) == (
        "tench",
        "tabby",
        "espresso",
        "toilet tissue",
    )


# Real photos shipped with scikit-image (nobody on this project made them) and their
# ImageNet label. Measured: top-1 3/4, top-5 4/4 (chelsea: Egyptian cat > tiger cat > tabby).
PHOTOS = {"chelsea": "tabby", "coffee": "espresso", "camera": "tripod", "rocket": "missile"}


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_real_photos_top5(classifier, skimage_data, photo: str) -> None:
    top5 = _topk(classifier, getattr(skimage_data, photo)())
    assert PHOTOS[photo] in top5, top5


def test_real_photos_top1_accuracy(classifier, skimage_data) -> None:
    hits = {p: _topk(classifier, getattr(skimage_data, p)(), 1)[0] for p in PHOTOS}
    assert sum(hits[p] == label for p, label in PHOTOS.items()) >= 3, hits
    # the tabby cat is a cat even where top-1 picks a neighbouring cat class
    assert hits["chelsea"] in ("tabby", "tiger cat", "Egyptian cat"), hits


def test_random_weights_are_not_the_classifier(skimage_data) -> None:
    """Guards the photo tests: an untrained net does not find the espresso."""
    model = E.EfficientNetLite0().eval()
    assert "espresso" not in _topk(model, skimage_data.coffee())


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 224, 225])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_is_tensorflow_same(size: int, kernel: int) -> None:
    conv = E.SameConv2d(2, 3, kernel, stride=2)
    x = torch.randn(1, 2, size, size + 1)
    y = conv(x)
    assert y.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    # TF SAME: total padding max((out-1)*s + k - n, 0), the odd pixel at bottom/right
    pads = []
    for n in (size + 1, size):  # F.pad order: last dim first
        total = max((math.ceil(n / 2) - 1) * 2 + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
    torch.testing.assert_close(y, expected)


def test_class_score_map_mean_is_the_classifier(classifier) -> None:
    """Pooling and the 1x1-convolutionalized _fc commute: the map's mean is the logits."""
    heat = convolutionalize(classifier, global_pool="none").eval()
    for h, w in ((224, 224), (160, 250)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            scores = heat(x)
            logits = classifier(x)
        assert scores.shape == (1, 1000, math.ceil(h / 32), math.ceil(w / 32))
        torch.testing.assert_close(scores.mean((2, 3)), logits, atol=1e-4, rtol=1e-4)


def test_heatmap_localises_two_objects(classifier, skimage_data) -> None:
    """Paper Fig. 2: cat on the left, espresso on the right -> each class map peaks on its
    own side of one image."""
    cat = _prepare(skimage_data.chelsea())
    cup = _prepare(skimage_data.coffee())
    x = torch.cat([cat, cup], dim=-1)  # 224 x 448
    with torch.no_grad():
        prob = convolutionalize(classifier, global_pool="none").eval()(x).softmax(1)[0]
    half = prob.shape[-1] // 2
    cat_ids = [CLASSES.index(c) for c in ("tabby", "tiger cat", "Egyptian cat")]
    cat_map = prob[cat_ids].sum(0)
    cup_map = prob[CLASSES.index("espresso")]
    assert cat_map[:, :half].mean() > 5 * cat_map[:, half:].mean()
    assert cup_map[:, half:].mean() > 5 * cup_map[:, :half].mean()


NAMES = ["fcn32s-efficientnet_lite0", "fcn16s-efficientnet_lite0", "fcn8s-efficientnet_lite0"]


@pytest.mark.parametrize("name", NAMES)
def test_fcn_registered_output_input_sized(name: str) -> None:
    assert name in fcnkit.list_models()
    model = fcnkit.create_model(name, 3).eval()
    assert model.preprocessing.name == "tf-efficientnet-lite"
    for h, w in ((1, 1), (1, 9), (17, 5), (31, 33), (64, 96), (65, 127)):
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))
        assert out.shape == (2, 3, h, w)
        assert torch.count_nonzero(out) == 0  # zero-initialised score layers


def test_fcn_layers_and_init() -> None:
    model = fcnkit.create_model("fcn8s-efficientnet_lite0", 4)
    assert model.stride == 8
    for layer, c_in in (("score_fr", 1280), ("score_pool4", 112), ("score_pool3", 40)):
        conv = getattr(model, layer)
        assert conv.weight.shape == (4, c_in, 1, 1)
        assert not conv.weight.any() and not conv.bias.any()
    from fcnkit.surgery import bilinear_kernel

    for up in (model.upscore2, model.upscore_pool4):
        torch.testing.assert_close(up.weight.data, bilinear_kernel(4, 4, 3))
        assert up.weight.requires_grad
    assert not any(k.startswith("backbone._fc") for k in model.state_dict())
    assert not hasattr(fcnkit.create_model("fcn32s-efficientnet_lite0", 4), "score_pool4")
    assert isinstance(model, ModernFCN)  # the shared head, EfficientNet as its backbone


def test_class_score_map_is_convolutionalized(classifier) -> None:
    """The heatmap net is surgery.convolutionalize's (the _fc as a 1x1 conv), a copy."""
    heat = convolutionalize(classifier, global_pool="none")
    conv = heat.classifier[-1]
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert torch.equal(conv.weight.flatten(1), classifier._fc.weight)
    assert conv.weight.data_ptr() != classifier._fc.weight.data_ptr()


# ---------------------------------------------------------------------------------------
# alignment: TF "SAME" padding moves the cell centres with the input size's parity


def _composed_shift(model: E.EfficientNetLite0, size: int, stride: int) -> CoordMap:
    """coord_map composed over the strided SAME convs for one input size (exact)."""
    composed = CoordMap()
    for conv in model.strided_convs():
        if composed.scale == stride:
            break
        composed = composed.then(conv.coord_map_at(size))
        size = -(-size // 2)
    return composed


@pytest.mark.parametrize("size", [1, 2, 3, 31, 32, 33, 64, 97, 224, 225])
def test_feature_offsets_are_the_composed_coordinate_maps(size: int) -> None:
    net = E.EfficientNetLite0()
    offsets = net.feature_offsets(size, size + 1)
    for stride in (8, 16, 32):
        for axis, n in enumerate((size, size + 1)):
            expected = _composed_shift(net, n, stride)
            assert expected.scale == stride and 0 <= expected.shift < stride
            assert offsets[stride][axis] == expected.shift, (stride, n)
    # all even sizes on the way: every stride-2 conv centres at 2x + 1
    assert net.feature_offsets(224, 224)[32] == (31, 31)
    assert net.feature_offsets(225, 225)[32] == (0, 0)  # 225, 113, 57, 29, 15: all odd


@torch.no_grad()
def _centre_tap_(model: torch.nn.Module) -> torch.nn.Module:
    """Backbone convs keep only their centre tap (channel mean), batch norms are identity,
    scores sum channels: stride-s cell i is the input at its receptive-field centre."""
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.zero_()
            kh, kw = m.kernel_size
            m.weight[:, :, kh // 2, kw // 2] = 1.0 / m.weight.shape[1]
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, name):
            getattr(model, name).weight.fill_(1.0)
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_impulse_lands_on_its_pixel(name: str) -> None:
    """A bright pixel at a stride-32 cell centre (32 i + b_32(H), b from SAME padding) peaks
    at that very pixel in the output, for even and odd sizes. Before the fix (interpolation
    with align_corners=False) the peak was 7-16 px away, depending on H mod 32."""
    model = _centre_tap_(fcnkit.create_model(name, 2))
    for h, w in ((128, 160), (129, 161), (130, 131), (97, 70)):
        bh, bw = model.backbone.feature_offsets(h, w)[32]
        for i, j in ((1, 1), (2, 1), (1, 2)):
            py, px = 32 * i + bh, 32 * j + bw
            if py >= h or px >= w:
                continue
            x = torch.zeros(1, 3, h, w)
            x[..., py, px] = 1.0
            with torch.no_grad():
                out = model(x)[0, 0]
            assert divmod(int(out.argmax()), w) == (py, px), (name, h, w)


def test_fcn_feature_strides() -> None:
    feats = E.EfficientNetLite0().features(torch.randn(1, 3, 64, 96))
    assert {s: (f.shape[1], *f.shape[-2:]) for s, f in feats.items()} == {
        8: (40, 8, 12),
        16: (112, 4, 6),
        32: (1280, 2, 3),
    }


def test_fcn_trains_on_cpu(skimage_data) -> None:
    """A few SGD steps on one pretrained FCN-8s fit a simple two-region labelling."""
    torch.manual_seed(0)
    model = fcnkit.create_model("fcn8s-efficientnet_lite0", 2, backbone_weights="imagenet")
    model.train()
    x = _prepare(skimage_data.chelsea(), 96)
    label = torch.zeros(1, 96, 96, dtype=torch.long)
    label[..., 48:] = 1
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # zero-init scores
    assert losses[-1] < 0.5 * losses[0], losses


def test_freeze_bn_keeps_backbone_statistics() -> None:
    model = fcnkit.create_model("fcn32s-efficientnet_lite0", 2, freeze_bn=True).train()
    bn = model.backbone._bn0
    assert not bn.training and model.training and model.drop.training
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is not None
    unfrozen = fcnkit.create_model("fcn32s-efficientnet_lite0", 2).train()
    assert unfrozen.backbone._bn0.training


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = fcnkit.create_model("fcn32s-efficientnet_lite0", 3, freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score_fr.weight", "score_fr.bias"}
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(2, 3, 40, 40) * 10)
    assert torch.equal(bn.running_mean, before)  # statistics fixed too: a truly fixed trunk


# ---------------------------------------------------------------------------------------
# Lite1 / Lite2: the scaled family (issue 15 §1)


@pytest.fixture(scope="module", params=["lite1", "lite2"])
def scaled(request) -> E.EfficientNetLite:
    """The packaged Lite1/Lite2 classifier, or a skip naming its pip install."""
    torch.set_num_threads(1)
    try:
        return efficientnet_lite_imagenet(request.param).eval()
    except (FileNotFoundError, ImportError) as err:  # package absent: the pip install
        pytest.skip(str(err))


def test_scaled_real_photos(scaled, skimage_data) -> None:
    """The same 4 photos at the variant's own resolution (240 / 260). Measured: top-5 4/4,
    top-1 2/4 for both (chelsea: Egyptian cat, tabby 3rd; rocket on its launch tower:
    drilling platform, missile 2nd/3rd) -- Lite0 has 3/4; 4 photos do not rank the nets."""
    assert scaled.resolution == {"lite1": 240, "lite2": 260}[scaled.variant]
    top5 = {p: _topk(scaled, getattr(skimage_data, p)(), size=scaled.resolution) for p in PHOTOS}
    assert all(PHOTOS[p] in top5[p] for p in PHOTOS), top5
    assert top5["coffee"][0] == "espresso" and top5["camera"][0] == "tripod", top5
    assert top5["chelsea"][0] in ("tabby", "tiger cat", "Egyptian cat"), top5


def test_scaled_preprocessing_matches_the_stem_statistics(scaled, skimage_data) -> None:
    """Which normalisation the weights saw: the stem's batch norm keeps the statistics of its
    input over ImageNet. On real photos ``(x - 127) / 128`` gives the stem outputs about that
    variance (measured: median |log ratio| ~0.5 on these 5 photos, ~0.1 on 100 SIFT Flow
    images); torchvision's mean/std (x 2.2 the scale, ratio ~1.3) and 0..1 (~1.8) do not."""
    photos = [getattr(skimage_data, p)() for p in ("chelsea", "coffee", "astronaut", "rocket")]
    photos.append(skimage_data.stereo_motorcycle()[0])
    imagenet = get_preprocessing("torchvision-imagenet")
    lite = get_preprocessing("tf-efficientnet-lite")
    gaps = {}
    for name, prep in (("lite", lite), ("torchvision", imagenet)):
        outs = []
        for image in photos:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            with torch.no_grad():
                outs.append(scaled._conv_stem(prep.normalize(x)).transpose(0, 1).flatten(1))
        var = torch.cat(outs, 1).var(1)
        gaps[name] = (var / scaled._bn0.running_var).log().abs().median().item()
    assert gaps["lite"] < 0.8 < 1.0 < gaps["torchvision"], gaps


def test_scaled_class_score_map_is_the_classifier(scaled, skimage_data) -> None:
    """Fig. 2 for Lite1/Lite2: the convolutionalized _fc's map averages to the logits and
    puts the cat left, the espresso right of one image."""
    heat = convolutionalize(scaled, global_pool="none").eval()
    x = torch.randn(1, 3, 100, 130)
    with torch.no_grad():
        torch.testing.assert_close(heat(x).mean((2, 3)), scaled(x), atol=1e-4, rtol=1e-4)
    size = scaled.resolution
    x = torch.cat(
        [_prepare(skimage_data.chelsea(), size), _prepare(skimage_data.coffee(), size)], -1
    )
    with torch.no_grad():
        prob = heat(x).softmax(1)[0]
    half = prob.shape[-1] // 2
    cat_map = prob[[CLASSES.index(c) for c in ("tabby", "tiger cat", "Egyptian cat")]].sum(0)
    cup_map = prob[CLASSES.index("espresso")]
    assert cat_map[:, :half].mean() > 5 * cat_map[:, half:].mean()
    assert cup_map[:, half:].mean() > 5 * cup_map[:, :half].mean()


def test_heatmap_module_takes_the_variant(scaled, skimage_data) -> None:
    from fcnkit.heatmap import class_heatmap

    result = class_heatmap(skimage_data.coffee(), size=scaled.resolution, variant=scaled.variant)
    assert CLASSES[result.class_index] == "espresso" == result.top5[0][0]
    size, wide = scaled.resolution, scaled.resolution * 600 // 400  # coffee: 400 x 600
    assert result.prob.shape == (math.ceil(size / 32), math.ceil(wide / 32))


# hand-computed from the TF lite builder's rules (round_filters: nearest multiple of 8, not
# below 90%; round_repeats: ceil; first/last stage and the 32/1280 stem/head fixed):
# Lite2 width 1.1: 24*1.1 = 26.4 -> 24, 40*1.1 = 44 -> 48, 112*1.1 = 123.2 -> 120,
# 192*1.1 = 211.2 -> 208, 320*1.1 = 352; depth 1.2: 2 -> ceil 2.4 = 3, 3 -> 4, 4 -> 5.
# Lite4 width 1.4: 16*1.4 = 22.4 -> 24, 24*1.4 = 33.6 -> 32, 112*1.4 = 156.8 -> 160;
# depth 1.8: 2 -> 4, 3 -> 6, 4 -> 8.
STAGES = {
    "lite0": ([1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320]),
    "lite1": ([1, 3, 3, 4, 4, 5, 1], [16, 24, 40, 80, 112, 192, 320]),
    "lite2": ([1, 3, 3, 4, 4, 5, 1], [16, 24, 48, 88, 120, 208, 352]),
    "lite3": ([1, 3, 3, 5, 5, 6, 1], [24, 32, 48, 96, 136, 232, 384]),
    "lite4": ([1, 4, 4, 6, 6, 8, 1], [24, 32, 56, 112, 160, 272, 448]),
}


@pytest.mark.parametrize("variant", sorted(STAGES))
def test_stage_channels_and_repeats(variant: str) -> None:
    repeats, channels = STAGES[variant]
    stages = E.lite_stages(variant)
    assert [s[0] for s in stages] == repeats and [s[5] for s in stages] == channels
    assert stages[0][4] == 32  # the fixed stem feeds the first stage
    with torch.device("meta"):
        net = E.EfficientNetLite(variant)
    assert len(net._blocks) == sum(repeats)
    assert net._conv_stem.out_channels == 32 and net._conv_head.out_channels == 1280
    # the skips tap the last block of stages 3 (stride 8) and 5 (stride 16)
    assert net.tap_blocks == {8: sum(repeats[:3]) - 1, 16: sum(repeats[:5]) - 1}
    assert net.feature_channels == {8: channels[2], 16: channels[4], 32: 1280}
    feats = net.features(torch.empty(1, 3, 65, 97, device="meta"))
    assert {s: (f.shape[1], *f.shape[-2:]) for s, f in feats.items()} == {
        8: (channels[2], 9, 13),
        16: (channels[4], 5, 7),
        32: (1280, 3, 4),
    }


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'lite9': use one of"):
        E.EfficientNetLite("lite9")


@pytest.mark.parametrize("name", ["fcn8s-efficientnet_lite1", "fcn8s-efficientnet_lite2"])
def test_scaled_fcn_layers_and_alignment(name: str) -> None:
    """The head on the wider/deeper trunks: skip widths from the taps, and an impulse at a
    stride-32 cell centre still peaks on its own pixel (SAME padding, odd and even sizes)."""
    model = fcnkit.create_model(name, 2)
    width8, width16 = model.backbone.feature_channels[8], model.backbone.feature_channels[16]
    assert model.score_pool3.weight.shape == (2, width8, 1, 1)
    assert model.score_pool4.weight.shape == (2, width16, 1, 1)
    assert model.backbone_name == name.split("-")[1]
    model = _centre_tap_(model)
    for h, w in ((129, 161), (96, 70)):
        bh, bw = model.backbone.feature_offsets(h, w)[32]
        py, px = 32 + bh, 64 + bw
        x = torch.zeros(1, 3, h, w)
        x[..., py, px] = 1.0
        with torch.no_grad():
            out = model(x)[0, 0]
        assert divmod(int(out.argmax()), w) == (py, px), (name, h, w)
