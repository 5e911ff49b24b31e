"""The model that ships inside the package (fcnkit/shipped/): present, intact, loadable
offline by name, and its model-card scores re-run from `fcnkit eval` on the real SIFT Flow
test split (where that data is present)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import fcnkit
from fcnkit.weights import get_weight_entry, shipped_models
from fcnkit.weights.entries import SHIPPED_DIR

NAME = "siftflow-fcn8s-lite0"
CARD = json.loads((SHIPPED_DIR / f"{NAME}.json").read_text())


def test_the_shipped_file_is_listed_and_intact() -> None:
    entry = get_weight_entry(NAME)
    assert entry in shipped_models() and entry.available
    data = entry.path().read_bytes()
    assert len(data) == CARD["size"] < 8 * 2**20  # fp16, small enough for a wheel
    assert hashlib.sha256(data).hexdigest() == CARD["sha256"]
    assert (SHIPPED_DIR / f"{NAME}.md").read_text().startswith(f"# Model card: `{NAME}`")


def test_loads_offline_by_name_with_its_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCNKIT_OFFLINE", "1")
    segmenter = fcnkit.Segmenter(NAME)
    classes = segmenter.classes_for()
    assert len(classes) == 33 and {"sky", "building", "road", "tree", "sea", "car"} <= set(classes)
    assert segmenter.model.model_name == CARD["model_name"]
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert segmenter.predict(image).shape == (120, 160)
    model = fcnkit.create_model(CARD["model_name"], 33, weights=NAME)
    assert model.weights == NAME


@pytest.mark.integration
def test_sky_over_a_real_outdoor_photo(shared_data: Path) -> None:
    """A SIFT Flow test photo (a highway under an open sky): its top rows are sky."""
    photo = shared_data / "siftflow/Images/spatial_envelope_256x256_static_8outdoorcategories"
    segmenter = fcnkit.Segmenter(NAME)
    labels = segmenter.predict(photo / "highway_bost374.jpg")
    sky = segmenter.classes_for().index("sky")
    assert (labels[:40] == sky).mean() > 0.9


@pytest.mark.integration
def test_model_card_scores_rerun_from_fcnkit_eval(shared_data: Path, tmp_path: Path) -> None:
    from fcnkit.cli import main

    out = tmp_path / "eval"
    argv = ["eval", NAME, "--dataset", "siftflow", "--root", str(shared_data / "siftflow"),
            "--split", "test", "--out", str(out), "--no-boundary-f", "--no-size-iu"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert 100 * metrics[key] == pytest.approx(CARD["metrics"][key], abs=0.051), key
