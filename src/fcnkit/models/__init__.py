"""FCN models: the paper's VGG16/AlexNet/GoogLeNet nets and modern backbones.

Every model module registers its names with :func:`register_model`; use
:func:`create_model` and :func:`list_models`.
"""

from fcnkit.models.registry import (
    ModelEntry,
    create_model,
    get_model_entry,
    list_models,
    register_model,
    unregister_model,
)

__all__ = [
    "ModelEntry",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
    "unregister_model",
]
