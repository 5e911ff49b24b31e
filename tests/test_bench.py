"""``fcnkit bench``: the port-style baseline, the fits, the targets and the report's shape.

No test times anything: the structure test replaces the measurements by given numbers and
checks the ratios and target verdicts computed from them; the one real ``--quick`` run
(``slow``) checks only that the command runs and writes the expected JSON and Markdown.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fcnkit import bench
from fcnkit.bench import (
    FAITHFUL,
    LITE0,
    PORT,
    BenchOptions,
    PortStyleFCN8s,
    equivalence_check,
    linear_fit,
    parse_mode,
    port_style_from,
    port_style_loss,
    report_markdown,
    run_bench,
)
from fcnkit.models import build_model

# ---------------------------------------------------------------- the port-style baseline


def test_reference_crop_offsets_are_fcnkits_derived_ones():
    """The port types the reference's offsets (voc-fcn8s/train.prototxt: ``offset: 5``, ``9``,
    ``31``); fcnkit derives them from the layers: the two must agree."""
    model = build_model("fcn8s", 21)
    assert model.crop_offsets == {"score_pool4c": 5, "score_pool3c": 9, "score": 31}


def test_port_style_fcn8s_gives_fcnkits_outputs_with_the_same_weights():
    """An independent implementation (typed crops, functional ReLU/pooling) agreeing with
    fcnkit's ``fcn8s`` on an odd size: same labels, scores within float rounding."""
    result = equivalence_check((37, 53))
    assert result["identical"]
    assert result["label_agreement"] == 1.0
    assert result["relative_diff"] <= 1e-5


def test_port_style_from_names_a_layer_it_cannot_map():
    with pytest.raises(ValueError, match="score_pool4"):
        port_style_from(build_model("fcn32s", 21))


def test_port_style_loss_is_cross_entropy_over_labelled_pixels():
    """The port's masked log_softmax + nll_loss equals ``F.cross_entropy`` with the ignore
    label, averaged over labelled pixels."""
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 7, 9)
    labels = torch.randint(0, 5, (2, 7, 9))
    labels[0, :2] = 255
    expected = F.cross_entropy(scores, labels, ignore_index=255)
    assert torch.allclose(port_style_loss(scores, labels), expected, rtol=1e-5, atol=1e-6)


def test_port_style_module_keeps_the_caffe_names():
    port = PortStyleFCN8s(21)
    names = set(port.state_dict())
    assert {"conv1_1.weight", "fc6.weight", "score_pool3.bias", "upscore8.weight"} <= names
    assert port.conv1_1.padding == (100, 100)


# ---------------------------------------------------------------- helpers


def test_linear_fit_hand_computed():
    """x = 1..4, y = 2, 4, 5, 8: slope 9.5 / 5 = 1.9, intercept 4.75 - 1.9 * 2.5 = 0,
    residuals 0.1, 0.2, -0.7, 0.4: R^2 = 1 - 0.70 / 18.75."""
    fit = linear_fit([1, 2, 3, 4], [2, 4, 5, 8])
    assert fit["slope"] == pytest.approx(1.9)
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert fit["r2"] == pytest.approx(1 - 0.70 / 18.75)


def test_linear_fit_exact_line_and_refusals():
    assert linear_fit([0, 10, 20], [3, 8, 13]) == pytest.approx(
        {"slope": 0.5, "intercept": 3.0, "r2": 1.0}
    )
    with pytest.raises(ValueError, match="at least 2"):
        linear_fit([1], [1])
    with pytest.raises(ValueError, match="different x"):
        linear_fit([2, 2], [1, 3])


def test_parse_mode():
    assert parse_mode("eager-bf16-nhwc") == {
        "backend": "eager", "precision": "bf16", "channels_last": True, "compile": False,
        "pad100": True,
    }  # fmt: skip
    assert parse_mode("eager-fp32-nopad")["pad100"] is False
    assert parse_mode("onnxruntime-int8")["backend"] == "onnxruntime"
    with pytest.raises(ValueError, match="BACKEND-PRECISION"):
        parse_mode("eager-fp32-fast")


def test_bf16_and_missing_backends_are_left_out_with_the_reason(monkeypatch):
    # bf16 on an AVX2-only CPU: emulated eager (~40x slower), refused by OpenVINO
    import importlib.util

    from fcnkit import backends
    from fcnkit.bench import DEFAULT_MODES, runnable_modes

    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    kept, left_out = runnable_modes(DEFAULT_MODES)
    assert set(left_out) == {"eager-bf16-nhwc", "openvino-bf16"}
    assert all("no native bf16" in why for why in left_out.values())
    assert "openvino-fp32" in kept and "eager-fp32-nhwc" in kept
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    kept, left_out = runnable_modes(DEFAULT_MODES)
    assert left_out == {m: "openvino is not installed" for m in ("openvino-fp32", "openvino-bf16")}
    assert "eager-bf16-nhwc" in kept


# ---------------------------------------------------------------- the report, given numbers

# median seconds and peak MB per (section kind, net, mode): the verdicts below follow
FAKE = {
    ("infer", PORT, "eager-fp32"): (1.0, 1000.0),
    ("infer", FAITHFUL, "eager-fp32"): (0.8, 900.0),  # 1.25x: met; memory 0.9x: met
    ("infer", FAITHFUL, "eager-fp32-nhwc"): (0.5, 950.0),  # fastest: 2.0x < 2.5x: not met
    # faster still, but another geometry: its own row, never the "fastest mode"
    ("infer", FAITHFUL, "eager-fp32-nopad"): (0.3, 700.0),
    ("infer", LITE0, "eager-fp32"): (0.09, 50.0),
    ("infer", LITE0, "eager-fp32-nhwc"): (0.03, 40.0),  # 3.0x: met
    ("infer", "torchvision-fcn_resnet50", "eager-fp32"): (0.7, 500.0),
    ("train", PORT, "eager-fp32"): (2.0, 3000.0),
    ("train", FAITHFUL, "eager-fp32"): (1.6, 3000.0),  # best fp32 variant 1.25x: not met
    ("train", FAITHFUL, "eager-fp32", "amp"): (1.25, 2500.0),  # bf16 autocast 1.6x: met
    ("frame", LITE0, "eager-fp32-nhwc"): (9.0, 700.0),  # --quick's frame and sweep: Lite0
}


def fake_run_case(case):
    if case.task == "infer" and case.section == "sweep":
        pixels = case.size[0] * case.size[1]
        median, peak = 1e-5 * pixels + 0.1, 1e-3 * pixels + 600.0  # exactly linear
    else:
        amp = ("amp",) if case.variant == "amp" else ()
        median, peak = FAKE[(case.task, case.net, case.mode, *amp)]
        median *= case.batch
    times = [median] * case.runs
    return {**bench.run_statistics(times), "times_s": times, "peak_mb": peak, "runner": "fake",
            "peak_after_setup": True}  # fmt: skip


def fake_run_paired(cases, rounds):
    times = [[fake_run_case(c)["median_s"]] * rounds for c in cases]
    return {"labels": [bench.case_label(c) for c in cases], "times_s": times, "rounds": rounds}


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    """A ``--quick`` report whose measurements are :data:`FAKE` (and the linear sweep), a
    100 GFLOP/s matmul and 2 GFLOP per image; the equivalence check is tested above."""
    from fcnkit import backends

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
        mp.setattr(bench, "run_case", fake_run_case)
        mp.setattr(bench, "run_paired", fake_run_paired)
        mp.setattr(bench, "matmul_peak", lambda threads, n, runs: {
            "n": n, "runs": runs, "median_s": 1.0, "flops_per_s": 1e11})  # fmt: skip
        mp.setattr(bench, "flops_per_image", lambda net, size, classes: 2e9)
        mp.setattr(bench, "equivalence_check", lambda size: {
            "max_abs_diff": 0.0, "relative_diff": 0.0, "label_agreement": 1.0,
            "size": list(size), "identical": True})  # fmt: skip
        accuracy = tmp_path_factory.mktemp("acc") / "earlier-run.json"
        modes = {"eager-fp32": 37.0, "eager-fp32-nhwc": 36.7}  # Lite0's fastest: 0.3 points
        accuracy.write_text(json.dumps({"accuracy": {"measured": True, "modes": modes}}))
        options = BenchOptions(quick=True, modes=("eager-fp32-nhwc",), log=lambda line: None,
                               accuracy_json=str(accuracy))  # fmt: skip
        return run_bench(options, command="fcnkit bench --quick")


def test_targets_from_given_numbers(fake_report):
    status = {t["target"].split(",")[0]: (t["status"], t["value"]) for t in fake_report["targets"]}
    assert status["faithful fcn8s (eager-fp32) vs port-style baseline"] == ("met", 1.25)
    assert status["identical outputs"][0] == "met"
    assert status["fastest CPU mode of fcn8s vs port-style"] == ("not met", 2.0)
    assert status["fastest CPU mode of Lite0 FCN-8s vs its eager-fp32"][0] == "met"
    assert status["fastest CPU mode of Lite0 FCN-8s vs its eager-fp32"][1] == pytest.approx(3.0)
    training = [(t["status"], t["value"]) for t in fake_report["targets"]
                if t["target"].startswith("training step")]  # fmt: skip
    assert training == [("not met", 1.25), ("met", 1.6)]  # fp32 both; fcnkit's train.amp
    faithful = fake_report["targets"][0]
    assert faithful["detail"].startswith("timed in turns, median of 2 per-round ratios")
    assert status["peak memory"] == ("met", 0.9)
    assert status["fastest mode's mean IU within 0.5 of fp32"][0] == "met"
    assert status["fastest mode's mean IU within 0.5 of fp32"][1] == pytest.approx(0.3)
    linear = [t for t in fake_report["targets"] if "linear in the pixel count" in t["target"]]
    assert [t["status"] for t in linear] == ["met", "met"]
    assert all(t["value"] == pytest.approx(1.0) for t in linear)
    flat = next(t for t in fake_report["targets"] if t["target"].startswith("memory flat"))
    # the window is 32x32 in --quick: one 32^2 image peaks at 1.024 + 600 MB
    assert flat["value"] == pytest.approx(700.0 / (1e-3 * 32 * 32 + 600.0))
    assert flat["status"] == "met"


def test_report_shape_and_ratios(fake_report):
    report = json.loads(json.dumps(fake_report))  # JSON all the way down
    sections = {"machine", "matmul", "equivalence", "inference", "training", "frame", "sweep",
                "paired",
                "gpu", "accuracy", "targets", "load_average_start", "load_average_end"}  # fmt: skip
    assert sections <= set(report)
    machine = report["machine"]
    assert {"cpu", "cpu_flags", "threads", "versions"} <= set(machine)
    assert {"torch", "torchvision", "onnxruntime", "fcnkit"} <= set(machine["versions"])
    faithful = next(r for r in report["inference"] if r["net"] == FAITHFUL
                    and r["mode"] == "eager-fp32" and r["batch"] == 1)  # fmt: skip
    assert faithful["vs_port"] == pytest.approx(1.25)
    assert faithful["images_per_s"] == pytest.approx(1 / 0.8)
    # 2 GFLOP per image in 0.8 s against a 100 GFLOP/s matmul: 2.5 %
    assert faithful["peak_fraction"] == pytest.approx(2e9 / 0.8 / 1e11)
    assert {t["status"] for t in report["targets"]} <= {"met", "not met", "not measured"}
    markdown = report_markdown(fake_report)
    assert "### Targets" in markdown and "| faithful fcn8s" in markdown
    for title in ("### Inference", "### Training step", "### Sliding-window frame",
                  "### Timed in turns",
                  "### Size sweep", "### GPU"):  # fmt: skip
        assert title in markdown
    if not torch.cuda.is_available():
        assert report["gpu"] == {"measured": False, "reason": "no GPU"}
        assert "not measured: no GPU" in markdown


def test_paired_ratios_are_medians_of_per_round_ratios():
    """Rounds where the machine slowed both cases alike give the same ratio."""
    paired = {"labels": ["port", "ours"], "times_s": [[2.0, 4.0, 3.0], [1.0, 2.0, 3.0]]}
    assert bench.paired_ratios(paired) == {"port": 1.0, "ours": 2.0}  # ratios 2, 2, 1


def test_memory_targets_read_the_median_of_fresh_processes(monkeypatch):
    """The rows a memory target reads get the median peak of ``memory_processes`` fresh
    processes (one noisy draw must not decide a target); the other rows keep their own."""
    extra = iter([1040.0, 960.0])
    calls = []

    def fake_isolated(case):
        calls.append(case)
        return {"peak_mb": next(extra)}

    monkeypatch.setattr(bench, "run_isolated", fake_isolated)
    own = {"peak_mb": 1100.0, "median_s": 1.0, "section": "", "impl": "", "net": "", "mode": "",
           "batch": 1}  # fmt: skip
    monkeypatch.setattr(bench, "measure", lambda case, isolate: dict(own))
    options = BenchOptions(memory_processes=3, log=lambda line: None)
    cases = [bench.Case("infer", PORT, runs=10), bench.Case("infer", LITE0, runs=10)]
    rows = bench._measure_all(cases, options, True, memory=lambda c: c.net == PORT)
    assert rows[0]["peak_mb"] == 1040.0 and rows[0]["peak_mb_processes"] == [1100, 1040, 960]
    assert rows[1] == own
    assert [(c.net, c.runs) for c in calls] == [(PORT, 1), (PORT, 1)]  # one timed run each


def test_load_accuracy_refuses_a_file_without_a_measured_accuracy(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"accuracy": {"measured": False, "reason": "not measured"}}))
    with pytest.raises(ValueError, match="report.json: expected a measured accuracy"):
        bench.load_accuracy(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="report.json: cannot read"):
        bench.load_accuracy(path)


# ---------------------------------------------------------------- the command, for real


@pytest.mark.slow
def test_bench_quick_command_writes_json_and_markdown(tmp_path, capsys):
    from fcnkit.cli import main

    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["bench", "--quick", "--no-sweep", "--json", str(out_json), "--markdown", str(out_md)]
    assert main(argv) == 0
    report = json.loads(out_json.read_text())
    assert report["equivalence"]["identical"]
    rows = report["inference"] + report["training"] + report["frame"]
    assert all("median_s" in r for r in rows), [r.get("error") for r in rows]
    assert all(math.isfinite(r["median_s"]) and r["median_s"] > 0 for r in rows)
    assert out_md.read_text().startswith("## fcnkit bench")
    assert "### Targets" in capsys.readouterr().out
