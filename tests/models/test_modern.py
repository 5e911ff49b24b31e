"""The modern FCN head (ResNet-50, MobileNetV3-Large): geometry, alignment, init, weights,
surgery."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision import models as tvm

import fcnkit
from fcnkit.coord_map import CoordMap
from fcnkit.models import get_model_entry
from fcnkit.models.modern import BACKBONES, ModernFCN, build_backbone, trunk_map
from fcnkit.surgery import bilinear_kernel, init_from, resize_score_layer, transplant

NAMES = [f"fcn{s}s-{b}" for b in ("resnet50", "mobilenet_v3_large") for s in (32, 16, 8)]
LIGHT = "fcn8s-mobilenet_v3_large"


def stage(parent: torch.nn.Module, child: str) -> torch.nn.Module:
    """The next stage (Sec. 4.2): a fresh ``child`` net initialised from ``parent``."""
    import fcnkit

    model = fcnkit.create_model(child, parent.num_classes)
    model.preprocessing = parent.preprocessing
    model.stage_report = init_from(parent, model)
    return model


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Nothing here may reach the network: a download attempt is an offline failure."""

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.fixture(scope="module")
def light() -> ModernFCN:
    torch.set_num_threads(1)
    return fcnkit.create_model(LIGHT, 4).eval()


@torch.no_grad()
def randomize_scores_(model: ModernFCN) -> ModernFCN:
    for name in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, name):
            getattr(model, name).weight.normal_(0, 0.1)
            getattr(model, name).bias.normal_(0, 0.5)
    return model


class RandomFeatures(nn.Module):
    """A stand-in backbone: fixed random stride-8/16/32 features (a random MobileNet's are
    nearly constant, which would hide misalignment), ``ceil(H / s)`` cells, offsets 0."""

    def __init__(self, channels: dict[int, int]) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        g = torch.Generator().manual_seed(x.shape[-2] * 1000 + x.shape[-1])
        h, w = x.shape[-2:]
        return {
            s: torch.randn(x.shape[0], c, -(-h // s), -(-w // s), generator=g)
            for s, c in self.channels.items()
        }


def fake_fcn(stride: int, fusion: str = "transposed") -> ModernFCN:
    channels = {8: 5, 16: 6, 32: 7}
    return randomize_scores_(
        ModernFCN(RandomFeatures(channels), channels, 3, stride, fusion=fusion)
    )


@torch.no_grad()
def centre_tap_(model: nn.Module) -> nn.Module:
    """Every backbone conv keeps only its centre tap (channel mean), batch norms are identity,
    scores sum channels: stride-``s`` cell ``i`` is the input at its receptive-field centre."""
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.zero_()
            kh, kw = m.kernel_size
            m.weight[:, :, kh // 2, kw // 2] = 1.0 / m.weight.shape[1]
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, name):
            getattr(model, name).weight.fill_(1.0)
            getattr(model, name).bias.zero_()
    return model.eval()


def impulse_errors(model: nn.Module, size: tuple[int, int], pixels) -> list[int]:
    """``|output peak - impulse|`` (pixels, worst axis) for a bright pixel at each position."""
    errors = []
    for py, px in pixels:
        x = torch.zeros(1, 3, *size)
        x[..., py, px] = 1.0
        with torch.no_grad():
            out = model(x)[0, 0]
        oy, ox = divmod(int(out.argmax()), size[1])
        errors.append(max(abs(oy - py), abs(ox - px)))
    return errors


@pytest.mark.parametrize(
    ("name", "fusion"),
    [
        ("fcn32s-resnet50", "transposed"),
        ("fcn8s-resnet50", "transposed"),
        ("fcn32s-mobilenet_v3_large", "transposed"),
        ("fcn16s-mobilenet_v3_large", "interpolate"),
        (LIGHT, "transposed"),
        (LIGHT, "interpolate"),
    ],
)
def test_impulse_lands_on_its_pixel(name: str, fusion: str) -> None:
    """Score cells sit on their receptive-field centres: with a centre-tap backbone a bright
    pixel at a stride-32 cell centre (pixel 32 i: odd-kernel "same" convs map x -> 2x) peaks
    at that very pixel in the output. Before the fix: 15 px off (32s), 12 px (8s)."""
    model = centre_tap_(fcnkit.create_model(name, 2, fusion=fusion))
    for size in ((128, 160), (129, 131)):
        pixels = [(32, 64), (64, 32), (96, 96)]
        assert impulse_errors(model, size, pixels) == [0, 0, 0], (name, size)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_backbone_coordinate_maps(backbone: str) -> None:
    """The taps' composed coordinate maps: ``x_in = s x``, no shift, both axes."""
    taps = build_backbone(backbone)
    assert taps.offsets == {8: (0, 0), 16: (0, 0), 32: (0, 0)}
    assert taps.feature_offsets(97, 64) == taps.offsets
    layers = list(taps.children())
    names = list(dict(taps.named_children()))
    last = names.index(next(n for n, s in taps.taps.items() if s == 32))
    composed = CoordMap()
    for layer in layers[: last + 1]:
        composed = composed.then(trunk_map(layer, axis=1))
    assert composed == CoordMap(32, 0)


def test_trunk_map_rejects_a_misaligned_shortcut() -> None:
    block = tvm.resnet.BasicBlock(
        4,
        4,
        stride=2,
        downsample=nn.Conv2d(4, 4, 2, stride=2),  # 2x2: centred half a pixel off
    )
    with pytest.raises(ValueError, match="misaligned"):
        trunk_map(block)


@pytest.mark.parametrize("name", NAMES)
def test_registered_weight_free_and_zero_initialised(name: str) -> None:
    entry = get_model_entry(name)
    assert entry.preprocessing == "torchvision-imagenet" and "modern" in entry.tags
    model = fcnkit.create_model(name, 3).eval()
    assert model.preprocessing.name == "torchvision-imagenet" and model.num_classes == 3
    stride = int(name[3:5].rstrip("s"))
    scores = {"score_fr": True, "score_pool4": stride <= 16, "score_pool3": stride == 8}
    for layer, present in scores.items():
        assert hasattr(model, layer) == present
        if present:
            assert not getattr(model, layer).weight.any()
    assert hasattr(model, "upscore2") == (stride <= 16)
    assert hasattr(model, "upscore_pool4") == (stride == 8)
    # the classifier's global pool and fc are gone
    assert not {"avgpool", "fc", "classifier"} & set(dict(model.backbone.named_children()))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 45, 38))
    assert out.shape == (1, 3, 45, 38) and not out.any()  # zero scores: zero output


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    fusion=st.sampled_from(["transposed", "interpolate"]),
)
def test_output_is_input_sized(h: int, w: int, fusion: str) -> None:
    model = randomize_scores_(fcnkit.create_model(LIGHT, 2, fusion=fusion)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 2, h, w)


@pytest.mark.parametrize("size", [(1, 1), (17, 31), (64, 64), (97, 50)])
def test_resnet50_output_is_input_sized(size: tuple[int, int]) -> None:
    model = fcnkit.create_model("fcn8s-resnet50", 2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape[-2:] == size


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_backbone_taps_strides_8_16_32(backbone: str) -> None:
    taps = build_backbone(backbone).eval()
    with torch.no_grad():
        features = taps(torch.randn(1, 3, 75, 130))
    channels = {"resnet50": (512, 1024, 2048), "mobilenet_v3_large": (40, 112, 960)}[backbone]
    for (stride, f), c in zip(sorted(features.items()), channels, strict=True):
        assert f.shape[1:] == (c, math.ceil(75 / stride), math.ceil(130 / stride))
    assert "fc" not in dict(taps.named_children())  # the classifier's tail is dropped


def test_upsamplers_bilinear_and_learnable_option() -> None:
    model = fcnkit.create_model(LIGHT, 3)
    for up in (model.upscore2, model.upscore_pool4):
        # 3 taps (0.5, 1, 0.5): coarse cell i lies on fine cell 2i (co-centred grids)
        torch.testing.assert_close(up.weight, bilinear_kernel(3, 3, 3))
        assert up.weight.requires_grad and up.stride == (2, 2) and up.bias is None
    frozen = fcnkit.create_model(LIGHT, 3, learn_upsampling=False)
    assert not frozen.upscore2.weight.requires_grad
    assert frozen.score_pool3.weight.requires_grad
    assert not any(
        n.startswith("upscore")
        for n, _ in fcnkit.create_model(LIGHT, 3, fusion="interpolate").named_parameters()
    )


@pytest.mark.parametrize("stride", [16, 8])
def test_transposed_fusion_equals_interpolation(stride: int) -> None:
    """Bilinear-initialised 2x transposed convs on the edge-padded map are exactly bilinear
    interpolation (Sec. 3.3), borders included."""
    a, b = fake_fcn(stride).eval(), fake_fcn(stride, "interpolate").eval()
    report = transplant(a, b)
    assert not report.missing
    assert set(report.unused) == {"upscore2.weight", "upscore_pool4.weight"} - (
        {"upscore_pool4.weight"} if stride == 16 else set()
    )
    for size in ((160, 192), (75, 41), (1, 9)):
        x = torch.zeros(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)
    with torch.no_grad():
        a.upscore2.weight.add_(0.1)
        assert not torch.allclose(a(x), b(x), atol=1e-3)


def test_every_skip_contributes() -> None:
    """A constant 1 from any one score layer reaches the whole output as 1 (borders clamp)."""
    x = torch.randn(1, 3, 192, 160)
    for name, layers in (
        ("fcn32s-mobilenet_v3_large", ["score_fr"]),
        ("fcn16s-mobilenet_v3_large", ["score_fr", "score_pool4"]),
        (LIGHT, ["score_fr", "score_pool4", "score_pool3"]),
    ):
        model = fcnkit.create_model(name, 2).eval()
        for layer in layers:
            with torch.no_grad():
                getattr(model, layer).bias.fill_(1.0)  # a constant score map of ones
                out = model(x)
                getattr(model, layer).bias.zero_()
            assert out.sub(1.0).abs().max() < 1e-5, (name, layer)


@pytest.mark.parametrize("size", [(70, 45), (64, 65), (1, 33)])
def test_final_upsampling_puts_cells_on_their_centres(size: tuple[int, int]) -> None:
    """FCN-32s: output pixel ``32 i`` is score cell ``i`` exactly, bilinear in between, the
    last cell's past it (``F.interpolate(align_corners=False)`` put cell i at 32 i + 15.5)."""
    model = fake_fcn(32).eval()
    h, w = size
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        coarse = model.score_fr(model.backbone(x)[32])
        out = model(x)
    n, m = coarse.shape[-2:]
    torch.testing.assert_close(out[..., ::32, ::32], coarse)
    inside = F.interpolate(
        coarse, size=(32 * (n - 1) + 1, 32 * (m - 1) + 1), mode="bilinear", align_corners=True
    )
    torch.testing.assert_close(out[..., : inside.shape[-2], : inside.shape[-1]], inside)
    last_h, last_w = 32 * (n - 1), 32 * (m - 1)  # clamped past the last cell centres
    torch.testing.assert_close(out[..., last_h:, :], out[..., last_h : last_h + 1, :].expand(
        -1, -1, h - last_h, -1))  # fmt: skip
    torch.testing.assert_close(out[..., last_w:], out[..., last_w : last_w + 1].expand(
        -1, -1, -1, w - last_w))  # fmt: skip


def test_backward_reaches_backbone_and_head() -> None:
    model = randomize_scores_(fcnkit.create_model(LIGHT, 3)).train()
    out = model(torch.randn(2, 3, 40, 56))
    out.square().mean().backward()
    for name in ("score_fr.weight", "score_pool3.weight", "upscore2.weight", "backbone.0.0.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------
# backbone weights (offline: never downloaded in tests)


def _fake_cache(tmp_path, monkeypatch, backbone: str, member: str) -> dict:
    """A random classifier's state dict where torch.hub would cache the real file."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    entry = tvm.get_model_weights(backbone)[member]
    state = getattr(tvm, backbone)(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    torch.save(state, tmp_path / "checkpoints" / entry.url.rsplit("/", 1)[1])
    return state


def test_enum_weights_from_the_hub_cache(tmp_path, monkeypatch) -> None:
    state = _fake_cache(tmp_path, monkeypatch, "mobilenet_v3_large", "IMAGENET1K_V1")
    model = fcnkit.create_model(LIGHT, 2, backbone_weights="IMAGENET1K_V1")
    assert torch.equal(model.backbone.get_parameter("0.0.weight"), state["features.0.0.weight"])
    assert torch.equal(
        model.backbone.get_buffer("16.1.running_var"), state["features.16.1.running_var"]
    )


def test_offline_missing_weights_fail_at_once_naming_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(FileNotFoundError) as info:
        fcnkit.create_model("fcn32s-resnet50", 2, backbone_weights="IMAGENET1K_V2")
    message = str(info.value)
    assert str(expected) in message and "backbone_weights='/path/to/" in message
    with pytest.raises(ValueError, match="IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        fcnkit.create_model("fcn32s-resnet50", 2, backbone_weights="IMAGENET_V9")


def test_local_weights_file(tmp_path) -> None:
    state = tvm.mobilenet_v3_large(weights=None).state_dict()
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    model = fcnkit.create_model("fcn32s-mobilenet_v3_large", 2, backbone_weights=str(path))
    assert torch.equal(
        model.backbone.get_parameter("3.block.1.0.weight"), state["features.3.block.1.0.weight"]
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fcnkit.create_model(LIGHT, 2, backbone_weights=str(tmp_path / "absent.pth"))


# ---------------------------------------------------------------------------------------
# surgery applies to the modern nets (same layer names as the paper's)


def test_stage_and_resize_on_modern_nets() -> None:
    parent = randomize_scores_(fcnkit.create_model("fcn32s-mobilenet_v3_large", 4))
    child = stage(parent, LIGHT)
    assert child.stage_report.missing == [
        "score_pool4.weight",
        "score_pool4.bias",
        "upscore2.weight",
        "score_pool3.weight",
        "score_pool3.bias",
        "upscore_pool4.weight",
    ]
    assert torch.equal(child.score_fr.weight, parent.score_fr.weight)
    assert not child.score_pool3.weight.any()
    resize_score_layer(child, 6, keep={0: 2})
    assert child.num_classes == 6
    for layer in ("score_fr", "score_pool4", "score_pool3"):
        assert getattr(child, layer).out_channels == 6
    assert child.upscore_pool4.weight.shape == (6, 6, 3, 3)
    torch.testing.assert_close(child.score_fr.weight[0], parent.score_fr.weight[2])
    with torch.no_grad():
        assert child.eval()(torch.randn(1, 3, 33, 33)).shape == (1, 6, 33, 33)
