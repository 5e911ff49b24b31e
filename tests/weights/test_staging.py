"""Staged init from runs: the NYUD late-fusion net from its two single-stream runs.

The reference (``nyud-fcn32s-color-hha/solve.py``) trains the colour and HHA nets separately,
then transplants them into the fusion net under the ``color`` / ``hha`` suffixes
(``surgery.transplant(solver.net, color_net, suffix='color')``, likewise ``'hha'``) and
fine-tunes it (``solver.prototxt``: base_lr 1e-12).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnkit.models.registry import register_model, unregister_model
from fcnkit.models.vgg import nyud_preprocessing
from fcnkit.preprocessing import CAFFE_NYUD_COLOR_HHA, Preprocessing
from fcnkit.weights import create_model
from fcnkit.weights.checkpoint import save_checkpoint
from fcnkit.weights.staging import init_from_run, init_from_runs, missing_init_sources


class MiniNYUD(nn.Module):
    """Caffe-named mini NYUD FCN: one trunk per stream (``color``/``hha`` for ``rgb+hha``),
    scores summed 0.5 / 0.5 before the shared ``upscore``, as the reference's fusion net;
    ``skip`` adds a ``score_pool4`` per trunk (a 16s-like net)."""

    def __init__(self, num_classes: int, modality: str = "rgb", skip: bool = False) -> None:
        super().__init__()
        self.modality = modality
        self.trunks = ("color", "hha") if modality == "rgb+hha" else ("",)
        for t in self.trunks:
            self.add_module(f"conv1_1{t}", nn.Conv2d(3, 4, 3, padding=1))
            self.add_module(f"score_fr{t}", nn.Conv2d(4, num_classes, 1))
            if skip:
                self.add_module(f"score_pool4{t}", nn.Conv2d(4, num_classes, 1))
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, 1, bias=False)
        self.preprocessing = nyud_preprocessing(modality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(3, 1)
        scores = [
            getattr(self, f"score_fr{t}")(torch.relu(getattr(self, f"conv1_1{t}")(p)))
            for t, p in zip(self.trunks, parts, strict=True)
        ]
        return self.upscore(sum(scores) / len(scores))


@pytest.fixture(autouse=True, scope="module")
def _mini_model():
    register_model("test-staging-nyud", description="test", default_num_classes=3)(MiniNYUD)
    yield
    unregister_model("test-staging-nyud")


def _run(tmp_path, name: str, modality: str, seed: int, prep: Preprocessing | None = None):
    torch.manual_seed(seed)
    model = create_model("test-staging-nyud", 3, modality=modality)
    for key, p in model.named_parameters():
        if key.startswith("upscore"):  # fixed and shared, as the reference's bilinear one
            p.data = torch.arange(9.0).view(3, 3, 1, 1) / 10
        else:
            nn.init.normal_(p)
    if prep is not None:
        model.preprocessing = prep
    save_checkpoint(tmp_path / name / "checkpoints" / "last.pt", model)
    return model, tmp_path / name


def test_late_fusion_from_a_colour_and_an_hha_run(tmp_path) -> None:
    color, color_dir = _run(tmp_path, "nyud-fcn32s-color", "rgb", 0)
    hha, hha_dir = _run(tmp_path, "nyud-fcn32s-hha", "hha", 1)
    fused = create_model("test-staging-nyud", 3, modality="rgb+hha")
    report = init_from_run(fused, {"color": str(color_dir), "hha": str(hha_dir)})
    # transplanted as they are (no channel reversal: both HHA nets read HHA in file order)
    for t, single in (("color", color), ("hha", hha)):
        for layer in ("conv1_1", "score_fr"):
            for p in ("weight", "bias"):
                got = getattr(getattr(fused, f"{layer}{t}"), p)
                assert torch.equal(got, getattr(getattr(single, layer), p)), (t, layer, p)
    assert torch.equal(fused.upscore.weight, color.upscore.weight)  # shared
    assert fused.preprocessing is CAFFE_NYUD_COLOR_HHA and report["hha_reversed"] is False
    assert report["source"] == {
        "color": str(color_dir / "checkpoints" / "last.pt"),
        "hha": str(hha_dir / "checkpoints" / "last.pt"),
    }
    # the fused net is 0.5 x (colour net on colour + HHA net on HHA) on the fed input
    image = torch.randint(0, 256, (1, 6, 5, 4), dtype=torch.uint8)
    with torch.no_grad():
        both = fused(fused.preprocessing.normalize(image))
        one = color(color.preprocessing.normalize(image[:, :3]))
        other = hha(hha.preprocessing.normalize(image[:, 3:]))
    torch.testing.assert_close(both, (one + other) / 2, atol=1e-4, rtol=1e-4)


def test_new_layers_of_the_fused_net_get_the_paper_init(tmp_path) -> None:
    """A 16s-like fusion from 32s-like runs: score_pool4color / score_pool4hha are new, zero."""
    _, color_dir = _run(tmp_path, "c", "rgb", 0)
    _, hha_dir = _run(tmp_path, "h", "hha", 1)
    fused = create_model("test-staging-nyud", 3, modality="rgb+hha", skip=True)
    report = init_from_runs(fused, {"color": color_dir, "hha": hha_dir})
    assert sorted(report["new_layers"]) == [
        f"score_pool4{t}.{p}" for t in ("color", "hha") for p in ("bias", "weight")
    ]
    assert not fused.score_pool4color.weight.any() and not fused.score_pool4hha.bias.any()


def test_a_run_trained_on_reversed_hha_keeps_computing_the_same(tmp_path) -> None:
    """fcnkit runs made before fcnkit fed HHA as the reference (their preprocessing reversed
    HHA, "BGR"): the fused trunk gets their conv1_1 reversed and the mean in file order, so
    it computes exactly what the run computed."""
    old = Preprocessing("old-hha", "BGR", 255.0, (132.431, 94.076, 118.477), (1.0,) * 3)
    color, color_dir = _run(tmp_path, "c", "rgb", 0)
    hha, hha_dir = _run(tmp_path, "h", "hha", 1, prep=old)
    fused = create_model("test-staging-nyud", 3, modality="rgb+hha")
    report = init_from_runs(fused, {"color": color_dir, "hha": hha_dir})
    assert report["hha_reversed"] is True
    assert torch.equal(fused.conv1_1hha.weight, hha.conv1_1.weight.flip(1))
    assert fused.preprocessing.mean[3:] == (118.477, 94.076, 132.431)
    image = torch.randint(0, 256, (1, 6, 5, 4), dtype=torch.uint8)
    with torch.no_grad():
        both = fused(fused.preprocessing.normalize(image))
        one = color(color.preprocessing.normalize(image[:, :3]))
        other = hha(old.normalize(image[:, 3:]))
    torch.testing.assert_close(both, (one + other) / 2, atol=1e-4, rtol=1e-4)


def test_late_fusion_sources_are_checked(tmp_path) -> None:
    _, color_dir = _run(tmp_path, "c", "rgb", 0)
    _, hha_dir = _run(tmp_path, "h", "hha", 1)
    fused = create_model("test-staging-nyud", 3, modality="rgb+hha")
    with pytest.raises(ValueError, match=r"\{color: RUN, hha: RUN\}.*\['color', 'depth'\]"):
        init_from_runs(fused, {"color": color_dir, "depth": hha_dir})
    with pytest.raises(ValueError, match=r"hha stream needs a modality='hha' run"):
        init_from_runs(fused, {"color": color_dir, "hha": color_dir})
    single = create_model("test-staging-nyud", 3, modality="hha")
    with pytest.raises(ValueError, match=r"late-fusion net.*modality='hha'"):
        init_from_run(single, {"color": color_dir, "hha": hha_dir})
    other = create_model("test-staging-nyud", 5, modality="rgb+hha")
    with pytest.raises(ValueError, match=r"3 classes, the model 5"):
        init_from_runs(other, {"color": color_dir, "hha": hha_dir})
    assert missing_init_sources({"color": color_dir, "hha": tmp_path / "nope"}) == [
        str(tmp_path / "nope")
    ]
    assert missing_init_sources(str(color_dir)) == []
