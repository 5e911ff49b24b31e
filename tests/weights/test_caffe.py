"""The .caffemodel reader: small caffemodels written here in the real protobuf wire format
(V2 ``layer`` and V1 ``layers``, real layer names and blob layouts) round-trip exactly into
fcnkit models; malformed files fail with CaffeFormatError naming file and byte offset."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from torch import nn

import fcnkit
from fcnkit.weights.caffe import (
    CaffeFormatError,
    caffe_state_dict,
    load_caffemodel,
    parse_caffemodel,
    read_caffemodel,
)
from protobuf_wire import key, ld, varint, vint

# --------------------------------------------------------------------------- a tiny encoder
# (the wire format: tests/protobuf_wire.py)


def blob(array: np.ndarray, legacy: bool = False) -> list[bytes]:
    """BlobProto: V2 ``shape`` (packed int64 dims) or legacy num/channels/height/width."""
    array = np.asarray(array, dtype=np.float32)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(vint(i + 1, d) for i, d in enumerate(dims))
    else:
        head = ld(7, ld(1, b"".join(varint(d) for d in array.shape)))
    return [head, *ld(5, [array.astype("<f4").tobytes()])]


def layer_v2(name: str, type_: str, blobs: list[np.ndarray], bottom: str = "x") -> list[bytes]:
    body = [ld(1, name) + ld(2, type_) + ld(3, bottom) + ld(4, name)]
    body.append(ld(6, vint(1, 1) + key(3, 5) + struct.pack("<f", 1.0)))  # ParamSpec
    for b in blobs:
        body += ld(7, blob(b))
    body.append(ld(106, vint(1, 64) + vint(4, 3)))  # convolution_param (ignored)
    return ld(100, body)


V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39, "ReLU": 18, "Scale": 0}


def layer_v1(name: str, type_: str, blobs: list[np.ndarray], legacy: bool = True) -> list[bytes]:
    body = [ld(2, "x") + ld(3, name) + ld(4, name) + vint(5, V1_TYPES[type_])]
    body.append(key(7, 5) + struct.pack("<f", 1.0))  # blobs_lr (fixed32)
    for b in blobs:
        body += ld(6, blob(b, legacy=legacy))
    return ld(2, body)


def net(layers: list[bytes | list[bytes]], name: str = "test-net") -> bytes:
    parts = [ld(1, name), ld(3, "data")]  # input (3) is skipped by the reader
    for layer in layers:
        parts += [layer] if isinstance(layer, bytes) else layer
    return b"".join(parts)


def layers_from_state(
    state: dict[str, torch.Tensor], v1: bool, fc_as_inner_product: tuple[str, ...] = ()
) -> list[bytes]:
    """Caffe layers (weight, bias blobs) for every ``<layer>.weight`` of a state dict."""
    out = []
    for k in state:
        if not k.endswith(".weight"):
            continue
        name = k[: -len(".weight")]
        w = state[k].numpy()
        blobs = [w] + ([state[f"{name}.bias"].numpy()] if f"{name}.bias" in state else [])
        type_ = "Deconvolution" if name.startswith("upscore") else "Convolution"
        if name in fc_as_inner_product:
            type_ = "InnerProduct"
            blobs[0] = w.reshape(w.shape[0], -1)
        out.append(layer_v1(name, type_, blobs) if v1 else layer_v2(name, type_, blobs))
    return out


class MiniFCN(nn.Module):
    """Caffe-named stand-in: conv1_1, fc6 (2x2 conv), fc7, score_fr, upscore (no bias)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1_1 = nn.Conv2d(3, 4, 3)
        self.fc6 = nn.Conv2d(4, 6, 2)
        self.fc7 = nn.Conv2d(6, 6, 1)
        self.score_fr = nn.Conv2d(6, num_classes, 1)
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, bias=False)


def _random_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.randn_like(v) for k, v in model.state_dict().items()}


def _assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v.reshape(own[k].shape)), k


# --------------------------------------------------------------------------- decoding


def test_v2_layers_and_blobs_decode_exactly() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7
    b = np.array([-1.5, 2.25], dtype=np.float32)
    data = net([layer_v2("conv1_1", "Convolution", [w, b]), layer_v2("relu1_1", "ReLU", [])])
    parsed = parse_caffemodel(data)
    assert parsed.name == "test-net" and parsed.format == "V2"
    assert [(layer.name, layer.type) for layer in parsed.layers] == [
        ("conv1_1", "Convolution"),
        ("relu1_1", "ReLU"),
    ]
    conv = parsed.layer("conv1_1")
    assert conv.blobs[0].dtype == np.float32
    np.testing.assert_array_equal(conv.blobs[0], w)
    np.testing.assert_array_equal(conv.blobs[1], b)
    assert [layer.name for layer in parsed.weighted_layers] == ["conv1_1"]


def test_v1_enum_types_and_legacy_shapes() -> None:
    w = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    data = net([layer_v1("fc6", "InnerProduct", [w, np.ones(5)]), layer_v1("relu6", "ReLU", [])])
    parsed = parse_caffemodel(data)
    assert parsed.format == "V1"
    fc6 = parsed.layer("fc6")
    assert fc6.type == "InnerProduct" and parsed.layer("relu6").type == "ReLU"
    assert fc6.blobs[0].shape == (1, 1, 5, 12) and fc6.blobs[1].shape == (1, 1, 1, 5)
    np.testing.assert_array_equal(fc6.blobs[0][0, 0], w)


def test_v0_layer_inside_v1() -> None:
    w = np.full((2, 1, 1, 1), 3.0, np.float32)
    v0 = ld(1, "conv1") + ld(2, "conv") + b"".join(ld(50, blob(w, legacy=True)))
    parsed = parse_caffemodel(net([ld(2, ld(1, v0))]))
    assert parsed.layer("conv1").type == "conv"
    np.testing.assert_array_equal(parsed.layer("conv1").blobs[0], w)


def test_unpacked_floats_double_data_and_unknown_fields() -> None:
    values = [0.5, -2.0, 3.25]
    floats = b"".join(key(5, 5) + struct.pack("<f", v) for v in values)
    unpacked = ld(7, ld(1, varint(3))) + floats
    doubles = ld(7, ld(1, varint(2))) + ld(8, struct.pack("<2d", 1e-3, 7.0))
    unknown = vint(99, 12345) + key(98, 1) + struct.pack("<d", 1.0) + ld(97, b"\x00\xff")
    layer = ld(100, ld(1, "a") + ld(2, "Scale") + unknown + ld(7, unpacked) + ld(7, doubles))
    parsed = parse_caffemodel(net([layer]) + unknown)
    a = parsed.layer("a")
    np.testing.assert_array_equal(a.blobs[0], np.array(values, np.float32))
    np.testing.assert_array_equal(a.blobs[1], np.array([1e-3, 7.0], np.float32))


def test_read_caffemodel_file(tmp_path) -> None:
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net([layer_v2("conv1_1", "Convolution", [np.ones((1, 1, 1, 1))])]))
    assert read_caffemodel(path).path == str(path)
    with pytest.raises(FileNotFoundError, match="no caffemodel"):
        read_caffemodel(tmp_path / "absent.caffemodel")


# --------------------------------------------------------------------------- malformed files

GOOD = net(
    [
        layer_v2("conv1_1", "Convolution", [np.ones((4, 3, 3, 3)), np.zeros(4)]),
        layer_v2("fc6", "Convolution", [np.ones((6, 4, 2, 2)), np.zeros(6)]),
    ]
)


@pytest.mark.parametrize(
    ("data", "message", "offset"),
    [
        (b"", "no layers found", 0),
        (b"\x89PNG\r\n\x1a\n", "needs 8 bytes but only 6 remain", 0),
        (ld(100, b"")[:-1] + b"\x05", "needs 5 bytes", 0),  # length beyond the end
        (b"\x80" * 11, "varint", 0),
        (ld(100, key(1, 3)), "unsupported wire type 3", 3),
        (ld(100, ld(1, b"\xff\xfe")), "UTF-8", 3),
        (ld(100, ld(7, ld(7, ld(1, varint(3))) + ld(5, b"\x00" * 8))), "holds 3 values", 5),
        (ld(100, ld(7, ld(5, b"\x00" * 6))), "not a multiple of 4", 5),
        (ld(2, ld(4, "a")) + ld(100, ld(1, "b")), "mixes V1", 0),
        (ld(100, vint(2, 4)), "V2 layer type", 3),
        (key(0, 0) + b"\x01", "field number 0", 0),
    ],
)
def test_malformed_files_fail_clearly(tmp_path, data: bytes, message: str, offset: int) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(CaffeFormatError, match=message) as info:
        read_caffemodel(path)
    assert info.value.path == str(path) and info.value.offset == offset
    assert str(info.value).startswith(f"{path}: byte {offset}: ")


def test_every_truncation_fails_clearly() -> None:
    """Cut anywhere: a CaffeFormatError, or (cut between layers, which protobuf cannot tell
    from a shorter net) a ValueError naming what the model misses -- never a crash."""
    for cut in range(len(GOOD)):
        try:
            parsed = parse_caffemodel(GOOD[:cut], "cut.caffemodel")
        except CaffeFormatError as err:
            assert "cut.caffemodel: byte" in str(err)
            continue
        with pytest.raises(ValueError, match="cut.caffemodel"):
            caffe_state_dict(parsed, MiniFCN())


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("v1", [False, True])
def test_mini_fcn_round_trip(tmp_path, v1: bool) -> None:
    src = MiniFCN()
    state = _random_state(src)
    path = tmp_path / "mini.caffemodel"
    path.write_bytes(net(layers_from_state(state, v1=v1)))
    model = MiniFCN()
    report = load_caffemodel(model, path)
    _assert_loaded(model, state)
    assert sorted(report.copied) == sorted(state) and not report.missing
    if v1:  # legacy 1 x 1 x 1 x N biases were reshaped
        assert "conv1_1.bias: (1, 1, 1, 4) -> (4,)" in report.reshaped


def test_classifier_file_fills_the_trunk_and_skips_fc8(tmp_path) -> None:
    """VGG_ILSVRC_16_layers style: V1, fc6/fc7 InnerProduct, fc8 ImageNet classifier."""
    src = MiniFCN()
    state = {k: v for k, v in _random_state(src).items() if not k.startswith(("score", "up"))}
    layers = layers_from_state(state, v1=True, fc_as_inner_product=("fc6", "fc7"))
    layers.append(layer_v1("fc8", "InnerProduct", [np.ones((10, 6)), np.ones(10)]))
    path = tmp_path / "VGG_ILSVRC_mini.caffemodel"
    path.write_bytes(net(layers))
    model = MiniFCN()
    score_before = model.score_fr.weight.clone()
    report = load_caffemodel(model, path)
    _assert_loaded(model, state)
    assert report.skipped == ["fc8 (InnerProduct): ImageNet classifier"]
    assert "fc6.weight: (1, 1, 6, 16) -> (6, 4, 2, 2)" in report.reshaped
    assert sorted(report.missing) == ["score_fr.bias", "score_fr.weight", "upscore.weight"]
    assert torch.equal(model.score_fr.weight, score_before)


def test_shape_mismatch_names_layer_and_shapes(tmp_path) -> None:
    state = _random_state(MiniFCN(num_classes=5))
    path = tmp_path / "five.caffemodel"
    path.write_bytes(net(layers_from_state(state, v1=False)))
    with pytest.raises(ValueError, match=r"five\.caffemodel: score_fr\.weight.*\(5, 6, 1, 1\).*"):
        load_caffemodel(MiniFCN(num_classes=3), path)


def test_unknown_layer_and_missing_layer_are_errors(tmp_path) -> None:
    state = _random_state(MiniFCN())
    layers = layers_from_state(state, v1=False)
    path = tmp_path / "extra.caffemodel"
    path.write_bytes(net([*layers, layer_v2("conv9_9", "Convolution", [np.ones((1, 1, 1, 1))])]))
    with pytest.raises(ValueError, match=r"layer 'conv9_9' \(Convolution.*no parameter"):
        load_caffemodel(MiniFCN(), path)
    path.write_bytes(net(layers[1:]))  # an FCN file without conv1_1
    with pytest.raises(ValueError, match=r"does not cover.*conv1_1\.bias, conv1_1\.weight"):
        load_caffemodel(MiniFCN(), path)


def test_blob_count_must_match_the_layer(tmp_path) -> None:
    state = _random_state(MiniFCN())
    layers = layers_from_state(state, v1=False)[:-1]
    layers.append(layer_v2("upscore", "Deconvolution", [state["upscore.weight"].numpy(), [0.0]]))
    path = tmp_path / "bias.caffemodel"
    path.write_bytes(net(layers))
    with pytest.raises(ValueError, match="'upscore' has 2 blobs.*no bias"):
        load_caffemodel(MiniFCN(), path)


def test_late_fusion_hha_input_filters_load_unchanged(tmp_path) -> None:
    """The reference's conv1_1hha was trained on HHA in file order (nyud_layers.py load_hha
    does not reverse HHA), which is what fcnkit feeds: its filters load as they are."""

    class Fusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1_1color = nn.Conv2d(3, 2, 1)
            self.conv1_1hha = nn.Conv2d(3, 2, 1)
            self.score_frcolor = nn.Conv2d(2, 2, 1)
            self.score_frhha = nn.Conv2d(2, 2, 1)

    state = _random_state(Fusion())
    path = tmp_path / "nyud.caffemodel"
    path.write_bytes(net(layers_from_state(state, v1=False)))
    model = Fusion()
    report = load_caffemodel(model, path)
    assert torch.equal(model.conv1_1hha.weight, state["conv1_1hha.weight"])  # was flipped
    assert torch.equal(model.conv1_1color.weight, state["conv1_1color.weight"])
    assert not any("reversed" in n for n in report.notes)


def test_reference_rgbd_conv1_1_bgrd_loads_into_conv1_1(tmp_path) -> None:
    """The reference's early-fusion net names its 4-channel first convolution conv1_1_bgrd
    (nyud-fcn32s-color-d/net.py, solve.py); fcnkit's rgbd net calls it conv1_1 and takes the
    same input (B, G, R, log-depth): the blob loads there as it is."""
    state = _random_state(_Trunk(in_channels=4))
    renamed = {f"conv1_1_bgrd.{k.split('.')[1]}" if k.startswith("conv1_1.") else k: v
               for k, v in state.items()}  # fmt: skip
    layers = layers_from_state(renamed, v1=False)
    path = tmp_path / "nyud-fcn32s-color-d.caffemodel"
    path.write_bytes(net(layers))
    model = _Trunk(in_channels=4)
    report = load_caffemodel(model, path)
    assert torch.equal(model.conv1_1.weight, state["conv1_1.weight"])
    assert torch.equal(model.conv1_1.bias, state["conv1_1.bias"])
    assert report.missing == [] and "conv1_1.weight" in report.copied
    assert any("conv1_1_bgrd loaded as conv1_1" in n for n in report.notes)
    with pytest.raises(ValueError, match=r"'conv1_1_bgrd'.*no parameter conv1_1_bgrd\.weight"):
        load_caffemodel(_Trunk(suffixes=("color", "hha")), path)  # no conv1_1 to map it to


# --------------------------------------------------------------------------- fcnkit models


def test_fcn_alexnet_v1_round_trip_through_create_model(tmp_path) -> None:
    state = _random_state(fcnkit.create_model("fcn32s-alexnet", 3))
    path = tmp_path / "fcn-alexnet-pascal.caffemodel"
    path.write_bytes(net(layers_from_state(state, v1=True)))
    model = fcnkit.create_model("fcn32s-alexnet", 3, weights=str(path))
    _assert_loaded(model, state)
    assert model.conv2.weight.shape == (256, 48, 5, 5)  # CaffeNet's grouped layout
    assert model.weights == str(path) and model.preprocessing.name == "caffe-voc"


_TRUNK = [
    f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)
]
_TRUNK += ["fc6", "fc7"]
# Layers with blobs in the authors' released models (reference net.py files).
REFERENCE_LAYERS = {
    ("fcn32s", ()): [*_TRUNK, "score_fr", "upscore"],
    ("fcn16s", ()): [*_TRUNK, "score_fr", "upscore2", "score_pool4", "upscore16"],
    ("fcn8s", ()): [*_TRUNK, "score_fr", "upscore2", "score_pool4", "upscore_pool4",
                    "score_pool3", "upscore8"],
    ("fcn32s-alexnet", ()): ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                             "score_fr", "upscore"],
    ("fcn16s-siftflow", ()): [*_TRUNK, *(f"{n}_{h}" for h in ("sem", "geo") for n in
                              ("score_fr", "upscore2", "score_pool4", "upscore16"))],
    ("fcn8s-siftflow", ()): [*_TRUNK, *(f"{n}_{h}" for h in ("sem", "geo") for n in
                             ("score_fr", "upscore2", "score_pool4", "upscore_pool4",
                              "score_pool3", "upscore8"))],
    ("fcn32s-nyud", ("rgb+hha",)): [*(f"{n}{m}" for m in ("color", "hha") for n in
                                      [*_TRUNK, "score_fr"]), "upscore"],
}  # fmt: skip


@pytest.mark.parametrize(("name", "modality"), list(REFERENCE_LAYERS))
def test_fcnkit_models_have_the_reference_layer_names(name: str, modality: tuple) -> None:
    """Every blob of the authors' caffemodels has its parameter in the fcnkit model, and
    nothing else needs one (meta device: no memory)."""
    options = {"modality": modality[0]} if modality else {}
    with torch.device("meta"):
        model = fcnkit.create_model(name, **options)
    layers = {k.rsplit(".", 1)[0] for k, _ in model.named_parameters()}
    assert layers == set(REFERENCE_LAYERS[name, modality])


def _round_trip_in_memory(name: str, v1: bool, extra: list | None = None, **options):
    model = fcnkit.create_model(name, **options)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # kaiming-random trunk
    for k in state:  # score layers start at zero: make them random too
        if k.startswith(("score", "upscore")):
            state[k] = torch.randn_like(state[k])
    data = net(layers_from_state(state, v1=v1) + (extra or []))
    fresh = fcnkit.create_model(name, **options)
    assert not torch.equal(fresh.fc6.weight, state["fc6.weight"])
    return fresh, parse_caffemodel(data, f"{name}.caffemodel"), state


@pytest.mark.slow
def test_fcn8s_atonce_scale_layers_checked() -> None:
    scales = [
        layer_v2("scale_pool4", "Scale", [np.full(512, 0.01, np.float32)]),
        layer_v2("scale_pool3", "Scale", [np.full(256, 0.0001, np.float32)]),
    ]
    model, parsed, state = _round_trip_in_memory("fcn8s-atonce", False, scales, num_classes=2)
    loaded, report = caffe_state_dict(parsed, model)
    model.load_state_dict(loaded, strict=False)
    _assert_loaded(model, state)
    assert report.checked == [
        "scale_pool4 = 0.01 (512 values)",
        "scale_pool3 = 0.0001 (256 values)",
    ]
    parsed.layer("scale_pool4").blobs[0] = np.full(512, 0.02, np.float32)
    with pytest.raises(ValueError, match="scale_pool4.*0.02.*constant 0.01"):
        caffe_state_dict(parsed, model)


@pytest.mark.slow
def test_vgg_ilsvrc_v1_into_fcn32s(tmp_path) -> None:
    """The paper's ImageNet VGG16 layout: V1, fc6 1x1x4096x25088 -> 4096x512x7x7."""
    from torchvision.models import vgg16

    from fcnkit.weights import torchvision_vgg16_to_caffe

    tv = vgg16().state_dict()
    trunk = torchvision_vgg16_to_caffe(tv)
    layers = [
        layer_v1(n, "InnerProduct" if n.startswith("fc") else "Convolution", [w.numpy(), b.numpy()])
        for n, (w, b) in trunk.items()
    ]
    layers.append(layer_v1("fc8", "InnerProduct", [tv["classifier.6.weight"].numpy()]))
    path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    path.write_bytes(net(layers, name="VGG_ILSVRC_16_layers"))
    del tv, layers
    model = fcnkit.create_model("fcn32s", 3, weights=str(path))
    for name, (w, b) in trunk.items():
        assert torch.equal(
            getattr(model, name).weight, w.reshape(getattr(model, name).weight.shape)
        )
        assert torch.equal(getattr(model, name).bias, b)
    assert model.fc6.weight.shape == (4096, 512, 7, 7)
    assert not model.score_fr.weight.any()  # the score layer stays zero-initialised
    assert model.preprocessing.name == "caffe-voc"  # fine-tuning keeps the dataset mean


def test_classifier_file_fills_both_late_fusion_trunks(tmp_path) -> None:
    class Fusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for s in ("color", "hha"):
                self.add_module(f"conv1_1{s}", nn.Conv2d(3, 4, 3))
                self.add_module(f"fc6{s}", nn.Conv2d(4, 6, 2))
                self.add_module(f"score_fr{s}", nn.Conv2d(6, 2, 1))

    conv = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    fc6 = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    layers = [
        layer_v1("conv1_1", "Convolution", [conv, np.arange(4)]),
        layer_v1("fc6", "InnerProduct", [fc6, np.arange(6)]),
        layer_v1("fc8", "InnerProduct", [np.ones((10, 6)), np.ones(10)]),
    ]
    path = tmp_path / "VGG_ILSVRC_mini.caffemodel"
    path.write_bytes(net(layers))
    model = Fusion()
    report = load_caffemodel(model, path)
    assert torch.equal(model.conv1_1color.weight, torch.from_numpy(conv))
    # the reference copies the BGR-trained VGG16 as it is into its HHA net (HHA channel k
    # meets BGR filter k; nyud-fcn32s-hha/solve.py): unchanged, as the colour trunk
    assert torch.equal(model.conv1_1hha.weight, torch.from_numpy(conv))
    assert torch.equal(model.fc6hha.weight, torch.from_numpy(fc6).reshape(6, 4, 2, 2))
    assert report.missing == [
        f"score_fr{s}.{p}" for s in ("color", "hha") for p in ("bias", "weight")
    ]


class _Trunk(nn.Module):
    """Caffe-named mini trunk with a score layer, optionally per suffix (late fusion)."""

    def __init__(self, in_channels: int = 3, suffixes: tuple[str, ...] = ("",)) -> None:
        super().__init__()
        for s in suffixes:
            self.add_module(f"conv1_1{s}", nn.Conv2d(in_channels, 4, 3))
            self.add_module(f"fc6{s}", nn.Conv2d(4, 6, 2))
            self.add_module(f"score_fr{s}", nn.Conv2d(6, 2, 1))


def test_classifier_file_into_rgbd_widens_conv1_1(tmp_path) -> None:
    """VGG_ILSVRC_16_layers into early-fusion RGB-D: the depth filter is the mean of the RGB
    filters (modality.expand_input_filters), the RGB filters are copied exactly."""
    conv = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    fc6 = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    layers = [
        layer_v1("conv1_1", "Convolution", [conv, np.arange(4)]),
        layer_v1("fc6", "InnerProduct", [fc6, np.arange(6)]),
        layer_v1("fc8", "InnerProduct", [np.ones((10, 6)), np.ones(10)]),
    ]
    path = tmp_path / "VGG_ILSVRC_mini.caffemodel"
    path.write_bytes(net(layers))
    model = _Trunk(in_channels=4)
    report = load_caffemodel(model, path)
    w = model.conv1_1.weight
    assert w.shape == (4, 4, 3, 3) and torch.equal(w[:, :3], torch.from_numpy(conv))
    torch.testing.assert_close(w[:, 3], torch.from_numpy(conv).mean(1))
    assert any("conv1_1.weight: extra input channels = mean" in n for n in report.notes)
    # an FCN's own conv1_1 is never widened: a 3-channel FCN does not fit an RGB-D model
    fcn = net(layers_from_state(_random_state(_Trunk()), v1=False))
    with pytest.raises(ValueError, match=r"conv1_1\.weight.*\(4, 3, 3, 3\).*\(4, 4, 3, 3\)"):
        caffe_state_dict(parse_caffemodel(fcn), _Trunk(in_channels=4))


def test_late_fusion_from_single_nets_matches_the_fused_caffemodel() -> None:
    """One HHA convention everywhere, the reference's (HHA in file order, nyud_layers.py
    load_hha): its single-stream HHA net loads unchanged into modality=hha, and
    modality.late_fusion_state_dict of the two single nets gives exactly the weights the
    fused reference caffemodel loads (nyud-fcn32s-color-hha/solve.py transplants them as they
    are), so the fused HHA trunk computes on file-order HHA what the single net computes."""
    from fcnkit.weights.modality import late_fusion_state_dict

    color, hha = _random_state(_Trunk()), _random_state(_Trunk())
    single = {}
    for name, state in (("color", color), ("hha", hha)):
        parsed = parse_caffemodel(net(layers_from_state(state, v1=False)))
        single[name], _ = caffe_state_dict(parsed, _Trunk())
        assert torch.equal(single[name]["conv1_1.weight"], state["conv1_1.weight"])
    fused_state = {f"{k.split('.')[0]}{s}.{k.split('.')[1]}": v for s, st in
                   (("color", color), ("hha", hha)) for k, v in st.items()}  # fmt: skip
    fused_file = parse_caffemodel(net(layers_from_state(fused_state, v1=False)))
    from_file, _ = caffe_state_dict(fused_file, _Trunk(suffixes=("color", "hha")))
    combined = late_fusion_state_dict(single["color"], single["hha"])
    assert set(combined) == set(from_file)
    for k in from_file:
        assert torch.equal(combined[k], from_file[k]), k
    assert torch.equal(combined["conv1_1hha.weight"], hha["conv1_1.weight"])
    hha_file_order = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(hha_file_order, combined["conv1_1hha.weight"]),
        torch.nn.functional.conv2d(hha_file_order, hha["conv1_1.weight"]),
    )
