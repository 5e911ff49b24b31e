"""The run directory's writers (engine/rundir.py)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from fcnkit.engine.rundir import write_json


def test_write_json_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"step": 1})

    def full(self: Path, text: str, *args, **kwargs) -> int:
        with open(self, "w") as f:
            f.write(text[:10])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"step": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
