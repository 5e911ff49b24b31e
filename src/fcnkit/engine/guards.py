"""Checks that keep a training run from failing silently.

- **Non-finite values** (issue 12 §0): a NaN or inf loss, gradient or weight stops the run (or,
  with ``train.nonfinite=skip``, skips the step) before anything non-finite is saved.
- **Zero score layers** (paper Sec. 4.1-4.2: the score layers start at zero): if they are
  still exactly zero after ``train.zero_check_step`` steps, the model outputs constant scores
  and every pixel becomes class 0; the run says so loudly.
- **Interruptions** (issue 12 §3): SIGINT / SIGTERM ask the loop to stop after the current
  step, with a checkpoint; a second signal stops at once (:class:`StopSignals`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch
from torch import nn

from fcnkit.engine.errors import StopNow

# train.nonfinite=skip: this many skipped steps in a row stop the run (a lasting divergence,
# not a stray overflow)
MAX_CONSECUTIVE_SKIPS = 10


def nonfinite_names(named_tensors: Iterator[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or inf (one device sync when all
    are finite).

    Fast path: each tensor's sum, which is NaN or inf whenever an element is. It reads every
    tensor once and allocates nothing of its size: 8x cheaper than ``isfinite(t).all()``
    over VGG16's 134M parameters (0.13 s against 1.10 s, measured in one run on 2 cores), run
    twice per training step. A sum can also overflow with finite elements, so only the
    tensors whose sum is not finite are then checked element by element: the answer is
    exact."""
    named = [(n, t) for n, t in named_tensors if t.is_floating_point()]
    if not named:
        return []
    sums = torch.stack([t.sum(dtype=torch.float32) for _, t in named])
    suspects = torch.isfinite(sums).logical_not().nonzero().flatten().tolist()
    return [named[i][0] for i in suspects if not bool(torch.isfinite(named[i][1]).all())]


def listing(names: list[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: a short list of tensor names for a message."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


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
            "staged init (train.init_from: the previous stage's run) or the at-once scaling."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print("\n" + "!" * 80 + "\n" + message + "\n" + "!" * 80, file=sys.stderr, flush=True)
    return still


class StopSignals:
    """SIGINT / SIGTERM during training, as a request read between steps.

    The first signal sets :attr:`signum` (the loop finishes its step, saves a checkpoint and
    stops); a second raises :class:`~fcnkit.engine.errors.StopNow` wherever the process is
    (the step is abandoned; ``last.pt`` is written atomically, so it stays whole). Handlers
    are installed from the main thread only and the previous ones restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True) -> None:
        self.signum = 0
        self.announce = announce  # say on stderr that the request was heard (rank 0)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            raise StopNow(signum)
        self.signum = signum
        if self.announce:  # os.write: print() may be in the middle of a write of its own
            name = signal.Signals(signum).name
            os.write(2, f"\nfcnkit: {name}: stopping after this step (saving a checkpoint); "
                        f"{name} again stops at once\n".encode())  # fmt: skip
