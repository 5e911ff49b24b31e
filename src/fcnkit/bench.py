"""``fcnkit bench``: fcnkit's FCNs timed side by side with named baselines in one run.

Every number is a ratio measured in the same run, on the same input, with the same threads:

- the **port-style baseline** (:class:`PortStyleFCN8s`): VGG16 FCN-8s written the way the
  common PyTorch port writes it (one module per Caffe layer, ``conv1_1`` padded by 100, crops
  at the Caffe offsets 5 / 9 / 31 typed in, eager fp32, contiguous NCHW, its masked
  ``log_softmax`` + ``nll_loss`` for training). It loads fcnkit's ``fcn8s`` weights by name
  (:func:`port_style_from`), so "identical outputs" is checked, not assumed;
- torchvision's ``fcn_resnet50`` (random init: the same maths as trained weights);
- fcnkit's faithful ``fcn8s`` (eager fp32, the default runner) and its fast modes
  (:func:`fcnkit.backends.build_runner`: NHWC, bf16 autocast, ONNX Runtime fp32 / int8,
  OpenVINO fp32 / bf16).

What is measured (issue 14): latency (median and spread of >= 10 runs after warm-up),
throughput at batch 1 and a larger batch, peak memory, FLOPs per image
(:class:`torch.utils.flop_counter.FlopCounterMode` on the meta device: shapes only) and the
achieved FLOP/s as a fraction of a large fp32 ``torch.mm`` timed in the same run; training
step time; the 1024x2048 frame through the sliding window; a size sweep with linear fits of
time and memory against the pixel count. Each target is printed met / not met.

Peak memory on the CPU: each case runs in a fresh Python process (:func:`run_isolated`),
which records its resident set size after the imports, builds the model and the runner, and
then resets the kernel's high-water mark (``/proc/self/clear_refs``, Linux >= 4.0) so that
setup transients (an ONNX export, the int8 calibration) are not counted; the peak is
``VmHWM`` after the timed runs minus the size after the imports: the weights, the runner and
the activations. Where the reset is refused, the peak is the process's lifetime
``ru_maxrss`` and the row says so. On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnkit.data.base import IGNORE_INDEX

PORT = "port-fcn8s"  # the port-style eager VGG16 FCN-8s (this module)
TORCHVISION = "torchvision-fcn_resnet50"
BASELINES = (PORT, TORCHVISION)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8")  # fmt: skip
PAPER_K40C_MS = 175.0  # Long et al. 2015, Table 3: FCN-8s inference at 500x500 on a K40c


# ======================================================================= the port-style baseline


def _conv(cin: int, cout: int, k: int, pad: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=pad)


class PortStyleFCN8s(nn.Module):
    """VGG16 FCN-8s as the common PyTorch port writes it (an independent implementation).

    Layers are attributes named as the Caffe prototxt, the forward pass is spelled out, and
    the crop offsets of the reference ``voc-fcn8s/net.py`` are typed in (5 for
    ``score_pool4c``, 9 for ``score_pool3c``, 31 for ``score``), as the port does, instead of
    being derived. Dropout is ``Dropout2d`` (the port's choice; equal in eval mode).
    """

    STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        for stage, (cin, cout, depth) in enumerate(self.STAGES, start=1):
            for i in range(1, depth + 1):
                pad = 100 if (stage, i) == (1, 1) else 1
                setattr(self, f"conv{stage}_{i}", _conv(cin if i == 1 else cout, cout, 3, pad))
        self.fc6, self.fc7 = _conv(512, 4096, 7), _conv(4096, 4096, 1)
        self.drop6, self.drop7 = nn.Dropout2d(), nn.Dropout2d()
        self.score_fr = _conv(4096, num_classes, 1)
        self.score_pool4 = _conv(512, num_classes, 1)
        self.score_pool3 = _conv(256, num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)

    def _stage(self, h: Tensor, stage: int) -> Tensor:
        for i in range(1, self.STAGES[stage - 1][2] + 1):
            h = F.relu(getattr(self, f"conv{stage}_{i}")(h), inplace=True)
        return F.max_pool2d(h, 2, stride=2, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for stage in (1, 2, 3):
            h = self._stage(h, stage)
        pool3 = h
        pool4 = h = self._stage(h, 4)
        h = self._stage(h, 5)
        h = self.drop6(F.relu(self.fc6(h), inplace=True))
        h = self.drop7(F.relu(self.fc7(h), inplace=True))
        upscore2 = self.upscore2(self.score_fr(h))
        s4 = self.score_pool4(pool4)
        s4 = s4[:, :, 5 : 5 + upscore2.size(2), 5 : 5 + upscore2.size(3)]
        upscore_pool4 = self.upscore_pool4(upscore2 + s4)
        s3 = self.score_pool3(pool3)
        s3 = s3[:, :, 9 : 9 + upscore_pool4.size(2), 9 : 9 + upscore_pool4.size(3)]
        out = self.upscore8(upscore_pool4 + s3)
        return out[:, :, 31 : 31 + x.size(2), 31 : 31 + x.size(3)].contiguous()


def port_style_loss(scores: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The port's training loss: ``log_softmax``, NHWC transpose, masked select of the
    labelled pixels, summed ``nll_loss`` divided by their number."""
    n, c, h, w = scores.shape
    log_p = F.log_softmax(scores, dim=1).transpose(1, 2).transpose(2, 3).contiguous()
    mask = (labels >= 0) & (labels != ignore_index)
    log_p = log_p[mask.view(n, h, w, 1).repeat(1, 1, 1, c)].view(-1, c)
    return F.nll_loss(log_p, labels[mask], reduction="sum") / mask.sum()


def port_style_from(model: nn.Module) -> PortStyleFCN8s:
    """A :class:`PortStyleFCN8s` holding ``model``'s weights (fcnkit ``fcn8s``).

    Both use the Caffe layer names, so the name map is the identity: every parameter of the
    port is taken from the tensor of the same name; a missing name or another shape raises
    ``ValueError``."""
    state = model.state_dict()
    num_classes = state["score_fr.weight"].shape[0] if "score_fr.weight" in state else 21
    port = PortStyleFCN8s(num_classes)
    mapped = {}
    for name, tensor in port.state_dict().items():
        if name not in state or state[name].shape != tensor.shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise ValueError(f"cannot map {name} {tuple(tensor.shape)} from the model: {got}")
        mapped[name] = state[name]
    port.load_state_dict(mapped)
    return port.eval()


def output_agreement(a: Tensor, b: Tensor) -> dict[str, float]:
    """Max absolute difference of two score maps, relative to the largest score, and the
    share of pixels whose arg-max label agrees."""
    diff = (a - b).abs().max().item()
    scale = max(a.abs().max().item(), 1e-30)
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    return {"max_abs_diff": diff, "relative_diff": diff / scale, "label_agreement": agree}


def equivalence_check(size: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """fcnkit ``fcn8s`` against :class:`PortStyleFCN8s` with the same weights on one random
    input of ``size``. The zero-initialised score layers are drawn at random first (else
    both would output zeros)."""
    from fcnkit.models import build_model

    torch.manual_seed(seed)
    model = build_model("fcn8s", 21).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("score_"):
                p.normal_(0.0, 0.01)
        port = port_style_from(model)
        x = torch.randn(1, 3, *size)
        result = output_agreement(model(x), port(x))
    result["size"] = list(size)
    result["identical"] = result["label_agreement"] == 1.0 and result["relative_diff"] <= 1e-5
    return result


# ======================================================================= statistics


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares ``y = slope * x + intercept`` and its coefficient of determination
    ``r2 = 1 - SS_res / SS_tot`` (1.0 when ``y`` is constant and fitted exactly)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"a linear fit needs at least 2 paired points, got {len(xs)}/{len(ys)}")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a linear fit needs at least two different x values")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {"slope": slope, "intercept": intercept, "r2": r2}


def run_statistics(times: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min and max of run times (seconds)."""
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else [
        ordered[0]] * 3  # fmt: skip
    return {
        "median_s": statistics.median(ordered),
        "p25_s": q[0],
        "p75_s": q[2],
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "runs": len(ordered),
    }


# ======================================================================= the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_extensions() -> list[str]:
    """The vector / matrix extensions of :data:`CPU_FLAGS` this CPU reports."""
    from fcnkit.backends import cpu_flags

    return [flag for flag in CPU_FLAGS if flag in cpu_flags()]


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """The device, CPU model and flags, threads and library versions of this run."""
    from fcnkit import __version__

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_extensions(),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "fcnkit": __version__,
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
        },
    }


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _best_rate(op: Callable[[], Any], flops: float, runs: int) -> tuple[float, float]:
    """(best, median) FLOP/s of ``op`` over ``runs`` calls after two warm-up calls."""
    for _ in range(2):
        op()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        op()
        times.append(time.perf_counter() - start)
    return flops / min(times), flops / statistics.median(times)


def matmul_peak(threads: int, n: int = 2048, runs: int = 10) -> dict[str, float]:
    """This machine's fp32 matrix-multiply peak as torch reaches it: the better of an
    ``n x n`` ``torch.mm`` (BLAS sgemm) and the same product as a 1x1 convolution (oneDNN,
    which the convolutions use; MKL's sgemm can take a slower path on AMD CPUs), each the
    best of ``runs`` (a peak is a best case, and the best run is the one least slowed by
    other jobs) after two warm-ups, ``2 n^3`` FLOPs each, with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n**3
    mm_best, mm_median = _best_rate(lambda: torch.mm(a, b), flops, runs)
    side = max(1, math.isqrt(n))  # n pixels (side^2 ~ n) x n channels -> n channels
    x, w = torch.randn(1, n, side, side), torch.randn(n, n, 1, 1)
    conv_flops = 2 * n * n * side * side
    conv_best, conv_median = _best_rate(lambda: F.conv2d(x, w), conv_flops, runs)
    best = max(mm_best, conv_best)
    return {"n": n, "runs": runs, "flops_per_s": best, "mm_flops_per_s": mm_best,
            "mm_median_flops_per_s": mm_median, "conv1x1_flops_per_s": conv_best,
            "conv1x1_median_flops_per_s": conv_median,
            "source": "torch.mm" if mm_best >= conv_best else "1x1 conv2d"}  # fmt: skip


# ======================================================================= one case

TASKS = ("infer", "train", "frame")


@dataclass
class Case:
    """One measurement: a network, a way of running it, an input, how many runs.

    ``net`` is :data:`PORT`, :data:`TORCHVISION` or an fcnkit model name; ``mode`` an fcnkit
    runner (:func:`parse_mode`), always ``eager-fp32`` for the baselines; ``task`` ``infer``
    (a forward pass of a random normalised batch), ``train`` (a training step) or ``frame``
    (:meth:`fcnkit.inference.Segmenter.predict` of a uint8 image with ``max_pixels``)."""

    task: str
    net: str
    mode: str = "eager-fp32"
    size: tuple[int, int] = (500, 500)
    batch: int = 1
    runs: int = 10
    warmup: int = 1
    threads: int = 1
    classes: int = 21
    device: str = "cpu"
    max_pixels: int | None = None
    section: str = ""
    variant: str = ""  # training: "recipe", "channels_last" or "amp" (bf16 autocast)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        if self.task not in TASKS:
            raise ValueError(f"case task must be one of {', '.join(TASKS)}, got {self.task!r}")

    @property
    def impl(self) -> str:
        return {PORT: "port-style", TORCHVISION: "torchvision"}.get(self.net, "fcnkit")


def parse_mode(mode: str) -> dict[str, Any]:
    """``BACKEND-PRECISION[-nhwc][-compile][-nopad]`` (``eager-fp32``, ``eager-bf16-nhwc``,
    ``onnxruntime-int8``, ``eager-fp32-nopad``: the VGG16 no-pad-100 geometry) as
    :func:`fcnkit.backends.build_runner` keywords."""
    parts = mode.split("-")
    flags = set(parts[2:])
    if len(parts) < 2 or not flags <= {"nhwc", "compile", "nopad"}:
        raise ValueError(
            f"mode {mode!r}: expected BACKEND-PRECISION[-nhwc][-compile][-nopad], e.g. "
            "eager-fp32, eager-bf16-nhwc, onnxruntime-int8, eager-fp32-nopad"
        )
    return {
        "backend": parts[0],
        "precision": parts[1],
        "channels_last": "nhwc" in flags,
        "compile": "compile" in flags,
        "pad100": "nopad" not in flags,
    }


def build_net(case: Case) -> nn.Module:
    """The case's network with random weights (seed 0): timing needs the maths, not the
    training."""
    torch.manual_seed(0)
    if case.net == PORT:
        return PortStyleFCN8s(case.classes)
    if case.net == TORCHVISION:
        from torchvision.models.segmentation import fcn_resnet50

        return fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=case.classes, aux_loss=False
        )
    from fcnkit.weights import create_model

    return create_model(case.net, case.classes)


def _calibration(case: Case) -> list[Tensor]:
    """Two random normalised batches: int8 ranges for timing only (the accuracy run
    calibrates on training images, :func:`siftflow_accuracy`)."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(case.batch, 3, *case.size, generator=gen) for _ in range(2)]


def build_forward(case: Case, net: nn.Module) -> tuple[Callable[[Tensor], Any], str]:
    """``(forward, runner name)``: the baselines as their users run them (``no_grad``, eager,
    NCHW), fcnkit models through :func:`fcnkit.backends.build_runner`."""
    device = torch.device(case.device)
    if case.impl != "fcnkit":
        if case.mode != "eager-fp32":
            raise ValueError(f"{case.net} is a baseline: it runs eager-fp32 only")
        net = net.to(device).eval()

        def forward(x: Tensor) -> Any:
            with torch.no_grad():
                return net(x)

        return forward, "eager-fp32 (no_grad)"
    from fcnkit.backends import build_runner

    options = parse_mode(case.mode)
    calibration = _calibration(case) if options["precision"] == "int8" else None
    runner = build_runner(net, **options, calibration=calibration, device=device,
                          threads=case.threads)  # fmt: skip
    return runner, runner.name


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back (glibc ``malloc_trim``), so that the
    resident set is what is alive (matters in-process, after earlier cases)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of what runs after :meth:`reset`, above the size at construction.

    CPU: the resident set's high-water mark (``VmHWM``), reset by writing ``5`` to
    ``/proc/self/clear_refs`` (``reset_ok`` false where refused: the lifetime ``ru_maxrss``
    is used). CUDA: ``torch.cuda.max_memory_allocated`` after
    ``reset_peak_memory_stats``."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.reset_ok = device, True
        if device.type != "cuda":
            _release_freed_memory()
        self.base = 0 if device.type == "cuda" else self._status("VmRSS")

    @staticmethod
    def _status(key: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_freed_memory()  # what setup freed is not the run's
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.reset_ok = False

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = self._status("VmHWM") if self.reset_ok else 0
        if not hwm:
            self.reset_ok = False
            scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        return (hwm - self.base) / 2**20


BENCH_CACHE_ENV = "FCNKIT_BENCH_CACHE"  # the run's scratch folder, set by run_bench


@contextmanager
def _scratch_onnx_cache() -> Iterator[None]:
    """``FCNKIT_CACHE`` in the run's scratch folder (:data:`BENCH_CACHE_ENV`), else in a
    temporary one, while a case is set up: the ONNX files of the (seeded, random) weights
    are shared by the run's cases and deleted with it, never left in the user's cache."""
    saved = os.environ.get("FCNKIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as scratch:
        os.environ["FCNKIT_CACHE"] = os.environ.get(BENCH_CACHE_ENV) or scratch
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("FCNKIT_CACHE", None)
            else:
                os.environ["FCNKIT_CACHE"] = saved


def _timed(step: Callable[[], Any], case: Case) -> list[float]:
    """Run ``step`` ``warmup`` times, then time ``runs`` calls (synchronising on CUDA)."""
    cuda = case.device.startswith("cuda")
    times = []
    for i in range(case.warmup + case.runs):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= case.warmup:
            times.append(time.perf_counter() - start)
    return times


def run_case(case: Case) -> dict[str, Any]:
    """Measure one case in this process: times, peak memory, the runner's name."""
    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    memory = PeakMemory(device)
    net = build_net(case)
    setup = {"infer": _infer_step, "train": _train_step, "frame": _frame_step}[case.task]
    with _scratch_onnx_cache():
        step, runner = setup(case, net, device)
    del net
    memory.reset()
    times = _timed(step, case)
    result = {**run_statistics(times), "times_s": times, "peak_mb": memory.peak_mb()}
    result.update(runner=runner, peak_after_setup=memory.reset_ok)
    return result


def _infer_step(case: Case, net: nn.Module, device: torch.device) -> tuple[Callable, str]:
    forward, name = build_forward(case, net)
    x = torch.randn(case.batch, 3, *case.size, device=device)
    return (lambda: forward(x)), name


def _frame_step(case: Case, net: nn.Module, device: torch.device) -> tuple[Callable, str]:
    """``Segmenter.predict`` of a uint8 frame, the mode as the Segmenter's backend options
    (int8: calibrated on two random window-sized images, for timing only)."""
    from fcnkit.inference import Segmenter
    from fcnkit.preprocessing import Preprocessing

    options = parse_mode(case.mode)
    gen = torch.Generator().manual_seed(2)
    side = math.isqrt(case.max_pixels or case.size[0] * case.size[1])
    calibration = None
    if options["precision"] == "int8":
        calibration = [torch.randint(0, 256, (3, side, side), dtype=torch.uint8, generator=gen)
                       for _ in range(2)]  # fmt: skip
    pre = getattr(net, "preprocessing", None) or Preprocessing()
    # copy_model=False: the net was built for this case alone, as Segmenter(RUN) loads one
    # (a copy for channels-last would count VGG16's 537 MB of weights twice)
    seg = Segmenter(net, device, batch_size=1, max_pixels=case.max_pixels, preprocessing=pre,
                    calibration=calibration, threads=case.threads, copy_model=False,
                    **options)  # fmt: skip
    image = torch.randint(0, 256, (3, *case.size), dtype=torch.uint8, generator=gen)
    name = f"Segmenter({case.mode}, max_pixels={case.max_pixels})"
    return (lambda: seg.predict(image)), name


def _train_step(case: Case, net: nn.Module, device: torch.device) -> tuple[Callable, str]:
    """One training step. Port: its SGD (momentum 0.99, weight decay 5e-4) and its loss.
    fcnkit: the ``voc-fcn8s-paper`` recipe's optimiser (parameter groups), the engine's
    :class:`~fcnkit.engine.loss.SegmentationLoss` and its non-finite guards on the gradients
    and weights (as ``engine.train.train_step``); variant ``channels_last`` adds the
    ``train.channels_last`` option (NHWC weights and inputs)."""
    net = net.to(device).train()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(case.batch, 3, *case.size, generator=gen).to(device)
    y = torch.randint(0, case.classes, (case.batch, *case.size), generator=gen).to(device)
    y[:, :4] = IGNORE_INDEX  # some unlabelled pixels, as VOC's boundaries
    if case.impl == "port-style":
        opt = torch.optim.SGD(net.parameters(), lr=1e-14, momentum=0.99, weight_decay=5e-4)

        def port_step() -> None:
            opt.zero_grad()
            port_style_loss(net(x), y).backward()
            opt.step()

        return port_step, "port-style SGD + masked nll_loss"
    return _fcnkit_train_step(case, net, x, y)


def _fcnkit_train_step(case: Case, net: nn.Module, x: Tensor, y: Tensor) -> tuple[Callable, str]:
    from fcnkit.engine.config import load_config
    from fcnkit.engine.guards import nonfinite_names
    from fcnkit.engine.loss import SegmentationLoss
    from fcnkit.engine.optim import build_optimizer

    recipe = load_config("voc-fcn8s-paper")
    if case.variant == "channels_last":
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(net, recipe.optim)
    criterion = SegmentationLoss(normalize=recipe.loss.normalize)
    # variant "amp": train.amp on a CPU with native bf16 (engine.train.autocast_dtype)
    amp = case.variant == "amp"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = criterion(net(x), y)
        loss.backward()
        grads = ((n, p.grad) for n, p in net.named_parameters() if p.grad is not None)
        if nonfinite_names(grads):
            raise FloatingPointError("non-finite gradient")
        opt.step()
        nonfinite_names(net.named_parameters())

    return step, f"fcnkit voc-fcn8s-paper optimiser + SegmentationLoss ({case.variant or 'recipe'})"


def run_isolated(case: Case | dict, timeout: float = 3600.0) -> dict[str, Any]:
    """:func:`run_case` (or a ``{"paired": ...}`` spec's :func:`run_paired`) in a fresh
    Python process (its peak memory is its own); a failure is returned as ``{"error":
    sentence}``."""
    spec = json.dumps(asdict(case) if isinstance(case, Case) else case)
    code = "import sys; from fcnkit.bench import worker_main; sys.exit(worker_main())"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], input=spec, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def preload() -> None:
    """Import every module a case may need, before :class:`PeakMemory` takes the baseline,
    so that no case is charged for code the others do not load."""
    import torchvision.models.segmentation  # noqa: F401

    import fcnkit.backends  # noqa: F401
    import fcnkit.engine.config  # noqa: F401
    import fcnkit.engine.guards  # noqa: F401
    import fcnkit.engine.loss  # noqa: F401
    import fcnkit.engine.optim  # noqa: F401
    import fcnkit.inference  # noqa: F401
    import fcnkit.weights  # noqa: F401
    from fcnkit.extras import require

    with suppress(ImportError):
        require("onnxruntime", "the ONNX Runtime backend")
    with suppress(ImportError):
        require("openvino", "the OpenVINO backend")


#: idle time before each call timed in turns: PyTorch's OpenMP threads keep spinning for a
#: while after an eager call, and an OpenVINO call started at once lost ~10% to them (Lite0
#: FCN-8s, 500x500: 21.1 ms right after eager fp32, 19.0-19.4 ms after a 50-300 ms pause,
#: 18.7 ms alone; eager fp32 63.2 vs 63.4 ms): each case starts from quiet cores, as alone
PAIRED_PAUSE_S = 0.05


def run_paired(cases: list[Case], rounds: int) -> dict[str, Any]:
    """Time several cases **in turns** in this process: each round runs every case once, the
    order rotating from round to round, after each case's warm-up, each call after a pause
    of :data:`PAIRED_PAUSE_S`. A load that changes during the run (other jobs on a shared
    machine) then hits every case alike, and the per-round ratios cancel it;
    :func:`paired_ratios` takes their median."""
    torch.set_num_threads(cases[0].threads)
    steps = []
    for case in cases:
        device = torch.device(case.device)
        setup = {"infer": _infer_step, "train": _train_step, "frame": _frame_step}[case.task]
        with _scratch_onnx_cache():
            step, _ = setup(case, build_net(case), device)
        for _ in range(case.warmup):
            step()
        steps.append(step)
    times = time_in_turns(steps, rounds)
    return {"labels": [case_label(c) for c in cases], "times_s": times, "rounds": rounds}


def time_in_turns(steps: Sequence[Callable[[], Any]], rounds: int) -> list[list[float]]:
    """Seconds of each step per round: every round calls each step once, the order rotating
    from round to round, each call after a pause of :data:`PAIRED_PAUSE_S`."""
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        for i in [(r + k) % len(steps) for k in range(len(steps))]:
            time.sleep(PAIRED_PAUSE_S)
            start = time.perf_counter()
            steps[i]()
            times[i].append(time.perf_counter() - start)
    return times


def case_label(case: Case) -> str:
    return ":".join(x for x in (case.impl, case.net, case.mode, case.variant) if x)


def paired_ratios(paired: dict[str, Any]) -> dict[str, float]:
    """Label -> median over rounds of (first case's time / this case's time): > 1 faster
    than the first case (the baseline)."""
    base = paired["times_s"][0]
    return {
        label: statistics.median(b / t for b, t in zip(base, times, strict=True))
        for label, times in zip(paired["labels"], paired["times_s"], strict=True)
    }


def worker_main() -> int:
    """Read a :class:`Case` as JSON on stdin (or ``{"paired": [cases], "rounds": n}``),
    print the result as one JSON line."""
    preload()
    spec = json.loads(sys.stdin.read())
    try:
        if "paired" in spec:
            result = run_paired([Case(**c) for c in spec["paired"]], spec["rounds"])
        else:
            result = run_case(Case(**spec))
    except Exception as err:  # noqa: BLE001 - reported in the row, the bench goes on
        result = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"}
    print(json.dumps(result), flush=True)
    return 0


def measure_paired(cases: list[Case], rounds: int, isolate: bool) -> dict[str, Any]:
    """:func:`run_paired` (in a fresh process if ``isolate``) with its ratios."""
    if isolate:
        result = run_isolated({"paired": [asdict(c) for c in cases], "rounds": rounds})
    else:
        try:
            result = run_paired(cases, rounds)
        except Exception as err:  # noqa: BLE001 - reported, the bench goes on
            result = {"error": f"{type(err).__name__}: {err}"}
    if "times_s" in result:
        result["ratios"] = paired_ratios(result)
    return result


def measure(case: Case, isolate: bool) -> dict[str, Any]:
    """The case's row: its settings and its measurement (in a fresh process if ``isolate``)."""
    if isolate:
        result = run_isolated(case)
    else:
        try:
            result = run_case(case)
        except Exception as err:  # noqa: BLE001 - reported in the row, the bench goes on
            result = {"error": f"{type(err).__name__}: {err}"}
    row = {k: v for k, v in asdict(case).items() if k not in ("threads", "device")}
    row["impl"] = case.impl
    row["size"] = list(case.size)
    row.update(result)
    if "median_s" in row:
        row["images_per_s"] = case.batch / row["median_s"]
    return row


# ======================================================================= FLOPs


def flops_per_image(net: str, size: tuple[int, int], classes: int) -> float | None:
    """Forward FLOPs of one image (:class:`~torch.utils.flop_counter.FlopCounterMode`, on
    the meta device: from the shapes, nothing computed); ``None`` if it cannot be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = build_net(Case("infer", net, classes=classes)).eval()
            x = torch.empty(1, 3, *size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a model the meta device cannot build: no FLOPs column
        return None


# ======================================================================= the plan

DEFAULT_MODES = ("eager-fp32-nhwc", "eager-bf16-nhwc", "onnxruntime-fp32", "onnxruntime-int8",
                 "openvino-fp32", "openvino-bf16")  # fmt: skip
QUICK_MODES = ("eager-fp32-nhwc",)  # --quick: no ONNX export or int8 calibration of VGG16
LITE0 = "fcn8s-efficientnet_lite0"
FAITHFUL = "fcn8s"
#: the VGG16 no-pad-100 geometry (issue 14 §2), timed beside the faithful fcn8s
NO_PAD100_MODE = "eager-fp32-nopad"


def runnable_modes(modes: Sequence[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(modes this machine runs, {left-out mode: why})``: bf16 only on a CPU with native
    bf16 (emulated elsewhere: ~40x slower eager, refused by OpenVINO), a backend only with its
    package installed."""
    from importlib.util import find_spec

    from fcnkit.backends import BF16_CPU_FLAGS, ONNX_BACKENDS, cpu_has_bf16

    kept, left_out = [], {}
    for mode in modes:
        options = parse_mode(mode)
        backend = options["backend"]  # the ONNX backends are named as their packages
        if backend in ONNX_BACKENDS and find_spec(backend) is None:
            left_out[mode] = f"{backend} is not installed"
        elif options["precision"] == "bf16" and not cpu_has_bf16():
            left_out[mode] = f"no native bf16 on this CPU ({' / '.join(BF16_CPU_FLAGS)})"
        else:
            kept.append(mode)
    return tuple(kept), left_out


@dataclass
class BenchOptions:
    """What ``fcnkit bench`` runs (the CLI's flags)."""

    quick: bool = False  # a tiny smoke run (in-process): structure, not numbers
    full: bool = False  # the 128^2..2048^2 sweep and training at 500x500
    threads: int | None = None  # default: torch's current number
    runs: int = 10  # timed runs of each latency case (after warm-up)
    modes: Sequence[str] = DEFAULT_MODES  # fcnkit's fast modes besides eager-fp32
    isolate: bool | None = None  # each case in a fresh process (default: unless quick)
    memory_processes: int = 3  # fresh processes whose median peak memory a memory target reads
    train: bool = True
    frame: bool = True
    sweep: bool = True
    siftflow_root: str | None = None  # with checkpoint: mean IU of each mode on SIFT Flow test
    checkpoint: str | None = None
    accuracy_json: str | None = None  # or a measured accuracy read from this file
    log: Callable[[str], None] = field(default=print, repr=False)
    on_section: Callable[[dict], None] | None = field(default=None, repr=False)  # partial report


@dataclass
class Sizes:
    """The inputs of one plan (quick: tiny ones)."""

    voc: tuple[int, int] = (500, 500)
    siftflow: tuple[int, int] = (256, 256)
    large_batch: int = 4
    frame: tuple[int, int] = (1024, 2048)
    frame_model: str = FAITHFUL
    window: int = 512  # the sliding window's tile side: max_pixels = window^2
    sweep: tuple[int, ...] = (256, 512, 768, 1024)
    sweep_model: str = FAITHFUL
    sweep_runs: int = 3
    train: tuple[int, int] = (256, 256)
    train_runs: int = 3
    matmul: int = 2048

    @classmethod
    def for_options(cls, options: BenchOptions) -> Sizes:
        if options.quick:
            return cls((32, 32), (48, 48), 2, (64, 128), LITE0, 32, (32, 48, 64), LITE0, 2,
                       (32, 32), 1, 256)  # fmt: skip
        if options.full:
            sweep = (128, 256, 512, 768, 1024, 1536, 2048)
            return cls(sweep=sweep, train=(500, 500), train_runs=5)
        return cls()


def inference_cases(options: BenchOptions, sizes: Sizes, threads: int) -> list[Case]:
    """500x500 at batch 1: the baselines, fcnkit's faithful fcn8s and its modes, Lite0."""
    runs, warm = (1, 1) if options.quick else (options.runs, 1)
    base = {"size": sizes.voc, "runs": runs, "warmup": warm, "threads": threads}
    section = f"{sizes.voc[0]}x{sizes.voc[1]}"
    cases = [Case("infer", PORT, section=section, **base)]
    for net in (FAITHFUL, LITE0):
        cases += [
            Case("infer", net, m, section=section, **base) for m in ("eager-fp32", *options.modes)
        ]
    # the no-pad-100 geometry (VGG16 only; other maths: a row of its own, never "fastest")
    cases.append(Case("infer", FAITHFUL, NO_PAD100_MODE, section=section, **base))
    cases.append(Case("infer", TORCHVISION, section=section, **base))
    return cases


def siftflow_cases(
    options: BenchOptions, sizes: Sizes, threads: int, fastest: dict[str, str]
) -> list[Case]:
    """256x256 (SIFT Flow's size) at batch 1 and a larger batch: the port and the fastest
    mode of fcn8s and Lite0 in the 500x500 section, and Lite0 in eager-fp32. 21 classes,
    as the 500x500 cases: the same weights, so one ONNX export serves both sections."""
    section = f"{sizes.siftflow[0]}x{sizes.siftflow[1]}"
    runs = 1 if options.quick else options.runs
    big_runs = 1 if options.quick else max(3, options.runs // 3)
    nets = [(PORT, "eager-fp32")]
    nets += [(net, fastest[net]) for net in (FAITHFUL, LITE0) if net in fastest]
    nets.append((LITE0, "eager-fp32"))
    cases = []
    for batch, n in ((1, runs), (sizes.large_batch, big_runs)):
        for net, mode in dict.fromkeys(nets):
            cases.append(Case("infer", net, mode, sizes.siftflow, batch, n, 1, threads,
                              section=section))  # fmt: skip
    return cases


def training_cases(
    options: BenchOptions, sizes: Sizes, threads: int, runs: int | None = None
) -> list[Case]:
    from fcnkit.backends import cpu_has_bf16

    warmup = 0 if options.quick else 1
    runs = sizes.train_runs if runs is None else runs
    base = {"size": sizes.train, "runs": runs, "warmup": warmup, "threads": threads}
    section = f"train {sizes.train[0]}x{sizes.train[1]}"
    variants = ["recipe", "channels_last"] + ["amp"] * cpu_has_bf16()  # bf16: native only
    return [
        Case("train", PORT, section=section, **base),
        *(Case("train", FAITHFUL, section=section, variant=v, **base) for v in variants),
    ]


def frame_case(options: BenchOptions, sizes: Sizes, threads: int, mode: str) -> Case:
    return Case("frame", sizes.frame_model, mode, sizes.frame, 1, 1, 0, threads,
                max_pixels=sizes.window**2, section="frame")  # fmt: skip


def sweep_cases(options: BenchOptions, sizes: Sizes, threads: int, mode: str) -> list[Case]:
    return [
        Case(
            "infer",
            sizes.sweep_model,
            mode,
            (s, s),
            1,
            sizes.sweep_runs,
            1,
            threads,
            section="sweep",
        )  # fmt: skip
        for s in sizes.sweep
    ]


def gpu_cases(options: BenchOptions, sizes: Sizes) -> list[Case]:
    """FCN-8s at 500x500 on the GPU in fp32, fp16 and bf16 (none without a GPU)."""
    if not torch.cuda.is_available():
        return []
    runs = 2 if options.quick else options.runs
    return [
        Case("infer", FAITHFUL, m, sizes.voc, 1, runs, 3, 1, device="cuda", section="gpu")
        for m in ("eager-fp32", "eager-fp16", "eager-bf16")
    ]


# ======================================================================= the run


def _add_flops(row: dict[str, Any], peak: float, cache: dict) -> None:
    """``gflops_per_image`` and ``peak_fraction`` (achieved FLOP/s over the matmul rate)."""
    key = (row["net"], tuple(row["size"]), row["classes"])
    if key not in cache:
        cache[key] = flops_per_image(row["net"], key[1], key[2])
    flops = cache[key]
    row["gflops_per_image"] = flops / 1e9 if flops else None
    if flops and "median_s" in row:
        row["peak_fraction"] = flops * row["batch"] / row["median_s"] / peak


def _measure_all(
    cases: list[Case], options: BenchOptions, isolate: bool, flops: dict | None = None,
    peak: float = 0.0, memory: Callable[[Case], bool] = lambda case: False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Each case's row; for the cases ``memory`` picks (a memory target reads them), the
    peak memory is the median over :attr:`BenchOptions.memory_processes` fresh processes."""
    rows = []
    for case in cases:
        row = measure(case, isolate)
        if isolate and memory(case) and "peak_mb" in row:
            median_peak_memory(row, case, options.memory_processes)
        if flops is not None and case.task == "infer":
            _add_flops(row, peak, flops)
        options.log(_progress(row))
        rows.append(row)
    return rows


def median_peak_memory(row: dict[str, Any], case: Case, processes: int) -> None:
    """``row["peak_mb"]`` becomes the median over ``processes`` fresh processes (the row's
    own and ``processes - 1`` more, one timed run each after the warm-up); the values are in
    ``peak_mb_processes``. At two threads a case's peak varies between processes (fcnkit
    fcn8s at 500x500: 855-978 MB in one run; docs/speed.md), enough to flip a target read
    from one draw."""
    peaks = [row["peak_mb"]]
    for _ in range(processes - 1):
        extra = run_isolated(replace(case, runs=1))
        if "peak_mb" in extra:
            peaks.append(extra["peak_mb"])
    row["peak_mb_processes"] = peaks
    row["peak_mb"] = statistics.median(peaks)


def _progress(row: dict[str, Any]) -> str:
    what = f"  {row['section']:<12} {row['impl']:<10} {row['net']:<26} {row['mode']:<18}"
    what += f" b{row['batch']}"
    if "error" in row:
        return f"{what}  failed: {row['error']}"
    return f"{what}  {row['median_s'] * 1000:10.1f} ms  {row['peak_mb']:8.0f} MB"


def fastest_modes(
    rows: list[dict[str, Any]], backend: str | None = None, precision: str | None = None
) -> dict[str, str]:
    """fcnkit net -> its fastest measured mode (lowest median latency), of ``backend`` and
    ``precision`` if given."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["impl"] != "fcnkit" or "median_s" not in row:
            continue
        mode = parse_mode(row["mode"])
        if not mode["pad100"]:  # another geometry: not the same model's maths
            continue
        if backend not in (None, mode["backend"]) or precision not in (None, mode["precision"]):
            continue
        if row["net"] not in best or row["median_s"] < best[row["net"]]["median_s"]:
            best[row["net"]] = row
    return {net: row["mode"] for net, row in best.items()}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_port``: the port's median over the row's, same section and batch (> 1: faster);
    ``vs_eager_fp32``: the same net's eager-fp32 median over the row's."""

    def median_of(section: str, net: str, mode: str, batch: int) -> float | None:
        for r in rows:
            if (r["section"], r["net"], r["mode"], r["batch"]) == (section, net, mode, batch):
                return r.get("median_s")
        return None

    for row in rows:
        if "median_s" not in row:
            continue
        port = median_of(row["section"], PORT, "eager-fp32", row["batch"])
        own = median_of(row["section"], row["net"], "eager-fp32", row["batch"])
        row["vs_port"] = port / row["median_s"] if port else None
        row["vs_eager_fp32"] = own / row["median_s"] if own else None


def sweep_fits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Linear fits of time and peak memory against the pixel count."""
    ok = [r for r in rows if "median_s" in r]
    if len(ok) < 2:
        return {}
    pixels = [r["size"][0] * r["size"][1] for r in ok]
    return {
        "time": linear_fit(pixels, [r["median_s"] for r in ok]),
        "memory": linear_fit(pixels, [r["peak_mb"] for r in ok]),
    }


def run_bench(options: BenchOptions, command: str = "fcnkit bench") -> dict[str, Any]:
    """Run every section; returns the report (:func:`report_markdown` renders it). The
    cases share one scratch folder for exported ONNX files, removed at the end."""
    saved = os.environ.get(BENCH_CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as scratch:
        os.environ[BENCH_CACHE_ENV] = scratch
        try:
            return _run_sections(options, command)
        finally:
            if saved is None:
                os.environ.pop(BENCH_CACHE_ENV, None)
            else:
                os.environ[BENCH_CACHE_ENV] = saved


def _run_sections(options: BenchOptions, command: str) -> dict[str, Any]:
    threads = int(options.threads or torch.get_num_threads())
    isolate = (not options.quick) if options.isolate is None else options.isolate
    sizes, log = Sizes.for_options(options), options.log
    report: dict[str, Any] = {"fcnkit_bench": 1, "command": command}
    report["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["machine"] = machine_info(threads)
    report["load_average_start"] = load_average()
    report["settings"] = {**asdict(options), "isolate": isolate, "threads": threads,
                          "sizes": asdict(sizes)}  # fmt: skip
    report["settings"].pop("log", None)
    report["settings"].pop("on_section", None)
    done = options.on_section or (lambda partial: None)
    log(f"fcnkit bench: {report['machine']['cpu']}, {threads} threads, isolate={isolate}")
    modes, report["left_out_modes"] = runnable_modes(options.modes)
    options = replace(options, modes=modes)
    for mode, why in report["left_out_modes"].items():
        log(f"  mode {mode} left out: {why}")
    report["matmul"] = matmul_peak(threads, sizes.matmul, 3 if options.quick else 10)
    peak, flops = report["matmul"]["flops_per_s"], {}
    log(f"  fp32 matmul peak {sizes.matmul}^2: {peak / 1e9:.1f} GFLOP/s ({report['matmul']})")
    report["equivalence"] = equivalence_check(sizes.voc)
    log(f"  port vs fcnkit fcn8s, same weights: {report['equivalence']}")
    rows = _measure_all(inference_cases(options, sizes, threads), options, isolate, flops, peak,
                        memory=lambda c: _memory_target_case(c, sizes))  # fmt: skip
    # each net's fastest modes at 500x500, before the 256x256 rows join `rows` (a mode must
    # not win by its input being smaller)
    fastest = fastest_modes(rows)
    fastest_eager, fastest_fp32 = fastest_modes(rows, "eager"), fastest_modes(rows, "eager", "fp32")
    rows += _measure_all(siftflow_cases(options, sizes, threads, fastest), options, isolate,
                         flops, peak)  # fmt: skip
    add_ratios(rows)
    report["inference"] = rows
    done(report)
    report["fastest_modes"] = fastest
    if options.train:
        cases = training_cases(options, sizes, threads, runs=1)  # times: the paired rounds
        report["training"] = _measure_all(cases, options, isolate)
        add_ratios(report["training"])
        done(report)
    report["paired"] = _paired_sections(options, sizes, threads, fastest_eager, fastest, isolate)
    done(report)
    # the frame and the sweep: the faithful maths' memory (no autocast weight casts per call)
    # and no export per case
    if options.frame:
        mode = fastest_fp32.get(sizes.frame_model, "eager-fp32")
        case = frame_case(options, sizes, threads, mode)
        report["frame"] = _measure_all([case], options, isolate, memory=lambda c: True)
        done(report)
    if options.sweep:
        mode = fastest_fp32.get(sizes.sweep_model, "eager-fp32")
        cases = sweep_cases(options, sizes, threads, mode)
        sweep = _measure_all(cases, options, isolate, flops, peak, memory=lambda c: True)
        report["sweep"] = {"rows": sweep, "fits": sweep_fits(sweep)}
    gpu = gpu_cases(options, sizes)
    no_gpu = {"measured": False, "reason": "no GPU"}
    report["gpu"] = _measure_all(gpu, options, isolate) if gpu else no_gpu
    report["accuracy"] = _accuracy(options, threads)
    report["load_average_end"] = load_average()
    report["targets"] = evaluate_targets(report)
    return report


def _memory_target_case(case: Case, sizes: Sizes) -> bool:
    """The two rows the peak-memory target compares: the port and fcnkit's faithful fcn8s,
    eager fp32, batch 1, at the VOC size."""
    return (case.net in (PORT, FAITHFUL) and case.mode == "eager-fp32" and case.batch == 1
            and case.size == sizes.voc)  # fmt: skip


def _paired_sections(
    options: BenchOptions, sizes: Sizes, threads: int, fastest_eager: dict[str, str],
    fastest: dict[str, str], isolate: bool,
) -> dict[str, Any]:  # fmt: skip
    """The targets' comparisons timed in turns (:func:`run_paired`): the port, fcnkit's
    faithful fcn8s and its fastest eager and fastest modes; Lite0 eager-fp32 and the same;
    the training steps. Rounds: ``runs`` (inference), the training runs (training)."""
    rounds = 2 if options.quick else options.runs
    base = {"size": sizes.voc, "warmup": 1, "threads": threads, "section": "paired"}

    # each net's fastest eager mode and its fastest of all: ONNX Runtime's threads do not
    # spin (OnnxRuntimeRunner) and OpenVINO's left eager fp32 as fast in turns (docs/speed.md)
    def fast_cases(net: str) -> list[Case]:
        modes = dict.fromkeys(m.get(net, "eager-fp32") for m in (fastest_eager, fastest))
        return [Case("infer", net, m, **base) for m in modes if m != "eager-fp32"]

    vgg = [Case("infer", PORT, **base), Case("infer", FAITHFUL, **base), *fast_cases(FAITHFUL)]
    groups = {"fcn8s": (vgg, rounds)}
    if lite_fast := fast_cases(LITE0):
        groups["lite0"] = ([Case("infer", LITE0, **base), *lite_fast], rounds)
    if options.train:
        groups["training"] = (training_cases(options, sizes, threads), sizes.train_runs)
    out = {}
    for name, (cases, n) in groups.items():
        out[name] = measure_paired(cases, n, isolate)
        ratios = out[name].get("ratios", {"error": out[name].get("error")})
        options.log(f"  paired {name} ({n} rounds): {ratios}")
    return out


def _accuracy(options: BenchOptions, threads: int) -> dict[str, Any]:
    if options.accuracy_json:
        return load_accuracy(options.accuracy_json)
    if not (options.siftflow_root and options.checkpoint):
        return {"measured": False, "reason": "not measured in this run (--siftflow-root and "
                "--checkpoint evaluate each mode on SIFT Flow test)"}  # fmt: skip
    modes = ("eager-fp32", *options.modes)
    return siftflow_accuracy(options.checkpoint, options.siftflow_root, modes, threads)


def load_accuracy(path: str | os.PathLike) -> dict[str, Any]:
    """A measured accuracy section (:func:`siftflow_accuracy`'s dict, or a bench report
    holding one under ``accuracy``), marked with where it came from. Mean IU does not
    depend on the machine's load, so it may be measured apart from the timings."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read an accuracy JSON ({err})") from None
    data = data.get("accuracy", data) if isinstance(data, dict) else None
    if not isinstance(data, dict) or not data.get("measured") or "modes" not in data:
        raise ValueError(f"{path}: expected a measured accuracy ('measured': true, 'modes')")
    return {**data, "source": str(path)}


def siftflow_accuracy(
    checkpoint: str, root: str, modes: Sequence[str], threads: int, limit: int | None = None
) -> dict[str, Any]:
    """Mean IU (semantic head, the dataset's exclusions) of a trained checkpoint on SIFT Flow
    test for each mode; int8 is calibrated on 8 training images."""
    from fcnkit.backends import build_runner
    from fcnkit.data import create_dataset
    from fcnkit.engine.evaluate import dataset_scoring
    from fcnkit.metrics import ConfusionMatrix
    from fcnkit.weights import load_model

    torch.set_num_threads(threads)
    test = create_dataset("siftflow", root, "test")
    train = create_dataset("siftflow", root, "train")
    model, meta = load_model(checkpoint)
    pre = model.preprocessing
    scoring = dataset_scoring(test, getattr(model, "num_classes", None))
    exclude, names = scoring.exclude, scoring.class_names
    exclude = next(iter(exclude.values()), []) if isinstance(exclude, dict) else exclude
    names = next(iter(names.values()), None) if isinstance(names, dict) else names
    calibration = [pre.normalize(train[i]["image"][None]) for i in range(8)]
    result: dict[str, Any] = {"measured": True, "checkpoint": str(checkpoint), "modes": {}}
    result.update(step=meta.get("step"), model=meta.get("model_name"))
    count = len(test) if limit is None else min(limit, len(test))
    for mode in modes:
        opts = parse_mode(mode)
        calib = calibration if opts["precision"] == "int8" else None
        with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as cache:
            runner = build_runner(model, **opts, calibration=calib, threads=threads,
                                  cache_dir=cache)  # fmt: skip
        matrix = None
        for i in range(count):
            sample = test[i]
            label = sample["label"]
            label = next(iter(label.values())) if isinstance(label, dict) else label
            scores = next(iter(runner(pre.normalize(sample["image"][None])).values()))
            if matrix is None:
                known = names if names and len(names) == scores.shape[1] else None
                matrix = ConfusionMatrix(scores.shape[1], class_names=known,
                                         ignore_index=scoring.ignore_index)  # fmt: skip
            matrix.update(scores, label[None])
        result["modes"][mode] = 100 * matrix.compute(exclude=exclude)["mean_iu"]
        model = model.to(memory_format=torch.contiguous_format)
    result["images"] = count
    return result


# ======================================================================= the targets (issue 14 §3)


def _row(rows: Any, **match: Any) -> dict[str, Any] | None:
    for row in rows if isinstance(rows, list) else []:
        if all(row.get(k) == v for k, v in match.items()) and "median_s" in row:
            return row
    return None


def _target(name: str, value: float | None, threshold: str, met: bool | None, detail: str = ""):
    status = "not measured" if met is None else ("met" if met else "not met")
    return {"target": name, "value": value, "threshold": threshold, "status": status,
            "detail": detail}  # fmt: skip


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 14 §3 with its measured value and met / not met / not
    measured."""
    sizes = report["settings"]["sizes"]
    voc = f"{sizes['voc'][0]}x{sizes['voc'][1]}"
    rows = report.get("inference", [])
    port = _row(rows, section=voc, net=PORT, batch=1)
    faithful = _row(rows, section=voc, net=FAITHFUL, mode="eager-fp32", batch=1)
    paired = report.get("paired", {})
    targets = [_speed_target("faithful fcn8s (eager-fp32) vs port-style baseline, " + voc,
                             faithful, port, 1.0, paired.get("fcn8s"))]  # fmt: skip
    eq = report["equivalence"]
    targets.append(_target(
        "identical outputs, fcnkit fcn8s vs port-style (same weights)", eq["relative_diff"],
        "labels 100% equal, relative diff <= 1e-5", eq["identical"],
        f"max abs diff {eq['max_abs_diff']:.2e}, labels {100 * eq['label_agreement']:.4f}%",
    ))  # fmt: skip
    fastest = report.get("fastest_modes", {})
    best = _row(rows, section=voc, net=FAITHFUL, mode=fastest.get(FAITHFUL), batch=1)
    targets.append(_speed_target(f"fastest CPU mode of fcn8s vs port-style, {voc}", best,
                                 port, 2.5, paired.get("fcn8s")))  # fmt: skip
    targets.append(_accuracy_target(report["accuracy"], fastest.get(LITE0), rows, voc))
    lite = _row(rows, section=voc, net=LITE0, mode="eager-fp32", batch=1)
    lite_best = _row(rows, section=voc, net=LITE0, mode=fastest.get(LITE0), batch=1)
    targets.append(_speed_target(f"fastest CPU mode of Lite0 FCN-8s vs its eager-fp32, {voc}",
                                 lite_best, lite, 3.0, paired.get("lite0")))  # fmt: skip
    targets.append(_training_target(report.get("training"), paired.get("training")))
    targets.append(_training_target(report.get("training"), paired.get("training"), amp=True))
    targets.append(_memory_target(faithful, port, voc))
    targets += _linearity_targets(report, sizes)
    targets.append(_gpu_target(report["gpu"]))
    return targets


def _speed_target(
    name: str, row: dict | None, base: dict | None, threshold: float, paired: dict | None = None
) -> dict:
    """``base`` time over ``row`` time: from the paired timing (the median of the per-round
    ratios) where it has both, else from the two separate cases' medians."""
    if row is None or base is None:
        return _target(name, None, f">= {threshold}x", None, "a case failed or was not run")
    label = ":".join(x for x in (row["impl"], row["net"], row["mode"], row.get("variant")) if x)
    ratios = (paired or {}).get("ratios", {})
    detail = f"{row['net']} {row['mode']} {row['median_s'] * 1e3:.0f} ms vs "
    detail += f"{base['net']} {base['mode']} {base['median_s'] * 1e3:.0f} ms"
    if label in ratios:
        ratio = ratios[label]
        detail = f"timed in turns, median of {paired['rounds']} per-round ratios; separate "
        detail += f"cases: {base['median_s'] / row['median_s']:.2f}x ({row['net']} {row['mode']})"
    else:
        ratio = base["median_s"] / row["median_s"]
    return _target(name, ratio, f">= {threshold}x", ratio >= threshold, detail)


def _accuracy_target(accuracy: dict[str, Any], mode: str | None, rows: list, voc: str) -> dict:
    """The fastest Lite0 mode's mean IU drop; the detail also names the fastest mode that
    stays within 0.5 points, when that is another one."""
    name = "fastest mode's mean IU within 0.5 of fp32, SIFT Flow test (Lite0 FCN-8s)"
    if not accuracy.get("measured") or mode not in accuracy.get("modes", {}):
        return _target(name, None, "<= 0.5 points", None, "not measured in this run")
    ious = accuracy["modes"]
    drop = ious["eager-fp32"] - ious[mode]
    detail = f"{mode} {ious[mode]:.2f} vs fp32 {ious['eager-fp32']:.2f}"
    within = [
        r
        for r in rows
        if r["section"] == voc
        and r["net"] == LITE0
        and r["batch"] == 1
        and "median_s" in r
        and ious["eager-fp32"] - ious.get(r["mode"], -1e9) <= 0.5
    ]
    lite = _row(rows, section=voc, net=LITE0, mode="eager-fp32", batch=1)
    if drop > 0.5 and within and lite:
        ok = min(within, key=lambda r: r["median_s"])
        detail += (
            f"; fastest within 0.5: {ok['mode']} ({ious[ok['mode']]:.2f}, "
            f"{lite['median_s'] / ok['median_s']:.2f}x Lite0 eager-fp32)"
        )
    detail += f", {accuracy.get('images', '?')} images, {accuracy.get('checkpoint', '?')}"
    if "source" in accuracy:
        detail += f" (from {accuracy['source']})"
    return _target(name, drop, "<= 0.5 points", drop <= 0.5, detail)


def _training_target(rows: list[dict] | None, paired: dict | None, amp: bool = False) -> dict:
    """The fp32 training step (the faithful maths, both sides) or, with ``amp``, fcnkit's
    ``train.amp`` step (bf16 autocast on a CPU with native bf16) against the port's fp32."""
    name = "training step, fcnkit fcn8s vs port-style"
    name += " (fcnkit: train.amp, bf16 autocast)" if amp else " (fp32 both)"
    port = _row(rows, net=PORT)
    ours = [r for r in rows or [] if r["impl"] == "fcnkit" and "median_s" in r
            and (r["variant"] == "amp") == amp]  # fmt: skip
    if amp and not ours:
        return _target(name, None, ">= 1.3x", None, "not run: no native bf16 on this CPU")
    ratios = (paired or {}).get("ratios", {})

    def speed(r: dict) -> float:  # the paired ratio where there is one
        return ratios.get(f"fcnkit:{r['net']}:{r['mode']}:{r['variant']}", 1 / r["median_s"])

    best = max(ours, key=speed) if ours else None
    result = _speed_target(name, best, port, 1.3, paired)
    if best is not None:
        result["detail"] += f" (fcnkit variant: {best['variant']})"
    return result


def _processes(*rows: dict) -> str:
    """`` (medians of 3 fresh processes: 1 / 2 / 3 vs 4 / 5 / 6 MB)`` where the rows have them."""
    peaks = [r.get("peak_mb_processes") for r in rows]
    if not all(p and len(p) > 1 for p in peaks):
        return ""
    listed = " vs ".join(" / ".join(f"{v:.0f}" for v in p) for p in peaks)
    return f" (medians of {len(peaks[0])} fresh processes: {listed} MB)"


def _memory_target(row: dict | None, base: dict | None, voc: str) -> dict:
    name = f"peak memory, {voc} inference, fcnkit fcn8s eager-fp32 vs port-style"
    if row is None or base is None:
        return _target(name, None, "<= 1.0x", None, "a case failed or was not run")
    ratio = row["peak_mb"] / base["peak_mb"]
    detail = f"{row['peak_mb']:.0f} MB vs {base['peak_mb']:.0f} MB{_processes(row, base)}"
    if 1.0 < ratio <= 1.01:
        detail += " (within the ~1% repeatability of resident-set peaks)"
    return _target(name, ratio, "<= 1.0x", ratio <= 1.0, detail)


def _linearity_targets(report: dict[str, Any], sizes: dict) -> list[dict]:
    fits = report.get("sweep", {}).get("fits", {})
    out = []
    for what in ("time", "memory"):
        name = f"{what} linear in the pixel count (sweep {sizes['sweep'][0]}^2.."
        name += f"{sizes['sweep'][-1]}^2)"
        fit = fits.get(what)
        if fit is None:
            out.append(_target(name, None, "R^2 >= 0.98", None, "no sweep"))
            continue
        out.append(_target(name, fit["r2"], "R^2 >= 0.98", fit["r2"] >= 0.98,
                           f"slope {fit['slope']:.3g} per pixel"))  # fmt: skip
    out.append(_flat_memory_target(report, sizes))
    return out


def _flat_memory_target(report: dict[str, Any], sizes: dict) -> dict:
    """The frame through the window against one window-sized image (same net and mode):
    within 25% (the frame adds the image, its labels and one band of scores)."""
    w = sizes["window"]
    name = f"memory flat beyond the window budget ({sizes['frame'][0]}x{sizes['frame'][1]} "
    name += f"frame vs one {w}x{w} image)"
    frame = _row(report.get("frame"))
    tile = _row(report.get("sweep", {}).get("rows"), size=[w, w])
    if frame is None or tile is None or tile["peak_mb"] <= 0:
        return _target(name, None, "<= 1.25x", None, "frame or window-sized sweep row missing")
    ratio = frame["peak_mb"] / tile["peak_mb"]
    detail = f"{frame['peak_mb']:.0f} MB vs {tile['peak_mb']:.0f} MB{_processes(frame, tile)}"
    return _target(name, ratio, "<= 1.25x", ratio <= 1.25, detail)


def _gpu_target(gpu: Any) -> dict:
    name = "GPU latency at 500x500, fp32 and fp16/bf16 (paper: 175 ms on a K40c)"
    if isinstance(gpu, dict):
        return _target(name, None, "reported", None, f"not measured: {gpu['reason']}")
    parts = [f"{r['mode']} {r['median_s'] * 1e3:.1f} ms" for r in gpu if "median_s" in r]
    fp32 = _row(gpu, mode="eager-fp32")
    value = fp32["median_s"] * 1e3 if fp32 else None
    detail = ", ".join(parts) + f" on {gpu and torch.cuda.get_device_name(0)}"
    return _target(name, value, "reported", value is not None, detail)


# ======================================================================= the Markdown report


def _fmt(value: Any, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _table(header: Sequence[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def _speed_lines(rows: list[dict[str, Any]]) -> list[list[str]]:
    lines = []
    for r in rows:
        what = [r["impl"], r["net"], r["mode"] + (f" ({r['variant']})" if r.get("variant") else "")]
        what += [str(r["batch"]), f"{r['size'][0]}x{r['size'][1]}"]
        if "median_s" not in r:
            lines.append([*what, f"failed: {r.get('error', '?')}"] + ["-"] * 7)
            continue
        spread = f"{(r['p75_s'] - r['p25_s']) * 1e3:.0f} ({r['runs']})"
        pf = r.get("peak_fraction")
        lines.append([*what, f"{r['median_s'] * 1e3:.0f}", spread, f"{r['images_per_s']:.2f}",
                      f"{r['peak_mb']:.0f}", _fmt(r.get("gflops_per_image"), ".3g"),
                      _fmt(pf and 100 * pf, ".0f"), _times(r.get("vs_port")),
                      _times(r.get("vs_eager_fp32"))])  # fmt: skip
    return lines


SPEED_HEADER = ("impl", "net", "mode", "batch", "input", "median ms", "IQR ms (runs)", "img/s",
                "peak MB", "GFLOP/img", "% mm peak", "vs port", "vs own fp32")  # fmt: skip


def _header_lines(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    v = m["versions"]
    mm = report["matmul"]
    where = "each case in a fresh process" if report["settings"]["isolate"] else "in-process"
    return [
        f"Command: `{report['command']}` ({report['date_utc']})",
        "",
        f"- Device: CPU, {m['cpu']} ({m['logical_cores']} logical cores, "
        f"flags: {', '.join(m['cpu_flags']) or 'none of ' + '/'.join(CPU_FLAGS)}), "
        f"{m['threads']} threads; GPU: {m['gpu'] or 'none'}",
        f"- Versions: fcnkit {v['fcnkit']}, torch {v['torch']}, torchvision {v['torchvision']}, "
        f"onnxruntime {v['onnxruntime']}, openvino {v.get('openvino')}, Python {m['python']}",
        f"- Load average (1, 5, 15 min) at start {report['load_average_start']}, at end "
        f"{report['load_average_end']}",
        f"- fp32 matrix-multiply peak, same run: {mm['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"(the better of a {mm['n']}x{mm['n']} `torch.mm`, "
        f"{mm.get('mm_flops_per_s', mm['flops_per_s']) / 1e9:.1f}, and the same product as a "
        f"1x1 conv2d, {mm.get('conv1x1_flops_per_s', 0) / 1e9:.1f}; best of {mm['runs']}); "
        "bf16 and int8 rows can exceed it",
        f"- Peak memory: {where}"
        ", resident set high-water mark after setup minus the size after the imports"
        + _memory_median_note(report),
    ]


def _memory_median_note(report: dict[str, Any]) -> str:
    """``; the memory targets' rows: ...`` when their rows are medians of several processes."""
    n = report.get("settings", {}).get("memory_processes", 1)
    if n <= 1 or not report.get("settings", {}).get("isolate"):
        return ""
    return f"; the memory targets' rows: the median of {n} fresh processes"


def _paired_lines(paired: dict[str, Any]) -> list[str]:
    if not paired:
        return []
    out = ["", "### Timed in turns (the targets' ratios)", "",
           "Each round runs every case once in one process, the order rotating; the ratio is "
           "the median over rounds of the first case's time over the row's.", ""]  # fmt: skip
    lines = []
    for group, result in paired.items():
        if "ratios" not in result:
            lines.append([group, "-", f"failed: {result.get('error', '?')}", "-", "-"])
            continue
        for label, times in zip(result["labels"], result["times_s"], strict=True):
            median = statistics.median(times) * 1e3
            lines.append([group, str(result["rounds"]), label, f"{median:.0f}",
                          _times(result["ratios"][label])])  # fmt: skip
    return out + _table(("group", "rounds", "case", "median ms", "vs first"), lines)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the machine, the targets, then one table per section."""
    out = ["## fcnkit bench", "", *_header_lines(report)]
    for mode, why in report.get("left_out_modes", {}).items():
        out.append(f"- Mode {mode} left out: {why}")
    out += ["", "### Targets (issue 14 §3)", ""]
    out += _table(("target", "measured", "threshold", "status", "detail"), [
        [t["target"], _fmt(t["value"], ".3g"), t["threshold"], f"**{t['status']}**",
         t["detail"]] for t in report["targets"]])  # fmt: skip
    sections: dict[str, list] = {}
    for row in report["inference"]:
        sections.setdefault(row["section"], []).append(row)
    for name, rows in sections.items():
        out += ["", f"### Inference {name}", ""] + _table(SPEED_HEADER, _speed_lines(rows))
    out += _paired_lines(report.get("paired", {}))
    for key, title in (("training", "Training step"), ("frame", "Sliding-window frame")):
        if key in report:
            out += ["", f"### {title}", ""] + _table(SPEED_HEADER, _speed_lines(report[key]))
    if "sweep" in report:
        out += ["", "### Size sweep", ""] + _table(
            SPEED_HEADER, _speed_lines(report["sweep"]["rows"])
        )
        for what, fit in report["sweep"]["fits"].items():
            out.append(f"\n{what}: slope {fit['slope']:.4g} per pixel, intercept "
                       f"{fit['intercept']:.4g}, R^2 {fit['r2']:.4f}")  # fmt: skip
    gpu = report["gpu"]
    out += ["", "### GPU", ""]
    if isinstance(gpu, dict):
        out.append(f"not measured: {gpu['reason']}")
    else:
        out += _table(SPEED_HEADER, _speed_lines(gpu))
    acc = report["accuracy"]
    out += ["", "### Accuracy of the modes (SIFT Flow test, mean IU)", ""]
    if acc.get("measured"):
        where = f"{acc.get('checkpoint')}, {acc.get('images')} test images"
        where += f", read from {acc['source']}" if "source" in acc else ", measured in this run"
        out += [f"Checkpoint {where}.", ""]
        out += _table(("mode", "mean IU"), [[m, f"{v:.2f}"] for m, v in acc["modes"].items()])
    else:
        out.append(acc["reason"])
    out += [
        "",
        "vs port: the port-style baseline's median over the row's (same section and "
        "batch; > 1 is faster); vs own fp32: the same net's eager-fp32 median over the row's.",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(worker_main())
