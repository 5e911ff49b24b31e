"""SIFT Flow (Liu, Yuen & Torralba) in its original ``SiftFlowDataset.zip`` layout.

Under ``root``: ``Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg``,
``SemanticLabels/<same folder>/<id>.mat`` and ``GeoLabels/<same folder>/<id>.mat``, each with a
variable ``S``. Semantic ``S``: 0 void, 1..33 classes -> labels 0..32, void -> 255. Geometric
``S``: -1 void (0 is treated as void too, as the reference's uint8 arithmetic does), 1..3 (sky,
horizontal, vertical) -> 0..2. The FCN splits ``trainval`` (2,486) and ``test`` (200) are read
from ``root/<split>.txt`` when present, else from the copies shipped with fcnkit.

For model selection without touching ``test``, fcnkit carves a fixed validation split out of
``trainval``: ``val`` is every 10th name of the sorted trainval list (249 images) and
``train`` the other 2,237 (derived from the trainval list in use; see :func:`split_list`).

Labels are ``{"sem": ..., "geo": ...}`` when GeoLabels exist, else the semantic map alone (a
plain tensor; a warning says so once). ``geo=True`` requires GeoLabels, ``geo=False`` never
reads them. Evaluation excludes cow, desert and moon, the classes absent from ``test``.
"""

from __future__ import annotations

import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from fcnkit.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    SplitUnavailable,
    distinct_palette,
    load_mat,
    mat_array,
    offset_table,
    read_list,
    read_rgb,
    remap,
)
from fcnkit.data.registry import register_dataset

SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
SEMANTIC_CLASSES = [
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow",
    "crosswalk", "desert", "door", "fence", "field", "grass", "moon", "mountain", "person",
    "plant", "pole", "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky",
    "staircase", "streetlight", "sun", "tree", "window",
]  # fmt: skip
GEOMETRIC_CLASSES = ["sky", "horizontal", "vertical"]
EVAL_EXCLUDE = ["cow", "desert", "moon"]
SEMANTIC_PALETTE = distinct_palette(len(SEMANTIC_CLASSES))
GEOMETRIC_PALETTE = [(70, 130, 180), (128, 64, 128), (160, 120, 60)]

SEMANTIC_TABLE = offset_table(33, first=1, void=(0,))
GEOMETRIC_TABLE = offset_table(3, first=1, void=(-1, 0))
_SEM_WHAT = "SIFT Flow SemanticLabels .mat, variable S with 0 (void) or 1..33"
_GEO_WHAT = "SIFT Flow GeoLabels .mat, variable S with -1 (void) or 1..3"

_warned_no_geo: set[str] = set()


def parse_classes_txt(path: Path) -> tuple[list[str], list[str]]:
    """Semantic and geometric class names of the FCN ``classes.txt`` (``NN name`` lines)."""
    sections: dict[str, list[str]] = {"semantic": [], "geometric": []}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        head = line.strip().lower()
        if head.startswith("semantic"):
            current = "semantic"
        elif head.startswith("geometric"):
            current = "geometric"
        elif current and (m := re.match(r"^(\d+)\s+(\S.*)$", line.strip())):
            sections[current].append(m.group(2).strip())
    sem, geo = sections["semantic"], sections["geometric"]
    if len(sem) != 33 or len(geo) != 3:
        raise DatasetError(
            f"{path}: found {len(sem)} semantic and {len(geo)} geometric class names; "
            "expected 33 and 3 ('NN name' lines under 'Semantic:' and 'Geometric:')"
        )
    return sem, geo


VAL_EVERY = 10  # the validation carve-out: every 10th name of the sorted trainval list


def split_list(root: Path, split: str) -> list[str]:
    """The FCN split list: ``root/<split>.txt`` if present, else fcnkit's shipped copy.

    ``train`` / ``val`` are carved out of ``trainval`` (whichever list is in use): ``val`` is
    every :data:`VAL_EVERY`-th name of the sorted list, ``train`` the rest in list order.
    """
    if split in ("train", "val"):
        trainval = split_list(root, "trainval")
        val = sorted(trainval)[::VAL_EVERY]
        held_out = set(val)
        train = [name for name in trainval if name not in held_out]
        if not train:
            raise SplitUnavailable(
                f"the trainval list of {root} has {len(trainval)} name(s): too few to carve "
                "out a validation split (use split='trainval')"
            )
        return val if split == "val" else train
    local = root / f"{split}.txt"
    if local.is_file():
        return read_list(local)
    shipped = resources.files("fcnkit.data").joinpath("splits", "siftflow", f"{split}.txt")
    if not shipped.is_file():
        raise SplitUnavailable(f"no list for split {split!r} in {root} or in fcnkit")
    return [ln.split()[0] for ln in shipped.read_text().splitlines() if ln.strip()]


class SIFTFlow(SegmentationDataset):
    name = "siftflow"

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        geo: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, split, **kwargs)
        if not (self.root / "Images" / SUBDIR).is_dir():
            raise DatasetError(f"{self.root / 'Images' / SUBDIR}: missing ({self.layout_hint()})")
        if (self.root / "classes.txt").is_file():
            sem, geo_names = parse_classes_txt(self.root / "classes.txt")
        else:
            sem, geo_names = list(SEMANTIC_CLASSES), list(GEOMETRIC_CLASSES)
        has_geo = (self.root / "GeoLabels" / SUBDIR).is_dir()
        if geo and not has_geo:
            raise DatasetError(
                f"{self.root / 'GeoLabels' / SUBDIR}: missing (geo=True asks for it)"
            )
        self.use_geo = has_geo if geo is None else bool(geo)
        if geo is None and not has_geo:
            note = (
                f"SIFT Flow at {self.root} has no GeoLabels/{SUBDIR}: labels are the semantic "
                "map only (a plain tensor); the geometric head cannot be trained or scored"
            )
            self.notes.append(note)
            if str(self.root) not in _warned_no_geo:  # warn once per root and process
                _warned_no_geo.add(str(self.root))
                warnings.warn(note, stacklevel=4)
        self.classes = sem
        self.palette = list(SEMANTIC_PALETTE)
        self.eval_exclude = list(EVAL_EXCLUDE)
        if self.use_geo:
            self.targets = {"sem": sem, "geo": geo_names}
            self.target_palettes = {"sem": self.palette, "geo": list(GEOMETRIC_PALETTE)}
        self.ids = split_list(self.root, split)
        self.finish_index()

    def layout_hint(self) -> str:
        return f"Images/{SUBDIR}/*.jpg and SemanticLabels/{SUBDIR}/*.mat (GeoLabels optional)"

    def files(self, index: int) -> dict[str, Path]:
        i = self.ids[index]
        f = {
            "image": self.root / "Images" / SUBDIR / f"{i}.jpg",
            "sem": self.root / "SemanticLabels" / SUBDIR / f"{i}.mat",
        }
        if self.use_geo:
            f["geo"] = self.root / "GeoLabels" / SUBDIR / f"{i}.mat"
        return f

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "a SIFT Flow JPEG image")
        raw = mat_array(load_mat(f["sem"], _SEM_WHAT), "S", f["sem"], _SEM_WHAT)
        sem = remap(raw, SEMANTIC_TABLE, f["sem"], _SEM_WHAT)
        if not self.use_geo:
            return {"image": image, "label": sem, "id": self.ids[index]}
        raw = mat_array(load_mat(f["geo"], _GEO_WHAT), "S", f["geo"], _GEO_WHAT)
        geo = remap(raw.astype("int64"), GEOMETRIC_TABLE, f["geo"], _GEO_WHAT)
        return {"image": image, "label": {"sem": sem, "geo": geo}, "id": self.ids[index]}


@register_dataset(
    "siftflow",
    description="SIFT Flow: 33 semantic (+3 geometric) classes, FCN trainval/test splits",
    splits=("trainval", "test", "train", "val"),
)
def build_siftflow(root: str | Path, split: str = "trainval", **options: Any) -> SIFTFlow:
    return SIFTFlow(root, split, **options)
