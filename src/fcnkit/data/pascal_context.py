"""PASCAL-Context (Mottaghi et al., CVPR 2014): the 59-class task, as the FCN reference reads it.

The reference's data layer (``pascalcontext_layers.py`` in fcn.berkeleyvision.org) reads two
folders, and so does this reader:

- ``root``: the PASCAL-Context annotations (the reference's ``context_dir``,
  ``data/pascal-context``): ``labels.txt`` (every class of the full labelling, ``N: name``
  lines; line ``k`` (from 1) is raw label value ``k``), ``59_labels.txt`` (the 59 classes of
  the task, same format, in output order) and ``trainval/<id>.mat`` with variable
  ``LabelMap`` (the full labelling of one image);
- ``voc_root`` (option): the folder holding ``VOC2010/`` (the reference's ``voc_dir``,
  ``data/pascal``); default ``root/../pascal``, the reference's sibling layout. The
  ``VOC2010`` folder itself is accepted too. Images are ``VOC2010/JPEGImages/<id>.jpg``, the
  split lists ``VOC2010/ImageSets/Main/<split>.txt`` (``train`` 4,998 and ``val`` 5,105
  images on the real data: the paper trains on train and evaluates on val).

Labels, exactly as the reference: class names are compared with their spaces removed; three
task names differ from the full list's and are translated (``diningtable`` -> ``table``,
``bedcloth`` -> ``bedclothes``, ``clothes`` -> ``cloth``); the ``k``-th task class (from 1)
takes the pixels whose raw value is its line number in ``labels.txt``; every other pixel
(the other ~400 classes and unlabelled 0) is class 0, ``background``. So there are 60
classes (the reference nets' 60 outputs), no pixel carries the ignore label, and the
reference's scoring (``score.py``) counts all 60 in its means: nothing is excluded.

Without ``59_labels.txt`` the reference's ``data/pascal-context/classes-59.txt`` order is used
(a note says so). A raw value beyond ``labels.txt`` is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    SplitUnavailable,
    load_mat,
    mat_array,
    read_list,
    read_rgb,
    require_file,
    voc_palette,
)
from fcnkit.data.registry import register_dataset

# The 59 task classes in the reference nets' output order (classes-59.txt; 0 is background).
CONTEXT_59 = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling",
    "clothes", "computer", "cup", "door", "fence", "floor", "flower", "food", "grass",
    "ground", "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign",
    "plate", "road", "rock", "shelves", "sidewalk", "sky", "snow", "bedcloth", "track",
    "tree", "truck", "wall", "water", "window", "wood",
]  # fmt: skip
PASCAL_CONTEXT_CLASSES = ["background", *CONTEXT_59]
# 59-class task name -> the name the full labelling (labels.txt) uses (pascalcontext_layers.py)
CONTEXT_RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
CONTEXT_VOC_YEAR = "VOC2010"  # PASCAL-Context labels the images of VOC 2010
_LABEL_WHAT = "a PASCAL-Context trainval .mat with variable LabelMap (values 0..N of labels.txt)"


def read_context_labels(path: Path) -> list[str]:
    """Class names of a PASCAL-Context ``N: name`` file, in line order, spaces removed (as
    the reference compares them)."""
    require_file(path, "a PASCAL-Context class list of 'N: name' lines")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        index, sep, name = text.partition(":")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise DatasetError(f"{path}, line {number}: {line!r} is not an 'N: name' line")
        names.append(name.replace(" ", "").strip())
    return names


def context_label_table(full: list[str], task: list[str], where: str = "labels.txt") -> np.ndarray:
    """Lookup table raw value -> task class (0 background, 1..len(task)): raw value ``k`` is
    line ``k`` of the full list; task names are translated by :data:`CONTEXT_RENAMES`."""
    table = np.zeros(len(full) + 1, dtype=np.int64)
    for k, name in enumerate(task, start=1):
        main = CONTEXT_RENAMES.get(name, name)
        if main not in full:
            raise DatasetError(f"{where}: no class {main!r} (task class {k}, {name!r})")
        table[full.index(main) + 1] = k  # the first match, as list.index in the reference
    return table


def find_voc2010(voc_root: Path) -> Path:
    """``voc_root/VOC2010``, or ``voc_root`` itself when it is that folder."""
    if (voc_root / CONTEXT_VOC_YEAR).is_dir():
        return voc_root / CONTEXT_VOC_YEAR
    if voc_root.name == CONTEXT_VOC_YEAR and (voc_root / "JPEGImages").is_dir():
        return voc_root
    raise DatasetError(
        f"{voc_root}: no {CONTEXT_VOC_YEAR}/ folder; voc_root= must be the folder holding "
        f"{CONTEXT_VOC_YEAR}/ (JPEGImages/, ImageSets/Main/), the reference's data/pascal"
    )


class PASCALContext(SegmentationDataset):
    name = "pascal-context"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        voc_root: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, split, **kwargs)
        voc = Path(voc_root).expanduser() if voc_root is not None else self.root.parent / "pascal"
        if not voc.is_dir():
            raise DatasetError(
                f"{voc}: not a folder; pass voc_root= (the folder holding "
                f"{CONTEXT_VOC_YEAR}/; default: pascal/ beside the PASCAL-Context root)"
            )
        self.voc_dir = find_voc2010(voc)
        full = read_context_labels(self.root / "labels.txt")
        task_file = self.root / "59_labels.txt"
        if task_file.is_file():
            task = read_context_labels(task_file)
            if len(task) != len(CONTEXT_59):
                raise DatasetError(
                    f"{task_file}: {len(task)} classes; the task has {len(CONTEXT_59)} "
                    "(background is not listed: it is every other class)"
                )
        else:
            task = list(CONTEXT_59)
            self.notes.append(
                f"{task_file}: absent; the 59 classes are taken in the reference's order "
                "(fcn.berkeleyvision.org data/pascal-context/classes-59.txt)"
            )
        self.table = context_label_table(full, task, str(self.root / "labels.txt"))
        self.classes = ["background", *task]
        self.palette = voc_palette(len(self.classes))  # 1..20 are VOC's classes and colours
        list_file = self.voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise SplitUnavailable(f"{list_file}: missing (the list of split {split!r})")
        self.ids = read_list(list_file)
        self.finish_index()

    def layout_hint(self) -> str:
        return (
            "labels.txt, 59_labels.txt, trainval/<id>.mat (LabelMap); images and lists in "
            "voc_root/VOC2010/{JPEGImages,ImageSets/Main}"
        )

    def files(self, index: int) -> dict[str, Path]:
        i = self.ids[index]
        return {
            "image": self.voc_dir / "JPEGImages" / f"{i}.jpg",
            "label": self.root / "trainval" / f"{i}.mat",
        }

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "a VOC2010 JPEG image")
        raw = mat_array(load_mat(f["label"], _LABEL_WHAT), "LabelMap", f["label"], _LABEL_WHAT)
        bad = (raw < 0) | (raw >= len(self.table))
        if bad.any():
            values = sorted(int(v) for v in np.unique(raw[bad]))[:10]
            raise DatasetError(
                f"{f['label']}: label value(s) {', '.join(map(str, values))} beyond the "
                f"{len(self.table) - 1} classes of labels.txt; expected {_LABEL_WHAT}"
            )
        label = torch.from_numpy(self.table[raw])
        return {"image": image, "label": label, "id": self.ids[index]}


@register_dataset(
    "pascal-context",
    description="PASCAL-Context 59 classes + background (the FCN reference's reader; VOC2010 "
    "images)",
    splits=("train", "val", "trainval"),
)
def build_pascal_context(root: str | Path, split: str = "train", **options: Any) -> PASCALContext:
    return PASCALContext(root, split, **options)
