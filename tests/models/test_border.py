"""The narrow border (fcnkit.models.border): the VGG16 FCNs give the outputs and gradients of
the full 100-pixel border (the independent computation: the same layers called one by one
on the whole padded map, ``narrow_border=False``), at sizes the plan must handle (1 x 1, odd,
thin, non-square), for every geometry the VGG16 FCN has (skips, two heads, two trunks,
rarefaction, RGB-D, channels-last)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnkit.models import border
from fcnkit.models.registry import create_model

# The 1e-5 tolerance: the maths is the same, only a convolution library choosing other
# kernels for another map size could round differently (oneDNN's AVX-512 kernels on the
# machines measured give equal bits).
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
SIZES = [(1, 1), (7, 30), (64, 64), (97, 130), (150, 75)]


def _both(net: nn.Module, x: torch.Tensor) -> tuple:
    outputs = []
    for narrow in (False, True):
        net.narrow_border = narrow
        with torch.no_grad():
            outputs.append(net(x))
    return tuple(outputs)


def _cat(out: torch.Tensor | dict) -> torch.Tensor:
    return torch.cat(list(out.values()), 1) if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def fcn8s() -> nn.Module:
    torch.manual_seed(0)
    net = create_model("fcn8s", num_classes=5).eval()
    with torch.no_grad():  # score layers start at zero: give the skips something to carry
        for name in ("score_fr", "score_pool4", "score_pool3"):
            getattr(net, name).weight.normal_(0, 0.01)
    return net


@pytest.mark.parametrize("size", SIZES)
def test_fcn8s_outputs_equal_the_full_border(fcn8s: nn.Module, size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    full, narrow = _both(fcn8s, x)
    assert narrow.shape == full.shape == (2, 5, *size)
    assert full.abs().max() > 0
    torch.testing.assert_close(narrow, full, **TOLERANCE)


def test_the_plan_narrows_vgg16s_border(fcn8s: nn.Module) -> None:
    """The first three stages of VGG16 run with less than Caffe's 100 pixels of padding (else
    the option would quietly do nothing), and the gathered pool3 is the full one's size."""
    early = [getattr(fcn8s, n) for n in fcn8s._trunk_names[: fcn8s._trunk_names.index("pool3") + 1]]
    for h, w in [(1, 1), (256, 256), (500, 375)]:
        plan = border.border_plan(early, h, w)
        assert plan is not None and max(plan.padding) < 100
        with torch.no_grad():
            x = torch.zeros(1, 3, h, w)
            for layer in early:
                x = layer(x)
        assert (len(plan.rows), len(plan.cols)) == x.shape[-2:]


@pytest.mark.parametrize(
    "name, options, channels",
    [
        ("fcn32s", {}, 3),
        ("fcn16s", {}, 3),
        ("fcn8s-siftflow", {}, 3),  # two heads
        ("fcn32s-nyud", {"modality": "rgbd"}, 4),  # early fusion: 4 input channels
        ("fcn32s-nyud", {"modality": "rgb+hha"}, 6),  # late fusion: two trunks
        ("fcn32s", {"rarefy": 4}, 3),  # pool4 and pool5 without stride
        ("fcn32s", {"rarefy": 8}, 3),  # pool3 (the tap), pool4, pool5 without stride
    ],
)
def test_other_vgg_geometries(name: str, options: dict, channels: int) -> None:
    torch.manual_seed(1)
    net = create_model(name, **options).eval()
    x = torch.randn(1, channels, 45, 61)
    full, narrow = _both(net, x)
    torch.testing.assert_close(_cat(narrow), _cat(full), **TOLERANCE)


def test_channels_last(fcn8s: nn.Module) -> None:
    net = create_model("fcn8s", num_classes=5).eval()
    net.load_state_dict(fcn8s.state_dict())
    net.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 70, 90).contiguous(memory_format=torch.channels_last)
    full, narrow = _both(net, x)
    torch.testing.assert_close(narrow, full, **TOLERANCE)


def test_gradients_equal_the_full_border() -> None:
    """Training: the loss and every parameter's gradient (dropout draws the same masks: the
    same calls in the same order from the same seed)."""
    torch.manual_seed(2)
    net = create_model("fcn8s", num_classes=4).train()
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            getattr(net, name).weight.normal_(0, 0.01)
    x, y = torch.randn(2, 3, 40, 52), torch.randint(0, 4, (2, 40, 52))
    grads = []
    for narrow in (False, True):
        net.narrow_border = narrow
        net.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        nn.functional.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "conv1_1.weight" in grads[0]
    for name, full in grads[0].items():
        torch.testing.assert_close(grads[1][name], full, **TOLERANCE, msg=name)


def test_export_and_unsupported_layers_run_the_whole_border(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No plan while a graph is captured (its size would be baked in), nor for layers that
    could tell border rows apart (dropout: a mask per pixel; batch norm: statistics)."""
    conv = nn.Conv2d(3, 4, 3, padding=20)
    assert border.border_plan([conv, nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True)], 9, 9)
    assert border.border_plan([conv, nn.Dropout(0.5)], 9, 9) is None
    assert border.border_plan([conv, nn.BatchNorm2d(4)], 9, 9) is None
    assert border.border_plan([nn.Conv2d(3, 4, 3, padding=1)], 9, 9) is None  # nothing saved

    calls = []
    monkeypatch.setattr(border, "border_plan", lambda *a: calls.append(a))
    monkeypatch.setattr(border, "capturing", lambda: True)
    out = border.run_narrow([conv], torch.zeros(1, 3, 9, 9))
    assert out.shape == (1, 4, 47, 47) and not calls


@pytest.mark.parametrize("padding", [5, 20])
@pytest.mark.parametrize("pool", [(2, 2, 0, True), (3, 2, 1, False), (2, 2, 0, False)])
def test_plan_on_small_stacks(padding: int, pool: tuple) -> None:
    """Other geometries than VGG16's (stride-2 convs, padded and floor-mode pooling): the
    narrow computation equals the full one wherever a plan exists."""
    torch.manual_seed(4)
    k, s, p, ceil = pool
    layers = [
        nn.Conv2d(2, 3, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.MaxPool2d(k, s, p, ceil_mode=ceil),
        nn.Conv2d(3, 3, 5, padding=2, dilation=1),
    ]
    for h, w in [(1, 1), (6, 11), (13, 8)]:
        x = torch.randn(1, 2, h, w)
        full = x
        with torch.no_grad():
            for layer in layers:
                full = layer(full)
            narrow = border.run_narrow(layers, x)
        assert narrow.shape == full.shape
        torch.testing.assert_close(narrow, full, **TOLERANCE)


def test_a_forward_hook_sees_the_full_map(fcn8s: nn.Module) -> None:
    """A user's hook on an early layer (feature extraction) gets the map of the full border."""
    seen = {}
    handle = fcn8s.conv1_2.register_forward_hook(lambda m, a, out: seen.update(out=out.shape))
    try:
        fcn8s.narrow_border = True
        with torch.no_grad():
            fcn8s(torch.zeros(1, 3, 20, 30))
    finally:
        handle.remove()
    assert seen["out"][-2:] == (218, 228)  # 20 + 2 x 100 - 2, 30 + 2 x 100 - 2
