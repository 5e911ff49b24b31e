"""The paper's models: Caffe-faithful layout, names, derived offsets, variants."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import pytest
import torch
from torch import nn

from fcnkit import create_model
from fcnkit.coord_map import CoordMap, place_scores
from fcnkit.models.googlenet import FCNGoogLeNet
from fcnkit.models.vgg import FCN, nyud_preprocessing
from fcnkit.surgery import bilinear_kernel
from fcnkit.weights.modality import (
    expand_input_filters,
    late_fusion_state_dict,
    load_rgb_weights,
)

VGG16_CONVS = [
    f"conv{stage}_{i}"
    for stage, depth in enumerate((2, 2, 3, 3, 3), start=1)
    for i in range(1, depth + 1)
]
TRUNK = [*VGG16_CONVS, "fc6", "fc7"]


def meta_model(name: str, num_classes: int | None = None, **options) -> nn.Module:
    """Structure-only build (no memory, no init cost)."""
    with torch.device("meta"):
        return create_model(name, num_classes, **options)


def caffe_params(layers_with_bias: list[str], deconvs: list[str]) -> set[str]:
    names = {f"{n}.{p}" for n in layers_with_bias for p in ("weight", "bias")}
    return names | {f"{n}.weight" for n in deconvs}


def randomize_scores(model: nn.Module) -> None:
    """Score layers start at zero; give them weights so outputs carry information."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("score"):
                p.normal_(0, 0.01)


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fcn32s", caffe_params([*TRUNK, "score_fr"], ["upscore"])),
        ("fcn32s-fixed", caffe_params([*TRUNK, "score_fr"], ["upscore"])),
        ("fcn16s", caffe_params([*TRUNK, "score_fr", "score_pool4"], ["upscore2", "upscore16"])),
        (
            "fcn8s",
            caffe_params(
                [*TRUNK, "score_fr", "score_pool4", "score_pool3"],
                ["upscore2", "upscore_pool4", "upscore8"],
            ),
        ),
        (
            "fcn8s-atonce",
            caffe_params(
                [*TRUNK, "score_fr", "score_pool4", "score_pool3"],
                ["upscore2", "upscore_pool4", "upscore8"],
            ),
        ),
        (
            "fcn16s-siftflow",
            caffe_params(
                [*TRUNK, "score_fr_sem", "score_pool4_sem", "score_fr_geo", "score_pool4_geo"],
                ["upscore2_sem", "upscore16_sem", "upscore2_geo", "upscore16_geo"],
            ),
        ),
        (
            "fcn8s-siftflow",
            caffe_params(
                [*TRUNK]
                + [f"score_{s}_{h}" for h in ("sem", "geo") for s in ("fr", "pool4", "pool3")],
                [f"{u}_{h}" for h in ("sem", "geo") for u in ("upscore2", "upscore_pool4")]
                + ["upscore8_sem", "upscore8_geo"],
            ),
        ),
        (
            "fcn32s-alexnet",
            caffe_params(
                ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "score_fr"],
                ["upscore"],
            ),
        ),
    ],
)
def test_parameter_names_are_the_caffe_layer_names(name, expected):
    assert {n for n, _ in meta_model(name).named_parameters()} == expected


def test_late_fusion_names_carry_the_modality_suffix():
    model = meta_model("fcn32s-nyud", modality="rgb+hha")
    expected = caffe_params(
        [f"{n}{m}" for m in ("color", "hha") for n in (*TRUNK, "score_fr")], ["upscore"]
    )
    assert {n for n, _ in model.named_parameters()} == expected
    assert model.conv1_1color.in_channels == 3 and model.conv1_1hha.in_channels == 3
    model16 = meta_model("fcn16s-nyud", modality="rgb+hha")
    names = {n for n, _ in model16.named_parameters()}
    assert {"score_pool4color.weight", "score_pool4hha.weight", "upscore2.weight"} <= names


def test_fcn8s_has_the_reference_parameter_count():
    model = meta_model("fcn8s", 21)
    assert sum(p.numel() for p in model.parameters()) == 134_489_759
    # at-once scales are constants, not parameters
    assert sum(p.numel() for p in meta_model("fcn8s-atonce", 21).parameters()) == 134_489_759


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-siftflow", "fcn16s-nyud"])
def test_caffe_geometry(name):
    m = meta_model(name)
    assert m.conv1_1.padding == (100, 100)
    for conv in VGG16_CONVS[1:]:
        assert getattr(m, conv).padding == (1, 1) and getattr(m, conv).kernel_size == (3, 3)
    for stage in range(1, 6):
        pool = getattr(m, f"pool{stage}")
        assert isinstance(pool, nn.MaxPool2d) and pool.ceil_mode
        assert (pool.kernel_size, pool.stride) == (2, 2)
    assert (m.fc6.kernel_size, m.fc6.padding, m.fc6.in_channels) == ((7, 7), (0, 0), 512)
    assert (m.fc7.kernel_size, m.fc7.out_channels) == ((1, 1), 4096)
    for drop in (m.drop6, m.drop7):
        assert type(drop) is nn.Dropout and drop.p == 0.5  # element-wise, not Dropout2d
    assert m.relu1_1.inplace and m.relu7.inplace


def test_dropout_is_element_wise():
    drop = create_model("fcn32s", 2).drop6.train()
    y = drop(torch.ones(1, 16, 8, 8))
    per_channel_zeros = (y == 0).flatten(2).float().mean(-1)
    # element-wise: channels are partly dropped; Dropout2d would drop whole channels
    assert ((per_channel_zeros > 0) & (per_channel_zeros < 1)).all()


@pytest.mark.parametrize(
    ("name", "upsamplers"),
    [
        ("fcn32s", {"upscore": (64, 32)}),
        ("fcn16s", {"upscore2": (4, 2), "upscore16": (32, 16)}),
        ("fcn8s", {"upscore2": (4, 2), "upscore_pool4": (4, 2), "upscore8": (16, 8)}),
        ("fcn32s-alexnet", {"upscore": (63, 32)}),
        ("fcn32s-googlenet", {"upscore": (63, 32)}),
    ],
)
def test_upsamplers_are_bias_free_bilinear(name, upsamplers):
    model = create_model(name, 3)
    for layer_name, (k, s) in upsamplers.items():
        layer = getattr(model, layer_name)
        assert isinstance(layer, nn.ConvTranspose2d)
        assert (layer.kernel_size, layer.stride, layer.bias) == ((k, k), (s, s), None)
        assert layer.groups == 1 and layer.in_channels == layer.out_channels == 3
        torch.testing.assert_close(layer.weight, bilinear_kernel(3, 3, k))
        final = not layer_name.startswith(("upscore2", "upscore_pool4"))
        assert layer.weight.requires_grad is not final  # final fixed, 2x learnable


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s", "fcn8s-atonce", "fcn16s-siftflow"])
def test_learn_upsampling_option(name):
    def learnable(model):
        return {n for n, p in model.named_parameters() if n.startswith("up") and p.requires_grad}

    final = "upscore8" if name.startswith("fcn8s") else "upscore16"
    default = learnable(meta_model(name))
    assert default and all(n.startswith(("upscore2", "upscore_pool4")) for n in default)
    assert not any(n.startswith(final) for n in default)
    assert learnable(meta_model(name, learn_upsampling=True)) == default
    assert learnable(meta_model(name, learn_upsampling=False)) == set()


@pytest.mark.parametrize("name", ["fcn32s", "fcn8s", "fcn16s-siftflow", "fcn32s-alexnet"])
def test_score_layers_start_at_zero(name):
    model = create_model(name, 3)
    score = {n: p for n, p in model.named_parameters() if n.startswith("score")}
    assert score and all((p == 0).all() for p in score.values())


# ------------------------------------------------------------------------------ offsets


@pytest.mark.parametrize(
    ("name", "offsets"),
    [
        ("fcn32s", {"score": 19}),
        ("fcn32s-fixed", {"score": 19}),
        ("fcn16s", {"score_pool4c": 5, "score": 27}),
        ("fcn8s", {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
        ("fcn8s-atonce", {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
        ("fcn32s-siftflow", {"score": 19}),
        ("fcn8s-siftflow", {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
        ("fcn16s-nyud", {"score_pool4c": 5, "score": 27}),
        ("fcn32s-alexnet", {"score": 18}),
    ],
)
def test_derived_crop_offsets_match_the_reference(name, offsets):
    assert meta_model(name).crop_offsets == offsets


def test_offsets_are_derived_from_the_layers_not_typed_in():
    with torch.device("meta"):
        model = FCN({"": 2}, 8)
    model.conv1_1.padding = (98, 98)  # every blob moves by 2 image pixels
    assert model._derive_crop_offsets() == {"score_pool4c": 5, "score_pool3c": 9, "score": 29}
    with torch.device("meta"):
        model = FCN({"": 2}, 32)
    model.pool5.kernel_size = 3  # shift +1 instead of +0.5 at stride 16: 8 image pixels
    assert model._derive_crop_offsets() == {"score": 11}
    with torch.device("meta"):
        model = FCN({"": 2}, 16)
    model.pool5.kernel_size = 3  # now pool4 (stride 16) and upscore2 disagree by half a pixel
    with pytest.raises(ValueError, match="fraction"):
        model._derive_crop_offsets()


# ------------------------------------------------------------------------------ coarse path
@pytest.mark.parametrize(
    ("name", "stride", "shift"),
    [
        # score_fr: 32 i + 12.5, where the reference's crop 19 of upscore (k 64, s 32, whose
        # map centres cell i on upscore position 32 i + 31.5) puts it: 31.5 - 19 = 12.5
        ("fcn32s", 32, Fraction(25, 2)),
        ("fcn32s-nyud", 32, Fraction(25, 2)),
        # fuse_pool4 on upscore2's grid: 16 i + 15.5 - 27 (upscore16 k 32, crop 27)
        ("fcn16s", 16, Fraction(-23, 2)),
        # fuse_pool3 on upscore_pool4's grid: 8 i + 7.5 - 31 (upscore8 k 16, crop 31)
        ("fcn8s", 8, Fraction(-47, 2)),
    ],
)
def test_coarse_map_is_where_the_final_upsampler_puts_each_cell(name, stride, shift):
    model = meta_model(name)
    assert model.coarse_map(0) == model.coarse_map(1) == CoordMap(stride, shift)
    k = getattr(model, {32: "upscore", 16: "upscore16", 8: "upscore8"}[stride]).kernel_size[0]
    assert shift == Fraction(k - 1, 2) - model.crop_offsets["score"]


@pytest.mark.parametrize("name", ["fcn32s", "fcn8s"])
def test_coarse_scores_are_what_the_net_upsamples(name):
    # The fixed bilinear upsampler and its crop interpolate linearly between the coarse
    # cells where the coordinate map places them: between the first and the last cell's
    # centre, forward(x) is place_scores(coarse_scores(x), coarse_map).
    model = create_model(name, 3).eval()
    randomize_scores(model)
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        coarse, out = model.coarse_scores(x), model(x)
    m = model.coarse_map(0)
    placed = place_scores(coarse, [m, m], (70, 45))
    first = math.ceil(m(0))
    last_h, last_w = (math.floor(m(n - 1)) + 1 for n in coarse.shape[-2:])
    assert last_h - first > 20 and last_w - first > 20
    inner = (..., slice(first, last_h), slice(first, last_w))
    torch.testing.assert_close(out[inner], placed[inner], rtol=1e-5, atol=1e-6)


def test_coarse_scores_keep_the_output_form():
    model = create_model("fcn32s-siftflow", 5, num_geo_classes=2).eval()
    with torch.no_grad():
        coarse = model.coarse_scores(torch.randn(1, 3, 40, 33))
    assert list(coarse) == ["sem", "geo"]
    assert coarse["sem"].shape[1] == 5 and coarse["geo"].shape[1] == 2
    assert coarse["sem"].shape[-2:] == (2, 2)  # pool5 ceil((40 + 198) / 32) = 8, fc6 7x7


def test_googlenet_offset_is_derived():
    model = meta_model("fcn32s-googlenet")
    # conv1 (7, s2, p10), 3 pools (3, s2), maxpool4 (2, s2): x_img = 32 x + 15;
    # upscore (63, s32): x_img = x_up - 16
    assert model.crop_offsets == {"score": 16}


def test_skip_fusion_wiring_fcn8s():
    """Forward equals the reference graph, computed by hand with the reference offsets."""
    model = create_model("fcn8s", 3).eval()
    randomize_scores(model)
    x = torch.randn(1, 3, 21, 13)
    with torch.no_grad():
        y = model(x)
        h = x
        for name in [n for n, _ in model.named_children()]:
            h = getattr(model, name)(h)
            if name == "pool3":
                pool3 = h
            if name == "pool4":
                pool4 = h
            if name == "drop7":
                break
        score = model.upscore2(model.score_fr(h))
        score = (
            score + model.score_pool4(pool4)[:, :, 5 : 5 + score.shape[2], 5 : 5 + score.shape[3]]
        )
        score = model.upscore_pool4(score)
        score = (
            score + model.score_pool3(pool3)[:, :, 9 : 9 + score.shape[2], 9 : 9 + score.shape[3]]
        )
        expected = model.upscore8(score)[:, :, 31 : 31 + 21, 31 : 31 + 13]
    torch.testing.assert_close(y, expected)
    assert y.abs().max() > 0


# ----------------------------------------------------------------------------- variants


def test_atonce_scales_pool4_and_pool3_before_scoring():
    model = create_model("fcn8s-atonce", 2).eval()
    assert model.scale_pool4.scale == 0.01 and model.scale_pool3.scale == 0.0001
    seen = {}

    def keep(key):
        def hook(module, args, output):
            seen[key] = (args[0].clone(), output.clone())

        return hook

    for layer in ("pool3", "pool4", "score_pool3", "score_pool4"):
        getattr(model, layer).register_forward_hook(keep(layer))
    with torch.no_grad():
        model(torch.randn(1, 3, 9, 9))
    torch.testing.assert_close(seen["score_pool4"][0], 0.01 * seen["pool4"][1])
    torch.testing.assert_close(seen["score_pool3"][0], 0.0001 * seen["pool3"][1])
    assert not hasattr(create_model("fcn8s", 2), "scale_pool4")


def test_fcn32s_fixed_trains_only_the_score_layer():
    model = create_model("fcn32s-fixed", 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score_fr.weight", "score_fr.bias"}
    randomize_scores(model)
    model(torch.randn(1, 3, 8, 8)).sum().backward()
    assert model.conv1_1.weight.grad is None and model.fc7.weight.grad is None
    assert model.score_fr.weight.grad.abs().sum() > 0


def test_gradients_reach_the_trunk_of_fcn16s():
    model = create_model("fcn16s", 2)
    randomize_scores(model)
    model(torch.randn(1, 3, 8, 8)).pow(2).sum().backward()
    assert model.conv1_1.weight.grad.abs().sum() > 0
    assert model.upscore2.weight.grad.abs().sum() > 0
    assert model.upscore16.weight.grad is None


def test_siftflow_returns_sem_then_geo():
    model = create_model("fcn16s-siftflow", 5, num_geo_classes=2).eval()
    assert model.num_classes == 5
    randomize_scores(model)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 11, 7))
    assert list(out) == ["sem", "geo"] == list(model.head_classes)
    assert model.head_classes == {"sem": 5, "geo": 2}
    assert out["sem"].shape == (2, 5, 11, 7) and out["geo"].shape == (2, 2, 11, 7)
    assert not torch.equal(out["sem"][:, :2], out["geo"])  # separate heads
    default = meta_model("fcn8s-siftflow")
    assert default.score_fr_sem.out_channels == 33 and default.score_fr_geo.out_channels == 3
    assert default.preprocessing.name == "caffe-siftflow"


def test_nyud_early_fusion_rgbd():
    model = create_model("fcn32s-nyud", 3, modality="rgbd").eval()
    assert model.conv1_1.in_channels == 4 and model.input_channels == 4
    with torch.no_grad():
        assert model(torch.randn(1, 4, 5, 6)).shape == (1, 3, 5, 6)
    with pytest.raises(ValueError, match="4 x H x W"):
        model(torch.randn(1, 3, 5, 6))
    assert meta_model("fcn32s-nyud").num_classes == 40


def test_rgbd_extra_filter_is_the_mean_of_the_rgb_filters():
    rgb = nn.Sequential()
    rgb.conv1_1, rgb.fc6 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
    rgbd = nn.Sequential()
    rgbd.conv1_1, rgbd.fc6 = nn.Conv2d(4, 8, 3), nn.Conv2d(8, 4, 1)
    load_rgb_weights(rgbd, rgb.state_dict())
    w = rgbd.conv1_1.weight
    torch.testing.assert_close(w[:, :3], rgb.conv1_1.weight)
    torch.testing.assert_close(w[:, 3], rgb.conv1_1.weight.mean(dim=1))
    torch.testing.assert_close(rgbd.fc6.weight, rgb.fc6.weight)
    assert expand_input_filters(torch.ones(2, 3, 1, 1), 5).shape == (2, 5, 1, 1)
    # and the real net accepts a 3-channel state dict this way
    real = meta_model("fcn32s-nyud", 3, modality="rgbd")
    state = meta_model("fcn32s-nyud", 3).state_dict()
    load_rgb_weights(real, state)  # strict: every name and (widened) shape fits


def test_nyud_late_fusion_sums_scores_half_and_half():
    fused = create_model("fcn32s-nyud", 2, modality="rgb+hha").eval()
    single = create_model("fcn32s-nyud", 2, modality="rgb").eval()
    with torch.no_grad():
        fused.score_frcolor.bias.fill_(2.0)
        fused.score_frhha.bias.fill_(4.0)
        single.score_fr.bias.fill_(3.0)  # 0.5 * 2 + 0.5 * 4
        x = torch.randn(1, 6, 7, 5)
        torch.testing.assert_close(fused(x), single(x[:, :3]))
    with pytest.raises(ValueError, match="6 x H x W"):
        fused(torch.randn(1, 3, 7, 5))


def test_late_fusion_state_dict_loads_two_single_trunk_nets():
    fused = meta_model("fcn16s-nyud", 4, modality="rgb+hha")
    color = meta_model("fcn16s-nyud", 4).state_dict()
    hha = meta_model("fcn16s-nyud", 4, modality="hha").state_dict()
    state = late_fusion_state_dict(color, hha)
    assert set(state) == set(fused.state_dict())
    # values: copied as they are, as the reference's surgery.transplant(suffix='color'/'hha')
    # in nyud-fcn32s-color-hha/solve.py (both HHA nets read HHA in file order)
    w_color, w_hha = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    up = torch.randn(4, 4, 64, 64)
    small = late_fusion_state_dict(
        {"conv1_1.weight": w_color, "upscore.weight": up},
        {"conv1_1.weight": w_hha, "upscore.weight": torch.zeros_like(up)},
    )
    assert torch.equal(small["conv1_1hha.weight"], w_hha)  # was reversed
    assert torch.equal(small["conv1_1color.weight"], w_color)
    assert torch.equal(small["upscore.weight"], up)  # the shared upsampler: colour's
    # a net trained on reversed HHA (fcnkit before it followed the reference): reversed back
    old = late_fusion_state_dict({}, {"conv1_1.weight": w_hha}, hha_reversed=True)
    assert torch.equal(old["conv1_1hha.weight"], w_hha.flip(1))


def test_nyud_modalities_and_preprocessing():
    with pytest.raises(ValueError, match="modality"):
        meta_model("fcn32s-nyud", modality="depth")
    assert nyud_preprocessing("rgb").name == "caffe-nyud-color"
    assert nyud_preprocessing("hha").name == "caffe-nyud-hha"
    both = nyud_preprocessing("rgb+hha")
    assert len(both.mean) == 6 and both.mean[:3] == (116.190, 97.203, 92.318)
    # reference nyud_layers.py: mean_hha (132.431, 94.076, 118.477) on the HHA PNG's channels
    # in file order (load_hha does not reverse them); only colour is reversed to BGR
    assert both.mean[3:] == (132.431, 94.076, 118.477)  # was listed reversed
    hha = nyud_preprocessing("hha")
    assert hha.mean == (132.431, 94.076, 118.477) and hha.channel_order == "RGB"  # no swap


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("fcn8s", "caffe-voc"),
        ("fcn32s-alexnet", "caffe-voc"),
        ("fcn16s-siftflow", "caffe-siftflow"),
        ("fcn32s-nyud", "caffe-nyud-color"),
        ("fcn32s-googlenet", "torchvision-imagenet"),
    ],
)
def test_preprocessing_presets(name, preset):
    assert meta_model(name).preprocessing.name == preset


# ---------------------------------------------------------------------- AlexNet, GoogLeNet


def test_alexnet_is_the_caffenet_layout():
    m = meta_model("fcn32s-alexnet")
    assert (m.conv1.out_channels, m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == (
        96,
        (11, 11),
        (4, 4),
        (100, 100),
    )
    assert [m.conv2.groups, m.conv3.groups, m.conv4.groups, m.conv5.groups] == [2, 1, 2, 2]
    assert [getattr(m, f"conv{i}").out_channels for i in range(1, 6)] == [96, 256, 384, 384, 256]
    for norm in (m.norm1, m.norm2):
        assert (norm.size, norm.alpha, norm.beta) == (5, 1e-4, 0.75)
    names = [n for n, _ in m.named_children()]
    assert names.index("norm1") == names.index("pool1") + 1  # CaffeNet: pool, then LRN
    assert m.fc6.kernel_size == (6, 6) and m.fc6.in_channels == 256
    assert type(m.drop6) is nn.Dropout


def test_googlenet_keeps_torchvision_names_and_drops_the_classifier():
    from torchvision.models import googlenet

    with torch.device("meta"):
        reference = googlenet(weights=None, aux_logits=False, init_weights=False)
    trunk_keys = {k for k in reference.state_dict() if not k.startswith("fc.")}
    model = meta_model("fcn32s-googlenet")
    keys = set(model.state_dict())
    assert trunk_keys <= keys
    assert keys - trunk_keys == {"score_fr.weight", "score_fr.bias", "upscore.weight"}
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert model.score_fr.kernel_size == (1, 1) and model.score_fr.in_channels == 1024
    assert not model.upscore.weight.requires_grad


def test_googlenet_transform_input_matches_torchvision():
    x = torch.randn(1, 3, 4, 4)
    model = FCNGoogLeNet(2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model._transform_input(x), ((x * std + mean) - 0.5) / 0.5)


@pytest.mark.parametrize("name", ["fcn32s-alexnet", "fcn32s-googlenet"])
def test_traced_crop_follows_the_input_size(name):
    model = create_model(name, 2).eval()
    randomize_scores(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(1, 3, 13, 7), check_trace=False)
        x = torch.randn(1, 3, 21, 18)
        torch.testing.assert_close(traced(x), model(x))


def test_create_model_keeps_the_modality_preprocessing():
    assert meta_model("fcn32s-nyud", modality="hha").preprocessing.name == "caffe-nyud-hha"
    both = meta_model("fcn32s-nyud", modality="rgb+hha").preprocessing
    assert both.name == "caffe-nyud-color-hha"
