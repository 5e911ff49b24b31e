"""Issue 6 in CI: a run of a shipped SIFT Flow recipe -> ``fcnkit eval`` -> the results table.

A short run of ``siftflow-fcn32s-lite0`` (the real packaged ImageNet EfficientNet-Lite0, four
steps) on SIFT Flow files written in the dataset's own format; its checkpoint is scored on
test by ``benchmarks/siftflow_results.py`` (which calls ``fcnkit eval``) and the figures are
checked against the reference ``score.py`` arithmetic computed here from the raw files
(PIL + scipy, not fcnkit's reader). The same check runs on the first 6 real test images when
the shared SIFT Flow copy is present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnkit.cli import main as fcnkit
from fcnkit.data.siftflow import EVAL_EXCLUDE, SEMANTIC_CLASSES, SUBDIR
from fcnkit.weights import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import loss_sampling, siftflow_results  # noqa: E402

RECIPE = "siftflow-fcn32s-lite0"
NAMES = np.array([[np.array([c]) for c in SEMANTIC_CLASSES]], dtype=object)


def write_siftflow(root: Path, n_trainval: int = 10, n_test: int = 4, size: int = 64) -> None:
    """A SIFT Flow folder in the original layout: JPEG images, ``S`` uint16 label .mat files."""
    rng = np.random.default_rng(0)
    for d in ("Images", "SemanticLabels"):
        (root / d / SUBDIR).mkdir(parents=True, exist_ok=True)
    names = {"trainval": [], "test": []}
    for split, count in (("trainval", n_trainval), ("test", n_test)):
        for i in range(count):
            name = f"{split}_{i:02d}"
            sem = np.zeros((size, size), np.uint16)  # 0 = void
            sem[: size // 2] = 17  # "mountain" (class 16 after the -1 shift)
            sem[size // 2 :] = rng.choice([10, 26, 28])  # field / sea / sky, one per image
            sem[:4] = 0
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            image[sem == 17] //= 3
            Image.fromarray(image).save(root / "Images" / SUBDIR / f"{name}.jpg", quality=95)
            scipy.io.savemat(
                root / "SemanticLabels" / SUBDIR / f"{name}.mat", {"S": sem, "names": NAMES}
            )
            names[split].append(name)
    for split, listed in names.items():
        (root / f"{split}.txt").write_text("\n".join(listed) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(SIFT Flow root, runs folder holding a four-step run of the shipped recipe)."""
    tmp = tmp_path_factory.mktemp("siftflow_run")
    root, runs = tmp / "siftflow", tmp / "runs"
    write_siftflow(root)
    overrides = [
        f"data.root={root}", "data.augment.crop_size=64", "data.batch_size=2",
        "data.val_batch_size=2", "data.num_workers=0", "train.steps=4", "train.eval_every=2",
        "train.checkpoint_every=2", "train.log_every=1", "schedule.warmup_steps=0",
        "optim.lr=0.05",  # a few large steps: predictions that are not all one class
    ]  # fmt: skip
    argv = ["train", RECIPE, "--run-dir", str(runs / RECIPE), "--no-progress"]
    assert fcnkit(argv + [a for o in overrides for a in ("--set", o)]) == 0
    return root, runs


def reference_metrics(run_dir: Path, root: Path, names: list[str]) -> dict[str, float]:
    """The reference ``score.py`` figures from raw files: fast_hist, then the four formulas."""
    model, _ = load_model(run_dir)
    n = 33
    hist = np.zeros((n, n), np.int64)
    for name in names:
        image = np.asarray(Image.open(root / "Images" / SUBDIR / f"{name}.jpg").convert("RGB"))
        x = model.preprocessing.normalize(torch.from_numpy(image.copy()).permute(2, 0, 1)[None])
        with torch.no_grad():
            pred = model(x).argmax(1)[0].numpy()
        label = scipy.io.loadmat(root / "SemanticLabels" / SUBDIR / f"{name}.mat")["S"]
        label = label.astype(np.int64) - 1  # 0 void -> -1, 1..33 -> 0..32
        k = (label >= 0) & (label < n)
        hist += np.bincount(n * label[k] + pred[k], minlength=n * n).reshape(n, n)
    keep = np.array([c not in EVAL_EXCLUDE for c in SEMANTIC_CLASSES])
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    freq = hist.sum(1) / hist.sum()
    counted = keep & (freq > 0)
    return {
        "pixel_acc": np.diag(hist).sum() / hist.sum(),
        "mean_acc": np.nanmean(acc[keep]),
        "mean_iu": np.nanmean(iu[keep]),
        "fw_iu": (freq[counted] * iu[counted]).sum(),
    }


def assert_same(metrics: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(float(value), abs=1e-9), key


def test_checkpoint_to_test_metrics(trained: tuple[Path, Path], capsys) -> None:
    root, runs = trained
    run_dir = runs / RECIPE
    assert siftflow_results.main(["--root", str(root), "--runs", str(runs)]) == 0
    table = capsys.readouterr().out
    record = json.loads((run_dir / "eval-siftflow-test" / "metrics.json").read_text())
    assert record["split"] == "test" and record["metrics"]["num_images"] == 4
    assert record["weights"].endswith("best.pt")  # the checkpoint selected on val
    names = (root / "test.txt").read_text().split()
    expected = reference_metrics(run_dir, root, names)
    assert expected["mean_iu"] > 0  # the check is not vacuous: some classes are hit
    assert_same(record["metrics"], expected)
    # the table shows those figures (and the reference rows) with the recorded command
    row = next(line for line in table.splitlines() if line.startswith("| FCN-32s-Lite0 |"))
    m = record["metrics"]
    assert row.split(" | ")[1:5] == [f"{100 * m[k]:.1f}" for k in siftflow_results.METRICS]
    assert "| paper: FCN-16s VGG16 (Table 3) | 85.2 | 51.7 | 39.5 | 76.1 |" in table
    assert f"fcnkit train {RECIPE} --run-dir" in table
    assert "| cow (excluded) |" in table
    # beyond mean IU: the eval's boundary F-score and IU by size, in the second FCN-32s row
    rows = [line for line in table.splitlines() if line.startswith("| FCN-32s-Lite0 |")]
    beyond = rows[1].rstrip(" |").split(" | ")[1:]
    assert beyond[0] == f"{100 * m['boundary_f']:.1f}"
    assert beyond[3:6] == [
        siftflow_results._pct(m["size_iu"][b]) for b in ("small", "medium", "large")
    ]


def test_ablation_rows_are_scored_on_val(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The ablation table evaluates each lever's run on val (never test), with the lever's
    own eval arguments; the base row's change is +0.0 and a missing lever is skipped."""
    root, runs = trained
    ablation_runs = tmp_path / "runs"
    ablation_runs.mkdir()
    (ablation_runs / "ship-fcn8s-lite0").symlink_to(runs / RECIPE, target_is_directory=True)
    table = siftflow_results.ablation_table(ablation_runs, root)
    base = next(line for line in table.splitlines() if line.startswith("| base:"))
    assert base.split(" | ")[6] == "+0.0"
    assert "| multi-scale + flip test" in table and "class balance" not in table
    record = json.loads((runs / RECIPE / "eval-siftflow-val" / "metrics.json").read_text())
    assert record["split"] == "val" and record["tta"] is False
    size_iu = record["metrics"]["size_iu"]
    assert base.split(" | ")[7] == siftflow_results._pct(record["metrics"]["boundary_f"])
    assert base.split(" | ")[8] == " / ".join(
        siftflow_results._pct(size_iu[b]) for b in ("small", "medium", "large")
    )
    tta = runs / RECIPE / "eval-siftflow-val-scales-0.75-1-1.25-tta" / "metrics.json"
    assert json.loads(tta.read_text())["scales"] == [0.75, 1.0, 1.25]


def test_loss_sampling_rows_score_the_best_checkpoint_on_val(
    trained: tuple[Path, Path], capsys
) -> None:
    """``loss_sampling report --root`` adds the best checkpoint's val boundary F and IU by
    size, from the same ``fcnkit eval`` as the ablation's (one cache)."""
    root, runs = trained
    loss_sampling.main(["report", "--out", str(runs), "--runs", RECIPE, "--root", str(root)])
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"| `{RECIPE}`"))
    record = json.loads((runs / RECIPE / "eval-siftflow-val" / "metrics.json").read_text())
    assert record["split"] == "val" and record["weights"].endswith("best.pt")
    m = record["metrics"]
    sizes = " / ".join(siftflow_results._pct(m["size_iu"][b]) for b in ("small", "medium", "large"))
    assert row.rstrip(" |").split(" | ")[-2:] == [siftflow_results._pct(m["boundary_f"]), sizes]


def test_backbone_lever_is_timed_with_its_own_start(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """A lever that trains its own FCN-32s start shows both stages' wall times."""
    root, runs = trained
    ablation_runs = tmp_path / "runs"
    for sub in ("ship-fcn8s-lite0", "ablation/backbone-lite2", "ablation/backbone-lite2-fcn32s"):
        (ablation_runs / sub).parent.mkdir(parents=True, exist_ok=True)
        (ablation_runs / sub).symlink_to(runs / RECIPE, target_is_directory=True)
    table = siftflow_results.ablation_table(ablation_runs, root)
    row = next(line for line in table.splitlines() if line.startswith("| backbone"))
    minutes = siftflow_results._minutes(siftflow_results.training_record(runs / RECIPE)[0])
    assert row.split(" | ")[-2] == f"{minutes} + {minutes}"
    assert "Lite1" not in table  # no run: skipped


def test_controls_are_scored_on_test_with_the_findings(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The controls table scores each run on test and checks the findings: strictly for
    fine-tuned > fixed and pretrained > scratch, >= for 8s against 32s (same run here, so
    equal scores: the strict checks fail and the other holds)."""
    root, runs = trained
    control_runs = tmp_path / "runs"
    for _, sub, _ in siftflow_results.CONTROLS:
        (control_runs / sub).parent.mkdir(parents=True, exist_ok=True)
        (control_runs / sub).symlink_to(runs / RECIPE, target_is_directory=True)
    table = siftflow_results.controls_table(control_runs, root)
    m = json.loads((runs / RECIPE / "eval-siftflow-test" / "metrics.json").read_text())["metrics"]
    rows = [line for line in table.splitlines() if line.startswith("| FCN-")]
    assert len(rows) == len(siftflow_results.CONTROLS)
    cells = rows[1].split(" | ")
    assert cells[2:7] == [f"{100 * m[k]:.1f}" for k in (*siftflow_results.METRICS, "boundary_f")]
    iu = f"{100 * m['mean_iu']:.1f}"
    assert f"| fine-tuned > fixed (32s) | {iu} vs {iu} | **no** |" in table
    assert f"| pretrained > scratch (8s) | {iu} vs {iu} | **no** |" in table
    assert f"| 8s >= 32s | {iu} vs {iu} | yes |" in table


def test_tables_written_between_markers_only(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, runs = trained
    doc = tmp_path / "results.md"
    begin, end = siftflow_results.BEGIN, siftflow_results.END
    doc.write_text(f"# Results\nintro\n{begin}\nold\n{end}\nend\n")
    siftflow_results.main(["--root", str(root), "--runs", str(runs), "--write", str(doc)])
    text = doc.read_text()
    assert text.startswith("# Results\nintro\n") and text.endswith(f"{end}\nend\n")
    assert "\nold\n" not in text and "| FCN-32s-Lite0 |" in text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs the lines"):
        siftflow_results.main(["--root", str(root), "--runs", str(runs), "--write", str(doc)])
    assert doc.read_text() == "no markers\n"  # untouched


def test_checkpoint_to_metrics_on_real_test_images(
    trained: tuple[Path, Path], shared_data: Path, tmp_path: Path
) -> None:
    real = shared_data / "siftflow"
    if not (real / "test.txt").is_file():
        pytest.skip(f"no SIFT Flow copy at {real}")
    _, runs = trained
    run_dir = runs / RECIPE
    out = tmp_path / "eval"
    argv = ["eval", str(run_dir), "--dataset", "siftflow", "--root", str(real), "--split", "test"]
    assert fcnkit(argv + ["--limit", "6", "--batch-size", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    names = (real / "test.txt").read_text().split()[:6]
    assert_same(metrics, reference_metrics(run_dir, real, names))


def test_training_time_leaves_out_a_resume_pause(tmp_path: Path) -> None:
    """Stopped after the step-20 checkpoint, resumed 1000 s later: the pause and the redone
    steps (21-30) are not training time; both commands are listed."""
    argv = ["/venv/bin/fcnkit", "train", RECIPE, "--name", "r"]
    resume = {"argv": ["fcnkit", "train", "--resume", "--name", "r"], "started_unix": 2000.0}
    meta = {"argv": argv, "started_unix": 1000.0, "resumed": True, "resumes": [resume]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    events = [
        {"event": "train", "time": 1010.0, "step": 10},
        {"event": "eval", "time": 1020.0, "step": 20},  # checkpoint at step 20
        {"event": "train", "time": 1030.0, "step": 30},  # lost with the stop
        {"event": "resume", "time": 2005.0, "step": 20},
        {"event": "train", "time": 2015.0, "step": 30},
        {"event": "eval", "time": 2025.0, "step": 40},
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"best": {"step": 40, "mean_iu": 0.5}}))
    seconds, steps, best_step, best_val, command = siftflow_results.training_record(tmp_path)
    assert seconds == pytest.approx(20.0 + 20.0)  # 1000 -> 1020, then 2005 -> 2025
    assert (steps, best_step, best_val) == (30, 40, 0.5)
    assert command == f"fcnkit train {RECIPE} --name r  &&  fcnkit train --resume --name r"
