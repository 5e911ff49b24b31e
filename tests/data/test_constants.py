"""Shared constants have one definition each; other modules import it."""

from __future__ import annotations

import ast
from pathlib import Path

import fcnkit.data
import fcnkit.preprocessing as preprocessing
from fcnkit.data import base, collate, nyud, synthetic, transforms

DATA_DIR = Path(fcnkit.data.__file__).parent


def _assigned(path: Path) -> set[str]:
    """Names bound by module-level assignments in ``path``."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_ignore_index_is_defined_once_in_base() -> None:
    defining = sorted(p.name for p in DATA_DIR.glob("*.py") if "IGNORE_INDEX" in _assigned(p))
    assert defining == ["base.py"]
    for module in (collate, transforms, synthetic):
        assert module.IGNORE_INDEX == base.IGNORE_INDEX == 255


def test_depth_code_is_defined_in_preprocessing_and_imported_by_nyud() -> None:
    names = ("DEPTH_CODE_MEAN", "DEPTH_CODE_STD", "DEPTH_LOG2_MIN", "DEPTH_LOG2_SPAN")
    assert not set(names) & _assigned(DATA_DIR / "nyud.py")
    for name in names:
        assert getattr(nyud, name) is getattr(preprocessing, name)
    # the RGB-D preset normalises the 4th channel with exactly the reader's code
    rgbd = preprocessing.CAFFE_NYUD_RGBD
    assert (rgbd.mean[3], rgbd.std[3]) == (nyud.DEPTH_CODE_MEAN, nyud.DEPTH_CODE_STD)
