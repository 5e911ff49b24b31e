"""PASCAL VOC 2011/2012 segmentation in the VOCdevkit layout.

``root`` is the ``VOCdevkit`` folder (holding ``VOC2012/``, ``VOC2011/``) or one year's folder
itself. ``year`` (option, default 2012; 2011 for ``seg11valid``) picks the year's folder. A
year folder given as ``root`` must be that year: ``root=.../VOC2012`` with ``year=2011`` is an
error, never a silent substitution (a year folder whose name does not say its year is taken as
the requested year, with a note). Images are ``JPEGImages/<id>.jpg``; labels
``SegmentationClass/<id>.png`` are palette PNGs read as their stored indices: 0 background,
1..20 the classes, 255 the boundary band and "difficult" regions (kept as 255 = ignore).

Splits ``train``/``val`` come from ``ImageSets/Segmentation/<split>.txt``; ``seg11valid`` (the
paper's evaluation set) is the VOC2011 ``val`` images that are not in SBD ``train``, computed
from the two datasets' own lists (``sbd_root`` = the SBD ``dataset`` folder holding
``train.txt``; 736 images on the real data). It is defined on VOC2011 only, so ``year`` must be
2011 (the default for this split). In a training config: ``val_root: data/VOCdevkit`` (or
``.../VOC2011``), ``val_split: seg11valid``, ``val_options: {year: 2011, sbd_root: data/sbd}``.
"""

from __future__ import annotations

import re
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


def year_of_folder(path: Path) -> str | None:
    """The year a ``VOC<year>`` folder's name says (``VOC2012`` -> ``"2012"``), else None."""
    m = re.fullmatch(r"VOC(\d{4})", path.name, flags=re.IGNORECASE)
    return m.group(1) if m else None


def find_year_dir(root: Path, year: str | int) -> Path:
    """``root/VOC<year>`` of a VOCdevkit ``root``, or ``root`` itself if it is that year's folder.

    Raises :class:`DatasetError` when ``root`` is a year folder named for another year (e.g.
    ``.../VOC2012`` asked for 2011), or when no folder of the year can be found.
    """
    year = str(year)
    year_dir = root / f"VOC{year}"
    if year_dir.is_dir():
        return year_dir
    if (root / "ImageSets" / "Segmentation").is_dir():
        named = year_of_folder(root)
        if named is not None and named != year:
            raise DatasetError(
                f"{root}: this is the VOC{named} folder, but VOC{year} was requested (year="
                f"{year}); pass the VOCdevkit folder holding VOC{year}/, or VOC{year}/ itself"
            )
        return root
    raise DatasetError(
        f"{root}: no VOC{year}/ folder; expected a VOCdevkit folder holding VOC{year}/ "
        "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) or that folder itself"
    )


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
        if split == "seg11valid" and self.year != "2011":
            raise ValueError(
                f"split 'seg11valid' is a subset of VOC2011 val; year must be 2011, got {year!r}"
            )
        self.dir = find_year_dir(self.root, self.year)
        if year_of_folder(self.dir) is None:
            self.notes.append(
                f"{self.dir}: the folder name does not say its year; taken as VOC{self.year}"
            )
        if split == "seg11valid":
            if sbd_root is None:
                raise SplitUnavailable(
                    "split 'seg11valid' needs sbd_root= (the SBD 'dataset' folder holding "
                    "train.txt): it is VOC2011 val minus SBD train"
                )
            self.ids = seg11valid_ids(self.dir, Path(sbd_root))
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
