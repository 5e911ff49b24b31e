"""Every way weights come in and go out of fcnkit, above the models.

- :mod:`~fcnkit.weights.entries`: the known pretrained weights and their metadata;
- :mod:`~fcnkit.weights.download`: the one download / cache policy (torchvision's weights);
- :mod:`~fcnkit.weights.backbones`: ImageNet weights into the modern backbones;
- :mod:`~fcnkit.weights.load`: ``load_weights(model, spec)`` for entries and files;
- :mod:`~fcnkit.weights.caffe`: the ``.caffemodel`` reader (no Caffe needed);
- :mod:`~fcnkit.weights.modality`: HHA filters, RGB-D widening, late fusion (NYUDv2);
- :mod:`~fcnkit.weights.checkpoint`: the checkpoint format (save, recognise, rebuild);
- :mod:`~fcnkit.weights.factory`: ``create_model(name, weights=...)`` and ``load_any(spec)``;
- :mod:`~fcnkit.weights.staging`: staged initialisation from a run (Sec. 4.2).
"""

from fcnkit.weights.backbones import (
    efficientnet_lite0_imagenet,
    lite0_weights_path,
    load_backbone_weights,
)
from fcnkit.weights.checkpoint import (
    head_classes,
    head_palette,
    is_checkpoint,
    load_checkpoint,
    load_model,
    model_metadata,
    read_safetensors,
    resolve_checkpoint,
    save_checkpoint,
    save_safetensors,
)
from fcnkit.weights.download import DOWNLOAD_TIMEOUT_S, torchvision_weight_file
from fcnkit.weights.entries import (
    VOC_CLASSES,
    WeightEntry,
    get_weight_entry,
    imagenet_classes,
    list_weights,
    shipped_models,
    weights_dirs,
)
from fcnkit.weights.factory import create_model, load_any
from fcnkit.weights.load import (
    LoadReport,
    check_compatible,
    compatible,
    load_weights,
    model_modality,
    read_hed_h5,
    torchvision_vgg16_to_caffe,
)
from fcnkit.weights.staging import init_from_run, init_from_runs

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "VOC_CLASSES",
    "LoadReport",
    "WeightEntry",
    "check_compatible",
    "compatible",
    "create_model",
    "efficientnet_lite0_imagenet",
    "get_weight_entry",
    "head_classes",
    "head_palette",
    "imagenet_classes",
    "init_from_run",
    "init_from_runs",
    "is_checkpoint",
    "lite0_weights_path",
    "list_weights",
    "load_any",
    "load_backbone_weights",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "model_metadata",
    "model_modality",
    "read_hed_h5",
    "read_safetensors",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_safetensors",
    "shipped_models",
    "torchvision_vgg16_to_caffe",
    "torchvision_weight_file",
    "weights_dirs",
]
