"""Property-based fuzzing of fcnkit's readers (issue 12 §7): the Caffe reader, the config
reader and the image readers, on random bytes and text, truncations and mutations of valid
files, and declared sizes far beyond the data. Each either reads the input or raises its own
clear error naming the file (CaffeFormatError, ConfigError, ValueError, DatasetError): no
other exception, no hang (a deadline per example), no allocation the data does not justify.

Examples are derandomised: every run tries the same inputs, so a failure is reproducible.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import time
import tracemalloc
import typing
from datetime import timedelta

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnkit.data.base import DatasetError, read_index_png, read_rgb
from fcnkit.engine.config import Config, ConfigError, load_config
from fcnkit.inference import load_image
from fcnkit.weights.caffe import CaffeFormatError, CaffeNet, parse_caffemodel
from protobuf_wire import key, ld, varint, vint

FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` cut short, with some bytes overwritten, or both."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(0, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
        return bytes(data[:cut])

    return mutate()


# --------------------------------------------------------------------------- Caffe reader
def blob(dims: list[int], data: bytes, legacy: bool = False) -> bytes:
    """A BlobProto declaring ``dims`` (V2 shape, or legacy num/channels/height/width)."""
    if legacy:
        head = b"".join(vint(i + 1, d) for i, d in enumerate(dims[:4]))
    else:
        head = ld(7, ld(1, b"".join(varint(d) for d in dims)))
    return head + ld(5, data)


def caffemodel(*blobs: bytes, v1: bool = False) -> bytes:
    if v1:
        layer = ld(2, ld(4, "conv1") + vint(5, 4) + b"".join(ld(6, b) for b in blobs))
    else:
        layer = ld(100, ld(1, "conv1") + ld(2, "Convolution") + b"".join(ld(7, b) for b in blobs))
    return ld(1, "fuzz-net") + layer


def floats(n: int) -> bytes:
    return np.arange(n, dtype="<f4").tobytes()


VALID_V2 = caffemodel(blob([2, 3, 1, 1], floats(6)), blob([2], floats(2)))
VALID_V1 = caffemodel(blob([2, 3, 1, 1], floats(6), legacy=True), v1=True)


def read_caffe(data: bytes) -> CaffeNet | None:
    """Parse, checking the contract: a consistent net or a CaffeFormatError naming the file."""
    try:
        net = parse_caffemodel(data, "fuzz.caffemodel")
    except CaffeFormatError as err:
        assert str(err).startswith("fuzz.caffemodel: byte ") and len(str(err)) < 1000
        return None
    for layer in net.layers:
        for array in layer.blobs:
            assert array.dtype == np.float32 and array.ndim <= 32
    return net


@FUZZ
@given(st.binary(max_size=600))
def test_caffe_reader_on_random_bytes(data: bytes) -> None:
    read_caffe(data)


@FUZZ
@given(st.one_of(mutations(VALID_V2), mutations(VALID_V1)))
def test_caffe_reader_on_cut_and_mutated_nets(data: bytes) -> None:
    read_caffe(data)


HUGE = st.one_of(
    st.integers(0, 8),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**62, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)


@FUZZ
@given(
    dims=st.lists(HUGE, max_size=40),
    values=st.integers(0, 64),
    legacy=st.booleans(),
)
def test_caffe_declared_shapes_beyond_the_data_are_refused_without_allocating(
    dims: list[int], values: int, legacy: bool
) -> None:
    """Dimensions whose product overflows 64 bits, exceeds Caffe's limits or the data: refused
    with CaffeFormatError, and nothing the size of the declared shape is allocated."""
    data = caffemodel(blob(dims, floats(values), legacy=legacy), v1=legacy)
    tracemalloc.start()
    try:
        net = read_caffe(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    if net is not None:
        assert net.layers[0].blobs[0].size == values


@FUZZ
@given(length=HUGE, field=st.sampled_from([1, 2, 100]))
def test_caffe_declared_lengths_beyond_the_file_are_refused(length: int, field: int) -> None:
    data = key(field, 2) + varint(length) + b"\x0a\x01a"
    start = time.perf_counter()
    read_caffe(data)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize(
    "dims",
    [[2**32, 2**32], [2**62, 4], [2**40, 2**40, 0, 0], [2**64 - 1], [1] * 100_000],
    ids=["overflow-to-0", "overflow-to-0-b", "empty-but-huge", "negative", "100000-axes"],
)
def test_caffe_shapes_that_fooled_the_reader(dims: list[int]) -> None:
    """Found by the fuzzing above: a product of dimensions wrapping to 0 matched an empty blob
    and reached numpy's reshape (ValueError); 100,000 axes made a 300 kB message."""
    with pytest.raises(CaffeFormatError, match=r"blob 0: .*(axes|dimension)") as info:
        parse_caffemodel(caffemodel(blob(dims, b"")), "f.caffemodel")
    assert len(str(info.value)) < 300


# --------------------------------------------------------------------------- config reader
def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config (sections and fields)."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{name}.")
    return keys


KEYS = config_keys()
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["sgd", "adamw", "poly", "1e-4", "nan", "-inf", "1e400", "demo"]),
)
NAMES = st.one_of(
    st.sampled_from([k.rsplit(".", 1)[-1] for k in KEYS] + ["_base_"]), st.text(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=12,
)
SECTIONS = st.dictionaries(
    st.sampled_from([k for k in KEYS if "." not in k]) | NAMES,
    st.one_of(st.dictionaries(NAMES, VALUES, max_size=5), VALUES),
    max_size=5,
)
YAMLISH = st.lists(
    st.sampled_from(list("ab:-_[]{}&*!#|>'\",. \n\t01e+") + ["optim", "lr", "  ", ": ", "- "]),
    max_size=60,
).map("".join)
OVERRIDES = st.lists(
    st.builds(
        lambda key, value: f"{key}={value}",
        st.sampled_from(KEYS) | st.text(max_size=10),
        YAMLISH | st.builds(lambda v: yaml.safe_dump(v, default_flow_style=True), VALUES),
    ),
    max_size=4,
)


def read_config(source, overrides: list[str] | None = None) -> Config | None:
    try:
        return load_config(source, overrides)
    except ConfigError as err:
        assert len(str(err)) < 20_000
        return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=st.one_of(YAMLISH, st.text(max_size=200)))
def test_config_reader_on_random_yaml_text(folder, text: str) -> None:
    path = folder / "random.yaml"
    path.write_text(text)
    read_config(path)


@FUZZ
@given(data=SECTIONS)
def test_config_reader_on_random_nested_mappings(folder, data: dict) -> None:
    read_config(data)
    path = folder / "dumped.yaml"
    path.write_text(yaml.safe_dump(data))
    read_config(path)


@FUZZ
@given(overrides=OVERRIDES)
def test_config_overrides_on_random_keys_and_values(overrides: list[str]) -> None:
    config = read_config("demo", overrides)
    if config is not None:
        config.to_yaml()  # what a run writes: finite and printable


def billion_laughs(levels: int, prefix: str = "") -> str:
    """YAML whose anchors repeat 9-fold per level: 9 ** levels values once expanded."""
    lines = [f"{prefix}l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    for i in range(1, levels):
        lines.append(f"{prefix}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "data:\n  options:\n"
            + "\n".join("    " + line for line in billion_laughs(9).splitlines()),
            "more than",
        ),
        (billion_laughs(9, prefix="zz_") + "\noptim:\n  lr: *l8\n", "more than"),
        ("data:\n  options: &a {x: *a}\n", "refers to itself"),
        ("&a {data: {options: *a}}\n", "refers to itself"),
        ("data:\n  options:\n    x: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
        ("optim:\n  lr: " + "1" * 400 + "\n", "optim.lr"),
        ("optim:\n  weight_decay: .nan\n", "optim.weight_decay"),
        ("loss:\n  class_weights: [1, .inf]\n", "loss.class_weights"),
    ],
    ids=[
        "billion-laughs",
        "laughs-in-a-message",
        "recursive",
        "recursive-top",
        "deep",
        "10^400",
        "nan",
        "inf",
    ],  # fmt: skip
)
def test_config_inputs_that_crashed_or_hung_the_reader(tmp_path, text: str, message: str) -> None:
    """Found by the fuzzing above: YAML aliases expanding exponentially (in the merge, in an
    error message, in the run's config.yaml), recursive aliases and deep nesting
    (RecursionError), integers too large for a float (OverflowError), NaN / inf accepted."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert time.perf_counter() - start < 2 and len(str(info.value)) < 20_000
    assert str(path) in str(info.value)


def test_config_sources_that_are_not_readable_text(tmp_path) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00optim")
    with pytest.raises(ConfigError, match="binary.yaml"):
        load_config(tmp_path / "binary.yaml")
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("x" * 5000)  # a name too long for the file system
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config("demo", ["optim.lr=" + "1" * 400])
    with pytest.raises(ConfigError, match="more than"):
        load_config("demo", ["data.options=" + billion_laughs(9).replace("\n", ", ").join("{}")])


# --------------------------------------------------------------------------- image readers
def encoded(array: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
INDEX = np.random.default_rng(1).integers(0, 21, (12, 10), dtype=np.uint8)
REAL_FILES = {
    "rgb.png": encoded(RGB, "PNG"),
    "index.png": encoded(INDEX, "PNG"),
    "deep.png": encoded(INDEX.astype(np.uint16) * 3000, "PNG"),
    "photo.jpg": encoded(RGB, "JPEG", quality=90),
    "scan.tif": encoded(RGB, "TIFF"),
    "old.bmp": encoded(RGB, "BMP"),
}
PIXEL_LIMIT = 1 << 20


def read_images(folder, name: str, data: bytes) -> None:
    """Every image reader on ``data``: an image, or its own error naming the file."""
    path = folder / name
    path.write_bytes(data)
    try:
        image = load_image(path, max_image_pixels=PIXEL_LIMIT)
    except ValueError as err:
        assert str(path) in str(err)
    else:
        assert image.dtype.is_floating_point is False and image.shape[0] == 3
        assert image.shape[1] * image.shape[2] <= PIXEL_LIMIT
    try:
        tensor = read_rgb(path)
    except DatasetError as err:
        assert str(path) in str(err)
    else:
        assert tensor.shape[0] == 3
    try:
        read_index_png(path)
    except DatasetError as err:
        assert str(path) in str(err)


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_image_readers_on_random_bytes(folder, data: bytes, suffix: str) -> None:
    read_images(folder, f"random{suffix}", data)


@FUZZ
@given(st.data())
def test_image_readers_on_cut_and_mutated_files(folder, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(REAL_FILES)))
    read_images(folder, name, data.draw(mutations(REAL_FILES[name])))


@FUZZ
@given(width=HUGE.filter(lambda v: v < 2**31), height=HUGE.filter(lambda v: v < 2**31))
def test_declared_image_sizes_beyond_the_data(folder, width: int, height: int) -> None:
    """A PNG header declaring any size over a few bytes of data: refused (or a tiny image)."""
    import zlib

    data = bytearray(REAL_FILES["rgb.png"])
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    start = time.perf_counter()
    read_images(folder, "declared.png", bytes(data))
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1), (4, 6)])
def test_read_rgb_gives_writable_tensors_of_any_size(tmp_path, monkeypatch, size) -> None:
    """Found by the declared-size fuzzing: a 1 x 1 image came back as a tensor over PIL's
    read-only buffer (torch: "non-writable ... undefined behavior")."""
    import torch

    arrays = []
    from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: arrays.append(a) or from_numpy(a))
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / "tiny.png")
    assert read_rgb(tmp_path / "tiny.png").shape == (3, *size)
    assert arrays and all(a.flags.writeable for a in arrays)
