"""Caffe's coord_map derivation of crop offsets (fcnkit.coord_map)."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnkit.coord_map import (
    CoordMap,
    conv_map,
    crop_offset,
    deconv_map,
    layer_map,
    path_map,
)

# The reference nets' geometry, written out as (kernel, stride, pad) per spatial layer,
# independently of fcnkit's model code.
VGG16_TO_POOL3 = (
    [(3, 1, 100), (3, 1, 1), (2, 2, 0)]
    + [(3, 1, 1), (3, 1, 1), (2, 2, 0)]
    + [(3, 1, 1)] * 3
    + [(2, 2, 0)]
)
VGG16_TO_POOL4 = VGG16_TO_POOL3 + [(3, 1, 1)] * 3 + [(2, 2, 0)]
VGG16_TO_FC7 = VGG16_TO_POOL4 + [(3, 1, 1)] * 3 + [(2, 2, 0), (7, 1, 0), (1, 1, 0)]
SCORE = [(1, 1, 0)]
CAFFENET_TO_FC7 = [
    (11, 4, 100),
    (3, 2, 0),
    (5, 1, 2),
    (3, 2, 0),
    (3, 1, 1),
    (3, 1, 1),
    (3, 1, 1),
    (3, 2, 0),
    (6, 1, 0),
    (1, 1, 0),
]


def convs(spec):
    return [conv_map(k, s, p) for k, s, p in spec]


def deconv(k, s):
    return [deconv_map(k, s)]


def test_fcn32s_offset_is_19():
    assert crop_offset(convs(VGG16_TO_FC7 + SCORE) + deconv(64, 32)) == 19


def test_fcn16s_offsets_are_5_and_27():
    upscore2 = convs(VGG16_TO_FC7 + SCORE) + deconv(4, 2)
    assert crop_offset(convs(VGG16_TO_POOL4 + SCORE), upscore2) == 5
    assert crop_offset(upscore2 + deconv(32, 16)) == 27


def test_fcn8s_offsets_are_5_9_31():
    upscore2 = convs(VGG16_TO_FC7 + SCORE) + deconv(4, 2)
    upscore_pool4 = upscore2 + deconv(4, 2)
    assert crop_offset(convs(VGG16_TO_POOL4 + SCORE), upscore2) == 5
    assert crop_offset(convs(VGG16_TO_POOL3 + SCORE), upscore_pool4) == 9
    assert crop_offset(upscore_pool4 + deconv(16, 8)) == 31


def test_caffenet_offset_is_18():
    assert crop_offset(convs(CAFFENET_TO_FC7 + SCORE) + deconv(63, 32)) == 18


def test_the_worked_example_in_the_docstring():
    pool5 = path_map(convs(VGG16_TO_FC7[:-2]))
    assert pool5 == CoordMap(32, Fraction(-167, 2))  # x_img = 32 x_pool5 - 83.5
    fc6 = path_map(convs(VGG16_TO_FC7[:-1]))
    assert fc6 == CoordMap(32, Fraction(25, 2))  # x_img = 32 x_fc6 + 12.5


def test_conv_and_deconv_maps():
    assert conv_map(3, 1, 1) == CoordMap(1, 0)
    assert conv_map(3, 1, 100) == CoordMap(1, -99)
    assert conv_map(2, 2, 0) == CoordMap(2, Fraction(1, 2))
    assert conv_map(3, 1, 2, dilation=2) == CoordMap(1, 0)  # extent 5, pad 2
    assert deconv_map(64, 32) == CoordMap(Fraction(1, 32), Fraction(-63, 64))
    m = conv_map(7, 3, 2)
    assert m.then(m.inverse()) == CoordMap() == m.inverse().then(m)


def test_composition_order():
    # pool (2x + 0.5) then conv (x - 99): x_in = 2 (x - 99) + 0.5; the other way: 2x - 98.5.
    pool, pad100 = conv_map(2, 2), conv_map(3, 1, 100)
    assert path_map([pool, pad100]) == CoordMap(2, Fraction(-395, 2))
    assert path_map([pad100, pool]) == CoordMap(2, Fraction(-197, 2))


def _impulse_response_centre(layer: nn.Module, size: int, position: int) -> float:
    x = torch.zeros(1, 1, 1, size, dtype=torch.float64)
    x[..., position] = 1.0
    with torch.no_grad():
        y = layer(x)[0, 0, 0]
    idx = torch.arange(y.numel(), dtype=torch.float64)
    return float((y * idx).sum() / y.sum())


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 7),
    s=st.integers(1, 4),
    p=st.integers(0, 6),
    position=st.integers(10, 20),
)
def test_maps_match_real_layers(k, s, p, position):
    """A transposed conv puts an input impulse at its map's inverse; a conv's (stride 1)
    symmetric response to an impulse at x_in is centred on x_out = map^-1(x_in)."""
    deconv = nn.ConvTranspose2d(1, 1, (1, k), (1, s), (0, min(p, k - 1)), bias=False)
    deconv.double()
    nn.init.ones_(deconv.weight)
    m = layer_map(deconv, axis=1)
    assert _impulse_response_centre(deconv, 30, position) == pytest.approx(
        float(m.inverse()(position))
    )
    conv = nn.Conv2d(1, 1, (1, k), padding=(0, p)).double()
    nn.init.ones_(conv.weight)
    nn.init.zeros_(conv.bias)
    m = layer_map(conv, axis=1)
    assert _impulse_response_centre(conv, 40, position) == pytest.approx(
        float(m.inverse()(position))
    )


def test_layer_map_reads_modules():
    assert layer_map(nn.Conv2d(3, 8, 3, padding=100)) == conv_map(3, 1, 100)
    assert layer_map(nn.MaxPool2d(2, 2, ceil_mode=True)) == conv_map(2, 2)
    assert layer_map(nn.AvgPool2d(3, 2, 1)) == conv_map(3, 2, 1)
    assert layer_map(nn.ConvTranspose2d(2, 2, 4, 2, bias=False)) == deconv_map(4, 2)
    assert layer_map(nn.Conv2d(1, 1, (3, 5), padding=(1, 0)), axis=1) == conv_map(5)
    for elementwise in (nn.ReLU(), nn.Dropout(), nn.LocalResponseNorm(5), nn.BatchNorm2d(2)):
        assert layer_map(elementwise) == CoordMap()
    seq = nn.Sequential(nn.Conv2d(1, 1, 3, padding=100), nn.ReLU(), nn.MaxPool2d(2, 2))
    assert layer_map(seq) == path_map([conv_map(3, 1, 100), conv_map(2, 2)])


def test_custom_module_can_declare_its_map():
    class Shifted(nn.Module):
        def coord_map(self, axis=0):
            return CoordMap(1, 3)

    with pytest.raises(ValueError, match="negative"):
        crop_offset([Shifted()])
    assert crop_offset([], [Shifted()]) == 3


def test_unknown_module_is_an_error():
    with pytest.raises(TypeError, match="no coordinate map"):
        layer_map(nn.Linear(2, 2))


def test_mismatched_scales_are_an_error():
    with pytest.raises(ValueError, match="different scales"):
        crop_offset(convs(VGG16_TO_FC7 + SCORE) + deconv(4, 2))


def test_half_pixel_misalignment_is_an_error():
    # VGG16's trunk shift is a half pixel: an odd upsampling kernel cannot align with it.
    with pytest.raises(ValueError, match="fraction of a pixel"):
        crop_offset(convs(VGG16_TO_FC7 + SCORE) + deconv(63, 32))
