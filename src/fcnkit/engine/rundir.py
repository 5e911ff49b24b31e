"""The run directory: what a training run writes, and the log it keeps (rank 0 only).

::

    RUN/config.yaml          resolved config          RUN/meta.json     version, git hash, ...
    RUN/log.jsonl            one JSON event per line  RUN/metrics.json  last evaluation, best
    RUN/checkpoints/last.pt  latest state (resume)    RUN/checkpoints/best.pt  best mean IU
    RUN/tb/                  TensorBoard scalars and sample predictions
    RUN/.lock                the writer now at work (pid, host, start, command); empty when none

A run directory is never reused silently: an existing one is continued (resume), replaced
(overwrite) or refused (:class:`~fcnkit.engine.errors.RunDirExistsError`); a *failed start*
(the run's own records but no checkpoint: the start died before its first ``last.pt``) is
replaced by the next start, with a warning. One writer at a time (:class:`RunLock`).

Config history: ``config.yaml`` is the config in force; a resume that changes it keeps the
previous one as ``config.before-resume-N.yaml`` and appends to ``meta.json``'s ``resumes``
the step from which the new config applied, the changes and the file kept. A resume refuses
what it cannot apply (:func:`resume_conflicts`): everything else it changes takes effect.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
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
from fcnkit.engine.errors import NothingToResumeError, RunDirExistsError, RunInUseError
from fcnkit.weights.checkpoint import WEIGHT_OPTIONS

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is the user's business there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
# What a run writes before its first checkpoint; a directory holding nothing else (and no
# checkpoint) is a failed start.
RUN_RECORDS = ("config.yaml", "meta.json", "log.jsonl", "metrics.json", "tb", "checkpoints")
# What a resumed run cannot change: the weights' shapes and the optimiser state's layout
# (model, optim.name) and the training data stream, whose order is a function of (seed,
# epoch) over the training set and whose position is step x accumulate x batch size.
# model.weights and the WEIGHT_OPTIONS only seed a fresh model: they may change.
FIXED_ON_RESUME = (
    "data.dataset",
    "data.split",
    "data.options",
    "data.batch_size",
    "optim.name",
    "optim.accumulate",
    "train.seed",
)


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


# ----------------------------------------------------------------------------- the lock

_HELD: set[int] = set()  # lock descriptors of this process, closed in forked children


def _close_held_in_child() -> None:
    """A forked child (DataLoader worker) must not keep the run's lock alive."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``: one writer per run directory.

    While held the file names the holder (pid, host, start time, command); it is emptied on
    release. The kernel drops a ``flock`` when its process dies, so a file that still names
    a holder but can be locked is *stale* (the holder was killed): it is taken over and
    reported (:attr:`stale`).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.fd: int | None = None
        self.stale: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunInUseError` naming its holder."""
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held
            holder = _holder(fd)
            os.close(fd)
            raise RunInUseError(
                "run directory {path} is in use by process {pid} on {host} (started {started}"
                ": {command}); one writer per run directory. Wait for it to end, or stop it "
                "(it saves a checkpoint), then {resume}; or train into {run_dir}",
                path=self.path.parent,
                pid=holder.get("pid", "?"),
                host=holder.get("host", "?"),
                started=holder.get("started", "?"),
                command=" ".join(map(str, holder.get("argv") or ["?"])),
            ) from None
        except OSError as err:  # a file system without locks (some network mounts)
            os.close(fd)
            warnings.warn(f"cannot lock {self.path} ({err}): nothing keeps a second process "
                          "from writing this run at the same time", stacklevel=2)  # fmt: skip
            return self
        self.stale = _holder(fd) or None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        """Empty the file and drop the lock (``LOCK_UN``: also for any inherited copy)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _HELD.discard(fd)
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def stale_note(self) -> str | None:
        """The warning about a stale lock taken over, if there was one."""
        if not self.stale:
            return None
        s = self.stale
        return (
            f"stale lock of {self.path.parent}: process {s.get('pid', '?')} on "
            f"{s.get('host', '?')} (started {s.get('started', '?')}) no longer holds it "
            "(killed or crashed); taking it over"
        )


def _holder(fd: int) -> dict[str, Any]:
    """The record a lock file holds ({} when empty or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ creating, continuing


def require_checkpoint(run_dir: Path) -> Path:
    """``RUN/checkpoints/last.pt``, or :class:`NothingToResumeError` saying what to do."""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        return last
    template = "{resume}: no checkpoint at {last} (nothing to resume)"
    if run_dir.is_dir() and failed_start(run_dir):
        template += (
            ": the run stopped before its first checkpoint; start it again without {resume} "
            "(its directory is reused)"
        )
    raise NothingToResumeError(template, last=last)


def resume_conflicts(saved: dict[str, Any], config: Config) -> list[str]:
    """``"key: old -> new"`` for each change of ``config`` over ``saved`` (the checkpoint's
    config) that a resume cannot apply (:data:`FIXED_ON_RESUME`, the model)."""
    return config_diff(_fixed_on_resume(saved), _fixed_on_resume(config.to_dict()))


def _fixed_on_resume(config: dict[str, Any]) -> dict[str, Any]:
    model = dict(config.get("model") or {})
    model.pop("weights", None)
    options = model.get("options") or {}
    model["options"] = {k: v for k, v in options.items() if k not in WEIGHT_OPTIONS}
    fixed: dict[str, Any] = {"model": model}
    for key in FIXED_ON_RESUME:
        section, name = key.split(".")
        fixed.setdefault(section, {})[name] = (config.get(section) or {}).get(name)
    return fixed


def failed_start(run_dir: Path) -> bool:
    """``run_dir`` holds only a run's records (:data:`RUN_RECORDS`, the lock, temporaries)
    and no checkpoint: its start failed or was killed before the first ``last.pt``."""
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(not _temporary(p.name) for p in checkpoints.iterdir()):
        return False
    return all(p.name in (*RUN_RECORDS, LOCK_NAME) or _temporary(p.name) for p in run_dir.iterdir())


def _temporary(name: str) -> bool:
    """What an atomic write leaves when killed: ``.NAME.tmp`` (JSON), ``.NAME.*.tmp`` (.pt)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporaries of writes killed midway (only safe under the run's lock)."""
    found = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]
    for path in found:
        path.unlink(missing_ok=True)
    return [str(p.relative_to(run_dir)) for p in found]


def _clear(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but its lock."""
    for child in run_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_run_dir(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool, step: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """Create ``run_dir`` (never silently reusing one) and write the config and metadata;
    call it holding the run's :class:`RunLock`. Returns events for the run's log.

    On resume (from ``step``) the run's ``config.yaml`` is kept when ``config`` equals it;
    otherwise a warning lists the differences, the previous file is kept as
    ``config.before-resume-N.yaml`` and ``config.yaml`` becomes the config now in force.
    ``meta.json`` keeps the original run's entries and records each resume under ``resumes``.
    """
    meta = {
        "fcnkit_version": __version__,
        "git_hash": git_hash(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "started_unix": round(time.time(), 3),
    }
    events: list[tuple[str, dict[str, Any]]] = []
    if removed := remove_temporaries(run_dir) if run_dir.is_dir() else []:
        events.append(("cleanup", {"removed": removed}))
    if resume:
        require_checkpoint(run_dir)
        changes, backup = _keep_config_history(run_dir, config)
        meta_path = run_dir / "meta.json"
        first = json.loads(meta_path.read_text()) if meta_path.is_file() else dict(meta)
        first["resumed"] = True
        entry = {**meta, "step": step, "changes": changes, "previous_config": backup}
        first.setdefault("resumes", []).append(entry)
        write_json(meta_path, first)
        return events
    _make_room(run_dir, overwrite=overwrite)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    write_json(run_dir / "meta.json", {**meta, "resumed": False})
    return events


def _make_room(run_dir: Path, *, overwrite: bool) -> None:
    """An empty ``run_dir`` for a new run: replace a failed start or, with ``overwrite``,
    anything; refuse any other existing run."""
    if not run_dir.is_dir() or all(p.name == LOCK_NAME for p in run_dir.iterdir()):
        return
    if failed_start(run_dir) and not overwrite:
        warnings.warn(
            f"{run_dir} holds no checkpoint (an earlier start failed or was stopped before "
            "its first one): starting the run afresh there",
            stacklevel=4,
        )
    elif not overwrite:
        raise RunDirExistsError(
            "run directory {path} already exists: pass {resume} to continue it, "
            "{run_dir} for a new run, or {overwrite} to replace it",
            path=run_dir,
        )
    _clear(run_dir)


def open_run_dir(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool, step: int = 0
) -> tuple[RunLock, list[tuple[str, dict[str, Any]]]]:
    """Lock ``run_dir`` (rank 0), then :func:`prepare_run_dir`; the lock is released if that
    fails. Returns the held lock and events for the run's log (a stale lock, cleanup)."""
    lock = RunLock(run_dir).acquire()
    try:
        events = prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite, step=step)
    except BaseException:
        lock.release()
        raise
    if note := lock.stale_note():
        warnings.warn(note, stacklevel=3)
        events.insert(0, ("stale_lock", dict(lock.stale or {})))
    return lock, events


def _keep_config_history(run_dir: Path, config: Config) -> tuple[list[str], str | None]:
    """On resume: warn about config changes and keep the previous ``config.yaml``; returns
    the changes and the name of the file keeping the previous config (None: unchanged)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        path.write_text(config.to_yaml())
        return [], None
    saved = yaml.safe_load(path.read_text()) or {}
    changes = config_diff(saved, config.to_dict())
    if not changes:
        return [], None
    n = 1
    while (backup := run_dir / f"config.before-resume-{n}.yaml").exists():
        n += 1
    os.replace(path, backup)
    path.write_text(config.to_yaml())
    warnings.warn(
        f"resuming {run_dir} with a config that differs from its config.yaml:\n  "
        + "\n  ".join(changes)
        + f"\nthe previous config is kept as {backup.name}; config.yaml now holds this one",
        stacklevel=4,
    )
    return changes, backup.name


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
    """Write JSON atomically (temporary file + rename); a failed write (a full disk) leaves
    the previous file as it was and no temporary behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(_finite(data), indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
