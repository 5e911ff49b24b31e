"""docs/reliability.md: every fault row names at least one test, and every test it names exists
(issue 12, "every row of docs/reliability.md has a test that fails if the behaviour
regresses")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
REF = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def fault_rows() -> list[str]:
    """The rows of the fault tables (three columns: fault, behaviour, test)."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        table_row = line.startswith("|") and len(cells) == 3 and not set(cells[0]) <= set("- ")
        if table_row and cells[0] != "fault or input":
            rows.append(line)
    return rows


def defined_tests(path: Path) -> set[str]:
    """Test functions and fixtures defined at module level of ``path``."""
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_row_names_tests_that_exist() -> None:
    rows = fault_rows()
    assert len(rows) > 30
    missing = []
    for row in rows:
        refs = REF.findall(row.rsplit("|", 2)[-2])
        assert refs, f"a row without a test: {row[:120]}"
        current = None
        for file, name in refs:
            current = file or current  # `::name` after a path refers to the same file
            assert current, f"`::{name}` without a file before it: {row[:120]}"
            path = ROOT / current
            if not path.is_file() or name not in defined_tests(path):
                missing.append(f"{current}::{name}")
    assert missing == []
