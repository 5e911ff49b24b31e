"""Optimisers and learning-rate schedules (paper Sec. 4.3).

The paper trains with SGD, momentum 0.9, weight decay 5e-4, doubled learning rate for
biases (which are not decayed: the reference's ``lr_mult: 2, decay_mult: 0``). Parameters with
``requires_grad=False`` (the fixed bilinear upsampler, a frozen trunk) are left out of the
optimiser entirely. Schedules are a function of the step: fixed (the paper), poly, step, each
with optional linear warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fcnkit.engine.config import OptimConfig, ScheduleConfig

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Parameter groups: weights (lr, decay), biases (lr x bias_lr_mult, bias decay), norms.

    Frozen parameters (``requires_grad=False``) are excluded. Each group carries its
    parameter ``names`` (for inspection and tests) and ``lr_mult``.
    """
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, _NORM_TYPES)
        for p in m.parameters(recurse=False)
    }
    norm_decay = cfg.weight_decay if cfg.norm_weight_decay is None else cfg.norm_weight_decay
    groups = {
        "weight": {"params": [], "names": [], "lr_mult": 1.0, "weight_decay": cfg.weight_decay},
        "bias": {
            "params": [],
            "names": [],
            "lr_mult": cfg.bias_lr_mult,
            "weight_decay": cfg.bias_weight_decay,
        },
        "norm": {"params": [], "names": [], "lr_mult": 1.0, "weight_decay": norm_decay},
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("bias"):
            kind = "bias"
        elif id(p) in norm_params:
            kind = "norm"
        else:
            kind = "weight"
        groups[kind]["params"].append(p)
        groups[kind]["names"].append(name)
    out = []
    for kind, group in groups.items():
        if group["params"]:
            group["lr"] = cfg.lr * group["lr_mult"]
            group["kind"] = kind
            out.append(group)
    if not out:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return out


#: device types with PyTorch's fused SGD / AdamW kernels
FUSED_DEVICES = ("cpu", "cuda")


def fused_supported(groups: list[dict]) -> bool:
    """Whether every parameter is a floating-point tensor on a :data:`FUSED_DEVICES` device.

    The fused kernels make the same update in one pass over each tensor instead of several:
    on VGG16's 134M parameters an SGD step (momentum, weight decay) takes 0.04 s against
    0.20 s with the default per-tensor loop (2 cores, measured in one run; docs/speed.md).
    The state (momentum buffers, moments) is the same, so checkpoints load either way."""
    params = [p for g in groups for p in g["params"]]
    return all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (the paper) or AdamW over :func:`param_groups`, fused where
    :func:`fused_supported` (build it after the model is on its device)."""
    groups = param_groups(model, cfg)
    fused = fused_supported(groups) or None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
    raise ValueError(f"unknown optimiser {cfg.name!r}; choose sgd or adamw")


def lr_factor(cfg: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at a step (0-based) for a schedule with warm-up."""

    def factor(step: int) -> float:
        if cfg.name == "fixed":
            f = 1.0
        elif cfg.name == "poly":
            f = max(0.0, 1.0 - step / max(1, total_steps)) ** cfg.power
        elif cfg.name == "step":
            f = cfg.gamma ** (step // cfg.step_size)
        else:
            raise ValueError(f"unknown schedule {cfg.name!r}; choose fixed, poly or step")
        if step < cfg.warmup_steps:
            alpha = step / cfg.warmup_steps
            f *= cfg.warmup_factor * (1.0 - alpha) + alpha
        return f

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, start: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler; its state is plain numbers (checkpoints load weights-only).

    ``start > 0`` (a resumed run): the schedule as after ``start`` steps; each group's
    ``initial_lr`` (its base rate) must be set, and the group's ``lr`` becomes
    ``initial_lr * factor(start)``, the same number an uninterrupted run reaches.
    """
    factor = lr_factor(cfg, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start - 1)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base learning rate now (the lr of a group with lr_mult 1, else the first)."""
    for group in optimizer.param_groups:
        if math.isclose(group.get("lr_mult", 1.0), 1.0):
            return float(group["lr"])
    return float(optimizer.param_groups[0]["lr"])
