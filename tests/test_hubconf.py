"""hubconf.py through torch.hub itself (source="local", the way users load a clone)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fcnkit
from fcnkit.weights import save_safetensors

REPO = Path(__file__).resolve().parents[1]


def test_hub_lists_every_model() -> None:
    """torch.hub.list (GitHub only) lists a hubconf's public callables: the same here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    names = {f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")}
    expected = {n.replace("-", "_") for n in fcnkit.list_models() if not n.startswith("test-")}
    assert expected <= names
    assert "segmenter" in names


def test_hub_load_builds_the_model_and_takes_weights(tmp_path: Path) -> None:
    model = torch.hub.load(
        str(REPO), "fcn8s_efficientnet_lite0", source="local", trust_repo=True,
        num_classes=4, backbone_weights=None,
    )  # fmt: skip
    assert model.model_name == "fcn8s-efficientnet_lite0" and model.num_classes == 4
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    path = save_safetensors(tmp_path / "m.safetensors", model.eval())
    again = torch.hub.load(
        str(REPO), "fcn8s_efficientnet_lite0", source="local", trust_repo=True,
        num_classes=4, weights=str(path),
    )  # fmt: skip
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))
    seg = torch.hub.load(str(REPO), "segmenter", str(path), source="local", trust_repo=True)
    assert seg.predict(torch.zeros(3, 40, 52)).shape == (40, 52)


def test_hub_paper_model_geometry() -> None:
    model = torch.hub.load(str(REPO), "fcn8s", source="local", trust_repo=True, num_classes=21)
    assert model.crop_offsets == {"score_pool4c": 5, "score_pool3c": 9, "score": 31}
    with pytest.raises(TypeError):
        torch.hub.load(str(REPO), "fcn8s", source="local", trust_repo=True, no_such_option=1)
