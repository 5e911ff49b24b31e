"""safetensors in and out: the file is read by the safetensors library itself (an
independent reader) with fcnkit's metadata in its header, and fcnkit loads it back like a
checkpoint (run directories, Segmenter, load_any, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fcnkit
from cli_fixtures import lite0_with_random_scores
from fcnkit.cli import main
from fcnkit.weights import load_any, load_model, save_checkpoint, save_safetensors

safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402

CLASSES = ["sky", "tree", "road"]
PALETTE = [[10, 20, 200], [0, 160, 0], [90, 90, 90]]


@pytest.fixture
def model() -> torch.nn.Module:
    net = lite0_with_random_scores(3)
    return net


def test_written_file_is_plain_safetensors_with_fcnkit_metadata(model, tmp_path: Path) -> None:
    path = save_safetensors(tmp_path / "m.safetensors", model, classes=CLASSES, palette=PALETTE)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        keys = set(f.keys())
    assert keys == set(model.state_dict())
    meta = json.loads(header["fcnkit"])
    assert header["model_name"] == meta["model_name"] == "fcn8s-efficientnet_lite0"
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE
    assert meta["preprocessing"] == json.loads(json.dumps(model.preprocessing.to_dict()))
    tensors = safetensors_torch.load_file(str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[key], value), key


def test_loads_back_with_identical_outputs_and_fp16_close(model, tmp_path: Path) -> None:
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        expected = model(x)
    save_safetensors(tmp_path / "m.safetensors", model, classes=CLASSES)
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["classes"] == CLASSES
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    save_safetensors(tmp_path / "h.safetensors", model, dtype=torch.float16)
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * (
        tmp_path / "m.safetensors"
    ).stat().st_size
    half, _ = load_model(tmp_path / "h.safetensors")
    with torch.no_grad():
        scores = half(x)
    assert next(half.parameters()).dtype == torch.float32  # fp16 storage, fp32 compute
    agree = (scores.argmax(1) == expected.argmax(1)).float().mean()
    assert agree > 0.99


def test_segmenter_and_load_any_take_the_file(model, tmp_path: Path) -> None:
    import numpy as np

    path = save_safetensors(tmp_path / "m.safetensors", model, classes=CLASSES, palette=PALETTE)
    segmenter = fcnkit.Segmenter(path)
    assert segmenter.classes_for() == CLASSES
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert segmenter.predict(image).shape == (48, 64)
    # a plain state dict as safetensors (another tool's file): the model name is needed
    safetensors_torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "plain.safetensors"),
    )
    with pytest.raises(ValueError, match="pass the model name"):
        load_any(tmp_path / "plain.safetensors")
    loaded, _ = load_any(
        tmp_path / "plain.safetensors", model_name="fcn8s-efficientnet_lite0", num_classes=3
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_corrupt_file_is_one_sentence_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match=r"broken\.safetensors could not be read as safetensors"):
        load_model(bad)


def test_cli_export_and_convert_write_safetensors(model, tmp_path: Path, capsys) -> None:
    save_checkpoint(tmp_path / "run/checkpoints/best.pt", model, classes=CLASSES, palette=PALETTE)
    run = str(tmp_path / "run")
    assert main(["export", run, "--out", str(tmp_path / "a.safetensors"), "--dtype", "fp16"]) == 0
    assert "safetensors fp16" in capsys.readouterr().out
    assert main(["convert", run, "--to", "safetensors", "--out", str(tmp_path / "b.st")]) == 0
    for name in ("a.safetensors", "b.st"):
        with safe_open(str(tmp_path / name), framework="pt") as f:
            assert json.loads(f.metadata()["fcnkit"])["classes"] == CLASSES
    assert main(["predict", str(tmp_path / "a.safetensors"), str(tmp_path / "run"), "--out",
                 str(tmp_path / "none")]) in (0, 2)  # fmt: skip
    code = main(["convert", run, "--to", "pt", "--out", str(tmp_path / "c.safetensors")])
    assert code == 2
    assert "--to pt but --out" in capsys.readouterr().err
