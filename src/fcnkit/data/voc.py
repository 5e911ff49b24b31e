"""PASCAL VOC 2011/2012 segmentation in the VOCdevkit layout.

``root`` is the ``VOCdevkit`` folder (holding ``VOC2012/``, ``VOC2011/``) or one year's folder
itself. Images are ``JPEGImages/<id>.jpg``; labels ``SegmentationClass/<id>.png`` are palette
PNGs read as their stored indices: 0 background, 1..20 the classes, 255 the boundary band and
"difficult" regions (kept as 255 = ignore). Splits ``train``/``val`` come from
``ImageSets/Segmentation/<split>.txt``; ``seg11valid`` (the paper's evaluation set) is the
VOC2011 ``val`` images that are not in SBD ``train``, computed from the two datasets' own lists
(``sbd_root`` = the SBD ``dataset`` folder holding ``train.txt``; 736 images on the real data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnkit.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    SplitUnavailable,
    as_label,
    read_index_png,
    read_list,
    read_rgb,
    voc_palette,
)
from fcnkit.data.registry import register_dataset

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
VOC_PALETTE = voc_palette(len(VOC_CLASSES))


def find_year_dir(root: Path, year: str) -> Path:
    """``root`` itself if it is a VOC year folder, else ``root/VOC<year>``."""
    if (root / "ImageSets" / "Segmentation").is_dir() and not (root / f"VOC{year}").is_dir():
        return root
    year_dir = root / f"VOC{year}"
    if not year_dir.is_dir():
        raise DatasetError(
            f"{root}: no VOC{year}/ folder; expected a VOCdevkit folder holding VOC{year}/ "
            "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) or that folder itself"
        )
    return year_dir


def seg11valid_ids(voc2011_dir: Path, sbd_root: Path) -> list[str]:
    """VOC2011 segmentation ``val`` ids not in SBD ``train``, in VOC list order."""
    val_file = voc2011_dir / "ImageSets" / "Segmentation" / "val.txt"
    sbd_train = Path(sbd_root).expanduser() / "train.txt"
    for f, what in ((val_file, "the VOC2011 val list"), (sbd_train, "the SBD train list")):
        if not f.is_file():
            raise SplitUnavailable(f"{f}: missing ({what}, needed for split 'seg11valid')")
    exclude = set(read_list(sbd_train))
    return [i for i in read_list(val_file) if i not in exclude]


class VOCSegmentation(SegmentationDataset):
    name = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        year: str | int | None = None,
        sbd_root: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, split, **kwargs)
        self.year = str(year) if year is not None else ("2011" if split == "seg11valid" else "2012")
        self.classes = list(VOC_CLASSES)
        self.palette = list(VOC_PALETTE)
        self.dir = find_year_dir(self.root, self.year)
        if split == "seg11valid":
            if sbd_root is None:
                raise SplitUnavailable(
                    "split 'seg11valid' needs sbd_root= (the SBD 'dataset' folder holding "
                    "train.txt): it is VOC2011 val minus SBD train"
                )
            voc2011 = self.dir if self.year == "2011" else find_year_dir(self.root, "2011")
            self.ids = seg11valid_ids(voc2011, Path(sbd_root))
        else:
            list_file = self.dir / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_file.is_file():
                raise SplitUnavailable(f"{list_file}: missing (the list of split {split!r})")
            self.ids = read_list(list_file)
        self.finish_index()

    def layout_hint(self) -> str:
        return "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}"

    def files(self, index: int) -> dict[str, Path]:
        i = self.ids[index]
        return {
            "image": self.dir / "JPEGImages" / f"{i}.jpg",
            "label": self.dir / "SegmentationClass" / f"{i}.png",
        }

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "a VOC JPEG image")
        raw = read_index_png(f["label"], "a VOC palette PNG of class indices 0..20 and 255")
        return {"image": image, "label": as_label(raw), "id": self.ids[index]}


@register_dataset(
    "voc",
    description="PASCAL VOC 2011/2012 segmentation (VOCdevkit; 21 classes, 255 boundary = ignore)",
    splits=("train", "val", "seg11valid"),
)
def build_voc(root: str | Path, split: str = "train", **options: Any) -> VOCSegmentation:
    return VOCSegmentation(root, split, **options)
