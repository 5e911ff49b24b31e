"""Filter rarefaction (paper Sec. 3.2): "the trick of filter rarefaction ... is equivalent to
shift-and-stitch". The rarefied net's one pass against the stitched passes of the coarse net.

Alignment: the rarefied scores' cell ``j`` lies on pixel ``(F / f) j + c``, the stitched
map's on ``(F / f) j + c - (F - F / f)`` (its passes shift the input right and down): the
rarefied cell ``j`` is the stitched cell ``j + f - 1``.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from fcnkit import create_model
from fcnkit.coord_map import CoordMap, layer_map, path_geometry, place_scores
from fcnkit.inference import stitched_scores
from fcnkit.models.rarefy import CeilMaxPool2d, rarefiable_factors, rarefy


def aligned(stitched: torch.Tensor, dense: torch.Tensor, f: int) -> tuple:
    """The common extent of the stitched and the rarefied maps, cell for cell."""
    s = stitched[..., f - 1 :, f - 1 :]
    h, w = min(s.shape[-2], dense.shape[-2]), min(s.shape[-1], dense.shape[-1])
    assert h > 0 and w > 0
    return s[..., :h, :w], dense[..., :h, :w]


def small_net(first_pad: int = 1, inner_pad: int = 1) -> nn.Sequential:
    """Stride 4: conv, 2x2 ceil pool, conv, 3x3/2 ceil pool (AlexNet's), 3x3 conv, 1x1."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=first_pad),
        nn.ReLU(),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(6, 6, 3, padding=inner_pad),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(6, 5, 3, padding=inner_pad),
        nn.ReLU(),
        nn.Conv2d(5, 4, 1),
    ).eval()


def clear_of_the_border(coarse: CoordMap, field: Fraction, first_pad: int, cells: int) -> int:
    """The first cell whose receptive field lies inside the first layer's padded input.

    Why the border differs: a pass shifted by ``d`` holds, above the image, values (bias,
    or windows over the zeros shifted in) where the one pass has an inner layer's zero
    padding. A cell that reads no row above the first layer's output row 0 reads neither,
    and is the same in both (a row above 0 of any layer reads one above 0 of the layer
    below). Nets without padding: every cell."""
    return next(j for j in range(cells) if coarse(j) - (field - 1) / 2 >= -first_pad)


# --------------------------------------------------------------------------- a small net
@pytest.mark.parametrize("f", [2, 4])
@pytest.mark.parametrize(("h", "w"), [(23, 30), (32, 17)])
@pytest.mark.parametrize(("first_pad", "inner_pad"), [(0, 0), (1, 1), (4, 1)])
def test_rarefied_small_net_is_its_shift_and_stitch(f, h, w, first_pad, inner_pad) -> None:
    # Exact at odd and even sizes, ceil-mode border windows included: pass (0, 0) is every
    # f-th cell of the one pass, and all cells agree wherever no padding seam reaches (all
    # of them for a net without padding).
    net = small_net(first_pad, inner_pad)
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        stitched, maps = stitched_scores(net, x, factor=f)
        dense = rarefy(net, f)(x)
    a, b = aligned(stitched, dense, f)
    torch.testing.assert_close(a[..., ::f, ::f], b[..., ::f, ::f], rtol=1e-5, atol=1e-5)
    m = layer_map(rarefy(net, f))
    clear = clear_of_the_border(m, path_geometry(list(net))[1], first_pad, b.shape[-1])
    assert clear == 0 or first_pad > 0
    torch.testing.assert_close(a[..., clear:, clear:], b[..., clear:, clear:], rtol=1e-5, atol=1e-5)
    step = 4 // f
    assert maps[0].scale == m.scale == step  # f times denser than the coarse net's 4
    assert m.shift == layer_map(net).shift == maps[0].shift + 4 - step


def test_rarefy_changes_the_last_strides_and_dilates_what_follows() -> None:
    net = small_net(1)
    assert rarefiable_factors(list(net)) == [2, 4]
    two = rarefy(net, 2)
    assert isinstance(two[5], CeilMaxPool2d) and two[5].ceil_pad == 1
    assert (two[6].dilation, two[6].padding) == ((2, 2), (2, 2))
    assert net[5].stride == 2 and net[6].dilation == (1, 1)  # a copy: the net is unchanged
    four = rarefy(net, 4)
    assert (four[3].dilation, four[3].padding) == ((2, 2), (2, 2))
    assert (four[5].dilation, four[5].ceil_pad, four[6].dilation) == (2, 2, (4, 4))
    with pytest.raises(ValueError, match=r"one of \[2, 4\]"):
        rarefy(net, 8)
    with pytest.raises(ValueError, match="average pooling"):
        rarefy(nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2)), 4)  # no dilated average


# --------------------------------------------------------------------------- VGG16 FCN-32s
@pytest.mark.parametrize("f", [2, 4, 8, 16, 32])
def test_rarefied_fcn32s_geometry(f: int) -> None:
    with torch.device("meta"):
        model = create_model("fcn32s", 21, rarefy=f)
        plain = create_model("fcn32s", 21)
    # the same pixel for cell 0, the stride divided by f (Sec. 3.2: the output f times denser)
    assert model.coarse_map(0) == model.coarse_map(1)
    assert (model.coarse_map(0).scale, model.coarse_map(0).shift) == (32 // f, Fraction(25, 2))
    assert model.model_options == {"rarefy": f} and model.crop_offsets == {}
    pools = [f"pool{i}" for i in range(1, 6)]
    removed = pools[len(pools) - f.bit_length() + 1 :]
    assert [p for p in pools if getattr(model, p).stride in (1, (1, 1))] == removed
    assert model.fc6.dilation == (f, f) and model.fc6.padding == (0, 0)
    assert model.conv5_1.dilation == (f // 2 if f > 2 else 1,) * 2
    assert model.conv5_1.padding == model.conv5_1.dilation  # pad 1 scaled with the dilation
    assert list(model.state_dict()) == list(plain.state_dict())  # weights load unchanged


def test_rarefaction_refuses_skip_nets() -> None:
    with torch.device("meta"), pytest.raises(ValueError, match="stride-32"):
        create_model("fcn16s", 21).rarefy_(2)


def _vgg_with_signal() -> nn.Module:
    """A random FCN-32s whose activations neither vanish nor stay zero (He init; score_fr
    starts at zero in the paper)."""
    torch.manual_seed(0)
    model = create_model("fcn32s", 4).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.normal_(layer.bias, 0, 0.1)
    return model


def test_fcn32s_rarefied_pool5_is_its_shift_and_stitch() -> None:
    # f = 2: pool5's stride removed, fc6 7x7 dilated by 2 (one pass) against four passes of
    # the coarse score_fr, the input shifted by 0 / 16 pixels. The passes place the image
    # elsewhere relative to conv1_1's 100-pixel zero padding, whose inner seams (relu(bias)
    # rows against the next layer's zero padding) reach every cell whose 404-pixel receptive
    # field leaves that padding: elsewhere, and in pass (0, 0) everywhere, the two agree.
    model, f = _vgg_with_signal(), 2
    x = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        stitched, maps = stitched_scores(model, x, factor=f)
        rarefied = rarefy(model, f)
        dense = rarefied.coarse_scores(x)
        placed = rarefied(x)
    assert maps[0].scale == 16 and rarefied.coarse_map(0).shift - maps[0].shift == 32 - 16
    a, b = aligned(stitched, dense, f)
    assert b.abs().amax() > 1  # a signal
    torch.testing.assert_close(a[..., ::f, ::f], b[..., ::f, ::f], rtol=1e-4, atol=1e-4)
    m = rarefied.coarse_map(0)
    _, field, _ = path_geometry(rarefied._coarse_path())
    clear = clear_of_the_border(m, field, model.conv1_1.padding[0], b.shape[-1])
    assert (field, clear) == (404, 6)  # cells centred on pixel 16 * 6 + 12.5 = 108.5 on
    torch.testing.assert_close(a[..., clear:, clear:], b[..., clear:, clear:], rtol=1e-4, atol=1e-4)
    # the rarefied net's own output: those scores placed on the pixels by the coordinate map
    assert placed.shape == (1, 4, 160, 128)
    torch.testing.assert_close(placed, place_scores(dense, [m, m], (160, 128)))
