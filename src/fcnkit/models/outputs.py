"""The one output contract of every fcnkit model, and the helpers that read it.

A model returns either a tensor of scores ``N x C x H x W`` (one head), or a ``dict`` of such
tensors, one per head, with the **primary head first** (SIFT Flow: ``{"sem": ..., "geo": ...}``,
the reference's ``score_sem`` / ``score_geo``). Code that consumes outputs never branches on
the type itself: it calls :func:`heads` (always a dict) or :func:`primary` (always a tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

from torch import Tensor

Outputs = Union[Tensor, dict[str, Tensor]]  # noqa: UP007 (a runtime alias on Python 3.10)

# The name of a single-output model's head wherever heads are named (metrics, tables, files).
SINGLE_HEAD = "main"


def heads(out: Outputs) -> dict[str, Tensor]:
    """Every head's scores by name, primary first (a tensor is the head :data:`SINGLE_HEAD`)."""
    if isinstance(out, dict):
        if not out:
            raise ValueError("a model returned an empty dict: it must return at least one head")
        return out
    return {SINGLE_HEAD: out}


def primary(out: Outputs) -> Tensor:
    """The primary head's scores (the tensor itself, or the first value of the dict)."""
    return next(iter(heads(out).values()))


def primary_name(out: Outputs) -> str:
    """The name of the primary head (:data:`SINGLE_HEAD` for a tensor)."""
    return next(iter(heads(out)))


def select_head(out: Outputs, head: str | None = None) -> Tensor:
    """The scores of ``head``; the primary head when ``None``."""
    if head is None:
        return primary(out)
    named = heads(out)
    if head not in named:
        if not isinstance(out, dict):
            raise ValueError(f"the model has a single output; cannot select head {head!r}")
        raise ValueError(f"unknown head {head!r}; the model's heads: {', '.join(named)}")
    return named[head]


def same_form(template: Outputs, named: dict[str, Tensor]) -> Outputs:
    """``named`` (head -> tensor, as :func:`heads` returns) in the form of ``template``."""
    return named if isinstance(template, dict) else named[SINGLE_HEAD]


def map_heads(out: Outputs, fn: Callable[[Tensor], Tensor]) -> Outputs:
    """``fn`` applied to every head, keeping the output's form (tensor or dict)."""
    return {k: fn(v) for k, v in out.items()} if isinstance(out, dict) else fn(out)


def zip_heads(outs: Sequence[Outputs], fn: Callable[..., Tensor]) -> Outputs:
    """``fn(head of outs[0], head of outs[1], ...)`` for every head, keeping the form."""
    if isinstance(outs[0], dict):
        return {k: fn(*(o[k] for o in outs)) for k in outs[0]}
    return fn(*outs)
