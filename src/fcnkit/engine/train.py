"""The training loop (paper Sec. 4.3), one named step per function, for 1..N processes.

``train(config, run_dir)`` reads top to bottom, like torchvision's segmentation reference::

    run = setup_run(...)            datasets, model (optionally staged from an earlier
                                    stage's run, Sec. 4.2: 32s -> 16s -> 8s), class
                                    weights, the run directory (locked), optimiser,
                                    schedule                                  (train_loop:)
    while run.state.step < train.steps:
        train_one_step(run)         optim.accumulate micro-batches (Caffe's iter_size: the
                                    paper's 20-image batches as 20 x 1 image; / p under
                                    compensated loss sampling, Sec. 4.3), NaN guard
        maybe_log(run, final)       loss, lr, images/s every train.log_every steps
        maybe_evaluate(run, final)  validation metrics (Sec. 5), best.pt, metrics.json
        maybe_checkpoint(run, ...)  last.pt (resumable) every train.checkpoint_every steps,
                                    and on SIGINT / SIGTERM (then TrainingInterrupted)

Everything a step needs travels in one :class:`Run`. Exact resume: the data order is a
function of ``(seed, epoch)`` and augmentation of ``(seed, epoch, index)``
(:mod:`fcnkit.engine.rundata`), and every rank's RNG states (:mod:`fcnkit.engine.rng`) are
saved with every checkpoint, so a run interrupted after step k and resumed ends with exactly
the weights of an uninterrupted run; the config of a resume applies from its first step on
(rate, schedule, length, cadences), what it cannot change is refused. Rank 0 alone writes the
run directory, holding its lock (:mod:`fcnkit.engine.rundir`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from fcnkit.engine import distributed
from fcnkit.engine.config import MEDIAN_FREQUENCY, Config, from_dict
from fcnkit.engine.distributed import DistInfo
from fcnkit.engine.errors import (
    MissingStageError,
    NonFiniteLossError,
    NothingToResumeError,
    ResumeConfigError,
    RunDirExistsError,
    RunInUseError,
    StopNow,
    TrainingInterrupted,
)
from fcnkit.engine.evaluate import (
    dataset_scoring,
    evaluate_model,
    make_eval_loader,
    predict_samples,
)
from fcnkit.engine.guards import (
    MAX_CONSECUTIVE_SKIPS,
    StopSignals,
    check_zero_score_layers,
    listing,
    nonfinite_names,
    zero_initialised,
)
from fcnkit.engine.loss import SegmentationLoss, compensated_accumulate
from fcnkit.engine.optim import build_optimizer, build_scheduler, current_lr
from fcnkit.engine.rng import rng_state, seed_everything, set_rng_state
from fcnkit.engine.rundata import (
    DataBundle,
    build_datasets,
    build_train_set,
    micro_batches,
    to_device,
)
from fcnkit.engine.rundir import (
    RunLock,
    RunLogger,
    git_hash,
    open_run_dir,
    prepare_run_dir,
    require_checkpoint,
    resume_conflicts,
    write_json,
)
from fcnkit.plots import plot_curves, prediction_grid, read_log
from fcnkit.weights.checkpoint import load_checkpoint, save_checkpoint
from fcnkit.weights.staging import init_from_run, missing_init_sources

# The public names; those moved to rundir, rundata, rng, guards, errors and plots stay
# importable from here for one release.
__all__ = [
    "MAX_CONSECUTIVE_SKIPS",
    "DataBundle",
    "MissingStageError",
    "NonFiniteLossError",
    "NothingToResumeError",
    "ResumeConfigError",
    "Run",
    "RunDirExistsError",
    "RunInUseError",
    "RunLogger",
    "RunState",
    "build_datasets",
    "model_from_config",
    "build_train_set",
    "check_zero_score_layers",
    "git_hash",
    "init_from_run",
    "micro_batches",
    "nonfinite_names",
    "plot_curves",
    "prepare_run_dir",
    "read_log",
    "rng_state",
    "sample_predictions",
    "seed_everything",
    "set_rng_state",
    "setup_run",
    "to_device",
    "train",
    "train_one_step",
    "train_step",
    "TrainingInterrupted",
    "validation_metrics",
    "write_json",
    "zero_initialised",
]


@dataclass
class RunState:
    """What a checkpoint carries besides weights and optimiser: step, best metric, ..."""

    step: int = 0
    best: float = -math.inf
    best_step: int = -1
    last_metrics: dict[str, Any] = field(default_factory=dict)
    zero_init: list[str] = field(default_factory=list)  # zero-initialised weights (score layers)


@dataclass
class LossMeter:
    """Training loss and throughput since the last ``train`` log event."""

    since: float = field(default_factory=time.perf_counter)
    steps: int = 0
    loss_sum: float = 0.0
    losses: int = 0  # finite losses (a skipped step's NaN is left out)

    def add(self, loss: float) -> None:
        self.steps += 1
        if math.isfinite(loss):
            self.loss_sum, self.losses = self.loss_sum + loss, self.losses + 1

    def mean(self) -> float:
        return self.loss_sum / self.losses if self.losses else math.nan

    def rate(self, images_per_step: int) -> float:
        return self.steps * images_per_step / max(time.perf_counter() - self.since, 1e-9)


@dataclass
class Run:
    """One training session: what torchvision's reference keeps as locals of ``main``."""

    config: Config
    run_dir: Path
    info: DistInfo
    data: DataBundle
    model: nn.Module  # the bare model: checkpoints, evaluation, callbacks
    net: nn.Module  # what the step runs: the DDP wrapper under torchrun, else ``model``
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None  # train.amp: what the forward pass runs in
    log: RunLogger
    state: RunState
    val_loader: DataLoader | None = None
    batches: Iterator[tuple[int, dict]] | None = None  # endless (epoch, micro-batch) stream
    epoch: int = 0  # of the last micro-batch drawn
    meter: LossMeter = field(default_factory=LossMeter)
    bar: Any = None  # tqdm progress bar (rank 0, progress=True)
    started: float = field(default_factory=time.perf_counter)  # for train.time_limit
    skipped_in_row: int = 0  # train.nonfinite=skip
    class_weights: list[float] | None = None  # the loss's numbers (median_frequency resolved)
    lock: RunLock | None = None  # rank 0: the run directory's lock, held until train() ends
    signals: StopSignals = field(default_factory=StopSignals)  # SIGINT / SIGTERM requests
    saved_step: int | None = None  # the step last.pt holds (rank 0), None before any

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def images_per_step(self) -> int:
        per_process = self.config.data.batch_size * micro_batches_per_step(self.config)
        return per_process * self.info.world_size


def micro_batches_per_step(config: Config | dict) -> int:
    """Micro-batches per optimiser step: ``optim.accumulate``, raised to
    ``ceil(accumulate / p)`` by compensated loss sampling (Sec. 4.3: "increase the number of
    images per batch by 1/p"). The resumable stream is indexed by ``step x`` this. A config
    dict (a checkpoint's) without ``loss.sample_compensate`` predates it: uncompensated."""
    if isinstance(config, Config):
        accumulate, loss = config.optim.accumulate, config.loss
        return compensated_accumulate(accumulate, loss.sample_prob, loss.sample_compensate)
    loss = config.get("loss") or {}
    return compensated_accumulate(
        int((config.get("optim") or {}).get("accumulate", 1)),
        float(loss.get("sample_prob", 1.0)),
        bool(loss.get("sample_compensate", False)),
    )


# ----------------------------------------------------------------------------------- setup


def model_from_config(config: Config, data: DataBundle) -> nn.Module:
    """The config's model; ``model.num_classes`` null takes the training set's classes."""
    from fcnkit.weights import create_model

    num_classes = config.model.num_classes
    if num_classes is None and data.classes:
        num_classes = len(data.classes)
    return create_model(
        config.model.name, num_classes, weights=config.model.weights, **config.model.options
    )


def staged_init_source(
    config: Config, init_from: str | os.PathLike | None, *, resume: bool
) -> str | os.PathLike | None:
    """The previous stage's run to start from (Sec. 4.2); ``None`` when resuming or not staged."""
    source = init_from if init_from is not None else config.train.init_from
    if source is None or resume:
        return None
    if missing := missing_init_sources(source):
        raise MissingStageError(
            "init_from: {source} does not exist. Staged training (Sec. 4.2) starts from the "
            "previous stage's run: train it first (e.g. `{train:voc-fcn32s}`) or pass "
            "{init_from:RUN_DIR}; `{set:train.init_from=null}` starts from the backbone alone",
            source=", ".join(missing),
        )
    return source


def build_training_model(config: Config, data: DataBundle, info: DistInfo) -> nn.Module:
    """The model on its device (NHWC with ``train.channels_last``)."""
    model = model_from_config(config, data).to(info.device)
    if config.train.channels_last:  # in place: checkpoints and optimiser see the same parameters
        model = model.to(memory_format=torch.channels_last)
    return model


def training_class_weights(
    config: Config, data: DataBundle, model: nn.Module, ckpt: dict | None
) -> tuple[list[float] | None, float | None]:
    """``loss.class_weights`` as numbers, one per class of ``model``, and the seconds a scan
    of the labels took (``None``: no scan). ``median_frequency`` (Eigen & Fergus 2015,
    :func:`fcnkit.data.stats.median_frequency_weights`) is computed once from the training
    split's raw labels (no augmentation; the primary target of a multi-target set), raised to
    ``loss.class_weight_power``; a resume
    takes the numbers its checkpoint holds, without rescanning."""
    weights, seconds = config.loss.class_weights, None
    if weights == MEDIAN_FREQUENCY:
        saved = (ckpt and (ckpt.get("config") or {}).get("loss")) or {}
        same = (saved.get("class_weights"), saved.get("class_weight_power", 1.0)) == (
            MEDIAN_FREQUENCY,
            config.loss.class_weight_power,
        )
        if same and ckpt.get("class_weights") is not None:
            weights = [float(w) for w in ckpt["class_weights"]]
        else:
            from fcnkit.data.stats import class_statistics

            start = time.perf_counter()
            primary = next(iter(class_statistics(data.train).targets.values()))
            power = config.loss.class_weight_power
            weights = [float(w) ** power for w in primary.median_frequency_weights]
            seconds = round(time.perf_counter() - start, 3)
    num_classes = int(model.num_classes)
    if weights is not None and len(weights) != num_classes:
        source = "model.num_classes" if config.model.num_classes else "the training dataset"
        raise ValueError(
            f"loss.class_weights has {len(weights)} values but the model has {num_classes} "
            f"classes (from {source}): give one weight per class"
        )
    return weights, seconds


def record_class_weights(
    run_dir: Path, weights: list[float], seconds: float | None
) -> tuple[str, dict[str, Any]]:
    """``meta.json``'s ``class_weights`` (the median-frequency weights the run trains with,
    written when they are computed) and the ``class_weights`` event for the log."""
    source = "checkpoint" if seconds is None else "training split"
    if seconds is not None:
        path = run_dir / "meta.json"
        meta = json.loads(path.read_text()) if path.is_file() else {}
        meta["class_weights"] = {"kind": MEDIAN_FREQUENCY, "weights": weights, "seconds": seconds}
        write_json(path, meta)
    return "class_weights", {"weights": weights, "from": source, "seconds": seconds}


def build_criterion(
    config: Config, info: DistInfo, class_weights: list[float] | None = None
) -> nn.Module:
    """The loss of Sec. 4.3 (per-pixel multinomial logistic loss) as the config sets it;
    ``class_weights``: the resolved weights (default: ``loss.class_weights`` if numbers)."""
    if class_weights is None and isinstance(config.loss.class_weights, list):
        class_weights = config.loss.class_weights
    return SegmentationLoss(
        normalize=config.loss.normalize,
        sample_prob=config.loss.sample_prob,
        sample_unit=config.loss.sample_unit,
        sample_cell=config.loss.sample_cell,
        class_weights=class_weights,
        ignore_index=config.loss.ignore_index,
        head_weights=config.loss.head_weights,
    ).to(info.device)


def autocast_dtype(config: Config, info: DistInfo) -> torch.dtype | None:
    """What ``train.amp`` runs the forward pass in: fp16 on CUDA (with loss scaling), bf16 on
    a CPU that computes it natively (no scaling: bf16 has fp32's exponent range), else
    ``None`` (fp32) with a warning: emulated bf16 is ~40x slower (issue 14)."""
    if not config.train.amp:
        return None
    if info.device.type == "cuda":
        return torch.float16
    from fcnkit.backends import BF16_CPU_FLAGS, cpu_has_bf16

    if info.device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    if info.is_main:
        warnings.warn(
            f"train.amp: no native bf16 on this {info.device.type} (CPU flags "
            f"{' / '.join(BF16_CPU_FLAGS)}), where mixed precision would be slower: training "
            "in float32",
            stacklevel=3,
        )
    return None


def build_scaler(config: Config, info: DistInfo) -> torch.amp.GradScaler:
    """Mixed-precision loss scaling: on with ``train.amp`` on CUDA (fp16), a no-op otherwise
    (bf16 on a CPU needs none)."""
    return torch.amp.GradScaler("cuda", enabled=config.train.amp and info.device.type == "cuda")


def setup_run(
    config: Config,
    run_dir: Path,
    info: DistInfo,
    *,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Run:
    """Everything before the first step, in an order that matters: data and model first
    (identical initialisation on every rank; a dataset, model, class-weight or resume-config
    error stops the run before its directory is touched), then the run directory, locked
    (rank 0; the lock is released if the rest fails), per-rank random streams after the
    model's init, the checkpoint's state last."""
    init_source = staged_init_source(config, init_from, resume=resume)
    seed_everything(config.train.seed)
    data = build_datasets(config)
    model = build_training_model(config, data, info)
    ckpt = resume_checkpoint(config, run_dir, info) if resume else None
    class_weights, scan_seconds = training_class_weights(config, data, model, ckpt)
    lock, events = None, []
    if info.is_main:
        step = int(ckpt["step"]) if ckpt is not None else 0
        lock, events = open_run_dir(run_dir, config, resume=resume, overwrite=overwrite,
                                    step=step)  # fmt: skip
        if config.loss.class_weights == MEDIAN_FREQUENCY:
            events.append(record_class_weights(run_dir, class_weights, scan_seconds))
    try:
        distributed.barrier(info)
        log = RunLogger(run_dir, info.is_main, tensorboard=True)
        for kind, values in events:
            log.event(kind, **values)
        if init_source is not None:
            log.event("init_from", **init_from_run(model, init_source))
        run = new_run(config, run_dir, info, data=data, model=model, log=log,
                      class_weights=class_weights)  # fmt: skip
        run.lock = lock
        run.state.zero_init = zero_initialised(model)  # after staging: the layers it adds
        seed_everything(config.train.seed + 1 + info.rank)  # per-rank streams (dropout, ...)
        if ckpt is not None:
            restore_training_state(run, ckpt)
            run.log.event("resume", step=run.state.step, lr=current_lr(run.optimizer))
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            run.net = DistributedDataParallel(model, device_ids=ids)
        attach_data(run)
        return run
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def new_run(
    config: Config, run_dir: Path, info: DistInfo, *, data: DataBundle, model: nn.Module,
    log: RunLogger, class_weights: list[float] | None = None
) -> Run:  # fmt: skip
    """The :class:`Run` of a fresh start: loss (with the resolved ``class_weights``),
    optimiser, schedule, loss scaling."""
    optimizer = build_optimizer(model, config.optim)
    return Run(
        config=config,
        run_dir=run_dir,
        info=info,
        data=data,
        model=model,
        net=model,
        criterion=build_criterion(config, info, class_weights),
        class_weights=class_weights,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.schedule, config.train.steps),
        scaler=build_scaler(config, info),
        autocast_dtype=autocast_dtype(config, info),
        log=log,
        state=RunState(),
    )


def resume_checkpoint(config: Config, run_dir: Path, info: DistInfo) -> dict:
    """The run's ``last.pt``, once ``config`` is known to change nothing a resume cannot
    (:func:`~fcnkit.engine.rundir.resume_conflicts`; every rank checks, none writes)."""
    ckpt = load_checkpoint(require_checkpoint(run_dir), map_location=info.device)
    saved = ckpt.get("config") or {}
    per_step = (micro_batches_per_step(saved), micro_batches_per_step(config))
    with contextlib.suppress(ValueError):  # today's defaults: keys added since are no change
        saved = from_dict(saved).to_dict()
    conflicts = resume_conflicts(saved, config)
    # the stream's position is step x micro-batches per step (optim.accumulate named already?)
    if per_step[0] != per_step[1] and not any(c.startswith("optim.accumulate") for c in conflicts):
        conflicts.append(
            "micro-batches per step (optim.accumulate, raised to ceil(accumulate / "
            f"loss.sample_prob) by loss.sample_compensate): {per_step[0]} -> {per_step[1]}"
        )
    if conflicts:
        raise ResumeConfigError(
            "{path}: cannot change on resume: {changes}. A resumed run continues its weights, "
            "optimiser state and training data stream (sample order and position follow the "
            "training set, train.seed, data.batch_size and optim.accumulate). To train with "
            "these settings start a new run ({run_dir}), from this run's weights with "
            "{init_from:RUN}",
            path=run_dir,
            changes="; ".join(conflicts),
        )
    return ckpt


def attach_data(run: Run) -> None:
    """The validation loader (this rank's shard) and the micro-batch stream, which starts
    where the run's step left it (exact resume)."""
    config, info = run.config, run.info
    train_set = build_train_set(run.data.train, run.model, config)
    run.val_loader = make_eval_loader(
        run.data.val,
        config.data.val_batch_size,
        num_workers=config.data.num_workers,
        pin_memory=info.device.type == "cuda",
        preprocessing=run.model.preprocessing,
        num_replicas=info.world_size,
        rank=info.rank,
    )
    start = run.state.step * micro_batches_per_step(config)
    run.batches = micro_batches(train_set, config, info, start=start)


# ------------------------------------------------------------------------------------ step


def accumulate_gradients(run: Run, batches: list[dict]) -> float:
    """Forward and backward over the micro-batches; returns the loss averaged over them and
    over processes (DDP synchronises gradients on the last micro-batch only)."""
    config, info, net = run.config, run.info, run.net
    dtype = run.autocast_dtype
    total = torch.zeros((), device=info.device)
    for i, batch in enumerate(batches):
        images = batch["image"].to(info.device, non_blocking=True)
        if config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = to_device(batch["label"], info.device)
        last = i == len(batches) - 1
        sync = nullcontext() if last or not info.distributed else net.no_sync()
        with sync:
            with torch.autocast(info.device.type, dtype=dtype, enabled=dtype is not None):
                loss = run.criterion(net(images), labels)
            run.scaler.scale(loss / len(batches)).backward()
        total += loss.detach().float()
    return float(distributed.all_reduce_mean(total / len(batches), info))


def train_step(run: Run, batches: list[dict]) -> float:
    """One optimiser step over ``len(batches)`` accumulated micro-batches; returns the loss.

    Gradients are averaged over micro-batches (as Caffe's ``iter_size``) and over processes
    (DDP). A non-finite loss (mean over micro-batches and processes) or gradient raises
    :class:`NonFiniteLossError` before the update, so the weights stay those of the last good
    step; an update that makes a weight non-finite raises it with ``weights_ok=False``.
    """
    run.net.train()
    run.optimizer.zero_grad(set_to_none=True)
    loss = accumulate_gradients(run, batches)
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss}")
    if not run.scaler.is_enabled():  # under AMP inf gradients are expected: GradScaler skips
        grads = ((n, p.grad) for n, p in run.model.named_parameters() if p.grad is not None)
        if bad := nonfinite_names(grads):  # DDP: gradients are all-reduced, every rank agrees
            raise NonFiniteLossError(f"the gradient of {listing(bad)} is non-finite")
    if run.config.optim.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.net.parameters(), run.config.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if bad := nonfinite_names(run.model.named_parameters()):
        raise NonFiniteLossError(
            f"the update made {listing(bad)} non-finite (loss {loss:.4g})", weights_ok=False
        )
    return loss


def train_one_step(run: Run) -> float:
    """Draw the step's micro-batches and train on them; returns the loss, NaN for a step
    skipped under ``train.nonfinite=skip`` (any other non-finite step stops the run)."""
    rng_before = rng_state(run.info.device)
    buffers_before = [b.detach().clone() for b in run.model.buffers()]  # BN statistics
    batches = []
    for _ in range(micro_batches_per_step(run.config)):
        run.epoch, batch = next(run.batches)
        batches.append(batch)
    try:
        loss = train_step(run, batches)
    except NonFiniteLossError as err:
        with torch.no_grad():  # the failing forward pass updated them
            for buf, saved in zip(run.model.buffers(), buffers_before, strict=True):
                buf.copy_(saved)
        skip_or_stop(run, err, rng_before)
        return math.nan
    run.skipped_in_row = 0
    return loss


def skip_or_stop(run: Run, err: NonFiniteLossError, rng_before: dict) -> None:
    """``train.nonfinite=skip`` with the weights intact: no update, but the step counts (as a
    GradScaler skip does); otherwise, or after too many skips in a row, stop the run."""
    run.skipped_in_row += 1
    if not (err.weights_ok and run.config.train.nonfinite == "skip"):
        stop_nonfinite(run, err.what, err.weights_ok, rng_before)
    if run.skipped_in_row > MAX_CONSECUTIVE_SKIPS:
        what = f"{err.what} ({run.skipped_in_row} steps in a row skipped)"
        stop_nonfinite(run, what, err.weights_ok, rng_before)
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.log.event("skip", step=run.state.step + 1, reason=err.what)


def stop_nonfinite(run: Run, what: str, weights_ok: bool, rng_before: dict) -> NoReturn:
    """Save the last good state (before the failing step), if it is still whole, and raise
    :class:`NonFiniteLossError` saying what to change.

    When the update itself broke the weights they are not saved: ``last.pt`` keeps the last
    checkpoint written (its step is named in the message).
    """
    last = run.last_checkpoint
    finite = weights_ok and not nonfinite_names(iter(run.model.state_dict().items()))
    rngs = distributed.all_gather_object(rng_before, run.info)
    if run.info.is_main and finite:
        save_training_state(run, last, rngs)
    if finite:
        saved = f"the last good state (step {run.state.step}) is saved in {last}"
    elif last.is_file():
        step = load_checkpoint(last).get("step")
        saved = f"the weights were not saved; the last good checkpoint is {last} (step {step})"
    else:
        saved = "the weights were not saved (no checkpoint was written before)"
    error = NonFiniteLossError(
        what,
        weights_ok=finite,
        template="{what} at step {step} (lr {lr:g}, {norm} loss). {saved}. The learning rate "
        "must match the loss normalisation: loss.normalize=true goes with lr ~1e-4 (VGG, SGD), "
        "false with lr 1e-10 (32s) / 1e-12 (16s) / 1e-14 (8s). Lower optim.lr and continue "
        "with {resume} and {set:optim.lr=...}",
        step=run.state.step + 1,
        lr=current_lr(run.optimizer),
        norm="normalised (mean)" if run.config.loss.normalize else "summed (unnormalised)",
        saved=saved,
    )
    run.log.event("error", step=run.state.step, message=str(error))
    raise error from None


# -------------------------------------------------------------------------- after a step


def maybe_log(run: Run, final: bool) -> None:
    """Every ``train.log_every`` steps (and at the end): mean loss, lr, images per second."""
    if not (run.state.step % run.config.train.log_every == 0 or final):
        return
    record = {
        "step": run.state.step,
        "epoch": run.epoch,
        "loss": run.meter.mean(),
        "lr": current_lr(run.optimizer),
        "images_per_s": run.meter.rate(run.images_per_step),
    }
    run.log.event("train", **record)
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}",
                            img_s=f"{record['images_per_s']:.1f}")  # fmt: skip
    run.meter = LossMeter()


def maybe_check_zero_layers(run: Run) -> None:
    """At ``train.zero_check_step``: warn if zero-initialised score layers never moved."""
    state = run.state
    if state.step == run.config.train.zero_check_step and state.zero_init:
        still = check_zero_score_layers(run.model, state.zero_init, state.step)
        if still:
            run.log.event("warning", step=state.step, zero_score_layers=still)


def maybe_evaluate(run: Run, final: bool) -> dict[str, Any] | None:
    """Every ``train.eval_every`` steps (and at the end): :func:`evaluate_and_log`."""
    if run.state.step % run.config.train.eval_every == 0 or final:
        return evaluate_and_log(run)
    return None


def maybe_checkpoint(run: Run, stopping: bool) -> None:
    """Every ``train.checkpoint_every`` steps, at the end and when stopping early: ``last.pt``
    with every rank's RNG states."""
    step, tc = run.state.step, run.config.train
    if step % tc.checkpoint_every == 0 or step == tc.steps or stopping:
        rngs = distributed.all_gather_object(rng_state(run.info.device), run.info)
        if run.info.is_main:
            save_training_state(run, run.last_checkpoint, rngs)


def out_of_time(t_start: float, limit: float | None, info: DistInfo) -> bool:
    """Whether ``train.time_limit`` is exceeded (rank 0's clock decides for every rank)."""
    if limit is None:
        return False
    flag = torch.tensor(float(time.perf_counter() - t_start > limit), device=info.device)
    if info.distributed:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def validation_metrics(
    model: nn.Module, loader: DataLoader, num_classes: int, data: DataBundle, info: DistInfo
) -> dict[str, Any]:
    """The paper's four metrics (Sec. 5) on the primary head, reduced across ranks.

    Scored as ``fcnkit eval`` scores (:func:`fcnkit.engine.evaluate.evaluate_model` with the
    validation set's :func:`~fcnkit.engine.evaluate.dataset_scoring`: its class names,
    exclusions and ``ignore_index``). Adds ``predicted_classes``, the primary ``confusion``
    matrix and ``<head>_pixel_acc`` for the other heads. Does not touch the training RNG.
    """
    scoring = dataset_scoring(data.val, num_classes)
    with torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else []):
        result = evaluate_model(
            model, loader, info.device, scoring=scoring, num_classes=num_classes
        )
    metrics = dict(result.metrics)
    metrics["predicted_classes"] = result.predicted_classes()
    metrics["confusion"] = result.matrix.matrix.cpu().tolist()
    for head, head_metrics in metrics.pop("heads", {}).items():
        if head != result.primary:
            metrics[f"{head}_pixel_acc"] = head_metrics["pixel_acc"]
    return metrics


def sample_predictions(
    model: nn.Module, val_set: Dataset, data: DataBundle, k: int, info: DistInfo
) -> torch.Tensor | None:
    """A grid (rows: image | truth | prediction) of the first ``k`` validation samples."""
    if k <= 0 or len(val_set) == 0:
        return None
    return prediction_grid(predict_samples(model, val_set, k, info.device), data.palette)


def evaluate_and_log(run: Run) -> dict[str, Any]:
    """Evaluate, log, keep ``best.pt`` and ``metrics.json`` up to date; returns the metrics."""
    state, info = run.state, run.info
    distributed.broadcast_buffers(run.model, info)
    num_classes = int(run.model.num_classes)
    metrics = validation_metrics(run.model, run.val_loader, num_classes, run.data, info)
    state.last_metrics = metrics
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    run.log.event("eval", step=state.step, **scalars)
    if metrics["predicted_classes"] <= 1 and state.step >= run.config.train.zero_check_step:
        run.log.event("warning", step=state.step, single_class=True)
        if info.is_main:
            print(f"WARNING: at step {state.step} the model predicts a single class for every "
                  "validation pixel (all-zero or constant scores? see the zero score layers "
                  "check)", file=sys.stderr, flush=True)  # fmt: skip
    if info.is_main:
        grid = sample_predictions(run.model, run.val_loader.dataset, run.data,
                                  run.config.train.num_sample_images, info)  # fmt: skip
        if grid is not None:
            run.log.image("val/samples", grid, state.step)
        keep_best(run, metrics)
        write_metrics(run, metrics)
    return metrics


def keep_best(run: Run, metrics: dict[str, Any]) -> None:
    """``best.pt``: the weights of the best ``train.best_metric`` so far (rank 0)."""
    state, data = run.state, run.data
    value = metrics.get(run.config.train.best_metric, math.nan)
    if not (isinstance(value, float) and math.isfinite(value) and value > state.best):
        return
    state.best, state.best_step = value, state.step
    save_checkpoint(
        run.run_dir / "checkpoints" / "best.pt",
        run.model,
        **data.label_metadata(),
        step=state.step,
        metrics={k: v for k, v in metrics.items() if k != "confusion"},
        config=run.config.to_dict(),
    )


def write_metrics(run: Run, metrics: dict[str, Any]) -> None:
    """``metrics.json``: the last evaluation, the best so far, the confusion matrix (rank 0)."""
    summary = {
        "step": run.state.step,
        **{k: v for k, v in metrics.items() if k != "confusion"},
        "best": {run.config.train.best_metric: run.state.best, "step": run.state.best_step},
        "classes": run.data.classes,
        "confusion": metrics["confusion"],
    }
    write_json(run.run_dir / "metrics.json", summary)


# ----------------------------------------------------------------------------- checkpoints


def save_training_state(run: Run, path: Path, rngs: list[dict]) -> None:
    """Write a resumable checkpoint (rank 0 only; ``rngs`` holds every rank's RNG states)."""
    state, data = run.state, run.data
    save_checkpoint(
        path,
        run.model,
        **data.label_metadata(),
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        scaler=run.scaler.state_dict(),
        step=state.step,
        epoch=run.epoch,
        rng=rngs,
        config=run.config.to_dict(),
        best=state.best,
        best_step=state.best_step,
        metrics={k: v for k, v in state.last_metrics.items() if k != "confusion"},
        zero_init=state.zero_init,
        world_size=len(rngs),
        class_weights=run.class_weights,  # median_frequency's numbers: a resume reuses them
    )
    run.saved_step = state.step


def restore_training_state(run: Run, ckpt: dict) -> None:
    """Continue from ``ckpt``: weights, optimiser state (momentum buffers, Adam moments),
    scaler, step, best metric and RNGs exactly as saved; the rates and the optimiser's other
    settings (weight decay, momentum, ...) and the schedule are the config's, so that a resume
    may change them (``optim.lr``, ``schedule.*``, ``train.steps``). Unchanged, they give
    the very numbers the checkpoint holds: the resumed run equals an uninterrupted one."""
    state = run.state
    run.model.load_state_dict(ckpt["model"])
    settings = [{k: v for k, v in g.items() if k != "params"} for g in run.optimizer.param_groups]
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group, own in zip(run.optimizer.param_groups, settings, strict=True):
        group.update(own)  # the config's rates (initial_lr: the schedule's base) and settings
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    state.step = run.saved_step = int(ckpt["step"])
    state.best = float(ckpt.get("best", -math.inf))
    state.best_step = int(ckpt.get("best_step", -1))
    state.last_metrics = dict(ckpt.get("metrics") or {})
    state.zero_init = list(ckpt.get("zero_init") or [])
    tc = run.config.train
    run.scheduler = build_scheduler(run.optimizer, run.config.schedule, tc.steps, start=state.step)
    restore_rng(run, ckpt.get("rng") or [], ckpt["config"]["train"]["seed"])


def restore_rng(run: Run, rngs: list[dict], seed: int) -> None:
    """This rank's saved RNG states; re-seeded (with a warning) if the process count changed."""
    info = run.info
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank], info.device)
        return
    warnings.warn(
        f"the checkpoint was written by {len(rngs)} processes, this run has "
        f"{info.world_size}: random streams are re-seeded (the result will differ from an "
        "uninterrupted run)",
        stacklevel=4,
    )
    seed_everything(seed + run.state.step + info.rank)


# ------------------------------------------------------------------------------------ main


def progress_bar(run: Run) -> Any:
    """A tqdm bar over the steps; in a log file (CI, nohup) it redraws rarely."""
    from tqdm import tqdm

    return tqdm(
        total=run.config.train.steps,
        initial=run.state.step,
        desc=run.config.name,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )


def train_loop(
    run: Run,
    *,
    progress: bool = True,
    stop_at_step: int | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Steps until ``train.steps``, ``train.time_limit``, ``stop_at_step`` or a signal
    (:class:`TrainingInterrupted`); returns the last evaluation's metrics."""
    run.bar = progress_bar(run) if progress and run.info.is_main else None
    run.started = run.meter.since = time.perf_counter()
    result: dict[str, Any] = dict(run.state.last_metrics)
    try:
        while run.state.step < run.config.train.steps:
            metrics, stopping = step_and_after(run, stop_at_step, callback)
            result = result if metrics is None else metrics
            if stopping:
                break
    except StopNow as stop:  # a second signal: the step is abandoned
        raise interrupted(run, stop.signum, at_once=True) from None
    finally:
        if run.bar is not None:
            run.bar.close()
    distributed.barrier(run.info)
    return result


def step_and_after(
    run: Run, stop_at_step: int | None, callback: Callable[[int, nn.Module], None] | None
) -> tuple[dict[str, Any] | None, bool]:
    """One step and what follows it (log, evaluation, callback, checkpoint); returns the
    evaluation's metrics (or None) and whether the session ends here. A SIGINT / SIGTERM
    received meanwhile (on any rank) ends it: checkpoint, then :class:`TrainingInterrupted`."""
    tc, state = run.config.train, run.state
    loss = train_one_step(run)
    state.step += 1
    run.meter.add(loss)
    if run.bar is not None:
        run.bar.update(1)
    timed_out = out_of_time(run.started, tc.time_limit, run.info)
    final = state.step == tc.steps or timed_out
    maybe_log(run, final)
    maybe_check_zero_layers(run)
    if timed_out and state.step < tc.steps:
        run.log.event("stop", step=state.step, reason=f"train.time_limit {tc.time_limit} s")
    metrics = maybe_evaluate(run, final)
    if callback is not None:
        callback(state.step, run.model)
    signum = distributed.all_reduce_max(run.signals.signum, run.info)
    stopping = final or state.step == stop_at_step or signum > 0
    maybe_checkpoint(run, stopping)
    if signum:
        raise interrupted(run, signum)
    return metrics, stopping


def interrupted(run: Run, signum: int, *, at_once: bool = False) -> TrainingInterrupted:
    """Log the interruption; the error that says where the run stands and how to continue."""
    name = signal.Signals(signum).name
    step, last = run.state.step, run.last_checkpoint
    run.log.event("interrupted", step=step, signal=name, at_once=at_once)
    if not at_once:
        template = "stopped by {signal} after step {step}, saved in {last}"
    elif run.saved_step is not None:
        template = "stopped at once by a second {signal} after step {step}; {last} holds step "
        template += "{saved}"
    else:
        template = "stopped at once by a second {signal} after step {step}; nothing was saved"
    return TrainingInterrupted(
        template + ". Continue with: {resume_command}",
        signum=signum,
        signal=name,
        step=step,
        last=last,
        saved=run.saved_step,
    )


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
    (Sec. 4.2). ``resume`` continues ``run_dir`` from ``checkpoints/last.pt``, exactly, with
    ``config`` in force from there on (see :func:`restore_training_state`). Under torchrun
    every process calls this; rank 0 writes, holding the run directory's lock. SIGINT /
    SIGTERM (main thread) end the session after the current step with a checkpoint:
    :class:`TrainingInterrupted`. ``stop_at_step`` ends the session early after checkpointing
    that step (a time-boxed job, or a simulated interruption). ``callback(step, model)`` runs
    on every rank after each step (custom logging, tests).
    """
    if isinstance(config, dict):
        config = from_dict(config)
    info = distributed.setup(device or config.train.device)
    try:
        with StopSignals(announce=info.is_main) as signals:
            run = setup_run(config, Path(run_dir), info, resume=resume, init_from=init_from,
                            overwrite=overwrite)  # fmt: skip
            run.signals = signals
            try:
                return train_loop(run, progress=progress, stop_at_step=stop_at_step,
                                  callback=callback)  # fmt: skip
            finally:
                run.log.close()
                if run.lock is not None:
                    run.lock.release()
    finally:
        distributed.cleanup(info)


# Old names of functions renamed so that each name has one owner in the package
# (models.registry.build_model, engine.config.validate); kept for one release.
_RENAMED = {"build_model": "model_from_config", "validate": "validation_metrics"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
