"""The run directory: what a training run writes, and the log it keeps (rank 0 only).

::

    RUN/config.yaml          resolved config          RUN/meta.json     version, git hash, ...
    RUN/log.jsonl            one JSON event per line  RUN/metrics.json  last evaluation, best
    RUN/checkpoints/last.pt  latest state (resume)    RUN/checkpoints/best.pt  best mean IU
    RUN/tb/                  TensorBoard scalars and sample predictions

A run directory is never reused silently: an existing one is continued (resume), replaced
(overwrite) or refused (:class:`~fcnkit.engine.errors.RunDirExistsError`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit import __version__
from fcnkit.engine.config import Config, config_diff
from fcnkit.engine.errors import NothingToResumeError, RunDirExistsError


def git_hash() -> str | None:
    """The commit of the fcnkit source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def prepare_run_dir(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> None:
    """Create ``run_dir`` (never silently reusing one) and write the config and metadata.

    On resume the run's ``config.yaml`` is kept when ``config`` equals it; otherwise a
    warning lists the differences, the previous file is kept as
    ``config.before-resume-N.yaml`` and ``config.yaml`` becomes the config now in force.
    ``meta.json`` keeps the original run's entries and records each resume under ``resumes``.
    """
    last = run_dir / "checkpoints" / "last.pt"
    meta = {
        "fcnkit_version": __version__,
        "git_hash": git_hash(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "started_unix": round(time.time(), 3),
    }
    if resume:
        if not last.is_file():
            raise NothingToResumeError(
                "{resume}: no checkpoint at {last} (nothing to resume)", last=last
            )
        _keep_config_history(run_dir, config)
        meta_path = run_dir / "meta.json"
        first = json.loads(meta_path.read_text()) if meta_path.is_file() else dict(meta)
        first["resumed"] = True
        first.setdefault("resumes", []).append(meta)
        write_json(meta_path, first)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirExistsError(
                "run directory {path} already exists: pass {resume} to continue it, "
                "{run_dir} for a new run, or {overwrite} to replace it",
                path=run_dir,
            )
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    write_json(run_dir / "meta.json", {**meta, "resumed": False})


def _keep_config_history(run_dir: Path, config: Config) -> None:
    """On resume: warn about config changes and keep the previous ``config.yaml``."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        path.write_text(config.to_yaml())
        return
    saved = yaml.safe_load(path.read_text()) or {}
    changes = config_diff(saved, config.to_dict())
    if not changes:
        return
    n = 1
    while (backup := run_dir / f"config.before-resume-{n}.yaml").exists():
        n += 1
    os.replace(path, backup)
    path.write_text(config.to_yaml())
    warnings.warn(
        f"resuming {run_dir} with a config that differs from its config.yaml:\n  "
        + "\n  ".join(changes)
        + f"\nthe previous config is kept as {backup.name}; config.yaml now holds this one",
        stacklevel=3,
    )


class RunLogger:
    """``log.jsonl`` + TensorBoard on rank 0; does nothing on other ranks."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a dependency, but don't die without it
                warnings.warn("tensorboard is not installed: no TensorBoard logs", stacklevel=2)

    def event(self, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"event": kind, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(_finite(record), default=_json_default) + "\n")
        if self.tb is not None and "step" in values:
            for key, value in values.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(f"{kind}/{key}", value, values["step"])

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, image, step, dataformats="CHW")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _finite(obj: Any) -> Any:
    """NaN / inf -> None, recursively: log.jsonl and metrics.json stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
