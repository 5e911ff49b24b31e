"""Datasets in their published on-disk layouts, joint transforms and batching.

``create_dataset(name, root, split, **options)``; ``list_datasets()``.
"""

from fcnkit.data.registry import (
    DatasetEntry,
    create_dataset,
    get_dataset_entry,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DatasetEntry",
    "create_dataset",
    "get_dataset_entry",
    "list_datasets",
    "register_dataset",
]
