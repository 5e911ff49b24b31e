"""The modern FCN head (ResNet-50, MobileNetV3-Large): geometry, init, weights, surgery."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import models as tvm

import fcnkit
from fcnkit.models import get_model_entry
from fcnkit.models.modern import ModernFCN, build_backbone
from fcnkit.surgery import bilinear_kernel, resize_score_layer, stage, transplant

NAMES = [f"fcn{s}s-{b}" for b in ("resnet50", "mobilenet_v3_large") for s in (32, 16, 8)]
LIGHT = "fcn8s-mobilenet_v3_large"


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
        torch.testing.assert_close(up.weight, bilinear_kernel(3, 3, 4))
        assert up.weight.requires_grad and up.stride == (2, 2) and up.bias is None
    frozen = fcnkit.create_model(LIGHT, 3, learn_upsampling=False)
    assert not frozen.upscore2.weight.requires_grad
    assert frozen.score_pool3.weight.requires_grad
    assert not any(
        n.startswith("upscore")
        for n, _ in fcnkit.create_model(LIGHT, 3, fusion="interpolate").named_parameters()
    )


def test_transposed_fusion_equals_interpolation_inside(light: ModernFCN) -> None:
    """Bilinear-initialised 2x transposed convs are bilinear interpolation (Sec. 3.3) except
    at the map border, where they fade to zero and interpolation clamps."""
    a = randomize_scores_(light)
    b = fcnkit.create_model(LIGHT, 4, fusion="interpolate").eval()
    report = transplant(a, b)
    assert not report.missing and set(report.unused) == {"upscore2.weight", "upscore_pool4.weight"}
    x = torch.randn(1, 3, 160, 192)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    # the stride-32 map's border cells reach 32 + 16 px into the stride-8 output
    inside = (..., slice(48, -48), slice(48, -48))
    torch.testing.assert_close(ya[inside], yb[inside], atol=1e-5, rtol=0)
    assert not torch.allclose(ya, yb, atol=1e-3)


def test_every_skip_contributes() -> None:
    """A constant 1 from any one score layer reaches the output as 1 (away from borders)."""
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
            assert out[..., 48:-48, 48:-48].sub(1.0).abs().max() < 1e-5, (name, layer)


def test_final_upsampling_is_bilinear_by_stride() -> None:
    """FCN-32s output == bilinear x32 of the stride-32 scores, cropped to the input."""
    model = randomize_scores_(fcnkit.create_model("fcn32s-mobilenet_v3_large", 2)).eval()
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        coarse = model.score_fr(model.backbone(x)[32])
        expected = F.interpolate(coarse, scale_factor=32.0, mode="bilinear")[..., :70, :45]
        torch.testing.assert_close(model(x), expected)


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
    assert child.upscore_pool4.weight.shape == (6, 6, 4, 4)
    torch.testing.assert_close(child.score_fr.weight[0], parent.score_fr.weight[2])
    with torch.no_grad():
        assert child.eval()(torch.randn(1, 3, 33, 33)).shape == (1, 6, 33, 33)
