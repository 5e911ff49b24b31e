"""SBD, the Semantic Boundaries Dataset (Hariharan et al. 2011), in its release layout.

``root`` is the release's ``dataset`` folder: ``img/<id>.jpg``, ``cls/<id>.mat`` (a MATLAB
struct ``GTcls`` whose field ``Segmentation`` holds 0 background, 1..20 the VOC classes),
``train.txt`` and ``val.txt``. Same classes and palette as VOC. SBD has no boundary band, but a
255 in a label is accepted as ignore like everywhere in fcnkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fcnkit.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    SplitUnavailable,
    as_label,
    load_mat,
    read_list,
    read_rgb,
)
from fcnkit.data.registry import register_dataset
from fcnkit.data.voc import VOC_CLASSES, VOC_PALETTE

_WHAT = "an SBD cls .mat with struct GTcls and field Segmentation (0..20)"


def read_gtcls_segmentation(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as a 2-D integer array."""
    mat = load_mat(path, _WHAT)
    gt = mat.get("GTcls")
    if gt is None:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DatasetError(f"{path}: no variable 'GTcls' (found: {found}); expected {_WHAT}")
    if isinstance(gt, np.ndarray) and gt.dtype == object and gt.size == 1:
        gt = gt.flat[0]  # the 1x1 struct array
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DatasetError(f"{path}: GTcls has no field 'Segmentation'; expected {_WHAT}")
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise DatasetError(
            f"{path}: GTcls.Segmentation is {seg.dtype} {seg.shape}; expected {_WHAT}"
        )
    return seg


class SBDSegmentation(SegmentationDataset):
    name = "sbd"

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        self.classes = list(VOC_CLASSES)
        self.palette = list(VOC_PALETTE)
        list_file = self.root / f"{split}.txt"
        if not list_file.is_file():
            raise SplitUnavailable(
                f"{list_file}: missing (the list of split {split!r}; {self.layout_hint()})"
            )
        self.ids = read_list(list_file)
        self.finish_index()

    def layout_hint(self) -> str:
        return "SBD 'dataset' folder with img/*.jpg, cls/*.mat, train.txt, val.txt"

    def files(self, index: int) -> dict[str, Path]:
        i = self.ids[index]
        return {"image": self.root / "img" / f"{i}.jpg", "label": self.root / "cls" / f"{i}.mat"}

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "an SBD JPEG image")
        label = as_label(read_gtcls_segmentation(f["label"]))
        return {"image": image, "label": label, "id": self.ids[index]}


@register_dataset(
    "sbd",
    description="SBD (Hariharan et al.): VOC classes, cls/*.mat GTcls.Segmentation",
    splits=("train", "val"),
)
def build_sbd(root: str | Path, split: str = "train", **options: Any) -> SBDSegmentation:
    return SBDSegmentation(root, split, **options)
