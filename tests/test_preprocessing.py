import pytest
import torch

from fcnkit.preprocessing import (
    CAFFE_NYUD_COLOR_HHA,
    CAFFE_NYUD_HHA,
    CAFFE_NYUD_RGBD,
    CAFFE_VOC,
    TORCHVISION_IMAGENET,
    Preprocessing,
    get_preprocessing,
)


def test_caffe_voc_is_bgr_minus_reference_mean():
    image = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)
    out = CAFFE_VOC.normalize(image).flatten().tolist()
    # channels swapped to B, G, R, then the reference VOC mean subtracted
    assert out == pytest.approx([30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434])


def test_torchvision_is_rgb_unit_range_mean_std():
    image = torch.tensor([255, 0, 128], dtype=torch.uint8).view(3, 1, 1)
    out = TORCHVISION_IMAGENET.normalize(image).flatten().tolist()
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert out == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "prep", [CAFFE_VOC, TORCHVISION_IMAGENET, CAFFE_NYUD_RGBD, CAFFE_NYUD_HHA, CAFFE_NYUD_COLOR_HHA]
)
def test_denormalize_inverts_normalize_on_batches(prep):
    c = len(prep.mean)
    image = torch.randint(0, 256, (2, c, 5, 7), dtype=torch.uint8)
    back = prep.denormalize(prep.normalize(image))
    torch.testing.assert_close(back, image.float(), atol=1e-3, rtol=0)


def test_extra_channels_are_not_swapped():
    image = torch.arange(6, dtype=torch.uint8).view(6, 1, 1)
    prep = Preprocessing("t", "BGR", 255.0, (0.0,) * 3, (1.0,) * 3)
    assert prep.normalize(image).flatten().tolist() == [2, 1, 0, 3, 4, 5]


# The reference's nyud_layers.py: load_hha subtracts mean_hha = (132.431, 94.076, 118.477)
# from the HHA PNG's channels in file order and does not reverse them; load_image turns
# colour RGB -> BGR and subtracts mean_bgr = (116.190, 97.203, 92.318). For the HHA pixel
# (200, 100, 50) the reference feeds (67.569, 5.924, -68.477).
REFERENCE_HHA_IN = (67.569, 5.924, -68.477)


def test_hha_is_file_order_minus_the_reference_mean():
    image = torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1)
    out = CAFFE_NYUD_HHA.normalize(image).flatten().tolist()
    assert out == pytest.approx(REFERENCE_HHA_IN, abs=1e-4)  # was (-82.4, 5.9, 81.5)


def test_color_hha_swaps_colour_only_and_keeps_hha_in_file_order():
    image = torch.tensor([10, 20, 30, 200, 100, 50], dtype=torch.uint8).view(6, 1, 1)
    out = CAFFE_NYUD_COLOR_HHA.normalize(image).flatten().tolist()
    colour = (30 - 116.190, 20 - 97.203, 10 - 92.318)  # B, G, R minus mean_bgr
    assert out == pytest.approx([*colour, *REFERENCE_HHA_IN], abs=1e-4)


def test_rgbd_depth_channel_matches_reference_log_depth():
    # a 4th-channel code v stands for depth d with v = 255 (log2 d - 8) / 6
    depth_mm = 2551.0
    code = round(255 * (torch.log2(torch.tensor(depth_mm)).item() - 8) / 6)
    image = torch.tensor([0, 0, 0, code], dtype=torch.uint8).view(4, 1, 1)
    got = CAFFE_NYUD_RGBD.normalize(image)[3].item()
    d_code = 2 ** (8 + 6 * code / 255)  # the depth the code stands for
    assert got == pytest.approx(torch.log(torch.tensor(d_code)).item() - 7.844, abs=1e-4)


def test_round_trip_through_dict_and_errors():
    assert get_preprocessing(CAFFE_VOC.to_dict()) == CAFFE_VOC
    assert get_preprocessing("caffe-voc") is CAFFE_VOC
    with pytest.raises(ValueError, match="unknown preprocessing 'nope'"):
        get_preprocessing("nope")
    with pytest.raises(ValueError, match="channel_order"):
        Preprocessing("x", "GBR")
    with pytest.raises(ValueError, match="at least 3 channels"):
        CAFFE_VOC.normalize(torch.zeros(1, 4, 4))
