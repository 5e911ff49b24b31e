"""Inference backends: one callable per way of running a trained FCN (``build_runner``).

Every runner takes the *normalised* input (``N x C x H x W`` float32, as the PyTorch model)
and returns ``{head: N x K x H' x W' float32 scores}`` (the contract of
:func:`fcnkit.models.outputs.heads`), without gradients. The faithful runner is eager
PyTorch in fp32 (``eager-fp32``): the model's own maths, Caffe geometry included. The fast
ones trade some of that (see ``docs/speed.md`` for each one's measured speed and accuracy):

- ``channels_last``: NHWC memory format; same maths, different summation order;
- ``compile``: :func:`torch.compile` for each input size seen (static shapes); a size that
  does not compile runs eagerly, with one warning;
- ``backend="onnxruntime"``: the model exported by :func:`fcnkit.export.export_onnx` (dynamic
  height and width), run by ONNX Runtime with its graph optimisations; an ``.onnx`` file
  written by ``fcnkit export`` is accepted in place of the model;
- ``backend="openvino"``: the same exported file compiled by OpenVINO for the CPU, in fp32 or
  (where the CPU computes bf16 natively) bf16 inference precision: the fastest CPU mode of
  the EfficientNet-Lite FCNs (docs/speed.md);
- ``precision="int8"`` (ONNX Runtime only): static post-training quantization in QDQ form,
  per-channel weights, activations calibrated on the ``calibration`` batches (training
  images, never the test set);
- ``pad100=False`` (VGG16 FCNs, any backend): the no-pad-100 geometry
  (:meth:`fcnkit.models.vgg.FCN.drop_pad100_`): no 100-pixel border of zeros around the image,
  outputs input-sized without crops; same weights, scores near the borders change;
- ``precision="bf16"`` / ``"fp16"`` (eager: autocast; OpenVINO: bf16 only). Only fast where
  the hardware has it; :func:`default_precision` never picks bf16 on a CPU without AVX-512
  BF16 or AMX.

The eager modes in bf16, fp16 or channels-last also fold BatchNorm into the convolution
before it (:func:`fcnkit.models.fold.fold_batchnorm_`, in a copy of the model): rounding-only
changes, ~10% faster.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import itertools
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnkit.models.fold import fold_batchnorm_
from fcnkit.models.outputs import SINGLE_HEAD, heads

BACKENDS: tuple[str, ...] = ("eager", "onnxruntime", "openvino")
#: the backends that run an exported ONNX file (an ``.onnx`` path in place of the model)
ONNX_BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
#: the precisions each backend runs (ONNX Runtime's CPU provider has no fast fp16/bf16
#: kernels; OpenVINO ran the int8 QDQ file no faster than fp32 here, docs/speed.md)
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "eager": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16"),
}
#: /proc/cpuinfo flags of native bf16 arithmetic (AVX-512 BF16, AMX); without them bf16
#: autocast is emulated (reported ~40x slower than fp32 on an AVX2-only CPU, issue 14); with
#: AVX-512 BF16 (an AMD EPYC) 1.06x (256 px) to 1.75x (500 px) faster (docs/speed.md)
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
#: the largest fraction of labels (argmax of the scores) a mode may change against the
#: faithful eager fp32 on a trained model: docs/speed.md (measured on SIFT Flow test), pinned
#: by tests/test_backends.py
LABEL_TOLERANCE: dict[str, float] = {
    "eager-fp32": 0.0,
    "eager-fp32-channels_last": 0.001,
    "eager-fp32-compiled": 0.001,
    "onnxruntime-fp32": 0.001,
    "onnxruntime-int8": 0.05,
    "openvino-fp32": 0.001,
    "openvino-bf16": 0.02,
    "eager-bf16": 0.02,
    "eager-fp16": 0.01,
}


# --------------------------------------------------------------------------- names
def _choice(value: str, choices: Iterable[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` with a "did you mean"."""
    choices = tuple(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {what} {value!r}{hint}; expected one of: {', '.join(choices)}")


def check_backend(backend: str, precision: str = "fp32") -> tuple[str, str]:
    """``(backend, precision)`` checked: known names, a precision the backend runs."""
    backend = _choice(backend, BACKENDS, "backend")
    precision = _choice(precision, PRECISIONS, "precision")
    if precision not in BACKEND_PRECISIONS[backend]:
        runs = [b for b, p in BACKEND_PRECISIONS.items() if precision in p]
        raise ValueError(
            f"precision {precision!r} is not available with backend {backend!r} (it runs "
            f"{', '.join(BACKEND_PRECISIONS[backend])}); use backend {runs[0]!r} for {precision}"
        )
    return backend, precision


# --------------------------------------------------------------------------- hardware
#: ``ONEDNN_MAX_CPU_ISA`` values that leave oneDNN's bf16 kernels on (oneDNN's ISA names;
#: PyTorch's and OpenVINO's oneDNN both honour the variable)
ONEDNN_BF16_ISAS: tuple[str, ...] = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                                     "AVX10", "ALL", "DEFAULT")  # fmt: skip


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none), less the
    bf16 ones (AVX-512 BF16, AMX) where ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below them: its
    bf16 kernels are off then (OpenVINO failed to compile bf16 convolutions under
    ``ONEDNN_MAX_CPU_ISA=AVX2``, the way this project emulates an AVX2-only CPU)."""
    flags: frozenset[str] = frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and not cap.startswith(ONEDNN_BF16_ISAS):
        flags = frozenset(f for f in flags if "bf16" not in f and not f.startswith("amx"))
    return flags


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX, :data:`BF16_CPU_FLAGS`).

    ``torch.backends.cpu.get_cpu_capability()`` says only "AVX2"/"AVX512", not whether the
    AVX-512 unit has the BF16 extension, so the flags are read instead; unknown = no.
    """
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def default_precision(device: str | torch.device = "cpu") -> str:
    """The fastest precision that is fast on ``device``: ``"bf16"`` on a CUDA GPU with bf16
    and on a CPU with native bf16 (:func:`cpu_has_bf16`), else ``"fp32"`` (never bf16 on an
    AVX2-only CPU, where it is emulated and much slower). Not the default of
    :func:`build_runner`, which stays faithful (fp32) unless asked."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


# --------------------------------------------------------------------------- runners
class Runner:
    """A callable running a model: normalised ``N x C x H x W`` -> ``{head: scores}``.

    Attributes: ``name`` (``"<backend>-<precision>[-channels_last][-compiled]"``),
    ``backend``, ``precision``, ``device``, ``model_name``, ``preprocessing`` (a dict, or
    ``None``), ``input_channels`` (``None`` if unknown).
    """

    name: str
    backend: str
    precision: str
    device: torch.device
    model_name: str = ""
    preprocessing: dict | None = None
    input_channels: int | None = None

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.model_name or 'model'}, {self.device})"


class EagerRunner(Runner):
    """The PyTorch module itself: fp32 (faithful), autocast bf16/fp16, NHWC, compiled."""

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str,
        channels_last: bool,
        compile: bool | str,
        device: torch.device,
        own_model: bool = False,
    ) -> None:
        self.backend, self.precision, self.device = "eager", precision, device
        self.model = model.to(device).eval()
        self.channels_last = channels_last
        # the fast eager modes (not compile alone) fold BatchNorm into the convolutions
        # (fcnkit.models.fold: ~10% faster, rounding-only changes)
        fold = (precision != "fp32" or channels_last) and any(
            isinstance(m, nn.BatchNorm2d) for m in self.model.modules()
        )
        if (fold or channels_last) and not own_model:  # the caller's model stays as it is
            self.model = copy.deepcopy(self.model)
        if fold:
            fold_batchnorm_(self.model)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        _describe(self, model)
        self._forward: Callable[[torch.Tensor], Any] = self.model
        suffix = "-channels_last" if channels_last else ""
        if compile:
            self._forward = CompiledForward(
                self.model, backend=compile if isinstance(compile, str) else "inductor"
            )
            suffix += "-compiled"
        self.name = f"eager-{precision}{suffix}"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = self._forward(x)
        return {k: s.float().contiguous() for k, s in heads(out).items()}


class CompiledForward:
    """``torch.compile`` of a model for static input sizes (one graph per size).

    Dynamic-shape compilation of the EfficientNet FCNs fails on their TF "SAME" padding
    arithmetic (``docs/speed.md``), so each new size is compiled with ``dynamic=False``; a
    size whose compilation fails runs eagerly from then on, after one warning.
    """

    def __init__(self, model: nn.Module, backend: str = "inductor") -> None:
        self.model = model
        self.compiled = torch.compile(model, dynamic=False, backend=backend)
        self.eager_sizes: set[tuple[int, ...]] = set()
        self.warned = False

    def __call__(self, x: torch.Tensor) -> Any:
        size = tuple(x.shape)
        if size in self.eager_sizes:
            return self.model(x)
        try:
            return self.compiled(x)
        except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly
            self.eager_sizes.add(size)
            if not self.warned:
                self.warned = True
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                warnings.warn(
                    f"torch.compile failed for input {size} ({type(err).__name__}: "
                    f"{first[:200]}); running eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return self.model(x)


class OnnxRuntimeRunner(Runner):
    """An ONNX file (fp32, or int8 QDQ) run by an ONNX Runtime session."""

    def __init__(
        self, path: Path, *, precision: str, device: torch.device, threads: int | None
    ) -> None:
        ort = _onnxruntime()
        self.backend, self.precision, self.device, self.path = (
            "onnxruntime",
            precision,
            device,
            path,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting threads after a run: they would take the cores from the PyTorch
        # work around it (normalising, argmax, the next eager model)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    "backend 'onnxruntime' on a CUDA device needs onnxruntime-gpu (the "
                    "installed onnxruntime has only the CPU provider); use device 'cpu'"
                )
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_heads = [_head_of(o.name) for o in self.session.get_outputs()]
        from fcnkit.export import read_metadata

        self.metadata: dict[str, Any] = read_metadata(
            dict(self.session.get_modelmeta().custom_metadata_map)
        )
        self.model_name = self.metadata["model_name"] or path.stem
        self.preprocessing = self.metadata.get("preprocessing")
        channels = self.session.get_inputs()[0].shape[1]
        self.input_channels = channels if isinstance(channels, int) else None
        self.name = f"onnxruntime-{precision}"

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        return {
            head: torch.from_numpy(np.ascontiguousarray(o)).to(self.device)
            for head, o in zip(self.output_heads, outputs, strict=True)
        }


class OpenVinoRunner(Runner):
    """An ONNX file compiled by OpenVINO for the CPU: fp32, or bf16 inference precision
    (refused on a CPU without native bf16, where OpenVINO would quietly run fp32)."""

    def __init__(
        self, path: Path, *, precision: str, device: torch.device, threads: int | None
    ) -> None:
        self.backend, self.precision, self.device, self.path = "openvino", precision, device, path
        if precision == "bf16" and not cpu_has_bf16():
            raise ValueError(
                "backend 'openvino' runs bf16 only on a CPU with native bf16 (flags "
                f"{' or '.join(BF16_CPU_FLAGS)}); this one has neither: use precision 'fp32'"
            )
        config = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
        }
        core = _openvino_core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._compiled = compiled
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        if ("bf16" in ran or "bfloat16" in ran) != (precision == "bf16"):
            raise ValueError(f"OpenVINO compiled {path.name} in {ran}, not {precision}")
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one call at a time (the server)
        self.output_heads = [_head_of(o.get_any_name()) for o in compiled.outputs]
        self.metadata: dict[str, Any] = onnx_metadata(path)
        self.model_name = self.metadata["model_name"]
        self.preprocessing = self.metadata.get("preprocessing")
        self.input_channels = self.metadata.get("input_channels")
        self.name = f"openvino-{precision}"

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        with self._lock:  # copies in and out: the request's buffers serve the next call
            result = self._request.infer({0: array}, share_inputs=False, share_outputs=False)
            outputs = [np.ascontiguousarray(result[port]) for port in self._compiled.outputs]
        return {
            head: torch.from_numpy(o).to(self.device)
            for head, o in zip(self.output_heads, outputs, strict=True)
        }


class RunnerModule(nn.Module):
    """A runner as an ``nn.Module`` (no parameters), for code written against modules
    (``fcnkit.engine.evaluate``): ``forward`` is the runner; ``preprocessing``,
    ``num_classes``, ``model_name`` and ``input_channels`` are copied from ``like``."""

    def __init__(self, runner: Runner, like: nn.Module | None = None) -> None:
        super().__init__()
        self.runner = runner
        for key in ("preprocessing", "num_classes", "model_name", "input_channels"):
            value = getattr(like, key, None) if like is not None else getattr(runner, key, None)
            if value is not None:
                setattr(self, key, value)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.runner(x)


def calibration_batches(
    images: Iterable[torch.Tensor], preprocessing: Any, limit: int | None = None
) -> Iterator[torch.Tensor]:
    """Normalised ``1 x C x H x W`` batches of ``uint8 C x H x W`` images (``preprocessing``:
    a :class:`fcnkit.preprocessing.Preprocessing`, preset name or dict), the first ``limit``."""
    from fcnkit.preprocessing import get_preprocessing

    normalize = get_preprocessing(preprocessing).normalize
    for i, image in enumerate(images):
        if limit is not None and i >= limit:
            return
        yield normalize(image[None])


def _head_of(output_name: str) -> str:
    """Head name of an exported output (``scores`` -> ``main``, ``scores_sem`` -> ``sem``)."""
    if output_name == "scores":
        return SINGLE_HEAD
    return output_name.removeprefix("scores_")


def _describe(runner: Runner, model: nn.Module) -> None:
    runner.model_name = str(getattr(model, "model_name", "") or type(model).__name__)
    pre = getattr(model, "preprocessing", None)
    runner.preprocessing = pre.to_dict() if hasattr(pre, "to_dict") else pre
    channels = getattr(model, "input_channels", None)
    runner.input_channels = channels if isinstance(channels, int) else None


def _onnxruntime() -> Any:
    from fcnkit.extras import require

    return require("onnxruntime", "the ONNX Runtime backend")


@functools.cache
def _openvino_core() -> Any:
    """One ``openvino.Core`` for the process, never freed: a Core per runner, freed with it,
    crashed the process later (heap corruption at the next fork, in the test suite)."""
    from fcnkit.extras import require

    return require("openvino", "the OpenVINO backend").Core()


# --------------------------------------------------------------------------- ONNX files
def is_onnx_file(spec: Any) -> bool:
    """Whether ``spec`` names an ``.onnx`` file (a path string or ``PathLike``)."""
    return isinstance(spec, str | os.PathLike) and str(spec).lower().endswith(".onnx")


def onnx_cache_dir() -> Path:
    """Where exported models are cached: ``$FCNKIT_CACHE/onnx`` (default
    ``~/.cache/fcnkit/onnx``), one file per weights and export settings."""
    root = os.environ.get("FCNKIT_CACHE") or os.path.join(Path.home(), ".cache", "fcnkit")
    return Path(root) / "onnx"


def _model_digest(model: nn.Module, extra: str = "") -> str:
    """A hash of the model's class, name, options, geometry and every tensor of its state
    dict."""
    h = hashlib.sha256()
    h.update(f"{type(model).__qualname__}|{getattr(model, 'model_name', '')}|".encode())
    h.update(repr(getattr(model, "model_options", None)).encode() + extra.encode())
    h.update(f"|{getattr(model, 'geometry', '')}".encode())  # no-pad-100: same weights
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def exported_onnx(model: nn.Module, cache: Path | None = None) -> Path:
    """The fp32 ONNX file of ``model`` (:func:`fcnkit.export.export_onnx`, dynamic H and W),
    from the cache when the same weights were exported before."""
    from fcnkit.export import export_onnx

    cache = cache or onnx_cache_dir()
    path = cache / f"{_model_digest(model)}-fp32.onnx"
    if not path.is_file():
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        partial = _temp_path(path)
        try:
            export_onnx(model, partial, check=False)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
            model.to(device)  # export runs on the CPU; the caller's model goes back
    return path


def _temp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".partial")
    os.close(fd)
    return Path(name)


def onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What an exported file says of its model (:func:`fcnkit.export.read_metadata`:
    ``model_name``, ``preprocessing``, class names and colours) plus ``input_channels``."""
    from fcnkit.export import read_metadata
    from fcnkit.extras import require

    onnx = require("onnx", "reading an ONNX file")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    proto = onnx.load(str(path), load_external_data=False)
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    meta["model_name"] = meta["model_name"] or path.stem
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[1].HasField("dim_value"):
        meta["input_channels"] = int(dims[1].dim_value)
    return meta


# --------------------------------------------------------------------------- int8
class _CalibrationReader:
    """The ``CalibrationDataReader`` protocol over normalised image batches."""

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str) -> None:
        self._batches: Iterator[torch.Tensor] = iter(batches)
        self.input_name = input_name
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += 1
        return {self.input_name: batch.detach().to("cpu", torch.float32).numpy()}


#: ops quantized to int8 (convolutions carry nearly all the time); the transposed
#: convolutions (upsamplers), resizes and the skip additions stay fp32 for accuracy
INT8_OPS: tuple[str, ...] = ("Conv",)
#: layers kept in fp32 (substrings of the exported node names): the score layers, whose
#: outputs are the class scores themselves, and the stem convolution (raw normalised pixels)
INT8_KEEP_FP32: tuple[str, ...] = ("/score", "/conv1_1/", "_conv_stem/", "/conv1/")
#: /proc/cpuinfo flags of an int8 dot product (VNNI) that does not saturate u8 x s8 sums
VNNI_CPU_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")


def quantize_int8(
    fp32_path: Path,
    calibration: Iterable[torch.Tensor],
    path: Path,
    *,
    keep_fp32: Iterable[str] = INT8_KEEP_FP32,
    method: str = "MinMax",
    reduce_range: bool | None = None,
) -> Path:
    """Static QDQ quantization of ``fp32_path`` into ``path``: per-channel int8 weights,
    uint8 activations whose ranges (``method``: ``MinMax``, ``Percentile``, ``Entropy``) come
    from running ``calibration``.

    Ops in :data:`INT8_OPS` only, nodes whose names contain a ``keep_fp32`` string stay fp32.
    ``reduce_range`` (7-bit weights; default: on CPUs without VNNI, where ONNX Runtime's
    u8 x s8 kernels can saturate). Raises ``ValueError`` if ``calibration`` is empty.
    """
    from fcnkit.extras import require

    quantization = require("onnxruntime.quantization", "int8 quantization")
    onnx = require("onnx", "int8 quantization")
    if reduce_range is None:
        reduce_range = not any(flag in cpu_flags() for flag in VNNI_CPU_FLAGS)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    keep = tuple(keep_fp32)
    excluded = [n.name for n in graph.node if any(k in n.name for k in keep)]
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("int8 calibration got no batches: pass calibration= images")
    session = _onnxruntime().InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    reader = _CalibrationReader(itertools.chain([first], batches), session.get_inputs()[0].name)
    partial = _temp_path(path)
    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.setLevel(logging.ERROR)  # "consider pre-processing": BN is already folded
    try:
        quantization.quantize_static(
            str(fp32_path),
            str(partial),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OPS),
            nodes_to_exclude=excluded,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, method),
        )
        os.replace(partial, path)
    finally:
        root_logger.setLevel(level)
        partial.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- the factory
def is_faithful(
    backend: str | None = "eager",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool | str = False,
    pad100: bool = True,
    **_: Any,
) -> bool:
    """Whether these :func:`build_runner` options are the faithful mode (eager fp32, the
    model's own maths), which callers run as the module itself, without a runner."""
    return (backend or "eager", precision, bool(channels_last), bool(compile), pad100) == (
        "eager", "fp32", False, False, True)  # fmt: skip


def build_runner(
    model: nn.Module | str | os.PathLike,
    backend: str = "eager",
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool | str = False,
    calibration: Iterable[torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    int8_keep_fp32: Iterable[str] = INT8_KEEP_FP32,
    pad100: bool = True,
    own_model: bool = False,
) -> Runner:
    """A :class:`Runner` of ``model`` on ``backend`` (one of :data:`BACKENDS`).

    Args:
        model: a PyTorch FCN; for ``"onnxruntime"`` and ``"openvino"`` also an exported
            ``.onnx`` file.
        precision: ``"fp32"`` (faithful), ``"bf16"``/``"fp16"`` (eager autocast; OpenVINO's
            bf16 inference precision on a CPU with native bf16), ``"int8"``
            (ONNX Runtime static quantization, needs ``calibration``), or ``"auto"``
            (:func:`default_precision` of ``device`` where the backend runs it, else fp32).
        channels_last, compile: eager only (NHWC memory format; ``torch.compile`` per size,
            ``True`` = the inductor backend, a string names another ``torch.compile``
            backend).
        calibration: normalised ``N x C x H x W`` batches of *training* images, int8 only.
        device: where the scores are returned (and, for eager, where the model runs).
        threads: intra-op threads (ONNX Runtime, OpenVINO; eager sets
            ``torch.set_num_threads``).
        cache_dir: where exported ONNX files are kept (default :func:`onnx_cache_dir`).
        int8_keep_fp32: node-name substrings of the layers int8 leaves in fp32 (default
            :data:`INT8_KEEP_FP32`; adding ``"_depthwise"`` halves the changed labels of the
            Lite0 FCNs and most of the speed-up, docs/speed.md).
        pad100: ``False``: a VGG16 FCN runs (a copy of it) in the no-pad-100 geometry
            (:func:`without_pad100`).
        own_model: the runner may change ``model`` in place (eager ``channels_last``; the
            BatchNorm folding of eager bf16 / fp16 / channels-last) instead of copying it:
            for callers that built the model for it alone (:class:`fcnkit.inference.Segmenter`
            loading a checkpoint), so that one copy of the weights is held, not two (VGG16:
            537 MB each).
    """
    device = torch.device(device)
    if not pad100:
        model, own_model = without_pad100(model), True  # a copy already
    if precision == "auto":  # the fastest the device has, among those the backend runs
        fast = default_precision(device)
        precision = fast if fast in BACKEND_PRECISIONS.get(backend, ()) else "fp32"
    backend, precision = check_backend(backend, precision)
    if backend == "eager":
        if is_onnx_file(model) or not isinstance(model, nn.Module):
            raise ValueError(
                f"backend 'eager' runs a PyTorch model, got {model!r}: an .onnx file runs "
                "with backend 'onnxruntime' or 'openvino'"
            )
        if threads:
            torch.set_num_threads(int(threads))
        return EagerRunner(model, precision=precision, channels_last=channels_last,
                           compile=compile, device=device, own_model=own_model)  # fmt: skip
    if channels_last or compile:
        raise ValueError(
            f"channels_last and compile are eager-backend options; {backend} chooses its "
            "own layouts and fuses the graph itself"
        )
    if backend == "openvino" and device.type != "cpu":
        raise ValueError(
            f"backend 'openvino' runs on the CPU (device 'cpu'), not {device}: on a GPU "
            "use backend 'eager' or 'onnxruntime' (with onnxruntime-gpu)"
        )
    cache = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    path = _onnx_path(model, cache, backend)
    if backend == "openvino":
        return OpenVinoRunner(path, precision=precision, device=device, threads=threads)
    if precision != "int8":
        return OnnxRuntimeRunner(path, precision=precision, device=device, threads=threads)
    int8 = _int8_path(path, calibration, cache, tuple(int8_keep_fp32))
    try:  # the session holds the quantized graph: the file is not kept
        return OnnxRuntimeRunner(int8, precision=precision, device=device, threads=threads)
    finally:
        int8.unlink(missing_ok=True)


def without_pad100(model: nn.Module | str | os.PathLike) -> nn.Module:
    """A copy of the VGG16 FCN ``model`` in the no-pad-100 geometry
    (:meth:`fcnkit.models.vgg.FCN.drop_pad100_`); ``ValueError`` for any other model."""
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"the no-pad-100 mode changes a PyTorch VGG16 FCN, got {model!r}: export the model "
            "after the change, or run it from its checkpoint"
        )
    if not hasattr(model, "drop_pad100_"):
        name = getattr(model, "model_name", None) or type(model).__name__
        raise ValueError(
            f"the no-pad-100 mode is for the VGG16 FCNs (Caffe's conv1_1 pads by 100); {name} "
            "has no such pad: its outputs are input-sized already"
        )
    return copy.deepcopy(model).drop_pad100_()


def _onnx_path(model: nn.Module | str | os.PathLike, cache: Path, backend: str) -> Path:
    if isinstance(model, nn.Module):
        return exported_onnx(model, cache)
    path = Path(model)
    if not is_onnx_file(path):
        raise ValueError(f"{path}: backend {backend!r} expects a model or an .onnx file")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    return path


def _int8_path(
    fp32: Path, calibration: Iterable[torch.Tensor] | None, cache: Path, keep: tuple[str, ...]
) -> Path:
    """A quantized copy of ``fp32`` in ``cache`` (calibrated on ``calibration`` every time:
    the calibration data is not part of any cache key; the caller removes it)."""
    if calibration is None:
        raise ValueError(
            "precision 'int8' needs calibration= (normalised batches of training images: "
            "the activation ranges are measured on them)"
        )
    path = _temp_path(cache / f"{fp32.stem}-int8.onnx")
    return quantize_int8(fp32, calibration, path, keep_fp32=keep)
