"""Training loop: run directory, exact resume, staged init, NaN stop, zero-score warning."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from fcnkit.engine.train import (
    NonFiniteLossError,
    RunDirExistsError,
    init_from_run,
    plot_curves,
    train,
)
from fcnkit.weights import load_checkpoint

# A tiny but complete setup: real model (random init), synthetic data with every kind of
# randomness on: dropout, augmentation (scale, jitter, flip, crop), loss sampling (8 x 8 cells,
# the paper's batch compensation: ceil(2 / 0.7) = 3 micro-batches a step); gradient
# accumulation; warm-up + poly. 10 images in batches of 2 x 3 cross epoch boundaries mid-step.
# lr 0.003 keeps the run finite on every CPU of the pool: at 0.05 it diverged (loss 1.9 -> 826
# by step 6) with rounding that differs between AVX2 and AVX-512 kernels, so exact-resume
# comparisons of NaN weights failed on one kind and passed on the other.
TINY = {
    "name": "tiny",
    "model": {
        "name": "fcn8s-efficientnet_lite0",
        "num_classes": 7,
        "options": {"backbone_weights": None, "dropout": 0.2},
    },
    "data": {
        "dataset": "synthetic",
        "options": {"size": 32, "num_samples": 10},
        "val_options": {"size": 32, "num_samples": 4},
        "batch_size": 2,
        "val_batch_size": 2,
        "augment": {"crop_size": 28, "scale_range": [0.75, 1.25], "color_jitter": 0.2},
    },
    "loss": {"sample_prob": 0.7, "sample_cell": 8},
    "optim": {"name": "sgd", "lr": 0.003, "accumulate": 2},
    "schedule": {"name": "poly", "warmup_steps": 2},
    "train": {
        "steps": 6,
        "log_every": 2,
        "eval_every": 3,
        "checkpoint_every": 100,
        "zero_check_step": 1000,
        "num_sample_images": 2,
        "device": "cpu",
    },
}


def tiny(**changes: dict) -> dict:
    config = copy.deepcopy(TINY)
    for section, values in changes.items():
        config[section].update(values)
    return config


def test_run_directory_contents(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(tiny(), run, progress=False)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (run / "config.yaml").is_file()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["fcnkit_version"] and "git_hash" in meta and meta["torch_version"]
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_events = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [2, 4, 6]
    assert all({"loss", "lr", "images_per_s", "epoch"} <= set(e) for e in train_events)
    assert [e["step"] for e in events if e["event"] == "eval"] == [3, 6]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # safe format
    assert last["step"] == 6 and {"optimizer", "scheduler", "rng", "config"} <= set(last)
    assert last["model_name"] == "fcn8s-efficientnet_lite0" and last["classes"][0] == "background"
    best = load_checkpoint(run)  # a run dir resolves to best.pt
    assert best["path"].endswith("best.pt")
    strict = {"parse_constant": lambda c: pytest.fail(f"non-JSON constant {c}")}
    saved = json.loads((run / "metrics.json").read_text(), **strict)
    for line in (run / "log.jsonl").read_text().splitlines():
        json.loads(line, **strict)
    assert saved["step"] == 6 and saved["mean_iu"] == pytest.approx(metrics["mean_iu"])
    assert len(saved["confusion"]) == 7
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert plot_curves(run, run / "curves.png").stat().st_size > 1000
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of ``tiny()`` (in the main process: no DataLoader workers)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(tiny(), run, progress=False)
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    # the fixture itself must not diverge (ln 7 = 1.95 at the zero-initialised start)
    assert all(loss is not None and loss < 4.0 for loss in losses), losses
    return run


@pytest.mark.parametrize("stop, workers", [(3, 0), (4, 2)])
def test_resume_is_exact(tmp_path: Path, straight: Path, stop: int, workers: int) -> None:
    """N steps straight == N/2 steps, interruption, resume (model, optimiser, RNG, data).

    With DataLoader workers too: augmentation depends on (seed, epoch, index), not on which
    process loads a sample, so the resumed run with workers matches the straight run without.
    """
    config = tiny(data={"num_workers": workers})
    resumed = tmp_path / "resumed"
    train(config, resumed, progress=False, stop_at_step=stop)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == stop
    train(config, resumed, progress=False, resume=True)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    # and training really moved the weights (the comparison is not vacuous)
    assert not torch.equal(
        a["model"]["score_fr.weight"], torch.zeros_like(a["model"]["score_fr.weight"])
    )


def test_channels_last_trains_the_same_and_loads_anywhere(tmp_path: Path, straight: Path) -> None:
    """``train.channels_last``: the same loss up to kernel rounding (compared before the random
    init's large steps amplify it), NHWC weights saved, loaded by an ordinary model."""
    from fcnkit.weights import load_model

    run = tmp_path / "run"
    train(tiny(train={"channels_last": True}), run, progress=False)

    def losses(r: Path) -> list[float]:
        lines = (r / "log.jsonl").read_text().splitlines()
        return [e["loss"] for e in map(json.loads, lines) if e["event"] == "train"]

    assert losses(run)[0] == pytest.approx(losses(straight)[0], rel=1e-4)
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert state["backbone._conv_stem.weight"].is_contiguous(memory_format=torch.channels_last)
    model, _ = load_model(run / "checkpoints" / "last.pt")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 36)).shape == (1, 7, 40, 36)


@pytest.mark.parametrize(
    "device, flags, expected",
    [("cuda", "", torch.float16), ("cpu", "avx2 avx512f avx512_bf16", torch.bfloat16),
     ("cpu", "avx2 amx_bf16", torch.bfloat16), ("cpu", "avx2 avx512f", None)],
)  # fmt: skip
def test_amp_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch, device, flags, expected):
    # issue 14: emulated bf16 (AVX2-only CPUs) is ~40x slower than fp32: never chosen there
    from fcnkit import backends
    from fcnkit.engine.config import load_config
    from fcnkit.engine.distributed import DistInfo
    from fcnkit.engine.train import autocast_dtype

    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(flags.split()))
    config = load_config(tiny(train={"amp": True}))
    info = DistInfo(device=torch.device(device))
    if expected is None:
        with pytest.warns(UserWarning, match="no native bf16.*training in float32"):
            assert autocast_dtype(config, info) is None
    else:
        assert autocast_dtype(config, info) == expected
    assert autocast_dtype(load_config(tiny()), info) is None  # amp off: fp32 everywhere


def test_bf16_training_on_the_cpu_runs_the_forward_in_bf16_and_stays_close(
    tmp_path: Path, straight: Path, monkeypatch
) -> None:
    from fcnkit import backends

    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    seen: list[torch.dtype] = []
    real = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        out = real(self, x, weight, bias)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    run = tmp_path / "run"
    train(tiny(train={"amp": True}), run, progress=False)
    assert torch.bfloat16 in seen  # the training forward passes (evaluation stays fp32)

    def losses(r: Path) -> list[float]:
        lines = (r / "log.jsonl").read_text().splitlines()
        return [e["loss"] for e in map(json.loads, lines) if e["event"] == "train"]

    assert all(math.isfinite(x) for x in losses(run))
    assert losses(run)[0] == pytest.approx(losses(straight)[0], rel=0.05)  # bf16 rounding
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())


def test_existing_run_dir_is_never_reused_silently(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny(train={"steps": 1, "eval_every": 1})
    train(config, run, progress=False)
    with pytest.raises(RunDirExistsError, match=r"resume=True.*overwrite=True"):
        train(config, run, progress=False)
    train(config, run, progress=False, overwrite=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config, tmp_path / "fresh", progress=False, resume=True)


def test_staged_init_copies_by_name_new_score_layers_stay_zero(tmp_path: Path) -> None:
    """Sec. 4.2: FCN-16s starts from FCN-32s; score_pool4 is new and zero."""
    from fcnkit import create_model
    from fcnkit.preprocessing import get_preprocessing

    run32 = tmp_path / "32s"
    cfg32 = tiny(train={"steps": 2, "eval_every": 2})
    # the parent was trained on Caffe-style inputs (not the model's default preprocessing)
    cfg32["model"].update(name="fcn32s-efficientnet_lite0")
    cfg32["model"]["options"]["preprocessing"] = "caffe-voc"
    train(cfg32, run32, progress=False)
    src = load_checkpoint(run32)["model"]
    model16 = create_model("fcn16s-efficientnet_lite0", 7, backbone_weights=None)
    assert model16.preprocessing != get_preprocessing("caffe-voc")
    with torch.no_grad():
        model16.score_pool4.weight.fill_(1.0)  # init_from (surgery) re-zeroes new score layers
    report = init_from_run(model16, run32)
    assert report["copied"] > 0 and report["source_model"] == "fcn32s-efficientnet_lite0"
    assert "score_pool4.weight" in report["new_layers"]
    state = model16.state_dict()
    assert torch.equal(state["score_fr.weight"], src["score_fr.weight"])
    assert torch.equal(state["backbone._conv_stem.weight"], src["backbone._conv_stem.weight"])
    assert not state["score_pool4.weight"].any()
    assert model16.preprocessing == get_preprocessing("caffe-voc")  # the parent's inputs
    # and through train(): the init_from event is logged, the child's checkpoint records the
    # parent's preprocessing; a missing stage is a clear error
    cfg16 = tiny(train={"steps": 1, "eval_every": 1})
    cfg16["model"]["name"] = "fcn16s-efficientnet_lite0"
    train(cfg16, tmp_path / "16s", progress=False, init_from=run32)
    events = (tmp_path / "16s" / "log.jsonl").read_text()
    assert '"event": "init_from"' in events
    saved = load_checkpoint(tmp_path / "16s" / "checkpoints" / "last.pt")["preprocessing"]
    assert get_preprocessing(saved) == get_preprocessing("caffe-voc")
    with pytest.raises(FileNotFoundError, match=r"train it first .*voc-fcn32s"):
        train(cfg16, tmp_path / "x", progress=False, init_from=tmp_path / "nope")


def test_non_finite_loss_stops_with_message_and_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    config = tiny(optim={"lr": 1e30, "momentum": 0.0}, loss={"normalize": False})
    config["train"].update(steps=5, eval_every=100)
    with pytest.raises(NonFiniteLossError) as err:
        train(config, run, progress=False)
    message = str(err.value)
    assert "normalize" in message and "lr" in message and "resume=True" in message
    assert "--resume" not in message  # the engine speaks Python and config; the CLI, flags
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "error"
    assert "the last good state (step 1) is saved" in message  # step 1 made huge weights
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_warns_when_score_layers_stay_zero(tmp_path: Path, capsys) -> None:
    """user-needs #4: a loud warning when zero-initialised score layers never move."""
    config = tiny(optim={"lr": 1e-50})  # updates underflow: score layers stay exactly zero
    config["train"].update(steps=2, zero_check_step=2, eval_every=2)
    with pytest.warns(RuntimeWarning, match="ALL ZERO"):
        train(config, tmp_path / "zero", progress=False)
    err = capsys.readouterr().err
    assert "score_fr.weight" in err and "single class" in err
    events = (tmp_path / "zero" / "log.jsonl").read_text()
    assert "zero_score_layers" in events


def test_time_limit_stops_early_with_evaluation_and_checkpoint(tmp_path: Path) -> None:
    config = tiny()
    config["train"].update(steps=1000, time_limit=0.0, eval_every=500, checkpoint_every=500)
    metrics = train(config, tmp_path / "t", progress=False)
    assert "mean_iu" in metrics
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == 1
    events = [json.loads(x) for x in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["train", "stop", "eval"]


def test_class_weights_must_fit_the_class_count_from_the_dataset(tmp_path: Path) -> None:
    """model.num_classes null: the dataset's 7 classes decide; 3 weights are an error."""
    config = tiny(loss={"class_weights": [1.0, 2.0, 3.0]})
    config["model"]["num_classes"] = None
    with pytest.raises(ValueError, match=r"class_weights has 3 values.*7 classes.*dataset"):
        train(config, tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()  # failed before creating the run dir


def test_resume_with_changed_config_warns_and_keeps_the_original(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny(train={"steps": 1, "eval_every": 1})
    train(config, run, progress=False)
    original = (run / "config.yaml").read_text()
    meta = json.loads((run / "meta.json").read_text())
    train(config, run, progress=False, resume=True)  # same config: nothing to say
    assert (run / "config.yaml").read_text() == original
    assert not list(run.glob("config.before-resume-*.yaml"))
    longer = tiny(train={"steps": 2, "eval_every": 1})
    with pytest.warns(UserWarning, match=r"train.steps: 1 -> 2"):
        train(longer, run, progress=False, resume=True)
    assert (run / "config.before-resume-1.yaml").read_text() == original
    assert "steps: 2" in (run / "config.yaml").read_text()
    resumed = json.loads((run / "meta.json").read_text())
    assert resumed["started"] == meta["started"] and len(resumed["resumes"]) == 2


def _poison_gradient(monkeypatch: pytest.MonkeyPatch, at_backward: int) -> None:
    """The model's ``score_fr.weight`` gets a NaN gradient at one backward pass (the loss
    stays finite): a layer overflowing in its backward pass only."""
    import fcnkit.engine.train as engine_train

    build = engine_train.model_from_config
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * math.nan if calls["n"] == at_backward else grad

    def build_poisoned(config, data):
        model = build(config, data)
        model.score_fr.weight.register_hook(poison)
        return model

    monkeypatch.setattr(engine_train, "model_from_config", build_poisoned)


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_gradient_stops_before_the_update(tmp_path, monkeypatch) -> None:
    """Issue 12 §0: the guard looks at the gradients, not only at the loss."""
    _poison_gradient(monkeypatch, at_backward=7)  # step 3, first of its 3 micro-batches
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="gradient of score_fr.weight") as err:
        train(tiny(train={"checkpoint_every": 1}), run, progress=False)
    assert "at step 3" in str(err.value) and "last good state (step 2)" in str(err.value)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and _all_finite(ckpt["model"])
    assert _all_finite(ckpt["optimizer"]["state"][0])


def test_non_finite_gradient_skipped_by_option(tmp_path, monkeypatch, straight) -> None:
    """train.nonfinite=skip: the step is counted but makes no update; the run goes on."""
    _poison_gradient(monkeypatch, at_backward=7)
    run = tmp_path / "run"
    train(tiny(train={"nonfinite": "skip"}), run, progress=False)
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    skips = [e for e in events if e["event"] == "skip"]
    assert [e["step"] for e in skips] == [3] and "score_fr.weight" in skips[0]["reason"]
    assert all(e["loss"] is not None for e in events if e["event"] == "train")
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6 and _all_finite(ckpt["model"])
    # one update fewer than the straight run: the weights differ
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]["score_fr.weight"]
    assert not torch.equal(a, ckpt["model"]["score_fr.weight"])


def test_update_that_breaks_the_weights_is_never_saved(tmp_path) -> None:
    """Finite loss and gradients, but lr so large that the update overflows to inf."""
    config = tiny(optim={"lr": 1e38, "momentum": 0.0}, loss={"normalize": False})
    config["train"].update(steps=3, eval_every=100, checkpoint_every=1)
    config["schedule"].update(name="fixed", warmup_steps=0)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="the update made .* non-finite") as err:
        train(config, run, progress=False)
    assert "weights were not saved" in str(err.value)
    assert not (run / "checkpoints" / "last.pt").exists()
    assert not list(run.rglob("*.tmp"))


def test_weights_broken_outside_the_step_are_not_checkpointed(tmp_path) -> None:
    """Whatever breaks the weights (here a callback), no checkpoint is written with them."""

    def break_at_step_2(step: int, model: torch.nn.Module) -> None:
        if step == 2:
            with torch.no_grad():
                model.score_fr.bias.fill_(math.nan)

    run = tmp_path / "run"
    config = tiny(train={"checkpoint_every": 1, "eval_every": 100})
    with pytest.raises(ValueError, match=r"refusing to write .*last.pt.*score_fr.bias"):
        train(config, run, progress=False, callback=break_at_step_2)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 1 and _all_finite(ckpt["model"])


def _count_micro_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of micro-batches of every optimiser step that ``train`` takes."""
    import fcnkit.engine.train as engine_train

    counts: list[int] = []
    real_step = engine_train.train_step

    def train_step(run, batches):
        counts.append(len(batches))
        return real_step(run, batches)

    monkeypatch.setattr(engine_train, "train_step", train_step)
    return counts


@pytest.mark.parametrize(
    "loss, accumulate, expected",
    [({"sample_prob": 0.5}, 2, 4), ({"sample_prob": 0.25}, 1, 4), ({"sample_prob": 0.7}, 2, 3),
     ({"sample_prob": 0.5, "sample_compensate": False}, 2, 2), ({"sample_prob": 1.0}, 2, 2),
     ({"sample_prob": 0.5, "sample_unit": "pixel"}, 1, 2)],
)  # fmt: skip
def test_loss_sampling_compensation_micro_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: dict, accumulate: int, expected: int
) -> None:
    """Sec. 4.3: sampling with p raises the images per step by 1/p: each step accumulates
    ceil(optim.accumulate / p) micro-batches (unless loss.sample_compensate is off); the
    logged images/s count them."""
    counts = _count_micro_batches(monkeypatch)
    config = tiny(loss=loss, optim={"accumulate": accumulate})
    config["train"].update(steps=2, log_every=1, eval_every=100, num_sample_images=0)
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert counts == [expected, expected]
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [e["epoch"] for e in events if e["event"] == "train"]
    # 5 micro-batches an epoch (10 images, 2 a batch): the epoch after 2 steps tells the count
    assert epochs[-1] == (2 * expected - 1) // 5


def test_resume_refuses_another_compensated_batch(tmp_path: Path) -> None:
    """The data stream resumes at step x micro-batches per step: a resume that would change
    ceil(accumulate / p) (loss.sample_prob or loss.sample_compensate) is refused."""
    from fcnkit.engine.errors import ResumeConfigError

    config = tiny(train={"steps": 2, "eval_every": 100, "num_sample_images": 0})
    run = tmp_path / "run"
    train(config, run, progress=False, stop_at_step=1)
    for change in ({"sample_prob": 0.5}, {"sample_compensate": False}):
        with pytest.raises(ResumeConfigError, match=r"micro-batches per step .*: 3 -> [24]"):
            train(tiny(loss=change, train=config["train"]), run, progress=False, resume=True)
    # p 0.7 -> 0.75 keeps ceil(2 / p) = 3: the resume goes on, exactly where it was
    with pytest.warns(UserWarning, match=r"loss.sample_prob: 0.7 -> 0.75"):
        train(tiny(loss={"sample_prob": 0.75}, train=config["train"]), run, progress=False,
              resume=True)  # fmt: skip
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


def median_frequency_by_hand(dataset, num_classes: int, ignore: int = 255) -> list[float]:
    """Eigen & Fergus's weights written out image by image, apart from fcnkit.data.stats:
    f_c = pixels of c / labelled pixels of the images holding c; w_c = median f / f_c."""
    import numpy as np

    pixels, holding = [0] * num_classes, [0] * num_classes
    for i in range(len(dataset)):
        labels = dataset.load(i)["label"].numpy().ravel()
        labels = labels[labels != ignore]
        for c in set(labels.tolist()):
            pixels[c] += int((labels == c).sum())
            holding[c] += labels.size
    freq = {c: pixels[c] / holding[c] for c in range(num_classes) if pixels[c]}
    median = float(np.median(list(freq.values())))
    return [median / freq[c] if c in freq else 1.0 for c in range(num_classes)]


def test_class_weight_power_tempers_the_median_frequency_weights(tmp_path: Path) -> None:
    """loss.class_weight_power p trains with w_c ** p of the hand-computed weights (0.5: the
    square roots), recorded as such in meta.json."""
    from fcnkit.data import create_dataset

    config = tiny(loss={"class_weights": "median_frequency", "class_weight_power": 0.5})
    config["train"].update(steps=1, eval_every=100, num_sample_images=0)
    raw = create_dataset("synthetic", None, "train", **config["data"]["options"])
    expected = [w**0.5 for w in median_frequency_by_hand(raw, 7)]
    train(config, tmp_path / "sqrt", progress=False)
    meta = json.loads((tmp_path / "sqrt" / "meta.json").read_text())["class_weights"]
    assert meta["weights"] == pytest.approx(expected, rel=1e-9)


def test_class_weight_power_needs_median_frequency() -> None:
    from fcnkit.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"loss.class_weight_power: expected 1 unless "):
        load_config("demo", ["loss.class_weight_power=0.5"])
    with pytest.raises(ConfigError, match=r"loss.class_weight_power: expected a number >= 0"):
        load_config("demo", ["loss.class_weights=median_frequency",
                             "loss.class_weight_power=-1"])  # fmt: skip


def test_median_frequency_weights_reach_the_loss_and_resume_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loss.class_weights: median_frequency is computed from the raw training split (ignore
    pixels left out), drives the loss, is recorded in meta.json and the checkpoint, and a
    resume takes the checkpoint's numbers without scanning the data again."""
    import fcnkit.data.stats
    from fcnkit.data import create_dataset
    from fcnkit.engine.config import from_dict
    from fcnkit.engine.distributed import DistInfo
    from fcnkit.engine.train import setup_run

    config = tiny(loss={"class_weights": "median_frequency"})
    config["train"].update(steps=2, eval_every=100, num_sample_images=0)
    config["data"]["options"]["ignore_boundary"] = 1
    raw = create_dataset("synthetic", None, "train", **config["data"]["options"])
    expected = median_frequency_by_hand(raw, 7)
    assert len(set(expected)) > 2  # a real weighting, not all ones
    run = tmp_path / "mf"
    train(config, run, progress=False, stop_at_step=1)
    meta = json.loads((run / "meta.json").read_text())["class_weights"]
    assert meta["kind"] == "median_frequency" and meta["seconds"] >= 0
    assert meta["weights"] == pytest.approx(expected, rel=1e-9)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["class_weights"] == pytest.approx(
        expected, rel=1e-9
    )

    def no_rescan(*args, **kwargs):
        raise AssertionError("a resume must not scan the training labels again")

    monkeypatch.setattr(fcnkit.data.stats, "class_statistics", no_rescan)
    session = setup_run(from_dict(config), run, DistInfo(), resume=True)
    try:
        torch.testing.assert_close(
            session.criterion.class_weights, torch.tensor(expected, dtype=torch.float32)
        )
        logged = [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                  if e["event"] == "class_weights"]  # fmt: skip
        assert [e["from"] for e in logged] == ["training split", "checkpoint"]
    finally:
        session.log.close()
        if session.lock is not None:
            session.lock.release()
