"""The inference backends (``fcnkit.backends``): every fast mode labels like the faithful one
(eager fp32) on a *trained* model, within the tolerance ``docs/speed.md`` documents."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit import backends
from fcnkit.backends import LABEL_TOLERANCE, build_runner, default_precision
from fcnkit.data import build_transforms, create_dataset
from fcnkit.preprocessing import get_preprocessing


class SmallFCN(nn.Module):
    """The operations of the EfficientNet-Lite FCNs at toy scale: a stride-2 stem, BatchNorm,
    ReLU6, a depthwise convolution, a 1x1 projection, a skip, a learned transposed-conv
    upsampler (ONNX ``ConvTranspose``) and a crop back to the input size."""

    preprocessing = get_preprocessing("tf-efficientnet-lite")
    num_classes = 7

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 5, 2, 2, groups=16), nn.BatchNorm2d(16), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6())
        self.context = nn.Sequential(
            nn.Conv2d(32, 32, 5, 1, 4, dilation=2, groups=32), nn.BatchNorm2d(32), nn.ReLU6()
        )
        self.score = nn.Conv2d(32, 7, 1)
        self.score_skip = nn.Conv2d(16, 7, 1)
        self.upscore2 = nn.ConvTranspose2d(7, 7, 4, 2, bias=False)
        self.upscore = nn.ConvTranspose2d(7, 7, 4, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        deep = self.score(self.context(self.project(self.depthwise(stem))))
        up = self.upscore2(deep)[:, :, 1 : 1 + stem.shape[-2], 1 : 1 + stem.shape[-1]]
        scores = self.upscore(up + self.score_skip(stem))
        return scores[:, :, 1 : 1 + x.shape[-2], 1 : 1 + x.shape[-1]]


def _images(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = create_dataset("synthetic", split=split, size=32, num_samples=n)
    transform = build_transforms(False, SmallFCN.preprocessing)
    samples = [transform(data[i]) for i in range(n)]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


@pytest.fixture(scope="module")
def training_images() -> tuple[torch.Tensor, torch.Tensor]:
    return _images("train", 32)


@pytest.fixture(scope="module")
def trained(training_images) -> SmallFCN:
    """:class:`SmallFCN` trained on 32 synthetic scenes for a few seconds (eval mode)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest, on a busy CPU too
    try:
        torch.manual_seed(0)
        model = SmallFCN()
        x, y = training_images
        optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in range(150):
            i = (step * 8) % len(x)
            loss = F.cross_entropy(model(x[i : i + 8]), y[i : i + 8], ignore_index=255)
            optim.zero_grad()
            loss.backward()
            optim.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    return _images("val", 8)[0]


def _labels(runner, x: torch.Tensor) -> torch.Tensor:
    (scores,) = runner(x).values()
    return scores.argmax(1)


def test_the_fixture_is_trained(trained, training_images) -> None:
    # the tolerances mean something only on a model that has learnt (its scores have
    # margins): it labels its training scenes better than the all-background guess
    x, y = training_images
    with torch.no_grad():
        pred = trained(x).argmax(1)
    valid = y != 255
    accuracy = float((pred[valid] == y[valid]).float().mean())
    background = float((y[valid] == 0).float().mean())
    assert accuracy > background + 0.05


@pytest.mark.parametrize(
    "mode, options",
    [
        ("eager-fp32-channels_last", {"channels_last": True}),
        ("onnxruntime-fp32", {"backend": "onnxruntime"}),
        ("eager-bf16", {"precision": "bf16"}),
        ("onnxruntime-int8", {"backend": "onnxruntime", "precision": "int8"}),
        ("openvino-fp32", {"backend": "openvino"}),
        ("openvino-bf16", {"backend": "openvino", "precision": "bf16"}),
    ],
)
def test_fast_modes_label_like_the_faithful_one(
    trained, training_images, held_out, tmp_path, mode, options
) -> None:
    if mode == "openvino-bf16" and not backends.cpu_has_bf16():
        pytest.skip("OpenVINO bf16 needs a CPU with native bf16 (the refusal is tested below)")
    if options.get("precision") == "int8":  # calibrated on training images, tested on val
        calibration = list(training_images[0][:16].split(2))
        options = {**options, "calibration": calibration}
    faithful = build_runner(trained)
    fast = build_runner(trained, cache_dir=tmp_path, **options)
    assert faithful.name == "eager-fp32" and fast.name == mode
    expected, got = _labels(faithful, held_out), _labels(fast, held_out)
    differing = float((expected != got).float().mean())
    assert differing <= LABEL_TOLERANCE[mode], f"{mode}: {differing:.4f} of the labels differ"
    if mode in ("eager-fp32-channels_last", "onnxruntime-fp32", "openvino-fp32"):  # same maths
        (a,), (b,) = faithful(held_out).values(), fast(held_out).values()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_the_faithful_runner_is_the_model_itself(trained, held_out) -> None:
    with torch.no_grad():
        expected = trained(held_out)
    (got,) = build_runner(trained)(held_out).values()
    assert torch.equal(got, expected)


def test_compile_falls_back_to_eager_with_one_warning(trained, held_out, monkeypatch) -> None:
    # dynamic-shape compilation of the EfficientNet FCNs fails inside torch.compile (their
    # SAME-padding arithmetic); whatever fails, the runner must still give the eager scores
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("BackendCompilerFailed: 'TensorReferenceAnalysis' python_mod")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    runner = build_runner(trained, compile=True)
    assert runner.name == "eager-fp32-compiled"
    with pytest.warns(RuntimeWarning, match="running eagerly") as caught:
        first = runner(held_out)
        second = runner(held_out[:3, :, :20, :28])  # another size: no second warning
    assert len(caught) == 1
    with torch.no_grad():
        assert torch.equal(first["main"], trained(held_out))
        assert torch.equal(second["main"], trained(held_out[:3, :, :20, :28]))


def test_compile_traces_static_sizes(trained, held_out) -> None:
    # TorchDynamo's graph capture at a static size, run by the "aot_eager" backend (the
    # inductor C++ build takes minutes on a CPU; docs/speed.md measures it on SIFT Flow)
    runner = build_runner(trained, compile="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        (got,) = runner(held_out).values()
    with torch.no_grad():
        expected = trained(held_out)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "onnxrutime"}, "did you mean 'onnxruntime'"),
        ({"backend": "eagr"}, "did you mean 'eager'"),
        ({"precision": "bf61"}, "did you mean 'bf16'"),
        ({"precision": "int8"}, "use backend 'onnxruntime' for int8"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "use backend 'eager' for bf16"),
        ({"backend": "onnxruntime", "precision": "int8"}, "needs calibration="),
        ({"backend": "onnxruntime", "channels_last": True}, "eager-backend options"),
        ({"backend": "openvino", "precision": "int8"}, "use backend 'onnxruntime' for int8"),
        ({"backend": "openvino", "compile": True}, "eager-backend options"),
        ({"backend": "openvino", "device": "cuda"}, "runs on the CPU"),
    ],
)
def test_bad_backend_and_precision_names_say_what_was_meant(trained, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_runner(trained, **kwargs)


def test_int8_keeps_the_named_layers_in_fp32(trained, training_images, tmp_path) -> None:
    import onnx

    calibration = list(training_images[0][:4].split(2))
    exported = backends.exported_onnx(trained, tmp_path)
    for keep, fp32_convs in [((), 0), (("/score", "/stem/"), 3)]:  # score, score_skip, stem
        fp32 = tmp_path / "int8-check.onnx"
        backends.quantize_int8(exported, iter(calibration), fp32, keep_fp32=keep)
        nodes = onnx.load(str(fp32)).graph.node
        quantized_inputs = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
        plain = [n for n in nodes if n.op_type == "Conv" and n.input[1] not in quantized_inputs]
        assert len(plain) == fp32_convs, [n.name for n in plain]


def test_int8_without_calibration_images_is_refused(trained, tmp_path) -> None:
    with pytest.raises(ValueError, match="no batches"):
        build_runner(trained, "onnxruntime", precision="int8", calibration=[], cache_dir=tmp_path)


AVX2_ONLY = "fpu sse4_2 avx avx2 fma f16c"  # an AMD Zen 2/3 or Intel client CPU
AVX512_NO_BF16 = AVX2_ONLY + " avx512f avx512bw avx512vl avx512_vnni"  # Cascade Lake
AVX512_BF16 = AVX512_NO_BF16 + " avx512_bf16"  # Zen 4, Cooper Lake
AMX = AVX512_BF16 + " amx_tile amx_bf16 amx_int8"  # Sapphire Rapids


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("", "fp32"),
        (AVX2_ONLY, "fp32"),
        (AVX512_NO_BF16, "fp32"),
        (AVX512_BF16, "bf16"),
        (AMX, "bf16"),
    ],
)
def test_bf16_is_never_the_default_on_a_cpu_without_native_bf16(monkeypatch, flags, expected):
    # docs/speed.md: bf16 autocast is emulated (~40x slower) on AVX2-only CPUs and measured
    # 1.06x (256 px) to 1.75x (500 px) faster than fp32 with AVX-512 BF16 (Lite0 FCN-8s)
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(flags.split()))
    assert default_precision("cpu") == expected
    assert default_precision(torch.device("cpu")) == expected


def test_auto_precision_on_an_avx2_cpu_runs_fp32(trained, monkeypatch) -> None:
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(AVX2_ONLY.split()))
    assert build_runner(trained, precision="auto").name == "eager-fp32"
    assert build_runner(trained).precision == "fp32"  # the default is always the faithful one


def test_openvino_refuses_bf16_on_a_cpu_without_native_bf16(trained, monkeypatch, tmp_path):
    # OpenVINO would quietly compute in fp32 there: a runner named bf16 must not run fp32
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(AVX512_NO_BF16.split()))
    with pytest.raises(ValueError, match="native bf16.*use precision 'fp32'"):
        build_runner(trained, "openvino", precision="bf16", cache_dir=tmp_path)
    assert build_runner(trained, "openvino", precision="auto", cache_dir=tmp_path).name == (
        "openvino-fp32"
    )


def test_auto_precision_is_one_the_backend_runs(trained, monkeypatch, tmp_path) -> None:
    # bf16 is the fast one on this CPU, but ONNX Runtime has no bf16: auto there is fp32
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(AVX512_BF16.split()))
    assert build_runner(trained, precision="auto").name == "eager-bf16"
    runner = build_runner(trained, "onnxruntime", precision="auto", cache_dir=tmp_path)
    assert runner.name == "onnxruntime-fp32"


def test_openvino_runs_an_exported_file_with_its_metadata(trained, held_out, tmp_path) -> None:
    path = backends.exported_onnx(trained, tmp_path)
    runner = build_runner(path, "openvino")
    restored = get_preprocessing(runner.preprocessing).to_dict()
    assert restored == SmallFCN.preprocessing.to_dict()
    assert runner.input_channels == 3 and list(runner(held_out[:2])) == ["main"]
    first = runner(held_out[:2])["main"]
    runner(held_out[2:5, :, :24, :20])  # another size and batch; the first result is a copy
    expected = build_runner(path, "onnxruntime")(held_out[:2])["main"]
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-4 * float(first.abs().max()))


def test_cpu_flags_reads_proc_cpuinfo(monkeypatch, tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nflags : other\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k),
    )
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert backends.cpu_flags() == frozenset({"fpu", "avx2", "avx512_bf16"})
    # oneDNN capped below its bf16 kernels (the AVX2 emulation): bf16 is not native then
    for cap, bf16 in [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                      ("AVX512_CORE_AMX", True), ("ALL", True)]:  # fmt: skip
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert ("avx512_bf16" in backends.cpu_flags()) is bf16, cap
        assert backends.cpu_has_bf16() is bf16, cap
