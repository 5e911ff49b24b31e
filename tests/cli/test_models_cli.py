"""``fcnkit models NAME --geometry``: each layer's stride, offset and receptive field, and the
crop offsets derived from them, checked against the reference's numbers and against an
independent receptive-field recursion."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fcnkit.cli import main
from fcnkit.coord_map import LayerGeometry, crop_between, trace_geometry
from fcnkit.models import list_models

# VGG16 as the reference's net.py files build it: (name, kernel, stride, pad) of every
# spatial layer, written out here independently of fcnkit's model code.
VGG16 = [
    ("conv1_1", 3, 1, 100), ("conv1_2", 3, 1, 1), ("pool1", 2, 2, 0),
    ("conv2_1", 3, 1, 1), ("conv2_2", 3, 1, 1), ("pool2", 2, 2, 0),
    ("conv3_1", 3, 1, 1), ("conv3_2", 3, 1, 1), ("conv3_3", 3, 1, 1), ("pool3", 2, 2, 0),
    ("conv4_1", 3, 1, 1), ("conv4_2", 3, 1, 1), ("conv4_3", 3, 1, 1), ("pool4", 2, 2, 0),
    ("conv5_1", 3, 1, 1), ("conv5_2", 3, 1, 1), ("conv5_3", 3, 1, 1), ("pool5", 2, 2, 0),
    ("fc6", 7, 1, 0), ("fc7", 1, 1, 0),
]  # fmt: skip


def recursion(spec):
    """The textbook recursion: r_out = r_in + (k - 1) j_in, j_out = j_in s,
    start_out = start_in + ((k - 1) / 2 - p) j_in (the centre of output 0 on the image)."""
    r, j, start = 1, 1, Fraction(0)
    out = {}
    for name, k, s, p in spec:
        r += (k - 1) * j
        start += (Fraction(k - 1, 2) - p) * j
        j *= s
        out[name] = (j, start, r)
    return out


def report(capsys, name: str) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    assert main(["models", name, "--geometry"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = (*cells[-3:],)  # stride, offset, field
    at = next((i for i, line in enumerate(lines) if line.startswith("crops")), len(lines))
    crops = [line.strip() for line in lines[at + 1 :] if line.startswith("  ")]
    return rows, crops


def test_vgg16_trunk_against_the_recursion(capsys) -> None:
    rows, _ = report(capsys, "fcn8s")
    for name, (stride, offset, field) in recursion(VGG16).items():
        assert rows[name] == (str(stride), f"{float(offset):g}", str(field)), name
    # the numbers the brief and the users ask about
    assert rows["pool5"] == ("32", "-83.5", "212")  # VGG16 pool5: stride 32, field 212
    assert rows["conv1_1"][1] == "-99"  # pad 100: output 0 of conv1_1 is centred on -99
    assert rows["fc6"] == ("32", "12.5", "404")


def test_fcn8s_crops_are_the_reference_offsets(capsys) -> None:
    # pascalcontext-fcn8s/val.prototxt (and voc-fcn8s): score_pool4c offset 5,
    # score_pool3c offset 9, score offset 31
    _, crops = report(capsys, "fcn8s")
    assert crops == [
        "score_pool4c  score_pool4 -> upscore2: (-11.5 - (-91.5)) / 16 = 5",
        "score_pool3c  score_pool3 -> upscore_pool4: (-23.5 - (-95.5)) / 8 = 9",
        "score         upscore8 -> data (the image): (0 - (-31)) / 1 = 31",
    ]


@pytest.mark.parametrize(
    "name, offsets",
    [
        ("fcn32s", [19]),  # pascalcontext-fcn32s/val.prototxt: score offset 19
        ("fcn16s", [5, 27]),  # pascalcontext-fcn16s/val.prototxt: 5 and 27
        ("fcn8s-atonce", [5, 9, 31]),  # voc-fcn8s-atonce: the scale layers move nothing
        ("fcn16s-siftflow", [5, 27]),
        ("fcn32s-alexnet", [18]),  # voc-fcn-alexnet: score offset 18
        ("fcn32s-googlenet", [16]),  # fcnkit's own: conv1 pad 10, upscore 63 / 32
    ],
)
def test_crops_of_the_other_nets(capsys, name: str, offsets: list[int]) -> None:
    _, crops = report(capsys, name)
    assert [int(c.rsplit("= ", 1)[1]) for c in crops] == offsets


def test_alexnet_and_resnet_fields_against_the_recursion(capsys) -> None:
    caffenet = [
        ("conv1", 11, 4, 100), ("pool1", 3, 2, 0), ("conv2", 5, 1, 2), ("pool2", 3, 2, 0),
        ("conv3", 3, 1, 1), ("conv4", 3, 1, 1), ("conv5", 3, 1, 1), ("pool5", 3, 2, 0),
        ("fc6", 6, 1, 0),
    ]  # fmt: skip
    rows, _ = report(capsys, "fcn32s-alexnet")
    for name, (stride, offset, field) in recursion(caffenet).items():
        assert rows[name] == (str(stride), f"{float(offset):g}", str(field)), name
    assert rows["pool5"][2] == "195"  # AlexNet's well-known pool5 field
    # torchvision ResNet-50 (stride on the 3x3 conv): stem, then one 3x3 per bottleneck
    resnet = [("conv1", 7, 2, 3), ("maxpool", 3, 2, 1)]
    for layer, blocks, stride in (("layer1", 3, 1), ("layer2", 4, 2), ("layer3", 6, 2),
                                  ("layer4", 3, 2)):  # fmt: skip
        resnet += [(f"{layer}.{b}", 3, stride if b == 0 else 1, 1) for b in range(blocks)]
    expected = recursion(resnet)
    rows, crops = report(capsys, "fcn8s-resnet50")
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        last = [k for k in expected if k.startswith(layer)][-1]
        stride, offset, field = expected[last]
        assert rows[layer] == (str(stride), f"{float(offset):g}", str(field)), layer
    assert rows["layer4"] == ("32", "0", "427") and crops == []


def test_geometry_of_every_model_with_static_maps(capsys) -> None:
    """Every model reports (its crops are checked against the model's own); EfficientNet's
    SAME padding has no static map and says so."""
    for name in list_models():
        code = main(["models", name, "--geometry"])
        out = capsys.readouterr()
        if "efficientnet" in name:
            assert code == 2 and "input size" in out.err, name
        else:
            assert code == 0 and "stride" in out.out, name


def test_models_name_and_errors(capsys) -> None:
    assert main(["models", "fcn8s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split()[:3] == ["fcn8s", "21", "134,489,759"]
    assert main(["models", "--geometry"]) == 2
    assert "needs a model name" in capsys.readouterr().err
    assert main(["models", "fcn9s", "--geometry"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_trace_geometry_branches_and_crop_between() -> None:
    """The coord_map primitives on their own: a branch off a tapped layer, and a crop."""
    from torch import nn

    trunk = trace_geometry([("a", nn.Conv2d(1, 1, 3, padding=2)), ("p", nn.MaxPool2d(2, 2))])
    assert trunk[-1] == LayerGeometry("p", Fraction(2), Fraction(-1, 2), Fraction(4))
    up = trace_geometry([("up", nn.ConvTranspose2d(1, 1, 4, 2))], start=trunk[-1])[0]
    assert (up.stride, up.offset, up.field) == (1, Fraction(-2), 6)  # 2 cells of jump 2
    assert crop_between(up) == 2 and crop_between(trunk[0], trunk[0]) == 0
    with pytest.raises(ValueError, match="strides"):
        crop_between(trunk[-1])
