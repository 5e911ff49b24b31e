"""``fcnkit weights``, ``fcnkit convert`` and ``fcnkit heatmap``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.cli import CLIError, main
from fcnkit.cli.weights import resolve_class
from fcnkit.heatmap import class_heatmap
from fcnkit.weights import imagenet_classes, list_weights, load_model


def caffe_helpers() -> ModuleType:
    """``tests/weights/test_caffe.py`` (its caffemodel encoder) as a module, whatever the
    order in which pytest collects the test folders."""
    key = "_weights_cli_caffe_helpers"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "weights" / "test_caffe.py"
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def skimage_data():
    """scikit-image's sample photos (only the photo tests need them)."""
    return pytest.importorskip("skimage.data")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FCNKIT_WEIGHTS_DIR", str(tmp_path / "fcnkit"))
    return tmp_path


def test_weights_lists_entries_and_availability(empty_caches, capsys) -> None:
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.strip()}
    assert rows["efficientnet_lite0-imagenet1k"] == "yes"
    assert rows["vgg16-hed-bsds500"] == "yes"
    assert rows["vgg16-imagenet1k-v1"] == "no" and rows["fcn8s-heavy-pascal"] == "no"
    assert str(empty_caches / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in out
    entries = list_weights()  # the pip-packaged sets installed here are found, the rest is not
    here = sum(e.package is not None and e.available for e in entries)
    assert here >= 2 and f"{here} of {len(entries)} available on this machine" in out


def test_weights_now_available_after_placing_the_file(empty_caches, capsys) -> None:
    (empty_caches / "fcnkit").mkdir()
    (empty_caches / "fcnkit" / "fcn8s-heavy-pascal.caffemodel").write_bytes(b"")
    main(["weights"])
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["fcn8s-heavy-pascal", "yes"] for line in out.splitlines())


def test_weights_details_of_one_entry(capsys) -> None:
    assert main(["weights", "vgg16-hed-bsds500"]) == 0
    out = capsys.readouterr().out
    assert "license: MIT" in out and "HED" in out and "NOT the ImageNet classifier" in out
    assert "preprocessing: caffe-voc" in out and "available: yes:" in out
    assert main(["weights", "nope"]) == 2
    assert "unknown weights 'nope'" in capsys.readouterr().err


def test_convert_caffemodel_to_checkpoint(tmp_path, capsys) -> None:
    layers_from_state, net = caffe_helpers().layers_from_state, caffe_helpers().net

    import fcnkit

    state = {
        k: torch.randn_like(v)
        for k, v in fcnkit.create_model("fcn32s-alexnet", 4).state_dict().items()
    }
    caffemodel = tmp_path / "fcn-alexnet-pascal.caffemodel"  # named like the known entry
    caffemodel.write_bytes(net(layers_from_state(state, v1=True)))
    out = tmp_path / "fcn-alexnet.pt"
    assert main(["convert", str(caffemodel), "--model", "fcn32s-alexnet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "V1" in printed and "4 classes" in printed and f"wrote {out}" in printed
    model, meta = load_model(out)
    assert meta["model_name"] == "fcn32s-alexnet" and meta["num_classes"] == 4  # from score_fr
    assert meta["preprocessing"]["name"] == "caffe-voc" and meta["source"] == str(caffemodel)
    assert meta["classes"] is None  # the entry's 21 VOC classes do not fit 4 outputs
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_convert_errors_are_user_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\x05ab")
    args = ["convert", str(bad), "--model", "fcn8s", "--out", str(tmp_path / "x.pt")]
    assert main(args) == 2
    assert f"{bad}: byte 0:" in capsys.readouterr().err
    args[1] = str(tmp_path / "absent.caffemodel")
    assert main(args) == 2
    assert "no caffemodel at" in capsys.readouterr().err
    args = ["convert", str(bad), "--model", "fcn8s", "--out", str(tmp_path / "x.pt")]
    assert main([*args, "--option", "modality"]) == 2  # the shared cli.data.parse_options
    assert "--option expects key=value" in capsys.readouterr().err


def test_convert_refuses_a_nyud_entry_for_another_modality(tmp_path, capsys) -> None:
    layer_v2, net = caffe_helpers().layer_v2, caffe_helpers().net

    caffemodel = tmp_path / "nyud-fcn32s-hha-heavy.caffemodel"  # named like the known entry
    caffemodel.write_bytes(net([layer_v2("conv1_1", "Convolution", [np.ones((1, 3, 1, 1))])]))
    args = ["convert", str(caffemodel), "--model", "fcn32s-nyud", "--out", str(tmp_path / "x.pt")]
    assert main([*args, "--option", "modality=rgb"]) == 2
    assert "modality='hha'" in capsys.readouterr().err
    assert main([*args[:3], "fcn8s", *args[4:]]) == 2
    assert "made for fcn32s-nyud, not 'fcn8s'" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_resolve_class_names() -> None:
    classes = imagenet_classes()
    assert resolve_class("tabby cat", classes) == 281
    assert resolve_class("Tabby", classes) == 281
    assert resolve_class("espresso", classes) == 967
    assert resolve_class("281", classes) == 281
    with pytest.raises(CLIError, match="ambiguous"):
        resolve_class("cat", classes)
    with pytest.raises(CLIError, match="did you mean 'espresso'"):
        resolve_class("expresso", classes)
    with pytest.raises(CLIError, match="out of range"):
        resolve_class("1000", classes)


def test_class_heatmap_is_high_on_the_object() -> None:
    """Fig. 2 on a real photo: a cat (left) beside an espresso (right)."""
    photos = skimage_data()
    cat = np.asarray(Image.fromarray(photos.chelsea()).resize((300, 300)))
    cup = np.asarray(Image.fromarray(photos.coffee()).resize((300, 300)))
    image = np.concatenate([cat, cup], axis=1)
    result = class_heatmap(image, 967, size=224)
    half = result.prob.shape[1] // 2
    assert result.prob.shape == (7, 14) and result.image.shape == (224, 448, 3)
    assert result.prob[:, half:].mean() > 5 * result.prob[:, :half].mean()
    assert {"espresso", "tabby", "tiger cat", "Egyptian cat"} & {n for n, _ in result.top5[:2]}


def test_heatmap_command_writes_a_png(tmp_path, capsys) -> None:
    image = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data().chelsea()).save(image)
    out = tmp_path / "heatmap.png"
    args = ["heatmap", str(image), "--class", "tabby cat", "--out", str(out), "--size", "224"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "heatmap of 'tabby' (class 281)" in printed
    top5 = [line.split("%", 1)[1].strip() for line in printed.splitlines() if "%" in line]
    assert "tabby" in top5
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 100
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 20  # a drawn figure, not a blank canvas


def test_heatmap_errors(tmp_path, capsys) -> None:
    assert main(["heatmap", str(tmp_path / "none.png")]) == 2
    assert "no image at" in capsys.readouterr().err
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert main(["heatmap", str(text)]) == 2
    assert "not an image" in capsys.readouterr().err
    assert main(["heatmap", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
