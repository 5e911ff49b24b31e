"""The no-pad-100 geometry of the VGG16 FCNs (``FCN.drop_pad100_``, issue 14's fast mode),
checked against computations that do not use fcnkit's coordinate maps: torchvision's own
VGG16 (which pads conv1_1 by 1), the fc layer as a matrix product, and
``F.interpolate``'s bilinear upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcnkit.backends import build_runner, without_pad100
from fcnkit.inference import Segmenter
from fcnkit.models import create_model
from fcnkit.models.outputs import SINGLE_HEAD

VGG_FCNS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "fcn16s-siftflow", "fcn32s-nyud")


@pytest.fixture(scope="module")
def torchvision_vgg16() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def fcn32s_same(torchvision_vgg16) -> torch.nn.Module:
    """FCN-32s with torchvision's (random) VGG16 weights, fc6/fc7 reshaped as the paper's
    surgery does (Sec. 3.1), a random score layer, in the no-pad-100 geometry."""
    model = create_model("fcn32s", 5).eval()
    convs = [m for m in torchvision_vgg16.features if isinstance(m, torch.nn.Conv2d)]
    names = [n for n in model._trunk_names if n.startswith("conv")]
    fc6, fc7 = torchvision_vgg16.classifier[0], torchvision_vgg16.classifier[3]
    with torch.no_grad():
        for name, conv in zip(names, convs, strict=True):
            getattr(model, name).load_state_dict(conv.state_dict())
        model.fc6.weight.copy_(fc6.weight.view(4096, 512, 7, 7))
        model.fc6.bias.copy_(fc6.bias)
        model.fc7.weight.copy_(fc7.weight.view(4096, 4096, 1, 1))
        model.fc7.bias.copy_(fc7.bias)
        model.score_fr.weight.normal_(0, 0.05)
        model.score_fr.bias.normal_(0, 0.05)
    return model.drop_pad100_()


def test_trunk_is_torchvisions_vgg16_and_fc6_its_first_fc_layer(
    fcn32s_same, torchvision_vgg16
) -> None:
    """At 224 x 224 the no-pad trunk's pool5 is torchvision's ``features`` output (conv1_1
    pads by 1 there too), and fc6's centre cell, whose 7x7 window covers all of pool5, is
    torchvision's first fully connected layer: the fc-as-convolution maths of Sec. 3.1."""
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = x
        for name in fcn32s_same._trunk_names[: fcn32s_same._trunk_names.index("pool5") + 1]:
            pool5 = getattr(fcn32s_same, name)(pool5)
        expected = torchvision_vgg16.features(x)
        torch.testing.assert_close(pool5, expected, rtol=1e-4, atol=1e-4)
        fc6 = fcn32s_same.fc6(pool5)[0, :, 3, 3]
        torch.testing.assert_close(
            fc6, torchvision_vgg16.classifier[0](expected.flatten(1))[0], rtol=1e-4, atol=1e-3
        )


def test_output_is_score_fr_upsampled_bilinearly_in_place(fcn32s_same) -> None:
    """The no-pad FCN-32s output is ``score_fr`` resized x32 by ``F.interpolate`` (bilinear,
    align_corners=False: cell i centred on pixel 32 i + 15.5) and cut to the image, away
    from the border where the transposed convolution sees no cell beyond the edge."""
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        out = fcn32s_same(x)
        coarse = fcn32s_same.coarse_scores(x)
    assert coarse.shape[-2:] == (5, 7)
    expected = F.interpolate(coarse, scale_factor=32, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(16, 160 - 16), slice(16, 224 - 16))
    torch.testing.assert_close(out[inner], expected[:, :, :160, :224][inner], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", VGG_FCNS)
def test_every_vgg_fcn_gives_input_sized_outputs_without_crops(name: str) -> None:
    """Every derived offset is 0 (by hand: with conv1_1 padded by 1, pool k's cell i lies on
    pixel 2^k i + (2^k - 1) / 2, and an upsampler of factor f, kernel 2f, padding f/2 puts
    cell i of the coarser grid on that same pixel), and sizes from 1 x 1 up stay input-sized."""
    model = create_model(name).eval()
    caffe = dict(model.crop_offsets)
    same = without_pad100(model)
    assert model.geometry == "caffe" and model.crop_offsets == caffe  # the copy changed
    assert same.geometry == "same" and set(same.crop_offsets.values()) == {0}
    assert same.conv1_1.padding == (1, 1) if hasattr(same, "conv1_1") else True
    channels = same.input_channels
    for size in ((1, 1), (31, 45), (67, 99)):
        with torch.no_grad():
            out = same(torch.randn(1, channels, *size))
        for scores in out.values() if isinstance(out, dict) else [out]:
            assert scores.shape[-2:] == size


def test_same_weights_and_the_faithful_geometry_by_default() -> None:
    model = create_model("fcn8s", 4).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    same = without_pad100(model)
    assert same.state_dict().keys() == state.keys()
    for key, value in same.state_dict().items():
        assert torch.equal(value, state[key])
    assert model.conv1_1.padding == (100, 100) and model.geometry == "caffe"


def test_runner_and_segmenter_take_the_mode(tmp_path) -> None:
    """``pad100=False`` through build_runner (eager and ONNX Runtime: a separate cached
    export) and Segmenter gives the no-pad model's own scores."""
    torch.manual_seed(0)
    model = create_model("fcn16s", 3).eval()
    with torch.no_grad():
        model.score_fr.weight.normal_(0, 0.01)
        model.score_pool4.weight.normal_(0, 0.01)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        expected = without_pad100(model)(x)
        faithful = model(x)
    assert not torch.allclose(expected, faithful)  # the border differs: a real change
    eager = build_runner(model, pad100=False)(x)[SINGLE_HEAD]
    torch.testing.assert_close(eager, expected)
    pytest.importorskip("onnxruntime")
    ort = build_runner(model, "onnxruntime", pad100=False, cache_dir=tmp_path)(x)[SINGLE_HEAD]
    torch.testing.assert_close(ort, expected, rtol=1e-4, atol=1e-4)
    ort_faithful = build_runner(model, "onnxruntime", cache_dir=tmp_path)(x)[SINGLE_HEAD]
    torch.testing.assert_close(ort_faithful, faithful, rtol=1e-4, atol=1e-4)
    assert len(list(tmp_path.glob("*-fp32.onnx"))) == 2
    seg = Segmenter(model, preprocessing="caffe-voc", pad100=False)
    image = torch.randint(0, 255, (45, 61, 3), dtype=torch.uint8).numpy()
    labels = seg.predict(image)
    direct = Segmenter(without_pad100(model), preprocessing="caffe-voc").predict(image)
    assert (labels == direct).all()


def test_other_models_are_refused_with_a_sentence() -> None:
    lite = create_model("fcn8s-efficientnet_lite0", 4, backbone_weights=None)
    with pytest.raises(ValueError, match=r"for the VGG16 FCNs .* outputs are input-sized"):
        build_runner(lite, pad100=False)
    with pytest.raises(ValueError, match=r"no-pad-100 mode changes a PyTorch VGG16 FCN"):
        without_pad100("model.onnx")
    with pytest.raises(ValueError, match="drop_pad100_ before rarefy_"):
        create_model("fcn32s", 3, rarefy=2).drop_pad100_()
