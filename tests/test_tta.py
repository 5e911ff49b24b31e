"""Multi-scale + flip test-time augmentation: ``dense_scores(scales=)``, ``Segmenter(scales=)``,
``fcnkit eval / predict --scales`` -- one implementation for validation, eval and Segmenter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cli_fixtures import TinyNet
from fcnkit.cli import main
from fcnkit.data import build_transforms, create_dataset
from fcnkit.inference import Segmenter, dense_scores
from fcnkit.metrics import ConfusionMatrix
from fcnkit.models import create_model, register_model, unregister_model
from fcnkit.weights import save_checkpoint

SCALES = (0.75, 1.0, 1.25)


def tiny(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return TinyNet(num_classes).eval()


def test_scale_one_alone_is_no_tta_exactly() -> None:
    model, x = tiny(), torch.randn(2, 3, 21, 30)
    for flip in (False, True):
        plain = dense_scores(model, x, flip=flip)
        assert torch.equal(dense_scores(model, x, flip=flip, scales=[1]), plain)
    image = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    seg = Segmenter(model, preprocessing="caffe-voc", tta=True)
    one = Segmenter(model, preprocessing="caffe-voc", tta=True, scales=(1.0,))
    assert torch.equal(one.scores(image), seg.scores(image))


def ramp_image(h: int, w: int) -> torch.Tensor:
    """Channels affine in (row, column): bilinear resizing reproduces an affine function away
    from the border (exactly; antialiased shrinking, whose normalised taps are not exactly
    centred, to ~1e-3 here), so a pointwise linear net is scale-equivariant there: the scores
    at every scale, resized back, equal the plain scores."""
    rows, cols = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    i, j = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([j - w / 2, i - h / 2, (i - j) / 2])[None] / 10


@pytest.mark.parametrize("flip", [False, True])
def test_a_scale_equivariant_net_gives_the_same_scores_and_labels(flip: bool) -> None:
    torch.manual_seed(1)
    pointwise = nn.Conv2d(3, 6, 1).eval()
    x = ramp_image(61, 47)  # odd sizes: 0.75 x 61 = 45.75 -> 46 rows, 1.25 x 47 -> 59 columns
    plain = dense_scores(pointwise, x)
    multi = dense_scores(pointwise, x, scales=SCALES, flip=flip)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    torch.testing.assert_close(multi[inner], plain[inner], atol=3e-3, rtol=0)
    labels = plain.argmax(1)[0][inner[2:]]
    assert len(labels.unique()) >= 3  # label boundaries cross the inner region
    top2 = plain[inner].topk(2, dim=1).values[0]
    clear = top2[0] - top2[1] > 1e-2  # no near-tie for the 3e-3 to flip
    assert clear.float().mean() > 0.9
    assert torch.equal(multi.argmax(1)[0][inner[2:]][clear], labels[clear])


def test_flip_and_scales_combine() -> None:
    """With flip, every scale is flipped too: the mean of the multi-scale scores of the image
    and of its mirror image (mirrored back), since resizing commutes with mirroring."""
    model, x = tiny(), torch.randn(1, 3, 19, 26)
    multi = dense_scores(model, x, scales=SCALES)
    mirrored = dense_scores(model, x.flip(-1), scales=SCALES).flip(-1)
    both = dense_scores(model, x, scales=SCALES, flip=True)
    torch.testing.assert_close(both, (multi + mirrored) / 2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both, dense_scores(model, x, flip=True), atol=1e-3)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (9, 11), (1, 16)])
def test_output_is_input_sized_for_odd_sizes(h: int, w: int) -> None:
    seg = Segmenter(tiny(), preprocessing="caffe-voc", tta=True, scales=SCALES)
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert seg.predict(image).shape == (h, w)
    assert tuple(seg.scores(image).shape) == (5, h, w)
    tiled = Segmenter(tiny(), preprocessing="caffe-voc", scales=SCALES, sliding_window=24)
    assert tiled.predict(image).shape == (h, w)


@pytest.mark.parametrize("scales", [(), (0.0,), (1.0, -1.0), (float("nan"),)])
def test_bad_scales_are_refused(scales) -> None:
    with pytest.raises(ValueError, match=r"scales: expected one or more numbers > 0"):
        Segmenter(tiny(), preprocessing="caffe-voc", scales=scales)


@pytest.fixture
def run_dir(tmp_path):
    register_model("test-tta-tiny", description="test model", default_num_classes=7)(TinyNet)
    torch.manual_seed(0)
    model = create_model("test-tta-tiny")
    classes = create_dataset("synthetic", split="val", num_samples=1, size=32).classes
    save_checkpoint(tmp_path / "run/checkpoints/best.pt", model, classes=classes)
    yield tmp_path / "run"
    unregister_model("test-tta-tiny")


def test_eval_and_predict_scales_run_the_segmenters_path(run_dir, tmp_path, capsys) -> None:
    """fcnkit eval --scales --tta scores what Segmenter(scales=, tta=True) predicts, image by
    image; fcnkit predict --scales writes those label maps."""
    argv = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val", "--tta"]
    argv += ["--option", "num_samples=3", "--option", "size=33", "--batch-size", "2"]
    assert main([*argv, "--scales", "0.75", "1", "1.25", "--out", str(tmp_path / "e")]) == 0
    record = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert record["scales"] == [0.75, 1.0, 1.25] and record["tta"] is True
    seg = Segmenter(run_dir, tta=True, scales=SCALES)
    data = create_dataset("synthetic", split="val", num_samples=3, size=33)
    cm = ConfusionMatrix(7)
    for i in range(3):
        sample = build_transforms(False, seg.preprocessing)(data[i])
        image = data[i]["image"]
        cm.update(torch.as_tensor(seg.predict(image))[None], sample["label"][None])
    assert record["confusion"]["main"] == cm.matrix.tolist()
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0  # no --scales: other numbers
    plain = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert plain["scales"] == [1.0] and plain["confusion"] != record["confusion"]

    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (23, 31, 3), np.uint8)).save(picture)
    out = tmp_path / "pred"
    assert main(["predict", str(run_dir), str(picture), "--out", str(out), "--tta",
                 "--scales", "0.75", "1", "1.25"]) == 0  # fmt: skip
    label = np.asarray(Image.open(out / "labels" / "in.png"))
    assert np.array_equal(label, seg.predict(picture))
    capsys.readouterr()
