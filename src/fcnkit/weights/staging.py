"""Staged initialisation from a trained run (paper Sec. 4.2: 32s -> 16s -> 8s)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from fcnkit.surgery import init_from
from fcnkit.weights.checkpoint import load_model


def init_from_run(model: nn.Module, source: str | os.PathLike) -> dict[str, Any]:
    """Initialise ``model`` from an earlier stage's run directory or checkpoint.

    Uses :func:`fcnkit.surgery.init_from`: shared layers are copied by name; the layers the
    new net adds keep the paper's initialisation (score layers zero, upsamplers bilinear),
    so the 16s net starts out computing (nearly) the FCN-32s output (exactly on pixels more
    than 8 px from every stride-32 cell centre, see ``init_from``). ``model.preprocessing``
    becomes the parent's: the child keeps seeing the inputs the parent was trained on.
    Returns a report (source, copied / reshaped / skipped counts, the new layers).
    """
    parent, meta = load_model(source)
    report = init_from(parent, model)
    if not report.loaded:
        raise ValueError(f"init_from {source}: no parameter names match {model.model_name}")
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
