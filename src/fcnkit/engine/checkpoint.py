"""Checkpoints moved to :mod:`fcnkit.weights` (the one home of loading and saving weights);
these names are re-exported for one release. The training state of a run (optimiser,
scheduler, RNG streams, resume) is written and read by :mod:`fcnkit.engine.train`.
"""

from fcnkit.weights.checkpoint import (  # noqa: F401 (re-exports)
    WEIGHT_OPTIONS,
    atomic_save,
    head_palette,
    load_checkpoint,
    load_model,
    model_metadata,
    resolve_checkpoint,
    save_checkpoint,
)
from fcnkit.weights.checkpoint import head_classes as head_names  # noqa: F401
from fcnkit.weights.factory import load_any  # noqa: F401
