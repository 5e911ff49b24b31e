"""Net surgery (paper Sec. 3.1, 3.3, 4.2): exact, on random weights and small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from fcnkit.surgery import (
    bilinear_kernel,
    convolutionalize,
    init_bilinear_,
    init_from,
    linear_to_conv,
    resize_score_layer,
    transplant,
)


def stage(parent: torch.nn.Module, child: str) -> torch.nn.Module:
    """The next stage (Sec. 4.2): a fresh ``child`` net initialised from ``parent``."""
    import fcnkit

    model = fcnkit.create_model(child, parent.num_classes)
    model.preprocessing = parent.preprocessing
    model.stage_report = init_from(parent, model)
    return model


# ---------------------------------------------------------------------------------------
# helpers


@torch.no_grad()
def randomize_(model: nn.Module) -> nn.Module:
    """Weights that give O(1) activations at any depth (default inits shrink VGG's logits)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def valid_vgg(num_classes: int = 5) -> models.VGG:
    """torchvision's VGG class with VGG16's stages, narrow and without padding.

    Without padding the trunk is exactly translation-equivariant, so a dense output cell
    equals the classifier on its window; with padding, a window cut out of a larger image
    sees zeros at its border where the large image has pixels, and no cell could match.
    """
    layers: list[nn.Module] = []
    c = 3
    for width, depth in ((4, 2), (6, 2), (8, 3), (8, 3), (8, 3)):
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3), nn.ReLU(inplace=True)]
            c = width
        layers.append(nn.MaxPool2d(2, 2))
    net = models.VGG(nn.Sequential(*layers), num_classes=num_classes, init_weights=False)
    net.classifier = nn.Sequential(  # torchvision's layout, narrow
        nn.Linear(8 * 7 * 7, 32),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(32, 32),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(32, num_classes),
    )
    return randomize_(net)


def valid_alexnet(num_classes: int = 5) -> models.AlexNet:
    """torchvision's AlexNet with its convolutions' padding removed, narrow classifier."""
    net = models.alexnet(weights=None, num_classes=num_classes)
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            m.padding = (0, 0)
    net.classifier = nn.Sequential(
        nn.Dropout(),
        nn.Linear(256 * 6 * 6, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, num_classes),
    )
    return randomize_(net)


def valid_resnet(num_classes: int = 5) -> models.ResNet:
    """A torchvision ResNet instance whose stages are replaced by unpadded convs (stride 32)."""
    net = models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 8, 7, stride=2, bias=False)
    net.bn1 = nn.BatchNorm2d(8)
    net.maxpool = nn.MaxPool2d(3, 2)
    net.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU())
    net.layer2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2), nn.ReLU())
    net.layer3 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2), nn.ReLU())
    net.layer4 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
    net.fc = nn.Linear(16, num_classes)
    return randomize_(net)


class ValidMobileNetLike(nn.Module):
    """``features`` -> global ``avgpool`` -> MLP ``classifier`` (MobileNetV3's layout)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=4), nn.Hardswish(), nn.Conv2d(8, 8, 3, stride=8)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(8, 16), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def assert_windows(net: nn.Module, dense: nn.Module, window: int, feature: int, grid: int):
    """Every output cell (i, j) == the classifier on the window at (32 i, 32 j)."""
    x = torch.randn(1, 3, window + 32 * (grid - 1), window + 32 * (grid - 1) + 32)
    with torch.no_grad():
        # the window is the classifier's own size: its pooled features are exactly the
        # size its first Linear expects, so the adaptive pool does nothing there
        assert net.features(x[..., :window, :window]).shape[-1] == feature
        out = dense(x)
        assert out.shape[-2:] == (grid, grid + 1)
        for i in range(grid):
            for j in range(grid + 1):
                crop = x[..., 32 * i : 32 * i + window, 32 * j : 32 * j + window]
                expected = net(crop)[0]
                assert expected.abs().max() > 0.1  # not a vacuous comparison
                torch.testing.assert_close(out[0, :, i, j], expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------
# bilinear kernel (Sec. 3.3)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 16, 32, 63, 64])
def test_bilinear_kernel_matches_independent_formula(k: int) -> None:
    # the tent centred at (k - 1) / 2 with half-width ceil(k / 2), built with numpy
    t = 1 - np.abs(np.arange(k) - (k - 1) / 2) / math.ceil(k / 2)
    w = bilinear_kernel(3, 3, k)
    assert w.shape == (3, 3, k, k)
    for i in range(3):
        for j in range(3):
            expected = np.outer(t, t) if i == j else np.zeros((k, k))
            np.testing.assert_allclose(w[i, j].numpy(), expected, atol=1e-7)


def test_bilinear_kernel_reference_values() -> None:
    np.testing.assert_allclose(
        bilinear_kernel(1, 1, 4)[0, 0, 0].numpy() / 0.25, [0.25, 0.75, 0.75, 0.25]
    )
    with pytest.raises(ValueError):
        bilinear_kernel(2, 3, 4)


@pytest.mark.parametrize("factor", [2, 4, 8, 32])
def test_bilinear_upsampling_equals_interpolate_inside(factor: int) -> None:
    """Kernel 2s, stride s, cropped by s/2 == F.interpolate(bilinear) away from the border."""
    x = torch.randn(1, 2, 5, 6)
    up = nn.ConvTranspose2d(2, 2, 2 * factor, stride=factor, bias=False)
    init_bilinear_(up)
    with torch.no_grad():
        y = up(x)[..., factor // 2 :, factor // 2 :][..., : 5 * factor, : 6 * factor]
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    # inside: output pixels whose source coordinate lies between two input pixels
    lo, hi_h, hi_w = factor // 2, 4 * factor + factor // 2, 5 * factor + factor // 2
    torch.testing.assert_close(y[..., lo:hi_h, lo:hi_w], ref[..., lo:hi_h, lo:hi_w])
    assert not torch.allclose(y, ref)  # the borders do differ (zero extension vs clamping)


@pytest.mark.parametrize(("k", "s"), [(4, 2), (16, 8), (32, 16), (64, 32), (63, 32)])
def test_bilinear_upsampling_keeps_constant_inside(k: int, s: int) -> None:
    up = init_bilinear_(nn.ConvTranspose2d(3, 3, k, stride=s, bias=True))
    assert not up.bias.any()
    with torch.no_grad():
        y = up(torch.full((1, 3, 4, 5), 2.5))
    # every interior output pixel receives two taps per axis from the input's inside
    inside = y[..., k - s : 3 * s + 1, k - s : 4 * s + 1]
    torch.testing.assert_close(inside, torch.full_like(inside, 2.5))
    assert y[..., 0, 0].lt(2.5).all()  # a border pixel sees one tap only


def test_init_bilinear_rejects_non_square() -> None:
    with pytest.raises(ValueError):
        init_bilinear_(nn.ConvTranspose2d(2, 2, (4, 2), stride=2))


# ---------------------------------------------------------------------------------------
# linear_to_conv and convolutionalize (Sec. 3.1, Fig. 2)


def test_linear_to_conv_is_exact_and_copies() -> None:
    linear = nn.Linear(6 * 3 * 2, 7)
    x = torch.randn(4, 6, 3, 2)
    conv = linear_to_conv(linear, (6, 3, 2))
    assert conv.kernel_size == (3, 2) and conv.out_channels == 7
    with torch.no_grad():
        torch.testing.assert_close(conv(x).flatten(1), linear(x.flatten(1)))
        conv.weight.zero_()
    assert linear.weight.abs().sum() > 0  # a copy, not a view
    with pytest.raises(ValueError, match="elements"):
        linear_to_conv(linear, (6, 3, 3))


def test_linear_to_conv_without_bias() -> None:
    linear = nn.Linear(8, 3, bias=False)
    conv = linear_to_conv(linear, (8, 1, 1))
    assert conv.bias is None
    x = torch.randn(2, 8, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(conv(x).flatten(1), linear(x.flatten(1)))


@pytest.mark.parametrize(
    "name", ["vgg16", "alexnet", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]
)
def test_convolutionalize_reproduces_logits_at_own_size(name: str) -> None:
    net = randomize_(getattr(models, name)(weights=None, num_classes=7))
    dense = convolutionalize(net).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, scores = net(x), dense(x)
    assert scores.shape == (2, 7, 1, 1)
    assert logits.std() > 0.1
    assert (scores.flatten(1) - logits).abs().max() <= 1e-4
    # a larger input gives a heatmap (Fig. 2), one cell per 32 px of extra size
    with torch.no_grad():
        assert dense(torch.randn(1, 3, 224 + 64, 224 + 32)).shape == (1, 7, 3, 2)


def test_convolutionalize_efficientnet_lite0_reproduces_logits() -> None:
    """The efficientnet_pytorch layout (``_avg_pooling``, ``_dropout``, ``_fc`` after an
    ``extract_features`` trunk, issue 5): ``_fc`` becomes a 1x1 conv; at 224 px the dense
    net's single cell is the classifier's logits, and without pooling it slides."""
    from fcnkit.models.efficientnet import EfficientNetLite0

    net = randomize_(EfficientNetLite0(num_classes=7)).eval()
    dense = convolutionalize(net).eval()
    conv = dense.classifier[-1]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert isinstance(dense.classifier[0], nn.Dropout)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, scores = net(x), dense(x)
        assert scores.shape == (2, 7, 1, 1) and logits.std() > 0.1
        assert (scores.flatten(1) - logits).abs().max() <= 1e-4
        assert dense(torch.randn(1, 3, 224 + 64, 224 + 32)).shape == (1, 7, 3, 2)
        sliding = convolutionalize(net, global_pool="none").eval()
        y = torch.randn(1, 3, 160, 250)
        assert (sliding(y).mean((2, 3)) - net(y)).abs().max() <= 1e-4
    assert not any(n.startswith("features.net._fc.") for n, _ in dense.named_parameters())
    with torch.no_grad():
        for p in dense.parameters():
            p.zero_()
    assert net._fc.weight.abs().sum() > 0  # a copy


def test_convolutionalize_vgg16_layers() -> None:
    dense = convolutionalize(models.vgg16(weights=None, num_classes=3))
    convs = [m for m in dense.classifier if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(7, 7), (1, 1), (1, 1)]  # fc6, fc7, fc8
    assert [c.out_channels for c in convs] == [4096, 4096, 3]
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in dense.modules())
    drops = [m for m in dense.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2  # element-wise dropout kept after fc6 and fc7


def test_convolutionalize_alexnet_fc6_is_6x6() -> None:
    dense = convolutionalize(models.alexnet(weights=None, num_classes=3))
    assert next(m for m in dense.classifier if isinstance(m, nn.Conv2d)).kernel_size == (6, 6)


def test_convolutionalize_resnet_without_pooling_averages_to_logits() -> None:
    net = randomize_(models.resnet18(weights=None, num_classes=4))
    dense = convolutionalize(net, global_pool="none").eval()
    assert not any(isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) for m in dense.modules())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        scores = dense(x)
        assert scores.shape == (1, 4, 7, 7)  # one score per feature cell: it slides
        assert (scores.mean((2, 3)) - net(x)).abs().max() <= 1e-4


def test_convolutionalize_copies_weights() -> None:
    net = models.resnet18(weights=None, num_classes=3)
    dense = convolutionalize(net)
    with torch.no_grad():
        for p in dense.parameters():
            p.zero_()
    assert net.conv1.weight.abs().sum() > 0 and net.fc.weight.abs().sum() > 0


@pytest.mark.parametrize(
    ("build", "window", "feature", "options"),
    [
        # VGG16's stages unpadded: 404 px (its receptive field) -> 7x7 pool5 -> fc6 7x7
        (valid_vgg, 404, 7, {}),
        # AlexNet unpadded: 355 px -> 6x6 pool5 -> fc6 6x6
        (valid_alexnet, 355, 6, {}),
        # ResNet layout, global pool over 3x3 features at 139 px -> sliding 3x3 window
        (valid_resnet, 139, None, {"pool_size": 3}),
        # MobileNetV3 layout (global pool + MLP) with 1x1 features at 32 px
        (ValidMobileNetLike, 32, 1, {"pool_size": 1}),
    ],
)
def test_dense_cells_equal_classifier_on_windows(build, window, feature, options) -> None:
    """Fig. 2: each output cell is the classifier's logits on its window (stride 32)."""
    net = randomize_(build())
    dense = convolutionalize(net, **options).eval()
    if feature is None:  # ResNet has no `features` attribute; check through the dense trunk
        with torch.no_grad():
            assert dense.features(torch.zeros(1, 3, window, window)).shape[-1] == 3
        net.features = dense.features  # used only for the size check in assert_windows
        feature = 3
    assert_windows(net, dense, window, feature, grid=3)


def test_convolutionalize_rejects_unknown_layouts() -> None:
    with pytest.raises(TypeError, match="cannot convolutionalize"):
        convolutionalize(nn.Sequential(nn.Conv2d(3, 3, 1)))
    net = ValidMobileNetLike()
    net.classifier[1] = nn.LayerNorm(16)
    with pytest.raises(TypeError, match="LayerNorm"):
        convolutionalize(net)
    with pytest.raises(ValueError, match="global_pool"):
        convolutionalize(ValidMobileNetLike(), global_pool="max")


# ---------------------------------------------------------------------------------------
# transplant


class FcNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc6 = nn.Linear(4 * 2 * 2, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc6(self.bn(self.conv(x)).flatten(1)))


class ConvNet(nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc6 = nn.Conv2d(4, 5, 2)
        self.score = nn.Conv2d(5, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.fc6(self.bn(self.conv(x))))


def test_transplant_reshapes_fc_to_conv_and_reports() -> None:
    src, dst = randomize_(FcNet()), ConvNet().eval()
    report = transplant(src, dst)
    assert report.reshaped == {"fc6.weight": ((5, 16), (5, 4, 2, 2))}
    assert {"conv.weight", "conv.bias", "fc6.bias", "bn.running_var"} <= set(report.copied)
    assert report.skipped == {}
    assert report.missing == ["score.weight", "score.bias"]
    assert report.unused == ["head.weight", "head.bias"]
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            dst.fc6(dst.bn(dst.conv(x))).flatten(1), src.fc6(src.bn(src.conv(x)).flatten(1))
        )
    text = str(report)
    assert text.splitlines()[0] == (
        "transplant: 8 copied, 1 reshaped, 0 skipped, 2 missing, 2 unused"
    )
    assert "reshaped fc6.weight: (5, 16) -> (5, 4, 2, 2)" in text
    assert "missing (left as initialised): score.weight, score.bias" in text


def test_transplant_conv_to_fc_roundtrip_and_skip_reasons() -> None:
    src, dst = randomize_(ConvNet(classes=3)), FcNet().eval()
    report = transplant(src.state_dict(), dst, rename={"score.weight": "head.weight"})
    assert report.reshaped["fc6.weight"] == ((5, 4, 2, 2), (5, 16))
    assert report.reshaped["head.weight"] == ((3, 5, 1, 1), (3, 5))
    torch.testing.assert_close(dst.fc6.weight, src.fc6.weight.flatten(1))
    assert report.unused == ["score.bias"] and report.missing == ["head.bias"]

    wrong = ConvNet(classes=7)
    report = transplant(src, wrong)
    assert set(report.skipped) == {"score.weight", "score.bias"}
    assert "(3, 5, 1, 1) does not fit (7, 5, 1, 1)" in report.skipped["score.weight"]
    assert "skipped score.bias: shape (3,) does not fit (7,)" in str(report)


def test_transplant_reshapes_only_fc_conv_pairs() -> None:
    src = {"w": torch.randn(4, 3, 2, 2), "v": torch.randn(6, 8), "u": torch.randn(6, 8)}
    dst = nn.Module()
    dst.register_buffer("w", torch.zeros(4, 2, 3, 2))  # same count, a different conv
    dst.register_buffer("v", torch.zeros(6, 2, 2, 2))  # Linear -> 2x2 conv: reshaped
    dst.register_buffer("u", torch.zeros(8, 6))  # transposed, not a reshape
    report = transplant(src, dst)
    assert list(report.reshaped) == ["v"]
    assert set(report.skipped) == {"w", "u"}
    assert "not the fully connected / convolutional form" in report.skipped["w"]
    assert not dst.w.any() and not dst.u.any()


def test_transplant_never_aliases() -> None:
    src, dst = FcNet(), ConvNet()
    transplant(src, dst, rename=lambda k: None if k.startswith("head") else k)
    assert dst.conv.weight.data_ptr() != src.conv.weight.data_ptr()
    before = dst.conv.weight.clone()
    with torch.no_grad():
        src.conv.weight.add_(1.0)
    torch.testing.assert_close(dst.conv.weight, before)
    assert isinstance(dst.conv.weight, nn.Parameter)


# ---------------------------------------------------------------------------------------
# staged training (Sec. 4.2)


class TinySkipNet(nn.Module):
    """A stride-2 skip net with score/upsampler names as the paper nets'."""

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.score_fr = nn.Conv2d(4, 2, 1)
        if skip:
            self.score_pool4 = nn.Conv2d(4, 2, 1)
            self.upscore2 = nn.ConvTranspose2d(2, 2, 4, stride=2, bias=False)


def test_init_from_zeroes_new_scores_and_bilinear_upsamplers() -> None:
    parent, child = TinySkipNet(False), TinySkipNet(True)
    for p in child.parameters():  # whatever the constructor did
        nn.init.normal_(p)
    report = init_from(parent, child)
    assert report.missing == ["score_pool4.weight", "score_pool4.bias", "upscore2.weight"]
    assert not child.score_pool4.weight.any() and not child.score_pool4.bias.any()
    torch.testing.assert_close(child.upscore2.weight, bilinear_kernel(2, 2, 4))
    torch.testing.assert_close(child.score_fr.weight, parent.score_fr.weight)
    assert child.score_fr.weight.data_ptr() != parent.score_fr.weight.data_ptr()


def _agree_mask(n: int, period: int, agree: set[int]) -> torch.Tensor:
    return torch.tensor([y % period in agree for y in range(n)])


# Where two bilinear stages (x2, then x16 or x8) equal one (x32 or x16) in the paper nets:
# pixels farther than 8 (resp. 4) px from every score cell centre; see init_from's docstring.
AGREE_16_VS_32 = set(range(0, 5)) | set(range(21, 32))
AGREE_8_VS_16 = {0} | set(range(9, 16))


@pytest.fixture(scope="module")
def staged_nets():
    import fcnkit

    torch.manual_seed(0)
    fcn32 = fcnkit.create_model("fcn32s", 3).eval()
    with torch.no_grad():  # a "trained" score layer; a fresh one outputs zeros everywhere
        fcn32.score_fr.weight.normal_(0, 0.05)
        fcn32.score_fr.bias.normal_(0, 1)
    fcn16 = stage(fcn32, "fcn16s").eval()
    x = torch.randn(1, 3, 64, 72)
    with torch.no_grad():
        out32, out16 = fcn32(x), fcn16(x)
        # train the 16s a little (perturb its new layers) before staging the 8s from it
        fcn16.score_pool4.weight.normal_(0, 0.01)
        fcn16.score_pool4.bias.normal_(0, 0.1)
        fcn16.upscore2.weight.add_(0.01 * torch.randn_like(fcn16.upscore2.weight))
        trained16 = fcn16(x)
    fcn8 = stage(fcn16, "fcn8s").eval()
    with torch.no_grad():
        out8 = fcn8(x)
    return fcn32, fcn16, fcn8, out32, out16, trained16, out8


def test_stage_copies_shared_layers_and_zero_inits_new(staged_nets) -> None:
    fcn32, fcn16, fcn8, *_ = staged_nets
    r16, r8 = fcn16.stage_report, fcn8.stage_report
    assert r16.missing == ["score_pool4.weight", "score_pool4.bias", "upscore2.weight"] + [
        "upscore16.weight"
    ]
    assert r16.unused == ["upscore.weight"] and not r16.skipped and not r16.reshaped
    assert r8.missing == ["score_pool3.weight", "score_pool3.bias", "upscore_pool4.weight"] + [
        "upscore8.weight"
    ]
    assert "score_pool4.weight" in r8.copied and "upscore2.weight" in r8.copied
    assert not fcn8.score_pool3.weight.any() and not fcn8.score_pool3.bias.any()
    torch.testing.assert_close(fcn8.upscore_pool4.weight, bilinear_kernel(3, 3, 4))
    assert torch.equal(fcn8.score_pool4.weight, fcn16.score_pool4.weight)
    assert torch.equal(fcn16.fc6.weight, fcn32.fc6.weight)
    assert fcn16.fc6.weight.data_ptr() != fcn32.fc6.weight.data_ptr()
    assert fcn8.num_classes == 3 and fcn8.preprocessing == fcn32.preprocessing


def test_staged_16s_equals_32s_exactly_where_bilinear_composes(staged_nets) -> None:
    *_, out32, out16, _, _ = staged_nets
    assert out32.abs().max() > 0.5
    rows = _agree_mask(out32.shape[-2], 32, AGREE_16_VS_32)
    cols = _agree_mask(out32.shape[-1], 32, AGREE_16_VS_32)
    mask = rows[:, None] & cols[None, :]
    torch.testing.assert_close(out16[..., mask], out32[..., mask], atol=1e-5, rtol=0)
    # elsewhere x2-then-x16 is not x32 (the paper's staged init is close, not identical)
    assert (out16 - out32).abs()[..., ~mask].max() > 1e-2


def test_staged_8s_equals_16s_exactly_where_bilinear_composes(staged_nets) -> None:
    *_, trained16, out8 = staged_nets
    rows = _agree_mask(out8.shape[-2], 16, AGREE_8_VS_16)
    cols = _agree_mask(out8.shape[-1], 16, AGREE_8_VS_16)
    mask = rows[:, None] & cols[None, :]
    torch.testing.assert_close(out8[..., mask], trained16[..., mask], atol=1e-5, rtol=0)
    assert (out8 - trained16).abs()[..., ~mask].max() > 1e-2


def test_two_bilinear_stages_agree_only_on_those_phases() -> None:
    """The 1-D operators alone, with the reference crops (19 for x32, 27 for x2 then x16)."""

    def up(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
        tent = bilinear_kernel(1, 1, k)[0, 0].diagonal().sqrt().double()  # w = tent x tent
        return F.conv_transpose1d(x, tent.view(1, 1, k), stride=s)

    x = torch.randn(1, 1, 9, dtype=torch.float64)
    a = up(x, 64, 32)[0, 0, 19 : 19 + 260]
    b = up(up(x, 4, 2), 32, 16)[0, 0, 27 : 27 + 260]
    agree = (a - b).abs() < 1e-12
    torch.testing.assert_close(agree, _agree_mask(260, 32, AGREE_16_VS_32))


# ---------------------------------------------------------------------------------------
# resize_score_layer


class TinyFCN(nn.Module):
    """Score layers + diagonal (bilinear) upsamplers, as an FCN-16s head."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.num_classes = classes
        self.trunk = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.score_fr = nn.Conv2d(6, classes, 1)
        self.score_pool4 = nn.Conv2d(3, classes, 1)
        self.upscore2 = init_bilinear_(nn.ConvTranspose2d(classes, classes, 4, 2, 1, bias=False))
        self.upscore2.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upscore2(self.score_fr(self.trunk(x))) + self.score_pool4(x)


@pytest.mark.parametrize(
    ("new", "keep", "mapping"),
    [
        (3, {0: 0, 1: 3, 2: 1}, {0: 0, 1: 3, 2: 1}),  # e.g. VOC -> a subset, reordered
        (7, None, {i: i for i in range(5)}),  # grow: 5 shared classes by default
        (2, None, {0: 0, 1: 1}),
        (4, 2, {0: 0, 1: 1}),  # the first two shared, two new
    ],
)
def test_resize_score_layer_keeps_shared_classes(new, keep, mapping) -> None:
    net = randomize_(TinyFCN(5))
    x = torch.randn(2, 3, 8, 10)
    with torch.no_grad():
        before = net(x)
    resize_score_layer(net, new, keep=keep)
    assert net.num_classes == new
    assert net.score_fr.out_channels == net.score_pool4.out_channels == new
    assert net.upscore2.in_channels == net.upscore2.out_channels == new
    assert not net.upscore2.weight.requires_grad and net.score_fr.weight.requires_grad
    with torch.no_grad():
        after = net(x)
    assert after.shape == (2, new, 8, 10)
    for n, o in mapping.items():  # kept classes score exactly as before
        torch.testing.assert_close(after[:, n], before[:, o])
    for n in set(range(new)) - set(mapping):  # new classes start at zero (Sec. 4.3)
        assert not after[:, n].any()
        torch.testing.assert_close(net.upscore2.weight[n, n], bilinear_kernel(1, 1, 4)[0, 0])


def test_resize_score_layer_keeps_learned_cross_class_weights_and_names() -> None:
    net = TinyFCN(4)
    with torch.no_grad():
        net.upscore2.weight.normal_()
    old = net.upscore2.weight.clone()
    resize_score_layer(net, 2, layers=["upscore2"], keep={0: 3, 1: 1})
    torch.testing.assert_close(net.upscore2.weight[0, 1], old[3, 1])
    torch.testing.assert_close(net.upscore2.weight[1, 0], old[1, 3])
    assert net.score_fr.out_channels == 4 and net.num_classes == 4  # only what was named
    resize_score_layer(net, 2, layers="score_fr")
    assert net.score_fr.out_channels == 2
    with pytest.raises(ValueError, match="out of range"):
        resize_score_layer(net, 2, layers="score_pool4", keep={0: 9})
    with pytest.raises(ValueError, match="no layer named 'trunk.weight'"):
        resize_score_layer(net, 2, layers="trunk.weight")
    with pytest.raises(TypeError, match="not a Conv2d"):
        resize_score_layer(net, 2, layers="")
    with pytest.raises(ValueError, match="num_classes"):
        resize_score_layer(nn.Sequential(nn.Conv2d(1, 2, 1)), 3)
