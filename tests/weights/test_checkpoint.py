"""Checkpoints: rebuilding without fetching backbone weights, per-head metadata, and
``load_any`` (checkpoints, weight entry names, weight files with a model name)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fcnkit
from fcnkit import weights as W
from fcnkit.models import register_model, unregister_model
from fcnkit.weights import entries as weight_entries
from fcnkit.weights import (
    head_classes,
    head_palette,
    load_any,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from fcnkit.weights import load as weight_load


class Mini(nn.Module):
    """Caffe-named mini FCN; ``modality`` recorded like the NYUD nets."""

    def __init__(self, num_classes: int, modality: str = "rgb") -> None:
        super().__init__()
        self.conv1_1 = nn.Conv2d(3, 4, 3, padding=1)
        self.score_fr = nn.Conv2d(4, num_classes, 1)
        self.modality = modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_fr(torch.relu(self.conv1_1(x)))


def _mini(num_classes: int, modality: str = "rgb") -> nn.Module:
    return Mini(num_classes, modality)


@pytest.fixture(autouse=True, scope="module")
def _test_model():
    register_model("test-ckpt-mini", description="test model", default_num_classes=5)(_mini)
    yield
    unregister_model("test-ckpt-mini")


def test_load_model_does_not_fetch_backbone_weights(tmp_path, monkeypatch) -> None:
    """The checkpoint holds every weight: ``backbone_weights`` (a torchvision download here)
    is not used to rebuild, but stays recorded."""
    torch.manual_seed(0)
    model = fcnkit.create_model("fcn32s-mobilenet_v3_large", 3)
    model.model_options["backbone_weights"] = "IMAGENET1K_V1"  # as if built with it
    path = save_checkpoint(tmp_path / "m.pt", model)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to fetch backbone weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    loaded, meta = load_model(path)
    assert meta["model_options"] == {"backbone_weights": "IMAGENET1K_V1"}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_multi_head_targets_and_palettes_round_trip(tmp_path) -> None:
    model = fcnkit.create_model("test-ckpt-mini", 3)
    targets = {"sem": ["a", "b", "c"], "geo": ["sky", "ground"]}
    palettes = {"sem": [(1, 2, 3), (4, 5, 6), (7, 8, 9)], "geo": [(9, 9, 9), (8, 8, 8)]}
    path = save_checkpoint(
        tmp_path / "m.pt",
        model,
        classes=targets["sem"],
        palette=palettes["sem"],
        targets=targets,
        palettes=palettes,
    )
    meta = load_checkpoint(path)
    assert meta["targets"] == targets
    assert meta["palettes"] == {h: [list(c) for c in p] for h, p in palettes.items()}
    assert head_classes(meta) == ["a", "b", "c"] and head_classes(meta, "geo") == ["sky", "ground"]
    assert head_palette(meta, "geo") == [[9, 9, 9], [8, 8, 8]]
    assert head_palette(meta) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    single = load_checkpoint(save_checkpoint(tmp_path / "s.pt", model, classes=["x"] * 3))
    assert single["targets"] is None and head_classes(single) == ["x"] * 3


def test_load_any_state_dict_file_needs_a_model_name(tmp_path) -> None:
    torch.manual_seed(0)
    model = fcnkit.create_model("test-ckpt-mini", 4)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match="--model NAME"):
        load_any(tmp_path / "w.pth")
    loaded, meta = load_any(tmp_path / "w.pth", model_name="test-ckpt-mini", num_classes=4)
    assert meta["model_name"] == "test-ckpt-mini" and meta["num_classes"] == 4
    assert torch.equal(loaded.score_fr.weight, model.score_fr.weight)
    assert not loaded.training
    # a checkpoint still rebuilds its own model
    save_checkpoint(tmp_path / "c.pt", model, classes=list("abcd"))
    again, meta = load_any(tmp_path / "c.pt")
    assert meta["classes"] == list("abcd") and torch.equal(again.conv1_1.bias, model.conv1_1.bias)
    with pytest.raises(FileNotFoundError, match="no checkpoint, run directory or weights file"):
        load_any(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown weights 'no-such-entry'"):
        load_any("no-such-entry")


def test_load_any_weight_entry_infers_model_classes_and_modality(tmp_path, monkeypatch) -> None:
    """A known entry made for one model builds that model (its class count, a NYUD entry's
    modality) from the entry's file."""
    torch.manual_seed(0)
    source = fcnkit.create_model("test-ckpt-mini", 2, modality="hha")
    monkeypatch.setenv("FCNKIT_WEIGHTS_DIR", str(tmp_path))
    torch.save(source.state_dict(), tmp_path / "mini-hha.pth")
    entry = W.WeightEntry(
        name="test-mini-hha",
        description="test entry",
        kind="local-test",
        models=("test-ckpt-mini",),
        source="test",
        license="test",
        preprocessing="caffe-nyud-hha",
        file_name="mini-hha.pth",
        num_classes=2,
        modality="hha",
    )
    trunk = W.WeightEntry(**{**entry.__dict__, "name": "test-mini-trunk", "num_classes": None})
    monkeypatch.setattr(
        weight_entries, "_ENTRIES", {"test-mini-hha": entry, "test-mini-trunk": trunk}
    )
    monkeypatch.setitem(
        weight_load._LOADERS, "local-test", lambda m, p, e: weight_load._load_torch_file(m, p)
    )
    model, meta = load_any("test-mini-hha")
    assert meta["model_name"] == "test-ckpt-mini" and meta["num_classes"] == 2
    assert model.modality == "hha" and meta["model_options"] == {"modality": "hha"}
    assert model.preprocessing.name == "caffe-nyud-hha"
    assert torch.equal(model.score_fr.weight, source.score_fr.weight)
    with pytest.raises(ValueError, match="modality='hha'.*built with modality='rgb'"):
        load_any("test-mini-hha", model_options={"modality": "rgb"})
    with pytest.raises(ValueError, match="without a segmentation score layer"):
        load_any("test-mini-trunk")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_written(tmp_path, bad: float) -> None:
    """Issue 12 §0: a checkpoint is always a usable model; the file already there survives."""
    model = fcnkit.create_model("test-ckpt-mini", 3)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()
    with torch.no_grad():
        model.score_fr.weight[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"refusing to write .*score_fr.weight.*NaN or inf"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left
