"""Datasets in their published on-disk layouts, joint transforms and batching.

``create_dataset(name, root, split, **options)``; ``list_datasets()``.
"""

from fcnkit.data.base import DatasetError, SegmentationDataset, SplitUnavailable
from fcnkit.data.collate import collate_pad
from fcnkit.data.registry import (
    DatasetEntry,
    create_dataset,
    get_dataset_entry,
    list_datasets,
    register_dataset,
)
from fcnkit.data.transforms import build_transforms

__all__ = [
    "DatasetEntry",
    "DatasetError",
    "SegmentationDataset",
    "SplitUnavailable",
    "build_transforms",
    "collate_pad",
    "create_dataset",
    "get_dataset_entry",
    "list_datasets",
    "register_dataset",
]
