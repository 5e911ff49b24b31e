"""torch.hub entry points: every fcnkit model, e.g.

    model = torch.hub.load("path/to/fcnkit", "fcn8s", source="local", weights="voc-fcn8s")
    model = torch.hub.load("path/to/fcnkit", "fcn8s_efficientnet_lite0", source="local",
                           num_classes=33, weights="runs/my-run/checkpoints/best.pt")

Model names with ``-`` are exposed with ``_`` (``fcn8s-efficientnet_lite0`` ->
``fcn8s_efficientnet_lite0``); ``torch.hub.list`` shows them all. ``weights`` is what
:func:`fcnkit.create_model` takes: a weight entry name (``fcnkit weights``), a checkpoint or a
``.pt`` / ``.safetensors`` / ``.caffemodel`` file; other keywords are model options.
``segmenter(weights)`` returns a ready :class:`fcnkit.Segmenter`.
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "numpy", "scipy", "PIL", "yaml"]

try:
    import fcnkit
except ImportError:  # a clone that is not pip-installed: use its source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import fcnkit


def _entry_point(model_name: str):
    def load(*, weights: str | None = None, num_classes: int | None = None, **options):
        return fcnkit.create_model(model_name, num_classes, weights=weights, **options)

    load.__name__ = model_name.replace("-", "_")
    load.__doc__ = (
        f"fcnkit.create_model({model_name!r}, num_classes, weights=weights, **options): see "
        "`fcnkit models` and `fcnkit weights` for the options and the known weights."
    )
    return load


for _name in fcnkit.list_models():
    if not _name.startswith("test-"):
        globals()[_name.replace("-", "_")] = _entry_point(_name)


def segmenter(weights: str, device: str = "cpu", **options):
    """A :class:`fcnkit.Segmenter` of ``weights`` (run directory, checkpoint, weight entry,
    ``.safetensors`` or ``.onnx`` file)."""
    return fcnkit.Segmenter(weights, device, **options)
