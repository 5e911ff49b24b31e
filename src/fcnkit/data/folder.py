"""Users' own data: ``images/`` + ``masks/`` matched by file stem.

Layout under ``root`` (folder names are options ``image_dir`` / ``mask_dir``)::

    images/<stem>.{png,jpg,jpeg,tif,tiff,bmp}   greyscale is replicated to RGB
    masks/<stem>.{png,tif,tiff,bmp}             index masks (mode P / L / I;16) or colour masks
    classes.txt                                  optional: one class name per line
    palette.txt                                  optional: "R G B name" per class, in class order
    splits/<split>.txt                           optional: the stems of each split

Masks
- **Index masks** hold class indices 0..N-1, 255 = ignore; palette PNGs are read as indices.
- **Colour masks** (RGB) need a palette (``palette.txt`` or ``palette_file=``): the k-th line's
  colour is class k; a line named ``ignore`` maps its colour to 255. Unknown colours are errors.
- ``value_map`` maps stored values to classes explicitly, e.g. ISBI 2012 ``{0: 0, 255: 1}``
  (membrane, cell: both real classes). With a value map, every stored value must be in it.
- Binary 0/255 masks without a value map are refused with an explanation: 255 is the ignore
  value, so all foreground would be silently ignored. Pass ``value_map={0: 0, 255: 1}`` (CLI:
  ``--option value_map=0:0,255:1``), or ``allow_binary_255=True`` if 255 really means ignore.

Classes come from ``classes=`` (list or comma-separated), ``classes.txt``, the palette file's
names, or the value map (``class_0``..), in that order.

Splits: ``splits/<split>.txt`` when present; ``test`` always needs ``splits/test.txt``.
``all`` without a list is every image. ``train``/``val`` without their own list never overlap
another split:

- neither ``train.txt`` nor ``val.txt`` exists: a deterministic partition of every image stem
  not listed in another ``splits/*.txt`` (e.g. ``test.txt``). Stems are ordered by CRC-32 of
  the stem and the first ``round(n * val_fraction)`` (at least one when n > 1) form ``val``.
  It depends only on the stems, not on file-system order; adding files moves few others.
- one of them is listed (e.g. only ``train.txt``): the other is every image stem listed in no
  ``splits/*.txt`` (``val`` = all - train - test ...); empty is an error.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnkit.data.base import (
    IGNORE_INDEX,
    IMAGE_EXTENSIONS,
    DatasetError,
    Sample,
    SegmentationDataset,
    SplitUnavailable,
    read_list,
    read_png_array,
    read_rgb,
    remap,
    voc_palette,
)
from fcnkit.data.registry import register_dataset

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_SNIFF = 8  # masks read at construction to detect 0/255 binary masks


def parse_value_map(value_map: dict | str | None) -> dict[int, int] | None:
    """``{0: 0, 255: 1}``, ``"0:0,255:1"`` or JSON ``'{"0": 0, "255": 1}'`` -> ``{int: int}``."""
    if value_map is None or isinstance(value_map, dict):
        items = (value_map or {}).items()
    else:
        text = str(value_map).strip()
        if text.startswith("{"):
            items = json.loads(text).items()
        else:
            items = [part.split(":", 1) for part in text.split(",") if part.strip()]
    try:
        table = {int(k): int(v) for k, v in items}
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"value_map must map integers to integers, e.g. 0:0,255:1 ({err})"
        ) from err
    return table if value_map is not None else None


def read_palette_file(path: Path) -> tuple[list[tuple[int, int, int]], list[str], set]:
    """``R G B name`` lines -> class colours, class names and the colours marked ``ignore``."""
    colours, names, ignore = [], [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split(maxsplit=3)
        try:
            rgb = tuple(int(v) for v in fields[:3])
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DatasetError(f"{path}:{n}: expected 'R G B name' with R, G, B in 0..255")
        name = fields[3].strip() if len(fields) > 3 else f"class_{len(names)}"
        if name.lower() == "ignore":
            ignore.add(rgb)
        else:
            colours.append(rgb)
            names.append(name)
    return colours, names, ignore


def _index_by_stem(folder: Path, suffixes: Sequence[str], problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            if p.stem in found:
                problems.append(f"{p}: same stem as {found[p.stem]}; expected one file per stem")
            else:
                found[p.stem] = p
    return found


def deterministic_split(stems: Sequence[str], split: str, val_fraction: float) -> list[str]:
    """The ``train``/``val`` partition described in the module docstring, in sorted order."""
    ordered = sorted(stems, key=lambda s: (zlib.crc32(s.encode("utf-8")), s))
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) > 1:
        n_val = max(1, n_val)
    chosen = ordered[:n_val] if split == "val" else ordered[n_val:]
    return sorted(chosen)


class FolderDataset(SegmentationDataset):
    name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        image_dir: str = "images",
        mask_dir: str = "masks",
        classes: Sequence[str] | str | None = None,
        value_map: dict | str | None = None,
        palette_file: str | Path | None = None,
        mask_format: str = "auto",
        val_fraction: float = 0.1,
        allow_binary_255: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, split, **kwargs)
        if mask_format not in ("auto", "index", "color"):
            raise ValueError(f"mask_format must be auto, index or color; got {mask_format!r}")
        self.mask_format = mask_format
        self.value_map = parse_value_map(value_map)
        self.image_dir = self.root / image_dir
        self.mask_dir = self.root / mask_dir
        for d in (self.image_dir, self.mask_dir):
            if not d.is_dir():
                raise DatasetError(f"{d}: missing ({self.layout_hint()})")

        pal_path = Path(palette_file) if palette_file else self.root / "palette.txt"
        if palette_file and not pal_path.is_file():
            raise DatasetError(f"{pal_path}: missing (palette_file=)")
        self.colour_table: dict[tuple[int, int, int], int] | None = None
        pal_colours: list[tuple[int, int, int]] = []
        pal_names: list[str] = []
        if pal_path.is_file():
            pal_colours, pal_names, ignore = read_palette_file(pal_path)
            self.colour_table = {c: k for k, c in enumerate(pal_colours)}
            self.colour_table.update({c: IGNORE_INDEX for c in ignore})
        self.classes = self._resolve_classes(classes, pal_names)
        n = len(self.classes)
        self.palette = pal_colours[:n] if len(pal_colours) >= n else voc_palette(n)

        images = _index_by_stem(self.image_dir, IMAGE_EXTENSIONS, self.index_problems)
        masks = _index_by_stem(self.mask_dir, MASK_SUFFIXES, self.index_problems)
        self._images, self._masks = images, masks
        split_file = self.root / "splits" / f"{split}.txt"
        if split_file.is_file():
            self.ids = read_list(split_file)  # listed stems without files: finish_index
        else:
            if split == "test":
                raise SplitUnavailable(f"{split_file}: missing (split 'test' needs a list)")
            for stem in sorted(set(masks) - set(images)):
                self.index_problems.append(
                    f"{masks[stem]}: mask without an image in {self.image_dir}"
                )
            self.ids = self._unlisted_split(split, sorted(images), val_fraction)
        if not allow_binary_255 and self.value_map is None:
            self._sniff_binary()
        self.finish_index()

    def _unlisted_split(self, split: str, stems: list[str], val_fraction: float) -> list[str]:
        """Stems of a split without its own list (rules in the module docstring)."""
        if split == "all":
            return stems
        lists = {p.stem: p for p in sorted((self.root / "splits").glob("*.txt")) if p.is_file()}
        listed = {s for name, p in lists.items() if name != "all" for s in read_list(p)}
        pool = [s for s in stems if s not in listed]
        other = "val" if split == "train" else "train"
        if other not in lists:
            return deterministic_split(pool, split, val_fraction)
        if not pool:
            raise SplitUnavailable(
                f"{self.root / 'splits' / f'{split}.txt'}: missing, and every image is listed "
                f"in {', '.join(f'{n}.txt' for n in lists)}: no stems left for {split!r}"
            )
        self.notes.append(
            f"split {split!r}: no splits/{split}.txt; using the {len(pool)} image(s) not listed "
            f"in {', '.join(f'splits/{n}.txt' for n in lists)}"
        )
        return pool

    def _resolve_classes(
        self, classes: Sequence[str] | str | None, pal_names: list[str]
    ) -> list[str]:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        if classes:
            return list(classes)
        classes_txt = self.root / "classes.txt"
        if classes_txt.is_file():
            names = [
                ln.strip()
                for ln in classes_txt.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.strip().startswith("#")
            ]
            if names:
                return names
        if pal_names:
            return pal_names
        if self.value_map:
            n = max((v for v in self.value_map.values() if v != IGNORE_INDEX), default=-1) + 1
            return [f"class_{k}" for k in range(n)]
        raise DatasetError(
            f"{self.root}: no class names; give classes=..., a classes.txt (one name per line), "
            "a palette.txt ('R G B name' lines) or a value_map"
        )

    def layout_hint(self) -> str:
        return "images/<stem>.* + masks/<stem>.png (optional classes.txt, palette.txt, splits/)"

    def files(self, index: int) -> dict[str, Path]:
        stem = self.ids[index]
        image = self._images.get(stem, self.image_dir / f"{stem}.*")  # ".*": none found
        mask = self._masks.get(stem, self.mask_dir / f"{stem}.png")
        return {"image": image, "label": mask}

    def read_mask(self, path: Path) -> torch.Tensor:
        what = "an index mask (P/L) or colour mask (RGB) for the classes " + ", ".join(self.classes)
        arr, mode = read_png_array(path, what)
        is_colour = arr.ndim == 3
        if self.mask_format == "index" and is_colour:
            raise DatasetError(f"{path}: {mode} colour mask, but mask_format='index'")
        if self.mask_format == "color" and not is_colour:
            raise DatasetError(f"{path}: single-channel {mode} mask, but mask_format='color'")
        if is_colour:
            return self._decode_colour(path, arr[..., :3])
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if self.value_map is not None:
            return remap(arr, self.value_map, path, f"values of value_map {self.value_map}")
        return torch.from_numpy(arr.astype(np.int64))

    def _decode_colour(self, path: Path, rgb: np.ndarray) -> torch.Tensor:
        if self.colour_table is None:
            raise DatasetError(
                f"{path}: colour (RGB) mask but no palette; add {self.root / 'palette.txt'} "
                "('R G B name' per class) or pass palette_file="
            )
        code = (
            (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        )
        table = {(r << 16) | (g << 8) | b: k for (r, g, b), k in self.colour_table.items()}
        unknown = [int(c) for c in np.unique(code) if int(c) not in table]
        if unknown:
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:8])
            raise DatasetError(f"{path}: colour(s) {shown} not in the palette file")
        return remap(code, table, path, "colours of the palette file")

    def load(self, index: int) -> Sample:
        f = self.files(index)
        image = read_rgb(f["image"], "an image")
        return {"image": image, "label": self.read_mask(f["label"]), "id": self.ids[index]}

    def _sniff_binary(self) -> None:
        if not self.ids:
            return
        step = max(1, len(self.ids) // _SNIFF)
        seen: set[int] = set()
        example = None
        for stem in self.ids[::step][:_SNIFF]:
            path = self._masks.get(stem)
            if path is None:
                continue
            try:
                arr, _ = read_png_array(path, "a mask")
            except DatasetError:
                continue  # reported per sample
            if arr.ndim != 2:
                return
            seen.update(int(v) for v in np.unique(arr))
            example = example or path
        if seen == {0, IGNORE_INDEX}:
            self.index_problems.append(
                f"{example}: masks hold only the values 0 and 255. 255 is the ignore value, so "
                "every 255 pixel would be silently ignored (IoU 0 or NaN). If 255 is a class "
                "(e.g. ISBI 2012 cell interior), pass value_map={0: 0, 255: 1} "
                "(CLI: --option value_map=0:0,255:1); if 255 really marks pixels to ignore, "
                "pass allow_binary_255=True"
            )


@register_dataset(
    "folder",
    description="your own data: images/ + masks/ by stem; index or colour masks, value_map",
    splits=("all", "train", "val", "test"),
)
def build_folder(root: str | Path, split: str = "all", **options: Any) -> FolderDataset:
    return FolderDataset(root, split, **options)
