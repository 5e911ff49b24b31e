"""`pip install fcnkit` without extras: the package imports, predicts and gives one-line
install hints. A user's real condition, simulated by hiding every optional module in a fresh
interpreter (a meta-path finder that raises ModuleNotFoundError, as a missing wheel does)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fcnkit.extras import EXTRAS, MissingExtraError, install_hint, require

# every top-level module an extra brings (fcnkit.extras.EXTRAS lists distributions)
OPTIONAL_MODULES = [
    "onnx", "onnxruntime", "onnxscript", "openvino", "matplotlib", "tensorboard", "h5py",
    "fastapi", "uvicorn", "multipart", "python_multipart", "starlette",
]  # fmt: skip

HIDE = textwrap.dedent(
    f"""
    import sys, importlib.machinery
    HIDDEN = {OPTIONAL_MODULES!r}
    _find = importlib.machinery.PathFinder.find_spec
    def find_spec(name, path=None, target=None):  # as if the wheel were not installed
        return None if name.split(".")[0] in HIDDEN else _find(name, path, target)
    importlib.machinery.PathFinder.find_spec = find_spec
    """
)


def run_without_extras(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_core_install_imports_predicts_and_lists_commands(tmp_path: Path) -> None:
    code = """
    import numpy as np, torch
    from PIL import Image
    import fcnkit
    from fcnkit.cli import build_parser, main
    from fcnkit.weights import save_checkpoint
    build_parser()                                    # every command registers
    model = fcnkit.create_model("fcn8s-efficientnet_lite0", num_classes=3,
                                backbone_weights=None)
    save_checkpoint("m.pt", model, classes=["a", "b", "c"])
    pixels = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save("x.png")
    labels = fcnkit.Segmenter("m.pt").predict("x.png")
    assert labels.shape == (40, 56), labels.shape
    assert main(["predict", "m.pt", "x.png", "--out", "pred"]) == 0
    for name in ("onnx", "matplotlib", "h5py", "fastapi"):
        assert name not in sys.modules, name
    print("OK")
    """
    done = run_without_extras(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout
    assert any((tmp_path / "pred").iterdir())


def test_missing_extra_is_one_line_naming_the_pip_install(tmp_path: Path) -> None:
    code = """
    import torch
    from fcnkit.cli import main
    from fcnkit.weights import save_checkpoint
    import fcnkit
    save_checkpoint("m.pt", fcnkit.create_model("fcn32s-efficientnet_lite0", num_classes=2,
                    backbone_weights=None))
    raise SystemExit(main(["export", "m.pt", "--out", "m.onnx"]))
    """
    done = run_without_extras(code, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert 'pip install "fcnkit[onnx]"' in lines[0]
    assert "Traceback" not in done.stderr


def test_require_names_the_extra_and_keeps_real_import_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"Drawing figures needs .*fcnkit\[viz\]"):
        require("matplotlib", "Drawing figures")
    assert install_hint("h5py") == 'pip install "fcnkit[hed]"  (or: pip install h5py)'
    assert install_hint("somepkg") == "pip install somepkg"
    # a module that exists but whose own import fails is not reported as a missing extra
    (tmp_path / "broken_mod.py").write_text("import does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="does_not_exist_xyz"):
        require("broken_mod", "a test")


def test_every_extra_is_declared_in_pyproject() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for extra, dists in EXTRAS.items():
        if extra == "safetensors":  # a core dependency (weights files), listed for the hint
            continue
        names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in declared[extra]}
        assert set(dists) <= names, (extra, dists, names)
