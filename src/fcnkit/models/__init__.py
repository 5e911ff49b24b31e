"""FCN models: the paper's VGG16/AlexNet/GoogLeNet nets and modern backbones.

Every model module registers its names with :func:`register_model`; :func:`build_model`
builds one (random init), :func:`list_models` names them. The models know no dataset, trainer
or weight source: pretrained weights are loaded by :func:`fcnkit.create_model`
(:mod:`fcnkit.weights`). Outputs follow one contract (:mod:`fcnkit.models.outputs`).
"""

from fcnkit.models.registry import (
    ModelEntry,
    build_model,
    create_model,
    get_model_entry,
    list_models,
    register_model,
    unregister_model,
)

__all__ = [
    "ModelEntry",
    "build_model",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
    "unregister_model",
]
