"""EfficientNet-Lite0: a real classifier on real photos (its weights: tests/weights/
test_backbones.py), the convolutionalized classifier (Fig. 2) and FCN-32s/16s/8s on it."""

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


def _topk(model: torch.nn.Module, image: np.ndarray, k: int = 5) -> list[str]:
    with torch.no_grad():
        logits = model(_prepare(image))
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
