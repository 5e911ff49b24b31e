"""CamVid in the SegNet tutorial layout (11 classes at 360 x 480).

Under ``root``: ``train/``, ``trainannot/``, ``val/``, ``valannot/``, ``test/``, ``testannot/``;
each image ``<split>/<name>.png`` has its label ``<split>annot/<name>.png`` (same file name), a
greyscale PNG of values 0..10 (the classes below) and 11 = void -> 255 (ignore).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnkit.data.base import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Sample,
    SegmentationDataset,
    offset_table,
    read_index_png,
    read_rgb,
    remap,
)
from fcnkit.data.registry import register_dataset

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
]  # fmt: skip
# The colours of the SegNet tutorial's CamVid figures.
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
LABEL_TABLE = {**offset_table(11, first=0, void=(11,))}
_LABEL_WHAT = "a CamVid annotation PNG with values 0..10 (classes) or 11 (void)"


class CamVid(SegmentationDataset):
    name = "camvid"

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        self.classes = list(CAMVID_CLASSES)
        self.palette = list(CAMVID_PALETTE)
        self.image_dir = self.root / split
        self.label_dir = self.root / f"{split}annot"
        for d in (self.image_dir, self.label_dir):
            if not d.is_dir():
                raise DatasetError(f"{d}: missing ({self.layout_hint()})")
        images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        self._images = {p.stem: p for p in images}
        self.ids = [p.stem for p in images]
        labels = {p.stem for p in self.label_dir.iterdir() if p.suffix.lower() == ".png"}
        for stem in sorted(labels - set(self.ids)):
            self.index_problems.append(
                f"{self.label_dir / stem}.png: annotation without an image in {self.image_dir}"
            )
        self.finish_index()

    def layout_hint(self) -> str:
        return "SegNet CamVid layout: train/, trainannot/, val/, valannot/, test/, testannot/"

    def files(self, index: int) -> dict[str, Path]:
        i = self.ids[index]
        return {"image": self._images[i], "label": self.label_dir / f"{i}.png"}

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "a CamVid RGB image")
        label = remap(read_index_png(f["label"], _LABEL_WHAT), LABEL_TABLE, f["label"], _LABEL_WHAT)
        return {"image": image, "label": label, "id": self.ids[index]}


@register_dataset(
    "camvid",
    description="CamVid (SegNet layout): 11 classes, value 11 = void -> ignore",
    splits=("train", "val", "test"),
)
def build_camvid(root: str | Path, split: str = "train", **options: Any) -> CamVid:
    return CamVid(root, split, **options)
