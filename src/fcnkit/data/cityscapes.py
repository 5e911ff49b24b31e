"""Cityscapes fine annotations: ``labelIds`` mapped to the 19 evaluation (train) ids.

Under ``root``: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``. ``labelIds`` 0..33 map to
the 19 train ids of the official label table; every other id (void, rare and unlabelled
classes) becomes 255. A value above 33 is an error, not ignore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnkit.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    SegmentationDataset,
    read_index_png,
    read_rgb,
    remap,
)
from fcnkit.data.registry import register_dataset

# (label id, train id, name, colour) for the 19 evaluated classes of the official table.
_TRAIN_CLASSES = [
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
]
CITYSCAPES_CLASSES = [name for _, name, _ in _TRAIN_CLASSES]
CITYSCAPES_PALETTE = [colour for _, _, colour in _TRAIN_CLASSES]
LABEL_TABLE = {label_id: IGNORE_INDEX for label_id in range(34)}
LABEL_TABLE.update({label_id: train_id for train_id, (label_id, _, _) in enumerate(_TRAIN_CLASSES)})
_LABEL_WHAT = "a Cityscapes *_gtFine_labelIds.png with ids 0..33"
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(SegmentationDataset):
    name = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        self.classes = list(CITYSCAPES_CLASSES)
        self.palette = list(CITYSCAPES_PALETTE)
        image_root = self.root / "leftImg8bit" / split
        self.label_root = self.root / "gtFine" / split
        for d in (image_root, self.label_root):
            if not d.is_dir():
                raise DatasetError(f"{d}: missing ({self.layout_hint()})")
        images = sorted(image_root.glob(f"*/*{_IMAGE_SUFFIX}"))
        self._images = images
        self.ids = [p.name[: -len(_IMAGE_SUFFIX)] for p in images]
        known = set(self.ids)
        for p in sorted(self.label_root.glob(f"*/*{_LABEL_SUFFIX}")):
            if p.name[: -len(_LABEL_SUFFIX)] not in known:
                self.index_problems.append(f"{p}: labelIds without a leftImg8bit image")
        self.finish_index()

    def layout_hint(self) -> str:
        return (
            "leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
            "gtFine/<split>/<city>/*_gtFine_labelIds.png"
        )

    def files(self, index: int) -> dict[str, Path]:
        image = self._images[index]
        label = self.label_root / image.parent.name / f"{self.ids[index]}{_LABEL_SUFFIX}"
        return {"image": image, "label": label}

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "a Cityscapes leftImg8bit PNG")
        label = remap(read_index_png(f["label"], _LABEL_WHAT), LABEL_TABLE, f["label"], _LABEL_WHAT)
        return {"image": image, "label": label, "id": self.ids[index]}


@register_dataset(
    "cityscapes",
    description="Cityscapes gtFine: labelIds -> 19 train ids, others ignore",
    splits=("train", "val", "test"),
)
def build_cityscapes(root: str | Path, split: str = "train", **options: Any) -> Cityscapes:
    return Cityscapes(root, split, **options)
