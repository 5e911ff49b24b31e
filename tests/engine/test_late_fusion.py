"""NYUD late fusion through the training engine (paper Sec. 5; the reference's
``nyud-fcn32s-color-hha/solve.py``): the colour and HHA runs are trained first, then the
fusion run starts from both (``train.init_from: {color: RUN, hha: RUN}``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fcnkit.engine.config import load_config
from fcnkit.engine.train import train
from fcnkit.models.registry import register_model, unregister_model
from fcnkit.models.vgg import nyud_preprocessing
from fcnkit.weights import load_checkpoint


def _nyud_writer():
    """``tests/data/test_nyud.py``'s ``write_nyud`` (real NYUD layout in a folder)."""
    key = "_late_fusion_nyud_helpers"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "data" / "test_nyud.py"
        spec = importlib.util.spec_from_file_location(key, path)
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key].write_nyud


class TinyNYUD(nn.Module):
    """Caffe-named tiny NYUD FCN (one trunk per stream of ``rgb+hha``, scores averaged)."""

    def __init__(self, num_classes: int, modality: str = "rgb") -> None:
        super().__init__()
        self.modality = modality
        self.trunks = ("color", "hha") if modality == "rgb+hha" else ("",)
        for t in self.trunks:
            self.add_module(f"conv1_1{t}", nn.Conv2d(3, 4, 3, padding=1))
            self.add_module(f"score_fr{t}", nn.Conv2d(4, num_classes, 1))
        self.preprocessing = nyud_preprocessing(modality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(3, 1)
        scores = [
            getattr(self, f"score_fr{t}")(torch.relu(getattr(self, f"conv1_1{t}")(p)))
            for t, p in zip(self.trunks, parts, strict=True)
        ]
        return sum(scores) / len(scores)


@pytest.fixture(scope="module")
def nyud_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_model("test-late-fusion", description="test", default_num_classes=40)(TinyNYUD)
    root = tmp_path_factory.mktemp("nyud")
    rng = np.random.default_rng(0)
    write = _nyud_writer()
    for n in (5001, 5002, 5003):
        write(root, n, rng.integers(0, 41, (5, 6)), np.full((5, 6), 2551))
    (root / "train.txt").write_text("5001\n5002\n")
    (root / "val.txt").write_text("5003\n")
    (root / "test.txt").write_text("5003\n")
    yield root
    unregister_model("test-late-fusion")


def _config(recipe: str, root: Path, **extra: str) -> dict:
    overrides = [
        f"data.root={root}", "model.name=test-late-fusion", "model.weights=null",
        "data.val_split=val", "data.augment={}", "train.steps=1", "train.eval_every=1",
        "train.num_sample_images=0", "train.device=cpu", "data.num_workers=0",
        *(f"{k}={v}" for k, v in extra.items()),
    ]  # fmt: skip
    return load_config(recipe, overrides).to_dict()


def test_fusion_starts_from_the_colour_and_hha_runs(nyud_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for stream in ("color", "hha"):
        train(_config(f"nyud-fcn32s-{stream}", nyud_root), runs / stream, progress=False)
    extra = {"train.init_from.color": str(runs / "color"), "train.init_from.hha": str(runs / "hha")}
    fusion = _config("nyud-fcn32s-rgbhha", nyud_root, **extra)
    assert fusion["optim"]["lr"] == 1e-12  # nyud-fcn32s-color-hha/solver.prototxt base_lr
    train(fusion, runs / "fusion", progress=False)
    events = (runs / "fusion" / "log.jsonl").read_text()
    assert '"event": "init_from"' in events
    color = load_checkpoint(runs / "color" / "checkpoints" / "best.pt")["model"]
    hha = load_checkpoint(runs / "hha" / "checkpoints" / "best.pt")["model"]
    fused = load_checkpoint(runs / "fusion" / "checkpoints" / "last.pt")["model"]
    # one step at lr 1e-12 moves nothing visible: the streams are the runs' weights
    torch.testing.assert_close(fused["conv1_1color.weight"], color["conv1_1.weight"])
    torch.testing.assert_close(fused["conv1_1hha.weight"], hha["conv1_1.weight"])
    torch.testing.assert_close(fused["score_frhha.bias"], hha["score_fr.bias"])


def test_fusion_with_a_missing_stream_run_names_it(nyud_root: Path, tmp_path: Path) -> None:
    from fcnkit.engine.errors import MissingStageError

    extra = {"train.init_from.color": str(tmp_path / "none-c"), "train.init_from.hha": "x/y"}
    with pytest.raises(MissingStageError, match="none-c.*x/y|x/y.*none-c"):
        train(_config("nyud-fcn32s-rgbhha", nyud_root, **extra), tmp_path / "f", progress=False)
    assert not (tmp_path / "f").exists()
