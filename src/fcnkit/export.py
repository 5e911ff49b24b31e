"""ONNX export with dynamic height and width, checked with onnxruntime.

An FCN takes inputs of any size (paper Sec. 3), so the exported graph keeps ``batch``,
``height`` and ``width`` symbolic. :func:`export_onnx` writes the file and (by default) runs
it with onnxruntime on two different input sizes, comparing with PyTorch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnkit.extras import require
from fcnkit.models.outputs import SINGLE_HEAD, heads

DEFAULT_CHECK_SIZES: tuple[tuple[int, int], ...] = ((64, 80), (97, 71))


class _Exportable(nn.Module):
    """Outputs as a tuple (ONNX graphs have positional outputs), head names kept in order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(heads(out).values())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; afterwards every submodule is back in the mode
    it had (a frozen part of a training model stays frozen).

    The TorchScript exporter restores the *wrapper's* mode after tracing, recursively; a
    wrapper created in train mode therefore put the caller's BatchNorm layers in train mode.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """``["scores"]`` for single-output models, ``["scores_<head>", ...]`` otherwise."""
    with torch.no_grad():
        out = model(example)
    names = list(heads(out))
    return ["scores"] if names == [SINGLE_HEAD] else [f"scores_{k}" for k in names]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_size: tuple[int, int] = (64, 64),
    in_channels: int | None = None,
    opset: int = 18,
    check: bool = True,
    check_sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    dynamo: bool = False,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (eval mode, CPU) to ONNX with dynamic batch, height and width.

    The input (``input``, ``N x C x H x W``) is the *normalised* image, as for the PyTorch
    model (``model.preprocessing`` is stored in the file's metadata). Outputs are the scores,
    one per head (``scores`` or ``scores_<head>``). By default uses the TorchScript-based
    exporter, which handles every fcnkit model's crops and transposed convolutions with
    symbolic sizes and is fast; ``dynamo=True`` uses ``torch.export`` instead. The label
    metadata of ``metadata`` (a checkpoint's ``classes``, ``palette``, ``targets``,
    ``palettes``) is stored too, as JSON (:data:`LABEL_METADATA`, read by
    :func:`read_metadata`). With
    ``check`` the file is run with onnxruntime at ``check_sizes``; a max abs difference
    above ``atol + rtol * max|scores|`` raises.
    Returns ``{"path", "max_abs_diff", "outputs", "opset"}``. ``model`` is moved to the CPU
    and comes back in the train/eval mode it came in, every submodule.
    """
    require("onnx", "ONNX export")  # torch.onnx needs it; say which extra brings it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with eval_mode(model.cpu()):
        return _export_eval(
            model,
            path,
            example_size=example_size,
            in_channels=in_channels,
            opset=opset,
            check=check,
            check_sizes=check_sizes,
            tolerance=(atol, rtol),
            dynamo=dynamo,
            metadata=metadata,
        )


def _export_eval(
    model: nn.Module,
    path: Path,
    *,
    example_size: tuple[int, int],
    in_channels: int | None,
    opset: int,
    check: bool,
    check_sizes: Sequence[tuple[int, int]],
    tolerance: tuple[float, float],
    dynamo: bool,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """:func:`export_onnx` for a model already in eval mode on the CPU."""
    channels = in_channels or _in_channels(model)
    example = torch.zeros(1, channels, *example_size)
    names = output_names(model, example)
    dynamic = {"input": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({n: {0: "batch", 2: "height", 3: "width"} for n in names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python ints
        if dynamo:  # torch.export names the dynamic sizes of forward's argument ``x``
            from torch.export import Dim

            sizes = {"x": {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}}
            dynamic_kwargs: dict = {"dynamic_shapes": sizes}
        else:
            dynamic_kwargs = {"dynamic_axes": dynamic}
        torch.onnx.export(
            _Exportable(model).eval(),  # a wrapper in train mode would be restored to it
            (example,),
            str(path),
            input_names=["input"],
            output_names=names,
            opset_version=opset,
            dynamo=dynamo,
            **dynamic_kwargs,
        )
    _add_metadata(path, model, metadata or {})
    result: dict[str, Any] = {"path": str(path), "outputs": names, "opset": opset}
    if check:
        atol, rtol = tolerance
        result["max_abs_diff"] = check_onnx(
            path, model, check_sizes, channels, atol=atol, rtol=rtol
        )
    return result


def _in_channels(model: nn.Module) -> int:
    """Input channels: the model's ``input_channels`` (multi-modal nets: all trunks' inputs,
    6 for late-fusion ``rgb+hha``), else the first convolution's, else 3."""
    channels = getattr(model, "input_channels", None)
    if isinstance(channels, int) and channels > 0:
        return channels
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


#: checkpoint metadata stored in the ONNX file (JSON values), for predicting from the file alone
LABEL_METADATA: tuple[str, ...] = ("classes", "palette", "targets", "palettes")


def _add_metadata(path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    import json

    import onnx

    proto = onnx.load(str(path))
    meta = {"producer": "fcnkit", "model_name": str(getattr(model, "model_name", ""))}
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is not None:
        meta["preprocessing"] = json.dumps(preprocessing.to_dict())
    options = getattr(model, "model_options", None)
    if isinstance(options, dict):
        meta["model_options"] = json.dumps(options, default=str)
    for key in LABEL_METADATA:
        if metadata.get(key):
            meta[key] = json.dumps(_plain(metadata[key]))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _plain(value: Any) -> Any:
    """Tuples -> lists (JSON), recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def read_metadata(metadata_props: dict[str, str]) -> dict[str, Any]:
    """The fcnkit metadata of an exported file (``{key: value}`` as ONNX Runtime's
    ``custom_metadata_map`` gives it): ``model_name``, ``preprocessing`` (a dict) and the
    label metadata (:data:`LABEL_METADATA`) decoded from JSON."""
    import json

    out: dict[str, Any] = {"model_name": metadata_props.get("model_name", "")}
    for key in ("preprocessing", "model_options", *LABEL_METADATA):
        if key in metadata_props:
            out[key] = json.loads(metadata_props[key])
    return out


def check_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    in_channels: int | None = None,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Max abs difference between onnxruntime and PyTorch over random inputs of ``sizes``.

    Raises ``AssertionError`` naming the size if a shape differs or the difference exceeds
    ``atol + rtol * max|scores|``.
    """
    ort = require("onnxruntime", "Checking an ONNX export")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    channels = in_channels or _in_channels(model)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    with eval_mode(model.cpu()):
        for h, w in sizes:
            worst = max(worst, _check_size(session, model, (h, w), channels, g, (atol, rtol)))
    return worst


def _check_size(
    session: Any,
    model: nn.Module,
    size: tuple[int, int],
    channels: int,
    generator: torch.Generator,
    tolerance: tuple[float, float],
) -> float:
    """Max abs difference at one input size (see :func:`check_onnx`)."""
    (h, w), (atol, rtol) = size, tolerance
    x = torch.randn(1, channels, h, w, generator=generator) * 50  # ~Caffe-normalised range
    with torch.no_grad():
        expected = _Exportable(model)(x)
    got = session.run(None, {"input": x.numpy()})
    worst = 0.0
    for e, o in zip(expected, got, strict=True):
        if tuple(o.shape) != tuple(e.shape):
            raise AssertionError(f"ONNX output shape {o.shape} != {tuple(e.shape)} at {h}x{w}")
        e = e.numpy()
        diff = float(np.abs(o - e).max()) if o.size else 0.0
        bound = atol + rtol * (float(np.abs(e).max()) if e.size else 0.0)
        if not diff <= bound:
            raise AssertionError(
                f"ONNX differs from PyTorch by {diff} (allowed {bound:.3g}) at {h}x{w}"
            )
        worst = max(worst, diff)
    return worst
