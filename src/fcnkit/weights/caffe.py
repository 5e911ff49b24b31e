"""Read Caffe ``.caffemodel`` files without Caffe, and map them onto fcnkit models.

A ``.caffemodel`` is a protobuf-encoded ``NetParameter``. This module decodes the protobuf
wire format itself (varints, length-delimited fields, packed floats) and reads only what
weights need:

- ``NetParameter``: ``name`` = 1, V1 ``layers`` = 2, V2 ``layer`` = 100.
- V2 ``LayerParameter``: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7.
- V1 ``V1LayerParameter``: ``layer`` = 1 (a V0 layer), ``name`` = 4, ``type`` = 5 (enum),
  ``blobs`` = 6; V0 ``V0LayerParameter``: ``name`` = 1, ``type`` = 2, ``blobs`` = 50.
- ``BlobProto``: ``shape`` = 7 (``BlobShape.dim`` = 1, int64), legacy ``num``/``channels``/
  ``height``/``width`` = 1..4, ``data`` = 5 (float), ``double_data`` = 8.

Layers map to fcnkit parameters by name (fcnkit's VGG/AlexNet FCNs use the Caffe layer names):
blob 0 -> ``<layer>.weight``, blob 1 -> ``<layer>.bias``, with every shape checked and
InnerProduct weights reshaped into convolutions (``fc6``: 4096 x 25088 -> 4096 x 512 x 7 x 7).
A classifier's 3-channel ``conv1_1`` initialising an early-fusion RGB-D net is widened with
:func:`fcnkit.weights.modality.expand_input_filters`; the reference's RGB-D ``conv1_1_bgrd``
maps to fcnkit's ``conv1_1`` (:data:`LAYER_ALIASES`). HHA filters load as they are: the
reference feeds HHA in file order to its HHA nets and initialises them from the BGR-trained
VGG16 unchanged, as fcnkit does (see :mod:`fcnkit.weights.modality`).
Malformed files raise :class:`CaffeFormatError` naming the file and byte offset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcnkit.weights.modality import expand_input_filters

# V1LayerParameter.LayerType -> the V2 type string.
V1_LAYER_TYPES: dict[int, str] = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data",
    6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal",
    36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}  # fmt: skip

# ImageNet classifier layers that have no counterpart in an FCN: skipped (and reported) when
# a classifier's weights initialise an FCN trunk.
CLASSIFIER_LAYERS = ("fc8", "loss3/classifier", "loss1/classifier", "loss2/classifier")


# Reference layer names that fcnkit's models spell otherwise. The early-fusion RGB-D net's
# 4-channel first convolution is ``conv1_1_bgrd`` (reference nyud-fcn32s-color-d/net.py and
# solve.py): fcnkit's ``conv1_1`` of a ``modality="rgbd"`` net, whose input is the same
# B, G, R, log-depth (caffe-nyud-rgbd), so the blob loads as it is.
LAYER_ALIASES = {"conv1_1_bgrd": "conv1_1"}

# Fixed ``Scale`` layers of FCN-8s at-once (reference ``voc-fcn8s-atonce/net.py``).
FIXED_SCALES = {"scale_pool4": 0.01, "scale_pool3": 0.0001}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# Caffe's own limits on a blob: at most 32 axes (kMaxBlobAxes), each dimension an int32
MAX_BLOB_AXES, MAX_BLOB_DIM = 32, 2**31 - 1


class CaffeFormatError(ValueError):
    """A ``.caffemodel`` that is not a valid ``NetParameter`` (names the file and offset)."""

    def __init__(self, path: str | os.PathLike, offset: int, message: str) -> None:
        self.path = str(path)
        self.offset = offset
        super().__init__(f"{self.path}: byte {offset}: {message}")


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and parameter blobs (float32 arrays)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeNet:
    """A decoded caffemodel: ``format`` is ``"V2"`` (``layer``) or ``"V1"`` (``layers``)."""

    name: str
    layers: list[CaffeLayer]
    format: str
    path: str = ""

    def layer(self, name: str) -> CaffeLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.path or 'caffemodel'} has no layer named {name!r}")

    @property
    def weighted_layers(self) -> list[CaffeLayer]:
        return [layer for layer in self.layers if layer.blobs]


# --------------------------------------------------------------------------- wire format


class _Message:
    """Fields of one protobuf message held in ``buf[start:end]`` (offsets are absolute)."""

    def __init__(self, buf: memoryview, start: int, end: int, path: str) -> None:
        self.buf, self.start, self.end, self.path = buf, start, end, path

    def error(self, offset: int, message: str) -> CaffeFormatError:
        return CaffeFormatError(self.path, offset, message)

    def _varint(self, pos: int) -> tuple[int, int]:
        result = shift = 0
        begin = pos
        while True:
            if pos >= self.end:
                raise self.error(begin, "truncated varint (file or field ends inside it)")
            byte = self.buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.error(begin, "varint longer than 10 bytes")

    def fields(self) -> Iterator[tuple[int, int, int | tuple[int, int], int]]:
        """Yield ``(field number, wire type, value, offset)``.

        ``value`` is an int for varints, ``(start, end)`` for length-delimited and fixed-size
        fields (the payload's absolute byte range).
        """
        pos = self.start
        while pos < self.end:
            offset = pos
            key, pos = self._varint(pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.error(offset, "field number 0 (not a protobuf message)")
            if wire == _VARINT:
                value, pos = self._varint(pos)
                yield number, wire, value, offset
                continue
            if wire == _LEN:
                length, pos = self._varint(pos)
                size = length
            elif wire == _FIXED32:
                size = 4
            elif wire == _FIXED64:
                size = 8
            else:
                raise self.error(offset, f"unsupported wire type {wire} (field {number})")
            if pos + size > self.end:
                raise self.error(
                    offset,
                    f"field {number} needs {size} bytes but only {self.end - pos} remain "
                    "(truncated file?)",
                )
            yield number, wire, (pos, pos + size), offset
            pos += size

    def sub(self, span: tuple[int, int]) -> _Message:
        return _Message(self.buf, span[0], span[1], self.path)

    def string(self, span: tuple[int, int], offset: int) -> str:
        try:
            return bytes(self.buf[span[0] : span[1]]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(offset, "string field is not valid UTF-8") from None

    def packed_varints(self, span: tuple[int, int]) -> list[int]:
        values, pos = [], span[0]
        sub = self.sub(span)
        while pos < span[1]:
            value, pos = sub._varint(pos)
            values.append(value)
        return values


def _expect(msg: _Message, wire: int, expected: int, number: int, what: str, offset: int) -> None:
    if wire != expected:
        raise msg.error(
            offset, f"{what} (field {number}) has wire type {wire}, expected {expected}"
        )


def _parse_blob(msg: _Message, layer: str, index: int) -> np.ndarray:
    shape: list[int] | None = None
    legacy = [0, 0, 0, 0]
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value, offset in msg.fields():
        if number == 7:  # BlobShape
            _expect(msg, wire, _LEN, number, "BlobProto.shape", offset)
            shape = []
            shape_msg = msg.sub(value)
            for n2, w2, v2, o2 in shape_msg.fields():
                if n2 != 1:
                    continue
                if w2 == _LEN:
                    shape.extend(shape_msg.packed_varints(v2))
                elif w2 == _VARINT:
                    shape.append(v2)
                else:
                    raise msg.error(o2, f"BlobShape.dim has wire type {w2}")
        elif number in (1, 2, 3, 4):
            _expect(msg, wire, _VARINT, number, "BlobProto legacy dimension", offset)
            legacy[number - 1] = value
        elif number in (5, 8):  # data (float) / double_data (double)
            dtype, width, out = ("<f4", 4, floats) if number == 5 else ("<f8", 8, doubles)
            start, end = value
            if wire == _LEN and (end - start) % width:
                raise msg.error(
                    offset,
                    f"packed {dtype} data of {end - start} bytes is not a multiple of {width}",
                )
            if wire not in (_LEN, _FIXED32 if width == 4 else _FIXED64):
                raise msg.error(offset, f"BlobProto field {number} has wire type {wire}")
            out.append(np.frombuffer(msg.buf[start:end], dtype=dtype))
        # diff (6), double_diff (9) and anything else: not needed for weights.
    if floats and doubles:
        raise msg.error(msg.start, f"layer {layer!r} blob {index} has both float and double data")
    chunks = floats or doubles
    if len(chunks) == 1:
        data = chunks[0]  # a view into the file's bytes: no copy
    else:
        data = np.concatenate(chunks) if chunks else np.zeros(0, "<f4")
    dims = tuple(shape) if shape is not None else tuple(legacy)
    if len(dims) > MAX_BLOB_AXES:
        raise msg.error(
            msg.start,
            f"layer {layer!r} blob {index}: {len(dims)} axes (Caffe allows {MAX_BLOB_AXES})",
        )
    if any(d > MAX_BLOB_DIM for d in dims):  # unsigned here: a negative one reads as huge
        raise msg.error(
            msg.start,
            f"layer {layer!r} blob {index}: dimension {max(dims)} is negative or over Caffe's "
            f"limit of {MAX_BLOB_DIM}",
        )
    count = math.prod(dims)  # Python integers: no 64-bit wrap-around to a matching count
    if count != data.size:
        raise msg.error(
            msg.start,
            f"layer {layer!r} blob {index}: shape {dims} holds {count} values but the blob has "
            f"{data.size}",
        )
    return data.astype(np.float32, copy=False).reshape(dims)


def _parse_layer(msg: _Message, version: str) -> CaffeLayer:
    # field numbers of (name, type, blobs) per format
    name_no, type_no, blobs_no = {"V2": (1, 2, 7), "V1": (4, 5, 6), "V0": (1, 2, 50)}[version]
    name, type_, blob_msgs = "", "", []
    for number, wire, value, offset in msg.fields():
        if number == name_no:
            _expect(msg, wire, _LEN, number, f"{version} layer name", offset)
            name = msg.string(value, offset)
        elif number == type_no:
            if version == "V1":
                _expect(msg, wire, _VARINT, number, "V1 layer type", offset)
                type_ = V1_LAYER_TYPES.get(value, f"V1 type {value}")
            else:
                _expect(msg, wire, _LEN, number, f"{version} layer type", offset)
                type_ = msg.string(value, offset)
        elif number == blobs_no:
            _expect(msg, wire, _LEN, number, f"{version} layer blob", offset)
            blob_msgs.append(msg.sub(value))
        elif version == "V1" and number == 1 and wire == _LEN:
            return _parse_layer(msg.sub(value), "V0")  # V1 layer wrapping a V0 one
    blobs = [_parse_blob(b, name, i) for i, b in enumerate(blob_msgs)]
    return CaffeLayer(name, type_, blobs)


def parse_caffemodel(data: bytes | bytearray | memoryview, path: str = "<bytes>") -> CaffeNet:
    """Decode a serialised ``NetParameter``."""
    buf = memoryview(data).cast("B")
    msg = _Message(buf, 0, len(buf), path)
    name, v1, v2 = "", [], []
    for number, wire, value, offset in msg.fields():
        if number == 1:
            _expect(msg, wire, _LEN, number, "NetParameter.name", offset)
            name = msg.string(value, offset)
        elif number == 2:
            _expect(msg, wire, _LEN, number, "NetParameter.layers (V1)", offset)
            v1.append(_parse_layer(msg.sub(value), "V1"))
        elif number == 100:
            _expect(msg, wire, _LEN, number, "NetParameter.layer (V2)", offset)
            v2.append(_parse_layer(msg.sub(value), "V2"))
    if v1 and v2:
        raise CaffeFormatError(path, 0, "the net mixes V1 'layers' and V2 'layer' fields")
    if not v1 and not v2:
        raise CaffeFormatError(path, 0, "no layers found: not a caffemodel (NetParameter)")
    return CaffeNet(name, v2 or v1, "V2" if v2 else "V1", path)


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """Read and decode a ``.caffemodel`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no caffemodel at {path}")
    return parse_caffemodel(path.read_bytes(), str(path))


# --------------------------------------------------------------------------- mapping


@dataclass
class CaffeReport:
    """What a caffemodel -> fcnkit conversion did."""

    copied: list[str] = field(default_factory=list)  # parameter names
    reshaped: list[str] = field(default_factory=list)  # "name: src -> dst"
    skipped: list[str] = field(default_factory=list)  # caffe layers left out, with the reason
    checked: list[str] = field(default_factory=list)  # fixed constants verified
    missing: list[str] = field(default_factory=list)  # model parameters left as initialised
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.copied)} tensors copied ({len(self.reshaped)} reshaped), "
            f"{len(self.skipped)} layers skipped, {len(self.missing)} parameters left initialised"
        )


def fit_blob(blob: np.ndarray, shape: torch.Size, what: str) -> tuple[torch.Tensor, bool]:
    """``blob`` as a tensor of ``shape``; returns ``(tensor, reshaped)``.

    Accepted: the same shape; a legacy 4-D blob with leading 1s (``1 x 1 x 1 x N`` bias,
    ``1 x 1 x out x in`` InnerProduct); an InnerProduct ``out x in`` into a convolution
    ``out x c x kh x kw`` with ``c * kh * kw == in`` (Caffe flattens C x H x W row-major, so
    the reshape is exact). Anything else raises ``ValueError`` naming ``what``.
    """
    src = tuple(blob.shape)
    dst = tuple(shape)
    ok = _strip_ones(src, len(dst)) == dst
    if not ok and len(dst) == 4:  # InnerProduct into a convolution
        flat = _strip_ones(src, 2)
        ok = len(flat) == 2 and flat[0] == dst[0] and flat[1] == dst[1] * dst[2] * dst[3]
    if not ok:
        raise ValueError(f"{what}: caffemodel blob has shape {src}, the model expects {dst}")
    tensor = torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32).reshape(dst).copy())
    return tensor, src != dst


def _strip_ones(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    while len(shape) > ndim and shape[0] == 1:
        shape = shape[1:]
    return shape


def _trunk_suffixes(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Suffixes of the VGG/AlexNet trunks in a model: ``[""]``, or ``["color", "hha"]``."""
    found = set()
    for key in state:
        layer, _, param = key.rpartition(".")
        for base in ("conv1_1", "conv1"):
            suffix = layer[len(base) :]
            if param == "weight" and layer.startswith(base) and (suffix == "" or suffix.isalpha()):
                found.add(suffix)
    return sorted(found)


def caffe_state_dict(
    net: CaffeNet, model: nn.Module, *, name: str = ""
) -> tuple[dict[str, torch.Tensor], CaffeReport]:
    """Map ``net``'s blobs onto ``model``'s parameters by layer name, checking every shape.

    - An FCN caffemodel (it has ``score*`` layers) must cover every model parameter.
    - A classifier caffemodel (``VGG_ILSVRC_16_layers``, CaffeNet) initialises the trunk:
      its ImageNet classifier layer (``fc8``) is skipped, the model's ``score*``/``upscore*``
      layers keep their initialisation, and nothing else may be missing. Late-fusion models
      (trunks suffixed ``color``/``hha``) get the classifier's trunk in each.
    - Every other blob must find its parameter; fixed ``Scale`` layers (FCN-8s at-once) are
      checked against the model's constants.
    """
    name = name or net.path or "caffemodel"
    model_name = getattr(model, "model_name", type(model).__name__)
    own = model.state_dict()
    params = {k for k, _ in model.named_parameters()}
    is_fcn = any(layer.name.startswith("score") for layer in net.weighted_layers)
    suffixes = [""]
    if not is_fcn and "conv1_1.weight" not in own and "conv1.weight" not in own:
        suffixes = _trunk_suffixes(own) or [""]
    out: dict[str, torch.Tensor] = {}
    report = CaffeReport()
    for layer in net.weighted_layers:
        if layer.name in FIXED_SCALES:
            _check_scale(layer, model, name, report)
            continue
        layer_name = layer.name
        alias = LAYER_ALIASES.get(layer_name)
        if alias is not None and f"{layer_name}.weight" not in own and f"{alias}.weight" in own:
            report.notes.append(f"caffemodel layer {layer_name} loaded as {alias}")
            layer_name = alias
        targets = [f"{layer_name}{s}" for s in suffixes]
        if not any(f"{t}.weight" in own for t in targets):
            if layer.name in CLASSIFIER_LAYERS and not is_fcn:
                report.skipped.append(f"{layer.name} ({layer.type}): ImageNet classifier")
                continue
            shapes = [tuple(b.shape) for b in layer.blobs]
            raise ValueError(
                f"{name}: layer {layer.name!r} ({layer.type}, blobs {shapes}) has no parameter "
                f"{targets[0]}.weight in {model_name}; is this caffemodel for another model?"
            )
        for target in targets:
            slots = [f"{target}.weight", f"{target}.bias"]
            if len(layer.blobs) > 2 or (len(layer.blobs) == 2 and slots[1] not in own):
                raise ValueError(
                    f"{name}: layer {layer.name!r} has {len(layer.blobs)} blobs but {model_name}."
                    f"{target} has {'no bias' if slots[1] not in own else 'weight and bias'}"
                )
            for blob, key in zip(layer.blobs, slots[: len(layer.blobs)], strict=True):
                tensor, reshaped = _fit_input_layer(blob, own[key].shape, key, is_fcn, report)
                if tensor is None:
                    tensor, reshaped = fit_blob(blob, own[key].shape, f"{name}: {key}")
                out[key] = tensor.to(own[key].dtype)
                report.copied.append(key)
                if reshaped:
                    report.reshaped.append(f"{key}: {tuple(blob.shape)} -> {tuple(tensor.shape)}")
    missing = sorted(params - set(out))
    if is_fcn:
        if missing:
            raise ValueError(
                f"{name} does not cover {model_name}: no blobs for {', '.join(missing[:8])}"
                + (" ..." if len(missing) > 8 else "")
            )
    else:
        trunk_missing = [k for k in missing if not k.startswith(("score", "upscore"))]
        if trunk_missing or not out:
            raise ValueError(
                f"{name} leaves {model_name}'s trunk incomplete: no blobs for "
                f"{', '.join(trunk_missing[:8]) or 'any parameter'}"
            )
    report.missing = missing
    return out, report


def _fit_input_layer(
    blob: np.ndarray, shape: torch.Size, key: str, is_fcn: bool, report: CaffeReport
) -> tuple[torch.Tensor | None, bool]:
    """A classifier's RGB ``conv1_1`` filters widened for a model with more input channels
    (early-fusion RGB-D): :func:`fcnkit.weights.modality.expand_input_filters`. ``(None, False)``
    when this does not apply (the blob is then fitted as is)."""
    layer, _, param = key.rpartition(".")
    dst = tuple(shape)
    src = tuple(blob.shape)
    widen = (
        not is_fcn
        and param == "weight"
        and layer.startswith("conv1_1")
        and len(src) == len(dst) == 4
        and src[1] == 3 < dst[1]
        and (src[0], *src[2:]) == (dst[0], *dst[2:])
    )
    if not widen:
        return None, False
    tensor = expand_input_filters(torch.from_numpy(np.array(blob, dtype=np.float32)), dst[1])
    report.notes.append(f"{key}: extra input channels = mean of the RGB filters")
    return tensor, True


def score_classes(net: CaffeNet) -> int | None:
    """The class count of the first ``score_fr*`` layer (its output channels), if any."""
    for layer in net.weighted_layers:
        if layer.name.startswith("score_fr") and layer.blobs:
            shape = list(layer.blobs[0].shape)
            while len(shape) > 2 and shape[0] == 1:  # legacy 1 x 1 x out x in
                shape.pop(0)
            return int(shape[0])
    return None


def _check_scale(layer: CaffeLayer, model: nn.Module, name: str, report: CaffeReport) -> None:
    """A fixed ``Scale`` layer: its blob must be the constant the model applies."""
    expected = FIXED_SCALES[layer.name]
    value = getattr(model, layer.name, None)  # the model's constant, when it exposes one
    value = getattr(value, "scale", value)  # fcnkit.models.vgg.FixedScale
    if isinstance(value, int | float) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        expected = float(value)
    blob = layer.blobs[0]
    if len(layer.blobs) != 1 or not np.allclose(blob, expected, rtol=1e-6, atol=0):
        raise ValueError(
            f"{name}: fixed layer {layer.name!r} holds values in [{blob.min():g}, {blob.max():g}], "
            f"the model applies the constant {expected}"
        )
    report.checked.append(f"{layer.name} = {expected} ({blob.size} values)")


def load_caffemodel(model: nn.Module, path: str | os.PathLike) -> CaffeReport:
    """Read ``path`` and load it into ``model`` (see :func:`caffe_state_dict`)."""
    net = read_caffemodel(path)
    state, report = caffe_state_dict(net, model, name=str(path))
    model.load_state_dict(state, strict=False)
    return report
