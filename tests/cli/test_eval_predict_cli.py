"""``fcnkit eval``, ``fcnkit predict`` and ``fcnkit export`` end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cli_fixtures import TinyNet as Tiny
from fcnkit.cli import main
from fcnkit.data import build_transforms, create_dataset, register_dataset
from fcnkit.data.registry import unregister_dataset
from fcnkit.inference import Segmenter
from fcnkit.metrics import BoundaryFScore, ConfusionMatrix, SizeIU
from fcnkit.models import create_model, register_model, unregister_model
from fcnkit.weights import save_checkpoint

PALETTE = [(10 * i, 255 - 10 * i, 3 * i) for i in range(7)]


def _tiny(num_classes: int) -> nn.Module:
    return Tiny(num_classes)


class TwoHeads(Tiny):
    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.geo = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = F.max_pool2d(torch.relu(self.conv(x)), 2, ceil_mode=True)
        up = lambda s: F.interpolate(s, size=x.shape[-2:], mode="bilinear")  # noqa: E731
        return {"sem": up(self.score(y)), "geo": up(self.geo(y))}


def _two_heads(num_classes: int) -> nn.Module:
    return TwoHeads(num_classes)


class SixChannels(Tiny):
    """Late-fusion-like input: RGB then HHA (6 channels)."""

    input_channels = 6

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)


def _six(num_classes: int) -> nn.Module:
    return SixChannels(num_classes)


class EvenOnly(Tiny):
    """Rejects odd sizes (as a model may reject an input while tracing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            raise ValueError(f"needs an even width, got {x.shape[-1]}")
        return super().forward(x)


def _even(num_classes: int) -> nn.Module:
    return EvenOnly(num_classes)


class TwoTargets(torch.utils.data.Dataset):
    """SIFT Flow-like: semantic + geometric labels; class "c" excluded from the means."""

    classes = ["a", "b", "c"]
    palette = PALETTE[:3]
    ignore_index = 255
    eval_exclude = ["c"]
    targets = {"sem": ["a", "b", "c"], "geo": ["sky", "ground"]}

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        image = torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8)
        sem, geo = torch.randint(0, 2, (16, 16), generator=g), torch.randint(0, 2, (16, 16))
        return {"image": image, "label": {"sem": sem, "geo": geo}, "id": str(i)}


def _two_targets(root=None, split="val") -> TwoTargets:
    return TwoTargets()


class VoidZero(torch.utils.data.Dataset):
    """Label 0 marks unlabelled pixels (``ignore_index`` 0, as NYUDv2's 40-class maps), not 255."""

    classes = ["void", "a", "b"]
    palette = PALETTE[:3]
    ignore_index = 0

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(10 + i)
        image = torch.randint(0, 256, (3, 12, 10), generator=g, dtype=torch.uint8)
        return {"image": image, "label": torch.randint(0, 3, (12, 10), generator=g), "id": str(i)}


def _void_zero(root=None, split="val") -> VoidZero:
    return VoidZero()


@pytest.fixture(autouse=True, scope="module")
def _test_entries():
    """Register this module's models and dataset while it runs only (so that every other
    test's ``list_models()`` sees the real registry)."""
    register_model("test-cli-tiny", description="test model", default_num_classes=7)(_tiny)
    register_model("test-cli-two-heads", description="test model", default_num_classes=3)(
        _two_heads
    )
    register_dataset("test-cli-two-targets", description="test", splits=("val",), needs_root=False)(
        _two_targets
    )
    register_dataset("test-cli-void-zero", description="test", splits=("val",), needs_root=False)(
        _void_zero
    )
    register_model("test-cli-six", description="test model", default_num_classes=3)(_six)
    register_model("test-cli-even", description="test model", default_num_classes=3)(_even)
    yield
    unregister_model("test-cli-tiny")
    unregister_model("test-cli-two-heads")
    unregister_model("test-cli-six")
    unregister_model("test-cli-even")
    unregister_dataset("test-cli-two-targets")
    unregister_dataset("test-cli-void-zero")


def test_eval_multi_head_model_on_multi_target_dataset(tmp_path, capsys) -> None:
    save_checkpoint(tmp_path / "m.pt", create_model("test-cli-two-heads"))
    argv = ["eval", str(tmp_path / "m.pt"), "--dataset", "test-cli-two-targets", "--split", "val"]
    assert main([*argv, "--out", str(tmp_path / "ev")]) == 0
    record = json.loads((tmp_path / "ev/metrics.json").read_text())
    sem, geo = record["metrics"]["heads"]["sem"], record["metrics"]["heads"]["geo"]
    assert record["metrics"]["head"] == "sem" and sem["excluded"] == ["c"]
    assert geo["classes"] == ["sky", "ground"] and geo["excluded"] == []
    assert sem["per_class_iu"][2] == 0  # "c" is predicted but never true: IU 0, not NaN
    iu = [v for v in sem["per_class_iu"][:2] if v is not None]
    assert sem["mean_iu"] == pytest.approx(sum(iu) / len(iu))  # "c" left out of the mean
    assert (tmp_path / "ev/confusion.png").is_file() and (
        tmp_path / "ev/confusion-geo.png"
    ).is_file()
    printed = capsys.readouterr().out
    assert "head geo" in printed and "sky" in printed and "(excluded)" in printed


def test_validation_and_eval_score_with_the_datasets_ignore_index(tmp_path) -> None:
    """A dataset whose ignore label is 0, not 255: validation during training and `fcnkit
    eval` leave the same pixels out and give the same figures."""
    from fcnkit.engine.distributed import DistInfo
    from fcnkit.engine.evaluate import make_eval_loader
    from fcnkit.engine.train import DataBundle, validate

    torch.manual_seed(0)
    model = create_model("test-cli-tiny", 3)
    save_checkpoint(tmp_path / "m.pt", model)
    data = VoidZero()
    bundle = DataBundle(data, data, data.classes, data.palette, eval_exclude=[], targets=None)
    loader = make_eval_loader(data, 2, preprocessing=model.preprocessing)
    val = validate(model, loader, 3, bundle, DistInfo())
    argv = ["eval", str(tmp_path / "m.pt"), "--dataset", "test-cli-void-zero", "--split", "val"]
    assert main([*argv, "--batch-size", "2", "--out", str(tmp_path / "ev")]) == 0
    record = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert val["confusion"] == record["confusion"]["main"]
    assert not any(val["confusion"][0])  # no "void" pixel is counted
    labels = torch.stack([data[i]["label"] for i in range(3)])
    assert val["num_pixels"] == record["metrics"]["num_pixels"] == int((labels != 0).sum()) > 0
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert val[key] == record["metrics"][key]


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = create_model("test-cli-tiny")
    classes = create_dataset("synthetic", split="val", num_samples=1, size=32).classes
    save_checkpoint(tmp_path / "run/checkpoints/best.pt", model, classes=classes, palette=PALETTE)
    return tmp_path / "run"


def test_eval_prints_table_and_writes_metrics_and_png(run_dir, capsys) -> None:
    argv = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val"]
    argv += ["--option", "num_samples=3", "--option", "size=32", "--batch-size", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    out = run_dir / "eval-synthetic-val"
    record = json.loads((out / "metrics.json").read_text())
    # Independent computation: the checkpoint's model, image by image.
    model = create_model("test-cli-tiny")
    model.load_state_dict(torch.load(run_dir / "checkpoints/best.pt")["model"])
    model.eval()
    data = create_dataset("synthetic", split="val", num_samples=3, size=32)
    transform = build_transforms(False, model.preprocessing)
    cm = ConfusionMatrix(7)
    with torch.no_grad():
        for i in range(3):
            sample = transform(data[i])
            cm.update(model(sample["image"][None]), sample["label"][None])
    expected = cm.compute()
    m = record["metrics"]
    for key in ("pixel_acc", "mean_iu", "fw_iu"):
        assert m[key] == pytest.approx(expected[key])
    assert m["num_images"] == 3 and record["confusion"]["main"] == cm.matrix.tolist()
    assert m["classes"] == data.classes and record["dataset"] == "synthetic"
    assert "disc" in printed and "mean IU" in printed and f"{100 * m['mean_iu']:.2f}" in printed
    png = Image.open(out / "confusion.png")
    assert png.size[0] > 200 and png.size[1] > 200
    # --out elsewhere, a checkpoint file instead of the run directory.
    other = run_dir.parent / "elsewhere"
    assert (
        main([*argv[:1], str(run_dir / "checkpoints/best.pt"), *argv[2:], "--out", str(other)]) == 0
    )
    assert json.loads((other / "metrics.json").read_text())["metrics"]["mean_iu"] == m["mean_iu"]


def test_eval_boundary_f_and_size_iu_in_table_json_and_bars(run_dir, tmp_path, capsys) -> None:
    argv = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val"]
    argv += ["--option", "num_samples=2", "--option", "size=32", "--boundary-tolerance", "2"]
    assert main([*argv, "--out", str(tmp_path / "all")]) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "all/metrics.json").read_text())["metrics"]
    # Independent: the accumulators fed the checkpoint's predictions image by image.
    model = create_model("test-cli-tiny")
    model.load_state_dict(torch.load(run_dir / "checkpoints/best.pt")["model"])
    data = create_dataset("synthetic", split="val", num_samples=2, size=32)
    transform = build_transforms(False, model.preprocessing)
    boundary, sizes = BoundaryFScore(7, tolerance=2), SizeIU(7)
    with torch.no_grad():
        for i in range(2):
            sample = transform(data[i])
            pred = model.eval()(sample["image"][None])[0].argmax(0)
            boundary.update(pred, sample["label"])
            sizes.update(pred, sample["label"])
    assert m["boundary_f"] == pytest.approx(boundary.compute()["boundary_f"], nan_ok=True)
    assert m["boundary_counts"] == boundary.compute()["boundary_counts"]
    assert m["boundary_tolerance"] == "2" and m["size_thresholds"] == list(sizes.thresholds)
    for bucket, value in sizes.compute()["size_iu"].items():
        assert m["size_iu"][bucket] == pytest.approx(value, nan_ok=True)
    for key in ("per_class_boundary_f", "per_class_boundary_precision", "per_class_size_iu"):
        assert key in m
    header = next(line for line in printed.splitlines() if line.startswith("class"))
    assert header.split()[-4:] == ["BF", "IU-S", "IU-M", "IU-L"]
    assert "boundary F" in printed and "tolerance 2 px" in printed and "IU by size" in printed
    assert Image.open(tmp_path / "all/per-class-iu.png").size[0] > 200
    # Turned off: the paper's four metrics alone, as before.
    assert main([*argv, "--out", str(tmp_path / "none"), "--no-boundary-f", "--no-size-iu"]) == 0
    assert "BF" not in capsys.readouterr().out
    plain = json.loads((tmp_path / "none/metrics.json").read_text())["metrics"]
    assert not {k for k in plain if "boundary" in k or "size" in k}
    assert main([*argv, "--out", str(tmp_path / "bad"), "--boundary-tolerance", "two"]) == 2
    assert "--boundary-tolerance" in capsys.readouterr().err


def test_eval_reports_user_errors(run_dir, tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nope"), "--dataset", "synthetic", "--split", "val"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--dataset", "synthetic", "--split", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "five.pt", create_model("test-cli-tiny", 5))
    argv = ["eval", str(tmp_path / "five.pt"), "--dataset", "synthetic", "--split", "val"]
    assert main([*argv, "--option", "num_samples=1"]) == 2
    assert "5 classes" in capsys.readouterr().err


def folder_with_a_bad_image(root):
    """A ``folder`` dataset of four 16 x 16 samples (classes a, b, c) whose s2.png is no image."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            root / f"images/s{i}.png"
        )
        Image.fromarray(rng.integers(0, 3, (16, 16), dtype=np.uint8)).save(root / f"masks/s{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    bad = root / "images/s2.png"
    bad.write_bytes(b"not a png at all")
    return bad


def test_eval_bad_sample_stops_naming_its_file_or_is_skipped(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    bad = folder_with_a_bad_image(root)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", create_model("test-cli-tiny", 3))
    argv = ["eval", str(tmp_path / "m.pt"), "--dataset", "folder", "--root", str(root)]
    argv += ["--split", "all", "--out", str(tmp_path / "ev")]
    # default: stop at the bad sample, naming its file and the way to go on (a worker too)
    for workers in ("0", "1"):
        assert main([*argv, "--workers", workers]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "DataLoader worker" not in err
        assert f"{bad}: cannot decode" in err and "--on-bad-sample skip" in err
    assert not (tmp_path / "ev").exists()
    # skip: scored without it; counted and listed at the end and in metrics.json
    for workers in ("0", "1"):
        extra = ["--on-bad-sample", "skip", "--batch-size", "2", "--workers", workers]
        assert main([*argv, *extra]) == 0
        captured = capsys.readouterr()
        assert "skipped 1 bad sample" in captured.err and f"{bad}: cannot decode" in captured.err
        record = json.loads((tmp_path / "ev/metrics.json").read_text())
        assert record["metrics"]["num_images"] == 3
        assert len(record["skipped"]) == 1 and str(bad) in record["skipped"][0]
    # the same figures as the split without the bad sample
    bad.unlink()
    (root / "masks/s2.png").unlink()
    argv[argv.index(str(tmp_path / "ev"))] = str(tmp_path / "ev-good")
    assert main([*argv, "--batch-size", "2"]) == 0
    good = json.loads((tmp_path / "ev-good/metrics.json").read_text())
    assert good["confusion"] == record["confusion"] and good["skipped"] == []


@pytest.mark.parametrize("target", ["metrics.json", "confusion.png"])
def test_eval_disk_full_names_the_file(target, run_dir, tmp_path, monkeypatch, capsys) -> None:
    """No space left while writing metrics.json (JSON: temporary file + rename) or a PNG:
    one sentence naming the file, exit 1; an earlier metrics.json stays as it was."""
    import errno
    import pathlib

    from matplotlib.figure import Figure

    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    if target == "metrics.json":
        write_text = pathlib.Path.write_text

        def full(self, *args, **kwargs):
            if self.name.endswith(".tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return write_text(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", full)
    else:

        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Figure, "savefig", full)
    argv = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val", "--out", str(out)]
    assert main([*argv, "--option", "num_samples=1", "--option", "size=32"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"no space left on device: cannot write {out / target}" in err
    assert (out / "metrics.json").read_text() == '{"earlier": true}'


def write_images(folder, sizes, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_writes_palette_labels_and_overlays(run_dir, tmp_path, capsys) -> None:
    folder_images = write_images(tmp_path / "in/sub", [(20, 30), (33, 17), (20, 30)])
    single = write_images(tmp_path / "single", [(9, 40)], seed=1)[0]
    broken = tmp_path / "single/broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    before = {p: p.read_bytes() for p in [*folder_images, single]}
    out = tmp_path / "out"
    argv = ["predict", str(run_dir), str(tmp_path / "in"), str(single), str(broken)]
    assert main([*argv, "--out", str(out), "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "could not be read" in err
    segmenter = Segmenter(run_dir)
    expected = {"sub/img0": folder_images[0], "sub/img1": folder_images[1]}
    expected |= {"sub/img2": folder_images[2], "img0": single}
    for name, source in expected.items():
        label = Image.open(out / "labels" / f"{name}.png")
        assert label.mode == "P" and label.getpalette()[:6] == [*PALETTE[0], *PALETTE[1]]
        assert np.array_equal(np.asarray(label), segmenter.predict(source))
        over = Image.open(out / "overlays" / f"{name}.png")
        assert over.size == Image.open(source).size and over.mode == "RGB"
    assert {p: p.read_bytes() for p in before} == before  # inputs untouched


def test_predict_never_overwrites_inputs(run_dir, tmp_path, capsys) -> None:
    (source,) = write_images(tmp_path / "d/labels", [(8, 8)])
    png = source.with_suffix(".png")
    Image.open(source).save(png)
    assert main(["predict", str(run_dir), str(png), "--out", str(tmp_path / "d")]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["predict", str(run_dir), str(tmp_path / "missing.jpg"), "--out", "x"]) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_export_cli_writes_a_checked_onnx_file(run_dir, tmp_path, capsys) -> None:
    path = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--out", str(path), "--example-size", "32", "32"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    session = ort.InferenceSession(str(path))
    (scores,) = session.run(None, {"input": np.zeros((1, 3, 21, 35), np.float32)})
    assert scores.shape == (1, 7, 21, 35)
    assert main(["export", str(run_dir), "--out", str(run_dir / "checkpoints/best.pt")]) == 2
    assert "checkpoint itself" in capsys.readouterr().err


def test_eval_and_predict_accept_a_state_dict_with_model(run_dir, tmp_path, capsys) -> None:
    """Weights that are not a checkpoint: a state-dict file with --model (an entry name or
    a .caffemodel work the same way, see tests/engine/test_checkpoint.py)."""
    model = create_model("test-cli-tiny")
    model.load_state_dict(torch.load(run_dir / "checkpoints/best.pt")["model"])
    torch.save(model.state_dict(), tmp_path / "w.pth")
    argv = ["eval", str(tmp_path / "w.pth"), "--dataset", "synthetic", "--split", "val"]
    argv += ["--option", "num_samples=2", "--option", "size=32", "--out", str(tmp_path / "ev")]
    assert main(argv) == 2
    assert "--model NAME" in capsys.readouterr().err
    assert main([*argv, "--model", "test-cli-tiny", "--num-classes", "7"]) == 0
    by_file = json.loads((tmp_path / "ev/metrics.json").read_text())["metrics"]["mean_iu"]
    argv[1] = str(run_dir)
    assert main([*argv[:-1], str(tmp_path / "ev2")]) == 0
    assert json.loads((tmp_path / "ev2/metrics.json").read_text())["metrics"]["mean_iu"] == by_file
    (image,) = write_images(tmp_path / "in", [(12, 10)])
    out = tmp_path / "pred"
    args = ["predict", str(tmp_path / "w.pth"), str(image), "--out", str(out)]
    assert main([*args, "--model", "test-cli-tiny"]) == 0
    label = np.asarray(Image.open(out / "labels/img0.png"))
    assert np.array_equal(label, Segmenter(run_dir).predict(image))
    assert main(["predict", "no-such-weights", str(image), "--out", str(out)]) == 2
    assert "unknown weights 'no-such-weights'" in capsys.readouterr().err


def test_predict_geo_head_uses_its_palette(tmp_path) -> None:
    torch.manual_seed(0)
    geo_palette = [(200, 100, 0), (0, 100, 200)]
    save_checkpoint(
        tmp_path / "two.pt",
        create_model("test-cli-two-heads"),
        classes=["a", "b", "c"],
        palette=PALETTE[:3],
        targets={"sem": ["a", "b", "c"], "geo": ["sky", "ground"]},
        palettes={"sem": PALETTE[:3], "geo": geo_palette},
    )
    (image,) = write_images(tmp_path / "in", [(8, 8)])
    out = tmp_path / "out"
    assert (
        main(["predict", str(tmp_path / "two.pt"), str(image), "--out", str(out), "--head", "geo"])
        == 0
    )
    label = Image.open(out / "labels/img0.png")
    assert label.getpalette()[:6] == [*geo_palette[0], *geo_palette[1]]


def test_predict_multi_modal_model_fails_clearly(tmp_path, capsys) -> None:
    save_checkpoint(tmp_path / "six.pt", create_model("test-cli-six"))
    (image,) = write_images(tmp_path / "in", [(8, 8)])
    assert (
        main(["predict", str(tmp_path / "six.pt"), str(image), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "expects 6-channel input" in err and "Segmenter" in err


def test_export_errors_are_user_errors(tmp_path, capsys) -> None:
    save_checkpoint(tmp_path / "even.pt", create_model("test-cli-even"))
    args = ["export", str(tmp_path / "even.pt"), "--out", str(tmp_path / "e.onnx")]
    assert main([*args, "--example-size", "9", "9"]) == 2
    assert "cannot export test-cli-even: needs an even width" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("predict", ["(default 4)", "(default: whole images)", "(default: no limit)"]),
        ("eval", ["(default 0)"]),
        ("export", ["(default: 64 64)"]),
        ("heatmap", ["(default heatmap.png)"]),
    ],
)
def test_help_shows_defaults(command, expected, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for item in expected:
        assert item in text, item


def test_predict_takes_an_exported_onnx_file(run_dir, tmp_path, capsys) -> None:
    # the file alone: preprocessing, class names and colours come from its metadata
    onnx_path = tmp_path / "model.onnx"
    assert (
        main(["export", str(run_dir), "--out", str(onnx_path), "--example-size", "32", "32"]) == 0
    )
    images = write_images(tmp_path / "in", [(20, 30), (33, 17)])
    out = tmp_path / "out"
    assert main(["predict", str(onnx_path), str(tmp_path / "in"), "--out", str(out)]) == 0
    assert Segmenter(onnx_path).classes == Segmenter(run_dir).classes
    # fcnkit eval takes the file too: the scores of the checkpoint, to ONNX Runtime's tolerance
    evaluate = ["eval", "--dataset", "synthetic", "--split", "val", "--no-boundary-f"]
    evaluate += ["--option", "num_samples=3", "--option", "size=32"]
    assert main([*evaluate, str(onnx_path), "--out", str(tmp_path / "e-onnx")]) == 0
    assert main([*evaluate, str(run_dir), "--out", str(tmp_path / "e-pt")]) == 0
    onnx_m, pt_m = (json.loads((tmp_path / d / "metrics.json").read_text())["metrics"]
                    for d in ("e-onnx", "e-pt"))  # fmt: skip
    assert onnx_m["pixel_acc"] == pytest.approx(pt_m["pixel_acc"], abs=1e-3)
    assert main([*evaluate, str(onnx_path), "--backend", "openvino", "--out",
                 str(tmp_path / "e-ov")]) == 0  # fmt: skip
    ov_m = json.loads((tmp_path / "e-ov" / "metrics.json").read_text())["metrics"]
    assert ov_m["pixel_acc"] == pytest.approx(pt_m["pixel_acc"], abs=1e-3)
    assert main([*evaluate, str(onnx_path), "--backend", "eager"]) == 2
    assert "runs with --backend onnxruntime or openvino" in capsys.readouterr().err
    assert main([*evaluate, str(tmp_path / "missing.onnx")]) == 2
    faithful = Segmenter(run_dir)
    for i, source in enumerate(images):
        label = Image.open(out / "labels" / f"img{i}.png")
        assert label.getpalette()[:6] == [*PALETTE[0], *PALETTE[1]]  # the checkpoint's colours
        expected = faithful.predict(source)
        assert np.mean(np.asarray(label) != expected) <= 0.001  # ONNX Runtime fp32 tolerance


def test_eval_settings_never_overwrite_another_settings_results(
    run_dir, tmp_path, capsys, monkeypatch
) -> None:
    # a user's faithful results stay when they try a fast mode or TTA afterwards
    monkeypatch.setenv("FCNKIT_CACHE", str(tmp_path / "cache"))  # exported files go there
    argv = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val", "--no-boundary-f"]
    argv += ["--option", "num_samples=2", "--option", "size=32"]
    assert main(argv) == 0
    faithful = (run_dir / "eval-synthetic-val" / "metrics.json").read_bytes()
    for extra, folder in [
        (["--backend", "onnxruntime"], "eval-synthetic-val-onnxruntime-fp32"),
        (["--tta", "--scales", "1", "1.5"], "eval-synthetic-val-scales-1-1.5-tta"),
        (["--limit", "1", "--channels-last"], "eval-synthetic-val-first1-eager-fp32-channels_last"),
    ]:
        assert main([*argv, *extra]) == 0, capsys.readouterr().err
        assert (run_dir / folder / "metrics.json").is_file(), sorted(run_dir.iterdir())
    assert (run_dir / "eval-synthetic-val" / "metrics.json").read_bytes() == faithful


def test_predict_and_eval_backend_options(run_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FCNKIT_CACHE", str(tmp_path / "cache"))  # exported files go there
    (image,) = write_images(tmp_path / "in", [(24, 20)])
    argv = ["predict", str(run_dir), str(image), "--out", str(tmp_path / "o")]
    assert main([*argv, "--backend", "onnxrutime"]) == 2
    assert "did you mean 'onnxruntime'" in capsys.readouterr().err
    assert main([*argv, "--precision", "int8", "--backend", "onnxruntime"]) == 2
    assert "needs --calibration" in capsys.readouterr().err
    assert main([*argv, "--no-pad100"]) == 2  # a VGG16-only mode, said in one sentence
    err = capsys.readouterr().err
    assert "no-pad-100 mode is for the VGG16 FCNs" in err and "Traceback" not in err
    assert main([*argv, "--channels-last"]) == 0
    label = np.asarray(Image.open(tmp_path / "o/labels/img0.png"))
    assert np.array_equal(label, Segmenter(run_dir).predict(image))
    evaluate = ["eval", str(run_dir), "--dataset", "synthetic", "--split", "val"]
    evaluate += ["--option", "num_samples=2", "--option", "size=32", "--no-boundary-f"]
    assert main([*evaluate, "--out", str(tmp_path / "e1")]) == 0
    assert main([*evaluate, "--out", str(tmp_path / "e2"), "--backend", "onnxruntime"]) == 0
    assert "backend: onnxruntime-fp32" in capsys.readouterr().err
    faithful, fast = (
        json.loads((tmp_path / f"{d}/metrics.json").read_text()) for d in ("e1", "e2")
    )
    assert fast["metrics"]["pixel_acc"] == pytest.approx(faithful["metrics"]["pixel_acc"], abs=1e-3)
    assert main([*argv, "--backend", "openvino"]) == 0  # predict: labels as the faithful one
    label = np.asarray(Image.open(tmp_path / "o/labels/img0.png"))
    assert np.mean(label != Segmenter(run_dir).predict(image)) <= 0.001
    int8 = [*evaluate, "--backend", "onnxruntime", "--precision", "int8", "--out", str(tmp_path)]
    assert main([*int8, "--calibration", "val"]) == 2  # never the split evaluated
    assert "another split" in capsys.readouterr().err
    assert main([*int8, "--calibration", "train", "--calibration-limit", "2"]) == 0
    assert "backend: onnxruntime-int8" in capsys.readouterr().err
