"""The training loop (paper Sec. 4.3), one function per step, for 1..N processes.

``train(config, run_dir)`` builds the datasets, the model (optionally initialised from an
earlier stage's run, Sec. 4.2: 32s -> 16s -> 8s), the optimiser and schedule, then runs
``config.train.steps`` optimiser steps. Each step accumulates ``optim.accumulate``
micro-batches (Caffe's ``iter_size``: the paper's 20-image batches as 20 x 1 image).

Exact resume: the data order is a function of ``(seed, epoch)`` (``ResumableSampler``),
augmentation a function of ``(seed, epoch, index)`` (``TransformedDataset``), and the RNG
states (torch, CUDA, numpy, python) are saved with every checkpoint, so a run interrupted
after step k and resumed ends with exactly the weights of an uninterrupted run.

The run directory (written by rank 0 only)::

    RUN/config.yaml          resolved config          RUN/meta.json     version, git hash, ...
    RUN/log.jsonl            one JSON event per line  RUN/metrics.json  last evaluation, best
    RUN/checkpoints/last.pt  latest state (resume)    RUN/checkpoints/best.pt  best mean IU
    RUN/tb/                  TensorBoard scalars and sample predictions
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from fcnkit import __version__
from fcnkit.engine import distributed
from fcnkit.engine.checkpoint import load_checkpoint, save_checkpoint
from fcnkit.engine.config import Config, config_diff, from_dict
from fcnkit.engine.distributed import DistInfo, ResumableSampler
from fcnkit.engine.evaluate import make_eval_loader
from fcnkit.engine.loss import SegmentationLoss
from fcnkit.engine.optim import build_optimizer, build_scheduler, current_lr


class NonFiniteLossError(RuntimeError):
    """The loss, a gradient or a weight became NaN or infinite; the message says what to do.

    Raised before the optimiser step when the loss or a gradient is non-finite (the weights
    are still those of the last good step), or after it when the update itself made a weight
    non-finite. Either way no non-finite weight is ever written to a checkpoint.
    """

    def __init__(self, what: str, *, weights_ok: bool = True) -> None:
        super().__init__(what)
        self.weights_ok = weights_ok  # False: the update ran and broke the weights


# train.nonfinite=skip: this many skipped steps in a row stop the run (a lasting divergence,
# not a stray overflow)
MAX_CONSECUTIVE_SKIPS = 10


class RunDirExistsError(FileExistsError):
    """The run directory exists and neither resume nor overwrite was asked for."""


@dataclass
class RunState:
    """Mutable training state shared by the step functions."""

    step: int = 0
    best: float = -math.inf
    best_step: int = -1
    last_metrics: dict[str, Any] = field(default_factory=dict)
    zero_init: list[str] = field(default_factory=list)  # zero-initialised weights (score layers)


# --------------------------------------------------------------------------------- run dir


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
            raise FileNotFoundError(f"--resume: no checkpoint at {last} (nothing to resume)")
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
                f"run directory {run_dir} already exists: pass --resume to continue it, "
                "--name/--run-dir for a new run, or --overwrite to replace it"
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
    """log.jsonl + TensorBoard on rank 0; does nothing on other ranks."""

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


# ------------------------------------------------------------------------------ RNG states


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state as tensors / lists / numbers (``torch.load(weights_only=True)`` safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ data


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    classes: list[str] | None
    palette: list | None
    eval_exclude: list[str]
    targets: dict[str, list[str]] | None  # multi-head datasets: head -> class names
    palettes: dict[str, list] | None = None  # multi-head datasets: head -> colours


def build_datasets(config: Config) -> DataBundle:
    """The raw (untransformed) training and validation datasets, with their metadata."""
    from fcnkit.data import create_dataset

    d = config.data
    train = create_dataset(d.dataset, d.root, d.split, **d.options)
    val_name = d.val_dataset or d.dataset
    val_root = d.val_root if d.val_root is not None else d.root
    val_options = d.val_options if (d.val_dataset or d.val_options) else d.options
    val = create_dataset(val_name, val_root, d.val_split, **val_options)
    if d.val_limit is not None and d.val_limit < len(val):
        val = torch.utils.data.Subset(val, range(d.val_limit))
    return DataBundle(
        train,
        val,
        classes=list(getattr(train, "classes", []) or []) or None,
        palette=getattr(train, "palette", None),
        eval_exclude=list(getattr(_base(val), "eval_exclude", []) or []),
        targets=getattr(train, "targets", None),
        palettes=getattr(train, "target_palettes", None),
    )


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def build_train_set(raw: Dataset, model: nn.Module, config: Config) -> Dataset:
    """Training samples with augmentation reproducible per ``(seed, epoch, index)``."""
    from fcnkit.data.transforms import TransformedDataset, build_transforms

    transform = build_transforms(True, model.preprocessing, **config.data.augment)
    return TransformedDataset(raw, transform, seed=config.train.seed)


def micro_batches(
    dataset: Dataset, config: Config, info: DistInfo, start: int
) -> Iterator[tuple[int, dict]]:
    """Endless ``(epoch, batch)`` stream starting at micro-batch ``start`` of the run.

    The order depends only on ``(seed, epoch)``; resuming mid-epoch skips what was consumed.
    """
    from fcnkit.data.collate import collate_pad

    bs = config.data.batch_size
    sampler = ResumableSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, seed=config.train.seed
    )
    per_epoch = sampler.num_samples // bs
    if per_epoch == 0:
        raise ValueError(
            f"the training set has {len(dataset)} images: fewer than one batch of "
            f"{bs} per process ({info.world_size} processes)"
        )
    epoch, position = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = position * bs
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=bs,
            sampler=sampler,
            drop_last=True,
            num_workers=config.data.num_workers,
            collate_fn=collate_pad,
            pin_memory=info.device.type == "cuda",
            generator=torch.Generator().manual_seed(config.train.seed + epoch),
        )
        for batch in loader:
            yield epoch, batch
        epoch, position = epoch + 1, 0


def to_device(labels: Any, device: torch.device) -> Any:
    if isinstance(labels, dict):
        return {k: v.to(device, non_blocking=True) for k, v in labels.items()}
    return labels.to(device, non_blocking=True)


# ----------------------------------------------------------------------------------- model


def build_model(config: Config, data: DataBundle) -> nn.Module:
    from fcnkit.models import create_model

    num_classes = config.model.num_classes
    if num_classes is None and data.classes:
        num_classes = len(data.classes)
    return create_model(
        config.model.name, num_classes, weights=config.model.weights, **config.model.options
    )


def init_from_run(model: nn.Module, source: str | os.PathLike) -> dict[str, Any]:
    """Staged training (Sec. 4.2): initialise ``model`` from an earlier stage's checkpoint.

    Uses :func:`fcnkit.surgery.init_from`: shared layers are copied by name; the layers the
    new net adds keep the paper's initialisation (score layers zero, upsamplers bilinear),
    so the 16s net starts out computing (nearly) the FCN-32s output (exactly on pixels more
    than 8 px from every stride-32 cell centre, see ``init_from``); new score layers are
    zero. ``model.preprocessing`` becomes the parent's: the child keeps seeing the inputs
    the parent was trained on.
    """
    from fcnkit.engine.checkpoint import load_model
    from fcnkit.surgery import init_from

    parent, meta = load_model(source)
    report = init_from(parent, model)
    if not report.loaded:
        raise ValueError(f"--init-from {source}: no parameter names match {model.model_name}")
    model.preprocessing = parent.preprocessing
    return {
        "source": meta["path"],
        "source_model": meta.get("model_name"),
        "preprocessing": getattr(parent.preprocessing, "name", None),
        "copied": len(report.copied),
        "reshaped": len(report.reshaped),
        "skipped": report.skipped,
        "new_layers": report.missing,  # initialised by init_from: zero score layers, bilinear
    }


def zero_initialised(model: nn.Module) -> list[str]:
    """Names of trainable weight tensors that are exactly zero (the zero-init score layers)."""
    return [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and p.dim() > 1 and not bool(p.detach().ne(0).any())
    ]


def check_zero_score_layers(model: nn.Module, names: list[str], step: int) -> list[str]:
    """Loudly warn about zero-initialised score layers that are still all zero.

    A net whose score layers never leave zero outputs all-zero scores: every pixel becomes
    class 0 (user-needs #4: FCN-8s trained straight from VGG without staged init or at-once
    scaling, an lr far too small for the loss normalisation, or a frozen layer).
    """
    params = dict(model.named_parameters())
    still = [n for n in names if n in params and not bool(params[n].detach().ne(0).any())]
    if still:
        message = (
            f"WARNING: after {step} steps these score layers are still ALL ZERO: "
            f"{', '.join(still)}. The model outputs constant scores (every pixel class 0). "
            "Causes: an lr too small for the loss normalisation (loss.normalize=true goes with "
            "lr ~1e-4, false with ~1e-10..1e-14), frozen layers, or FCN-16s/8s trained without "
            "staged init (--init-from the previous stage) or the at-once scaling."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print("\n" + "!" * 80 + "\n" + message + "\n" + "!" * 80, file=sys.stderr, flush=True)
    return still


# ------------------------------------------------------------------------------------ step


def train_step(
    model: nn.Module,
    batches: list[dict],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: Config,
    info: DistInfo,
) -> float:
    """One optimiser step over ``len(batches)`` accumulated micro-batches; returns the loss.

    Gradients are averaged over micro-batches (as Caffe's ``iter_size``) and over processes
    (DDP). A non-finite loss (mean over micro-batches and processes) raises before the update,
    so the weights stay those of the last good step.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    amp = scaler.is_enabled()
    total = torch.zeros((), device=info.device)
    for i, batch in enumerate(batches):
        images = batch["image"].to(info.device, non_blocking=True)
        if config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = to_device(batch["label"], info.device)
        last = i == len(batches) - 1
        sync = nullcontext() if last or not info.distributed else model.no_sync()
        with sync:
            with torch.autocast(info.device.type, dtype=torch.float16, enabled=amp):
                loss = criterion(model(images), labels)
            scaler.scale(loss / len(batches)).backward()
        total += loss.detach().float()
    loss_value = float(distributed.all_reduce_mean(total / len(batches), info))
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"loss is {loss_value}")
    module = model.module if isinstance(model, DistributedDataParallel) else model
    if not amp:  # under AMP inf gradients are expected: the GradScaler skips those steps
        grads = ((n, p.grad) for n, p in module.named_parameters() if p.grad is not None)
        if bad := nonfinite_names(grads):  # DDP: gradients are all-reduced, every rank agrees
            raise NonFiniteLossError(f"the gradient of {_listing(bad)} is non-finite")
    if config.optim.grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    if bad := nonfinite_names(module.named_parameters()):
        raise NonFiniteLossError(
            f"the update made {_listing(bad)} non-finite (loss {loss_value:.4g})",
            weights_ok=False,
        )
    return loss_value


def nonfinite_names(named_tensors: Iterator[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or inf (one device sync)."""
    named = [(n, t) for n, t in named_tensors if t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return []
    return [n for (n, _), ok in zip(named, finite.tolist(), strict=True) if not ok]


def _listing(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    data: DataBundle,
    info: DistInfo,
) -> dict[str, Any]:
    """The paper's four metrics (Sec. 5) on the primary head, reduced across ranks.

    Uses :func:`fcnkit.engine.evaluate.evaluate_confusion` (the loader's ``ShardSampler``
    makes it all-reduce the confusion matrices). Multi-head nets add ``<head>_pixel_acc`` for
    the other heads. Does not touch the training RNG streams.
    """
    from fcnkit.engine.evaluate import evaluate_confusion, summarize

    class_names: Any = data.targets or data.classes
    if isinstance(class_names, list) and len(class_names) != num_classes:
        class_names = None
    with torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else []):
        matrices, count = evaluate_confusion(
            model, loader, info.device, num_classes=num_classes, class_names=class_names
        )
    metrics = summarize(matrices, data.eval_exclude or (), num_images=count)
    primary = next(iter(matrices))
    main = matrices[primary]
    metrics["predicted_classes"] = int((main.matrix.sum(0) > 0).sum())
    metrics["confusion"] = main.matrix.cpu().tolist()
    for head, head_metrics in metrics.pop("heads", {}).items():
        if head != primary:
            metrics[f"{head}_pixel_acc"] = head_metrics["pixel_acc"]
    return metrics


def _color(label: torch.Tensor, palette: list | None) -> torch.Tensor:
    """``H x W`` class map -> ``3 x H x W`` uint8 via :func:`fcnkit.inference.colorize`."""
    from fcnkit.inference import colorize

    rgb = colorize(label.clamp(0, 255).cpu().numpy(), palette).convert("RGB")
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


@torch.no_grad()
def sample_predictions(
    model: nn.Module, val_set: Dataset, data: DataBundle, k: int, info: DistInfo
) -> torch.Tensor | None:
    """A grid (rows: image | truth | prediction) of the first ``k`` validation samples."""
    if k <= 0 or len(val_set) == 0:
        return None
    model.eval()
    rows = []
    for i in range(min(k, len(val_set))):
        sample = val_set[i]
        out = model(sample["image"][None].to(info.device))
        if not isinstance(out, torch.Tensor):
            out = next(iter(out.values()))
        pred = out[0].argmax(0)
        label = sample["label"]
        if isinstance(label, dict):
            label = next(iter(label.values()))
        image = model.preprocessing.denormalize(sample["image"][:3].float()).clamp(0, 255)
        image = image.to(torch.uint8)
        rows.append(
            torch.cat(
                [
                    image.cpu(),
                    _color(label, data.palette),
                    _color(pred, data.palette),
                ],
                dim=2,
            )
        )
    width = max(r.shape[2] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[2])) for r in rows]
    return torch.cat(rows, dim=1)


# ----------------------------------------------------------------------------- checkpoints


def save_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: RunState,
    config: Config,
    data: DataBundle,
    rng: list[dict],
    epoch: int,
) -> None:
    """Write a resumable checkpoint (rank 0 only; ``rng`` holds every rank's RNG states)."""
    save_checkpoint(
        path,
        model,
        classes=data.classes,
        palette=data.palette,
        targets=data.targets,
        palettes=data.palettes,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict(),
        step=state.step,
        epoch=epoch,
        rng=rng,
        config=config.to_dict(),
        best=state.best,
        best_step=state.best_step,
        metrics={k: v for k, v in state.last_metrics.items() if k != "confusion"},
        zero_init=state.zero_init,
        world_size=len(rng),
    )


def restore_training_state(
    ckpt: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: RunState,
    info: DistInfo,
) -> None:
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    state.step = int(ckpt["step"])
    state.best = float(ckpt.get("best", -math.inf))
    state.best_step = int(ckpt.get("best_step", -1))
    state.last_metrics = dict(ckpt.get("metrics") or {})
    state.zero_init = list(ckpt.get("zero_init") or [])
    rngs = ckpt.get("rng") or []
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank], info.device)
    else:
        warnings.warn(
            f"the checkpoint was written by {len(rngs)} processes, this run has "
            f"{info.world_size}: random streams are re-seeded (the result will differ from an "
            "uninterrupted run)",
            stacklevel=2,
        )
        seed_everything(ckpt["config"]["train"]["seed"] + state.step + info.rank)


# ------------------------------------------------------------------------------------ main


def train(
    config: Config | dict,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stop_at_step: int | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into ``run_dir``; returns the final evaluation metrics.

    ``init_from`` (or ``config.train.init_from``) starts from an earlier stage's run
    (Sec. 4.2). ``resume`` continues ``run_dir`` from ``checkpoints/last.pt``, exactly.
    Under torchrun every process calls this; rank 0 writes. ``stop_at_step`` ends the session
    early after checkpointing that step (a time-boxed job, or a simulated interruption).
    ``callback(step, model)`` runs on every rank after each step (custom logging, tests).
    """
    if isinstance(config, dict):
        config = from_dict(config)
    info = distributed.setup(device or config.train.device)
    try:
        return _train(
            config,
            Path(run_dir),
            info,
            resume,
            init_from,
            overwrite,
            progress,
            stop_at_step,
            callback,
        )
    finally:
        distributed.cleanup(info)


def _train(
    config: Config,
    run_dir: Path,
    info: DistInfo,
    resume: bool,
    init_from: str | os.PathLike | None,
    overwrite: bool,
    progress: bool,
    stop_at_step: int | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> dict[str, Any]:
    tc = config.train
    init_source = init_from if init_from is not None else tc.init_from
    if init_source is not None and not resume and not Path(init_source).exists():
        raise FileNotFoundError(
            f"init_from: {init_source} does not exist. Staged training (Sec. 4.2) starts "
            "from the previous stage's run: train it first (e.g. `fcnkit train voc-fcn32s`) "
            "or pass --init-from RUN_DIR; `--set train.init_from=null` starts from the "
            "backbone alone"
        )
    # Data and model first (identical initialisation on every rank): a dataset, model or
    # class-weight error stops the run before its directory is created.
    seed_everything(tc.seed)
    data = build_datasets(config)
    model = build_model(config, data).to(info.device)
    if tc.channels_last:  # in place: checkpoints and optimiser see the same parameters
        model = model.to(memory_format=torch.channels_last)
    num_classes = int(model.num_classes)
    weights = config.loss.class_weights
    if weights is not None and len(weights) != num_classes:
        source = "model.num_classes" if config.model.num_classes else "the training dataset"
        raise ValueError(
            f"loss.class_weights has {len(weights)} values but the model has {num_classes} "
            f"classes (from {source}): give one weight per class"
        )
    if info.is_main:
        prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
    distributed.barrier(info)
    log = RunLogger(run_dir, info.is_main, tensorboard=True)
    state = RunState()
    if init_source is not None and not resume:
        report = init_from_run(model, init_source)
        log.event("init_from", **report)
    state.zero_init = zero_initialised(model)  # after staging: the layers this stage adds
    criterion = SegmentationLoss(
        normalize=config.loss.normalize,
        sample_prob=config.loss.sample_prob,
        class_weights=config.loss.class_weights,
        ignore_index=config.loss.ignore_index,
        head_weights=config.loss.head_weights,
    ).to(info.device)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, tc.steps)
    use_amp = tc.amp and info.device.type == "cuda"
    if tc.amp and not use_amp and info.is_main:
        warnings.warn("train.amp is for CUDA only: training in float32 on the CPU", stacklevel=2)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    seed_everything(tc.seed + 1 + info.rank)  # per-rank streams (dropout, loss sampling)
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=info.device)
        restore_training_state(ckpt, model, optimizer, scheduler, scaler, state, info)
        log.event("resume", step=state.step)
    ddp_model: nn.Module = model
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=ids)

    train_set = build_train_set(data.train, model, config)
    val_loader = make_eval_loader(
        data.val,
        config.data.val_batch_size,
        num_workers=config.data.num_workers,
        pin_memory=info.device.type == "cuda",
        preprocessing=model.preprocessing,
        num_replicas=info.world_size,
        rank=info.rank,
    )
    acc = config.optim.accumulate
    stream = micro_batches(train_set, config, info, start=state.step * acc)
    images_per_step = config.data.batch_size * acc * info.world_size

    bar = None
    if info.is_main and progress:
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        bar = tqdm(
            total=tc.steps,
            initial=state.step,
            desc=config.name,
            unit="step",
            dynamic_ncols=True,
            # in a log file (CI, nohup) redraw rarely instead of on every step
            mininterval=0.1 if interactive else 30.0,
        )
    epoch = 0
    t_start = time.perf_counter()
    t_log, steps_since_log, loss_sum, losses_since_log = time.perf_counter(), 0, 0.0, 0
    skipped_in_row = 0
    result: dict[str, Any] = dict(state.last_metrics)
    try:
        while state.step < tc.steps:
            rng_before = rng_state(info.device)
            buffers_before = [b.detach().clone() for b in model.buffers()]  # BN statistics
            batches = []
            for _ in range(acc):
                epoch, batch = next(stream)
                batches.append(batch)
            try:
                loss = train_step(
                    ddp_model, batches, criterion, optimizer, scheduler, scaler, config, info
                )
                skipped_in_row = 0
            except NonFiniteLossError as err:
                with torch.no_grad():  # the failing forward pass updated them
                    for buf, saved in zip(model.buffers(), buffers_before, strict=True):
                        buf.copy_(saved)
                skipped_in_row += 1
                if not (err.weights_ok and tc.nonfinite == "skip"):
                    _stop_nonfinite(err, model, optimizer, scheduler, scaler, state, config, data,
                                    rng_before, epoch, run_dir, log, info)  # fmt: skip
                if skipped_in_row > MAX_CONSECUTIVE_SKIPS:
                    err.args = (f"{err.args[0]} ({skipped_in_row} steps in a row skipped)",)
                    _stop_nonfinite(err, model, optimizer, scheduler, scaler, state, config, data,
                                    rng_before, epoch, run_dir, log, info)  # fmt: skip
                # train.nonfinite=skip: no update; the step counts (as a GradScaler skip does)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                log.event("skip", step=state.step + 1, reason=err.args[0])
                loss = math.nan
            state.step += 1
            steps_since_log += 1
            if math.isfinite(loss):
                loss_sum, losses_since_log = loss_sum + loss, losses_since_log + 1
            if bar is not None:
                bar.update(1)
            timed_out = out_of_time(t_start, tc.time_limit, info)
            final = state.step == tc.steps or timed_out
            if state.step % tc.log_every == 0 or final:
                elapsed = time.perf_counter() - t_log
                rate = steps_since_log * images_per_step / max(elapsed, 1e-9)
                record = {
                    "step": state.step,
                    "epoch": epoch,
                    "loss": loss_sum / losses_since_log if losses_since_log else math.nan,
                    "lr": current_lr(optimizer),
                    "images_per_s": rate,
                }
                log.event("train", **record)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}", img_s=f"{rate:.1f}"
                    )
                t_log, steps_since_log, loss_sum, losses_since_log = time.perf_counter(), 0, 0.0, 0
            if state.step == tc.zero_check_step and state.zero_init:
                still = check_zero_score_layers(model, state.zero_init, state.step)
                if still:
                    log.event("warning", step=state.step, zero_score_layers=still)
            if timed_out and state.step < tc.steps:
                log.event("stop", step=state.step, reason=f"train.time_limit {tc.time_limit} s")
            if state.step % tc.eval_every == 0 or final:
                result = evaluate_and_log(model, val_loader, num_classes, data, state, config,
                                          run_dir, log, info)  # fmt: skip
            if callback is not None:
                callback(state.step, model)
            stopping = final or state.step == stop_at_step
            if state.step % tc.checkpoint_every == 0 or state.step == tc.steps or stopping:
                rngs = distributed.all_gather_object(rng_state(info.device), info)
                if info.is_main:
                    save_training_state(
                        run_dir / "checkpoints" / "last.pt", model, optimizer, scheduler,
                        scaler, state, config, data, rngs, epoch,
                    )  # fmt: skip
            if stopping:
                break
    finally:
        if bar is not None:
            bar.close()
        log.close()
    distributed.barrier(info)
    return result


def out_of_time(t_start: float, limit: float | None, info: DistInfo) -> bool:
    """Whether ``train.time_limit`` is exceeded (rank 0's clock decides for every rank)."""
    if limit is None:
        return False
    flag = torch.tensor(float(time.perf_counter() - t_start > limit), device=info.device)
    if info.distributed:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def evaluate_and_log(
    model: nn.Module,
    val_loader: DataLoader,
    num_classes: int,
    data: DataBundle,
    state: RunState,
    config: Config,
    run_dir: Path,
    log: RunLogger,
    info: DistInfo,
) -> dict[str, Any]:
    """Evaluate, log, keep ``best.pt`` and ``metrics.json`` up to date; returns the metrics."""
    distributed.broadcast_buffers(model, info)
    metrics = validate(model, val_loader, num_classes, data, info)
    state.last_metrics = metrics
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    log.event("eval", step=state.step, **scalars)
    if metrics["predicted_classes"] <= 1 and state.step >= config.train.zero_check_step:
        message = (
            f"WARNING: at step {state.step} the model predicts a single class for every "
            "validation pixel (all-zero or constant scores? see the zero score layers check)"
        )
        log.event("warning", step=state.step, single_class=True)
        if info.is_main:
            print(message, file=sys.stderr, flush=True)
    if info.is_main:
        grid = sample_predictions(
            model, val_loader.dataset, data, config.train.num_sample_images, info
        )
        if grid is not None:
            log.image("val/samples", grid, state.step)
    value = metrics.get(config.train.best_metric, math.nan)
    if info.is_main and isinstance(value, float) and math.isfinite(value) and value > state.best:
        state.best, state.best_step = value, state.step
        save_checkpoint(
            run_dir / "checkpoints" / "best.pt",
            model,
            classes=data.classes,
            palette=data.palette,
            targets=data.targets,
            palettes=data.palettes,
            step=state.step,
            metrics={k: v for k, v in metrics.items() if k != "confusion"},
            config=config.to_dict(),
        )
    if info.is_main:
        summary = {
            "step": state.step,
            **{k: v for k, v in metrics.items() if k != "confusion"},
            "best": {config.train.best_metric: state.best, "step": state.best_step},
            "classes": data.classes,
            "confusion": metrics["confusion"],
        }
        write_json(run_dir / "metrics.json", summary)
    return metrics


def _stop_nonfinite(
    err: NonFiniteLossError,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: RunState,
    config: Config,
    data: DataBundle,
    rng_before: dict,
    epoch: int,
    run_dir: Path,
    log: RunLogger,
    info: DistInfo,
) -> None:
    """Save the last good state (before the failing step), if it is still whole, and raise.

    When the update itself broke the weights they are not saved: ``last.pt`` keeps the last
    checkpoint written (its step is named in the message).
    """
    last = run_dir / "checkpoints" / "last.pt"
    finite = err.weights_ok and not nonfinite_names(iter(model.state_dict().items()))
    rngs = distributed.all_gather_object(rng_before, info)
    if info.is_main and finite:
        save_training_state(
            last, model, optimizer, scheduler, scaler, state, config, data, rngs, epoch
        )
    if finite:
        saved = f"the last good state (step {state.step}) is saved in {last}"
    elif last.is_file():
        step = load_checkpoint(last).get("step")
        saved = f"the weights were not saved; the last good checkpoint is {last} (step {step})"
    else:
        saved = "the weights were not saved (no checkpoint was written before)"
    lr = current_lr(optimizer)
    norm = "normalised (mean)" if config.loss.normalize else "summed (unnormalised)"
    message = (
        f"{err.args[0]} at step {state.step + 1} (lr {lr:g}, {norm} loss). "
        f"{saved}. The learning rate must match the loss normalisation: "
        "loss.normalize=true goes with lr ~1e-4 (VGG, SGD), false with lr 1e-10 (32s) / "
        "1e-12 (16s) / 1e-14 (8s). Lower optim.lr and continue with "
        "--resume --set optim.lr=..."
    )
    log.event("error", step=state.step, message=message)
    raise NonFiniteLossError(message, weights_ok=finite) from None


# ------------------------------------------------------------------------------- plotting


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a run's ``log.jsonl``."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (is {run_dir} a run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """PNG with the training loss and the validation mean IU against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read_log(run_dir)
    # null (NaN when logged) values are gaps, not points
    train_ev = [e for e in events if e["event"] == "train" and _number(e.get("loss"))]
    eval_ev = [e for e in events if e["event"] == "eval" and _number(e.get("mean_iu"))]
    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot([e["step"] for e in train_ev], [e["loss"] for e in train_ev], color="C0")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    ax_iu.plot(
        [e["step"] for e in eval_ev], [100 * e["mean_iu"] for e in eval_ev], "o-", color="C1"
    )
    ax_iu.set_xlabel("step")
    ax_iu.set_ylabel("mean IU (%)")
    ax_iu.set_ylim(0, 100)
    ax_iu.set_title("validation mean IU")
    ax_iu.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
