"""Common base for the segmentation datasets, plus readers for the file formats they share.

A dataset builds an index of samples (``ids``) at construction and reads one sample per
``__getitem__``: ``{"image": uint8 C x H x W (RGB, extra modalities appended), "label": int64
H x W (``ignore_index`` = 255) or dict of such, "id": str}``. Loading never drops or alters a
sample silently: a missing file, an undecodable file, mismatched sizes or a label value outside
the classes raise :class:`DatasetError` naming the file(s) and what was expected.

Problems that concern the whole index (files missing for listed ids, masks without images,
0/255 binary masks) are collected in ``index_problems`` while the index is built. With
``strict=True`` (the default) construction raises on them; ``fcnkit data check`` builds with
``strict=False`` and reports them together with every per-sample problem.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IGNORE_INDEX = 255
# image files fcnkit reads (PIL formats), for datasets and for `fcnkit predict` on a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
Sample = dict[str, Any]


class DatasetError(ValueError):
    """A sample or a dataset layout is not what the reader expects (message names the files)."""


class SplitUnavailable(DatasetError):
    """The split's list of samples cannot be found under the dataset root."""


def require_root(root: str | Path | None, owner: str, hint: str) -> Path:
    """The one check of a dataset root: given, and a folder; else :class:`DatasetError` naming
    ``owner`` (the dataset) and ``hint`` (the layout expected under the root)."""
    if root is None:
        raise DatasetError(f"{owner} needs its root folder (root=, data.root in a config): {hint}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root is not a folder ({hint})")
    return path


# ------------------------------------------------------------------------------------------
# palettes


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (bit-interleaved class index), first ``n`` entries."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette


def distinct_palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours (golden-ratio hues, alternating lightness)."""
    colours = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light = 0.45 if i % 2 == 0 else 0.62
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def full_palette(palette: Sequence[Sequence[int]] | None, n: int = 256) -> list[tuple[int, ...]]:
    """``n`` colours: ``palette``'s, then the VOC colour map's for the classes past it."""
    own = [tuple(c) for c in (palette or [])][:n]
    return own + voc_palette(n)[len(own) :]


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> Any:
    """A palette-mode ("P") PIL image of an index map (values < 256)."""
    from PIL import Image

    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("palette PNGs hold class indices 0..255")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    colours = full_palette(palette, 256)
    image.putpalette([v for c in colours[:256] for v in c])
    return image


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend the label colours over an ``H x W x 3`` ``uint8`` image; classes past
    ``palette`` (and the ignore label 255) take the VOC colour map's colours."""
    colours = np.array(full_palette(palette, 256), np.float32)
    blended = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colours[label]
    return blended.round().clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# file readers (all raise DatasetError naming the file)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (expected {what})")
    return path


def read_rgb(path: Path, what: str = "an RGB image") -> torch.Tensor:
    """Read an image as a ``uint8`` 3 x H x W RGB tensor (greyscale is replicated)."""
    require_file(path, what)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                raise DatasetError(f"{path}: {im.mode} image with high bit depth, expected {what}")
            rgb = im.convert("RGB")
    except DatasetError:
        raise
    except Exception as err:  # PIL raises several types for truncated or foreign files
        raise DatasetError(f"{path}: cannot decode ({err}); expected {what}") from err
    # numpy does the HWC -> CHW copy: torch's threaded copy is slow when cores are contended;
    # always one copy (a 1 x 1 transpose is already contiguous, over PIL's read-only buffer)
    return torch.from_numpy(np.array(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1), order="C"))


def read_png_array(path: Path, what: str) -> tuple[np.ndarray, str]:
    """Read a PNG's stored values (palette indices for mode P) and its PIL mode."""
    require_file(path, what)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except Exception as err:
        raise DatasetError(f"{path}: cannot decode ({err}); expected {what}") from err
    return arr, mode


def read_index_png(path: Path, what: str = "a single-channel index PNG") -> np.ndarray:
    """Read a label PNG as its stored indices (mode P or L; never converted through colours)."""
    arr, mode = read_png_array(path, what)
    if mode not in ("P", "L", "I;16", "I;16B", "I") or arr.ndim != 2:
        raise DatasetError(
            f"{path}: PNG mode {mode} with shape {arr.shape}; expected {what} "
            "(palette 'P' or greyscale 'L' holding class indices)"
        )
    return arr


def load_mat(path: Path, what: str) -> dict[str, Any]:
    """``scipy.io.loadmat`` (structs as attribute objects, arrays kept 2-D); v7.3 via h5py."""
    import scipy.io

    require_file(path, what)
    try:
        return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        return _load_mat_v73(path, what)
    except Exception as err:
        raise DatasetError(f"{path}: cannot read MATLAB file ({err}); expected {what}") from err


def _load_mat_v73(path: Path, what: str) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            # HDF5 stores MATLAB arrays column-major: transpose back to rows x cols.
            return {k: np.array(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}
    except Exception as err:
        raise DatasetError(
            f"{path}: cannot read MATLAB v7.3 file ({err}); expected {what}"
        ) from err


def mat_array(mat: dict[str, Any], key: str, path: Path, what: str) -> np.ndarray:
    """Variable ``key`` of a loaded ``.mat`` as a 2-D integer array."""
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DatasetError(f"{path}: no variable {key!r} (found: {found}); expected {what}")
    arr = np.asarray(mat[key])
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: variable {key!r} is {arr.dtype} {arr.shape}; expected {what}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DatasetError(
                f"{path}: variable {key!r} holds non-integer values; expected {what}"
            )
        arr = arr.astype(np.int64)
    return arr


def remap(raw: np.ndarray, table: dict[int, int], path: Path, what: str) -> torch.Tensor:
    """Map raw label values through ``table``; any value not in it raises (never guessed)."""
    values = np.unique(raw)
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise DatasetError(f"{path}: unexpected label value(s) {shown}; expected {what}")
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.int64)
    for v in values:
        out[raw == v] = table[int(v)]
    return torch.from_numpy(out)


def as_label(raw: np.ndarray) -> torch.Tensor:
    """Stored label values as an int64 tensor, unchanged (values are validated later)."""
    return torch.from_numpy(np.asarray(raw).astype(np.int64))


def offset_table(n_classes: int, first: int = 1, void: Sequence[int] = (0,)) -> dict[int, int]:
    """``first..first+n-1 -> 0..n-1`` and every ``void`` value -> ignore."""
    table = {first + k: k for k in range(n_classes)}
    table.update({v: IGNORE_INDEX for v in void})
    return table


def read_list(path: Path) -> list[str]:
    """A split file: one id per line (first whitespace-separated field), blanks skipped."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def num_classes_of(dataset: Any, target: str | None = None) -> int:
    """Classes of ``target`` (a key of ``dataset.targets``) or of the primary label."""
    targets = getattr(dataset, "targets", None)
    if target is None or not targets:
        return len(dataset.classes)
    return len(targets[target])


def validate_sample(sample: Sample, dataset: Any, where: str) -> None:
    """Raise DatasetError unless ``sample`` honours the data contract of ``dataset``.

    Image: ``uint8`` C x H x W with C >= 3. Label (or each label of a dict): ``int64`` H x W of
    the image's size, values in ``0..N-1`` (N classes of that target) or ``ignore_index``.
    """
    image, label = sample.get("image"), sample.get("label")
    ignore = getattr(dataset, "ignore_index", IGNORE_INDEX)
    if not (
        isinstance(image, torch.Tensor)
        and image.dtype == torch.uint8
        and image.ndim == 3
        and image.shape[0] >= 3
    ):
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else image
        raise DatasetError(f"{where}: image is {got}; expected a uint8 C x H x W tensor, C >= 3")
    labels = label if isinstance(label, dict) else {None: label}
    for key, lab in labels.items():
        name = f"label {key!r}" if key is not None else "label"
        if not isinstance(lab, torch.Tensor) or lab.dtype != torch.int64 or lab.ndim != 2:
            raise DatasetError(f"{where}: {name} is not an int64 H x W tensor")
        if tuple(lab.shape) != tuple(image.shape[1:]):
            raise DatasetError(
                f"{where}: {name} is {lab.shape[0]}x{lab.shape[1]} (HxW) but the image is "
                f"{image.shape[1]}x{image.shape[2]}; expected the same size"
            )
        n = num_classes_of(dataset, key)
        arr = lab.detach().cpu().numpy()  # numpy: no thread-pool overhead per small op
        bad = (arr >= n) | (arr < 0)
        bad &= arr != ignore
        if bad.any():
            values = sorted(int(v) for v in np.unique(arr[bad]))
            shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
            raise DatasetError(
                f"{where}: {name} holds value(s) {shown}; expected 0..{n - 1} "
                f"(the {n} classes) or {ignore} (ignore)"
            )


# ------------------------------------------------------------------------------------------
# the base class


class NumberedIds(Sequence[str]):
    """``ids`` of ``n`` generated samples, ``template.format(i)``, without storing them."""

    def __init__(self, n: int, template: str = "{}") -> None:
        self.n, self.template = int(n), template

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return self.template.format(index % self.n)

    def __iter__(self) -> Iterator[str]:
        return (self.template.format(i) for i in range(self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


class SegmentationDataset(Dataset):
    """Base of fcnkit's datasets. Subclasses set the attributes and implement ``load``/``files``.

    Attributes: ``classes``, ``palette``, ``ignore_index`` (255), ``eval_exclude`` (class names
    left out of the means), ``targets`` (head name -> class names, multi-target datasets
    only), ``ids`` (sample ids in order), ``index_problems``,
    ``notes`` (facts worth telling the user, printed by ``fcnkit data``).
    """

    name: str = "dataset"
    needs_root: bool = True  # False: generated data; ``root`` is None
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = IGNORE_INDEX
    eval_exclude: list[str]
    targets: dict[str, list[str]] | None = None

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        strict: bool = True,
        validate: bool = True,
    ) -> None:
        if root is None and not self.needs_root:
            self.root: Path | None = None
        else:
            self.root = require_root(root, type(self).__name__, self.layout_hint())
        self.split = split
        self.strict = strict
        self.validate = validate
        self.ids: list[str] = []
        self.index_problems: list[str] = []
        self.notes: list[str] = []  # facts a user should know (printed by `fcnkit data`)
        self.eval_exclude = []

    # -- hooks for subclasses ------------------------------------------------------------
    def load(self, index: int) -> Sample:
        """Read sample ``index`` (raises :class:`DatasetError`)."""
        raise NotImplementedError

    def files(self, index: int) -> dict[str, Path]:
        """The files sample ``index`` is read from, by role (``image``, ``label``, ...)."""
        raise NotImplementedError

    def layout_hint(self) -> str:
        """One line describing the expected layout under ``root`` (used in errors)."""
        return "see the dataset's documentation"

    # -- shared behaviour ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.load_checked(index)

    def load_checked(self, index: int) -> Sample:
        """``load`` + ``check_sample``; any failure becomes a DatasetError naming the files."""
        try:
            sample = self.load(index)
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f"{self.describe_sample(index)}: {err}") from err
        if self.validate:
            self.check_sample(sample, index)
        return sample

    def describe_sample(self, index: int) -> str:
        try:
            files = self.files(index)
        except Exception:
            files = {}
        where = ", ".join(f"{k}={v}" for k, v in files.items())
        return f"sample {self.ids[index]!r} ({where})" if where else f"sample {self.ids[index]!r}"

    def check_sample(self, sample: Sample, index: int) -> None:
        """Raise DatasetError unless the sample honours the data contract."""
        validate_sample(sample, self, self.describe_sample(index))

    def finish_index(self) -> None:
        """Record files missing for listed samples; raise on index problems when strict."""
        for i in range(len(self.ids)):
            for role, path in self.files(i).items():
                if not path.is_file():
                    self.index_problems.append(
                        f"{path}: missing ({role} of sample {self.ids[i]!r})"
                    )
        if self.index_problems and self.strict:
            shown = self.index_problems[:20]
            more = len(self.index_problems) - len(shown)
            raise DatasetError(
                f"{type(self).__name__} at {self.root} (split {self.split!r}) has "
                f"{len(self.index_problems)} problem(s):\n  "
                + "\n  ".join(shown)
                + (f"\n  ... and {more} more" if more > 0 else "")
                + "\nRun `fcnkit data check` to list them all."
            )

    def __repr__(self) -> str:
        root = str(self.root) if self.root is not None else None
        return (
            f"{type(self).__name__}(root={root!r}, split={self.split!r}, "
            f"samples={len(self)}, classes={len(self.classes)})"
        )


class DatasetAdapter(SegmentationDataset):
    """A plain ``Dataset`` of fcnkit samples seen through the :class:`SegmentationDataset` API.

    For ``fcnkit data check``/``stats`` on registered datasets that do not subclass it:
    ``load(i)`` is ``dataset[i]``, ``files(i)`` is empty, metadata passes through.
    """

    needs_root = False

    def __init__(self, dataset: Any) -> None:
        super().__init__(None, str(getattr(dataset, "split", "")))
        self.dataset = dataset
        self.name = str(getattr(dataset, "name", type(dataset).__name__))
        self.classes = list(dataset.classes)
        self.palette = list(
            getattr(dataset, "palette", None) or distinct_palette(len(self.classes))
        )
        self.ignore_index = getattr(dataset, "ignore_index", IGNORE_INDEX)
        self.eval_exclude = list(getattr(dataset, "eval_exclude", []) or [])
        self.targets = getattr(dataset, "targets", None)
        self.ids = NumberedIds(len(dataset))
        self.index_problems = list(getattr(dataset, "index_problems", []) or [])
        self.notes = list(getattr(dataset, "notes", []) or [])

    def load(self, index: int) -> Sample:
        return self.dataset[index]

    def files(self, index: int) -> dict[str, Path]:
        return {}

    def __getattr__(self, name: str) -> Any:
        # other metadata (target_palettes, ...) passes through
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def as_segmentation_dataset(dataset: Any) -> SegmentationDataset:
    """``dataset`` if it is a :class:`SegmentationDataset`, else a :class:`DatasetAdapter`."""
    return dataset if isinstance(dataset, SegmentationDataset) else DatasetAdapter(dataset)
