"""NYUDv2 in the FCN reference layout (Gupta et al.'s 40-class labels, HHA, depth).

Under ``root``: ``data/images/img_<N>.png`` (RGB), ``data/hha/img_<N>.png`` (HHA as a 3-channel
PNG), ``data/depth/img_<N>.png`` (16-bit depth in millimetres), ``segmentation/img_<N>.mat``
(variable ``segmentation``: 0 void, 1..40 -> labels 0..39, void -> 255) and the split lists
``train.txt`` / ``val.txt`` / ``trainval.txt`` / ``test.txt``, one number ``N`` per line.

Split lists: fcnkit ships none and invents none; it reads the layout's own files. They are
Gupta et al.'s split (CVPR 2013 data, http://people.eecs.berkeley.edu/~sgupta/cvpr13/data.tgz),
as distributed with the FCN reference: ``data/nyud/{train,val,test}.txt`` in
fcn.berkeleyvision.org and the FCN-format archive http://dl.caffe.berkeleyvision.org/nyud.tar.gz.
The paper trains on ``trainval`` (795 images = train + val) and tests on ``test`` (654). When
``trainval.txt`` is absent, ``trainval`` is ``train.txt`` followed by ``val.txt`` (the FCN
repository ships only those two). A ``trainval``/``test`` list of another length than 795/654
is read as it is, with a note saying so (subsets are fine; the paper's figures need the full
lists).

``modality`` picks the image channels, concatenated in the order the name says:
``rgb`` (3), ``hha`` (3), ``rgbd`` (4: RGB then depth), ``rgb+hha`` (6: RGB then HHA).
Every PNG's channels are returned as stored. The preprocessing then does what the reference's
``nyud_layers.py`` does: colour RGB -> BGR minus its mean (``load_image``), HHA in the PNG's
own channel order minus (132.431, 94.076, 118.477), never reversed (``load_hha``); see
``caffe-nyud-hha`` and ``caffe-nyud-color-hha`` in :mod:`fcnkit.preprocessing`.

Depth in ``rgbd``: the sample image is ``uint8`` (the data contract), so depth is stored as a
logarithmic code ``v = round(255 * (log2(d_mm) - 8) / 6)``, clipped to 0..255: 256 mm -> 0,
16.4 m -> 255, about 1.6 % relative depth per step (finer than the sensor's noise); missing
depth (0) -> 0. The reference feeds ``ln(d) - 7.844``; that is exactly
``(v - DEPTH_CODE_MEAN) / DEPTH_CODE_STD`` (see :func:`depth_code_to_log_depth`), so a
preprocessing with mean ``DEPTH_CODE_MEAN`` and std ``DEPTH_CODE_STD`` on the fourth channel
reproduces the reference input up to the quantisation.
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
    distinct_palette,
    load_mat,
    mat_array,
    offset_table,
    read_list,
    read_png_array,
    read_rgb,
    remap,
)
from fcnkit.data.registry import register_dataset
from fcnkit.preprocessing import (  # the depth code's one definition
    DEPTH_CODE_MEAN,
    DEPTH_CODE_STD,
    DEPTH_LOG2_MIN,
    DEPTH_LOG2_SPAN,
    MODALITIES,
    REFERENCE_LOG_DEPTH_MEAN,
)

NYUD40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
]  # fmt: skip
NYUD40_PALETTE = distinct_palette(len(NYUD40_CLASSES))
LABEL_TABLE = offset_table(40, first=1, void=(0,))
PAPER_SPLIT_SIZES = {"trainval": 795, "test": 654}  # Gupta et al.'s split, used by the paper
__all__ = [
    "DEPTH_CODE_MEAN",
    "DEPTH_CODE_STD",
    "DEPTH_LOG2_MIN",
    "DEPTH_LOG2_SPAN",
    "LABEL_TABLE",
    "MODALITIES",
    "NYUD40_CLASSES",
    "NYUD40_PALETTE",
    "REFERENCE_LOG_DEPTH_MEAN",
    "PAPER_SPLIT_SIZES",
    "NYUDv2",
    "depth_code_to_log_depth",
    "depth_to_code",
    "read_depth",
]
_LABEL_WHAT = "NYUD segmentation .mat, variable 'segmentation' with 0 (void) or 1..40"


def depth_to_code(depth_mm: np.ndarray) -> np.ndarray:
    """16-bit depth (mm) -> the ``uint8`` logarithmic code stored as the 4th ``rgbd`` channel."""
    d = depth_mm.astype(np.float64)
    code = np.zeros(d.shape, dtype=np.float64)
    valid = d > 0
    code[valid] = 255.0 * (np.log2(d[valid]) - DEPTH_LOG2_MIN) / DEPTH_LOG2_SPAN
    return np.clip(np.round(code), 0, 255).astype(np.uint8)


def depth_code_to_log_depth(code: torch.Tensor) -> torch.Tensor:
    """The reference network input ``ln(d) - 7.844`` from the stored depth code."""
    return (code.to(torch.float32) - DEPTH_CODE_MEAN) / DEPTH_CODE_STD


def read_depth(path: Path) -> np.ndarray:
    what = "a 16-bit depth PNG in millimetres"
    arr, mode = read_png_array(path, what)
    if arr.ndim != 2 or mode not in ("I;16", "I;16B", "I", "L"):
        raise DatasetError(f"{path}: PNG mode {mode} with shape {arr.shape}; expected {what}")
    return arr


class NYUDv2(SegmentationDataset):
    name = "nyud"

    def __init__(
        self, root: str | Path, split: str = "train", modality: str = "rgb", **kwargs: Any
    ) -> None:
        super().__init__(root, split, **kwargs)
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
        self.modality = modality
        self.classes = list(NYUD40_CLASSES)
        self.palette = list(NYUD40_PALETTE)
        self.ids = self._read_split(split)
        expected = PAPER_SPLIT_SIZES.get(split)
        if expected is not None and len(self.ids) != expected:
            self.notes.append(
                f"NYUDv2 {split}: {len(self.ids)} images listed; the paper's split has "
                f"{expected} (Gupta et al.'s lists, see fcnkit.data.nyud)"
            )
        self.finish_index()

    def _read_split(self, split: str) -> list[str]:
        """The ids of ``root/<split>.txt``; ``trainval`` falls back to train + val."""
        list_file = self.root / f"{split}.txt"
        if list_file.is_file():
            return read_list(list_file)
        parts = [self.root / "train.txt", self.root / "val.txt"]
        if split == "trainval" and all(f.is_file() for f in parts):
            self.notes.append(f"{list_file}: absent; trainval = train.txt + val.txt")
            return [i for f in parts for i in read_list(f)]
        raise SplitUnavailable(
            f"{list_file}: missing (the list of split {split!r}; {self.layout_hint()})"
        )

    def layout_hint(self) -> str:
        return "data/{images,hha,depth}/img_N.png, segmentation/img_N.mat, <split>.txt"

    def files(self, index: int) -> dict[str, Path]:
        n = self.ids[index]
        data = self.root / "data"
        f = {}
        if self.modality in ("rgb", "rgbd", "rgb+hha"):
            f["rgb"] = data / "images" / f"img_{n}.png"
        if self.modality in ("hha", "rgb+hha"):
            f["hha"] = data / "hha" / f"img_{n}.png"
        if self.modality == "rgbd":
            f["depth"] = data / "depth" / f"img_{n}.png"
        f["label"] = self.root / "segmentation" / f"img_{n}.mat"
        return f

    def load(self, index: int) -> Sample:
        f = self.files(index)
        parts = []
        if "rgb" in f:
            parts.append(read_rgb(f["rgb"], "an NYUD RGB PNG"))
        if "hha" in f:
            parts.append(read_rgb(f["hha"], "an NYUD HHA 3-channel PNG"))
        if "depth" in f:
            parts.append(torch.from_numpy(depth_to_code(read_depth(f["depth"])))[None])
        sizes = {(p.shape[1], p.shape[2]) for p in parts}
        if len(sizes) > 1:
            listing = ", ".join(f"{k}={f[k]}" for k in f if k != "label")
            raise DatasetError(f"modalities differ in size {sorted(sizes)} ({listing})")
        raw = mat_array(load_mat(f["label"], _LABEL_WHAT), "segmentation", f["label"], _LABEL_WHAT)
        label = remap(raw, LABEL_TABLE, f["label"], _LABEL_WHAT)
        return {"image": torch.cat(parts, dim=0), "label": label, "id": self.ids[index]}


@register_dataset(
    "nyud",
    description="NYUDv2 40 classes (FCN layout); modality rgb | hha | rgbd | rgb+hha",
    splits=("train", "val", "trainval", "test"),
)
def build_nyud(root: str | Path, split: str = "train", **options: Any) -> NYUDv2:
    return NYUDv2(root, split, **options)
