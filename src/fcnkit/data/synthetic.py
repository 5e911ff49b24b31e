"""The built-in ``synthetic`` dataset: procedural shape scenes, no files needed.

Every sample is drawn from its own random stream, seeded by ``(seed, split, index)`` through
:class:`numpy.random.SeedSequence`, so a sample's bytes depend only on those three numbers:
not on ``num_samples``, on the order of access, on the worker or on the process. The three
splits use disjoint seed streams.

What makes it a segmentation problem rather than a colour threshold:

* **Shared appearance.** Every region (the background and every object) takes its colours
  and its texture (flat, blocky noise, stripes, checks, gradient) from one distribution that
  does not depend on the class, so a pixel's colour says nothing about its class. Only the
  **shape** of a region (and what surrounds it: a ring's hole shows the region behind it)
  decides the label. Each object contrasts with the regions it is drawn over, so its outline
  is visible.
* **Occlusion.** Objects are painted back to front; a later object hides (and relabels) the
  pixels of earlier ones.
* **Scale variation.** Object radii vary by a factor ~2.5 (option ``radius``), at any rotation.
* **Clutter.** Thin lines and small dots on the background are labelled background.
* Optional VOC-style ``ignore_boundary``: pixels within that many pixels of a label change get
  the ignore label (255), like the VOC boundary band. Off (0) by default.

Shapes are kept large (radius >= 12% of the short side by default) so that a small FCN learns
them in minutes on a CPU at 96-128 px.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fcnkit.data.base import IGNORE_INDEX, NumberedIds, Sample, SegmentationDataset
from fcnkit.data.registry import register_dataset

CLASSES: list[str] = ["background", "disc", "square", "triangle", "ring", "bar", "cross"]
PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
]
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_DEFAULT_NUM_SAMPLES = {"train": 2000, "val": 200, "test": 200}
_TEXTURES = ("flat", "noise", "stripes", "checks", "gradient")
_MIN_CONTRAST = 100.0  # minimum RGB distance between an object's mean colour and what it covers


class Shape(NamedTuple):
    """One object of a scene: class index, centre (pixels), radius (pixels), rotation."""

    cls: int
    cy: float
    cx: float
    r: float
    theta: float


class SyntheticShapes(SegmentationDataset):
    """Procedural scenes of discs, squares, triangles, rings, bars and crosses.

    A :class:`SegmentationDataset` with no files: ``root`` is None, ``files(i)`` is empty,
    ``load(i)`` generates sample ``i``, ``ids`` are ``synthetic-<split>-<i:06d>``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint seed streams).
        num_samples: dataset length (default 2000 for train, 200 for val/test).
        size: ``(H, W)`` or one int for square images.
        seed: base seed; sample ``i`` of a split is the same for any ``num_samples``.
        max_objects: objects per scene are drawn uniformly from ``1..max_objects``.
        radius: object radius range as fractions of ``min(H, W)``.
        clutter: draw background distractors (thin lines, small dots).
        ignore_boundary: width in pixels of an ignore band around label changes (0 = none).
        strict, validate: as for every :class:`SegmentationDataset` (``validate``
            defaults to False here: samples are valid by construction).
    """

    name = "synthetic"
    needs_root = False
    classes: list[str] = CLASSES
    palette: list[tuple[int, int, int]] = PALETTE
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        split: str = "train",
        *,
        num_samples: int | None = None,
        size: int | tuple[int, int] = (128, 128),
        seed: int = 0,
        max_objects: int = 4,
        radius: tuple[float, float] = (0.12, 0.3),
        clutter: bool = True,
        ignore_boundary: int = 0,
        **kwargs: Any,
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"synthetic has no split {split!r}; splits: {', '.join(SPLITS)}")
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 8 or w < 8:
            raise ValueError(f"size must be at least 8 x 8, got {h} x {w}")
        if max_objects < 1:
            raise ValueError("max_objects must be >= 1")
        if not 0 < radius[0] <= radius[1]:
            raise ValueError(f"radius must satisfy 0 < low <= high, got {radius}")
        if ignore_boundary < 0:
            raise ValueError("ignore_boundary must be >= 0")
        # Generated samples honour the data contract by construction: skip the per-sample
        # validation on __getitem__ (about 10 % of the cost); `data check` still validates.
        kwargs.setdefault("validate", False)
        super().__init__(None, split, **kwargs)
        self.num_samples = _DEFAULT_NUM_SAMPLES[split] if num_samples is None else num_samples
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
        self.ids = NumberedIds(self.num_samples, f"synthetic-{split}-{{:06d}}")
        self.size = (h, w)
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.radius = (float(radius[0]), float(radius[1]))
        self.clutter = bool(clutter)
        self.ignore_boundary = int(ignore_boundary)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._yy, self._xx = yy + 0.5, xx + 0.5  # pixel centres

    def layout_hint(self) -> str:
        return "no files: scenes are generated from (seed, split, index)"

    def files(self, index: int) -> dict[str, Path]:
        return {}  # nothing on disk

    def load(self, index: int) -> Sample:
        image, label = self.generate(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(label.astype(np.int64)),
            "id": self.ids[index],
        }

    def rng_for(self, index: int) -> tuple[np.random.Generator, ...]:
        """Independent ``(layout, paint, clutter)`` random streams of sample ``index``.

        Separate streams keep the layout (and so the label) of a sample the same whatever
        the painting options (``clutter``) are.
        """
        entropy = [self.seed & 0xFFFFFFFF, self.seed >> 32, _SPLIT_CODE[self.split], index]
        children = np.random.SeedSequence(entropy).spawn(3)
        return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)

    def scene(self, index: int) -> list[Shape]:
        """The objects of sample ``index``, back to front (before occlusion)."""
        layout = self.rng_for(index)[0]
        h, w = self.size
        short = min(h, w)
        shapes = []
        for _ in range(int(layout.integers(1, self.max_objects + 1))):
            cls = int(layout.integers(1, len(CLASSES)))
            r = float(layout.uniform(*self.radius) * short)
            cy, cx = float(layout.uniform(0.1, 0.9) * h), float(layout.uniform(0.1, 0.9) * w)
            theta = float(layout.uniform(0.0, 2.0 * math.pi))
            shapes.append(Shape(cls, cy, cx, r, theta))
        return shapes

    def shape_mask(self, shape: Shape) -> np.ndarray:
        """Full (unoccluded) boolean ``H x W`` mask of ``shape``."""
        return _shape_mask(
            shape.cls, self._yy - shape.cy, self._xx - shape.cx, shape.r, shape.theta
        )

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as ``(image uint8 H x W x 3, label uint8 H x W)``."""
        _, paint, clutter = self.rng_for(index)
        h, w = self.size
        background = _Texture.draw(paint)
        canvas = background.render(self._yy, self._xx)
        label = np.zeros((h, w), np.uint8)
        if self.clutter:
            _draw_clutter(clutter, canvas, self._yy, self._xx, min(h, w))

        # Mean colour of every painted region (0 = background) and which region owns a pixel:
        # an object must contrast with each region it is drawn over, so its outline shows.
        region_means = [background.mean]
        owner = np.zeros((h, w), np.int32)
        for shape in self.scene(index):
            r = shape.r
            y0, y1 = max(0, int(shape.cy - 1.5 * r) - 1), min(h, int(shape.cy + 1.5 * r) + 2)
            x0, x1 = max(0, int(shape.cx - 1.5 * r) - 1), min(w, int(shape.cx + 1.5 * r) + 2)
            yy, xx = self._yy[y0:y1, x0:x1], self._xx[y0:y1, x0:x1]
            mask = _shape_mask(shape.cls, yy - shape.cy, xx - shape.cx, r, shape.theta)
            texture = _Texture.draw(paint)  # drawn even when empty: streams stay aligned
            if not mask.any():
                continue
            under = [region_means[i] for i in np.unique(owner[y0:y1, x0:x1][mask])]
            for _attempt in range(20):
                if all(np.linalg.norm(texture.mean - m) >= _MIN_CONTRAST for m in under):
                    break
                texture = _Texture.draw(paint)
            canvas[y0:y1, x0:x1][mask] = texture.render(yy[mask], xx[mask])
            label[y0:y1, x0:x1][mask] = shape.cls
            owner[y0:y1, x0:x1][mask] = len(region_means)
            region_means.append(texture.mean)

        canvas += 4.0 * paint.standard_normal(canvas.shape, dtype=np.float32)  # sensor noise
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        if self.ignore_boundary:
            label = _ignore_band(label, self.ignore_boundary)
        return image, label


def _shape_mask(cls: int, dy: np.ndarray, dx: np.ndarray, r: float, theta: float) -> np.ndarray:
    """Boolean mask of shape ``cls`` of radius ``r`` rotated by ``theta``, at offsets dy, dx."""
    c, s = math.cos(theta), math.sin(theta)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    name = CLASSES[cls]
    if name == "disc":
        return u * u + v * v <= r * r
    if name == "square":
        half = 0.85 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":
        # Equilateral, circumradius 1.2 r: inside when within the inradius of all three edges.
        inradius = 0.6 * r
        inside = np.ones(u.shape, bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= inradius
        return inside
    if name == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if name == "bar":
        return (np.abs(u) <= 1.3 * r) & (np.abs(v) <= 0.32 * r)
    if name == "cross":
        arm = 0.3 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    raise ValueError(f"no shape for class {cls}")


class _Texture(NamedTuple):
    """A region's appearance: two colours mixed by a pattern; independent of any class."""

    c1: np.ndarray
    c2: np.ndarray
    kind: str
    angle: float
    period: float  # stripes/checks period, or the noise cell size, in pixels
    noise_seed: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Texture:
        c1 = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        c2 = np.clip(c1 + rng.normal(0.0, 30.0, 3), 0.0, 255.0).astype(np.float32)
        kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
        period = float(rng.integers(2, 7)) if kind == "noise" else float(rng.uniform(4.0, 14.0))
        return cls(c1, c2, kind, float(rng.uniform(0.0, math.pi)), period, int(rng.integers(2**31)))

    @property
    def mean(self) -> np.ndarray:
        """Approximate mean colour (exact for flat; patterns mix the colours about evenly)."""
        return self.c1 if self.kind == "flat" else (self.c1 + self.c2) / 2

    def render(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Colours ``[..., 3]`` (float32) at pixel centres ``yy, xx`` (any equal shapes)."""
        if self.kind == "flat":
            return np.broadcast_to(self.c1, (*yy.shape, 3)).copy()
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        if self.kind == "noise":
            cell = int(self.period)
            iy, ix = (yy // cell).astype(np.intp), (xx // cell).astype(np.intp)
            grid = np.random.default_rng(self.noise_seed).random(
                (int(iy.max(initial=0)) + 1, int(ix.max(initial=0)) + 1), dtype=np.float32
            )
            t = grid[iy, ix]
        elif self.kind == "stripes":
            t = (((xx * ca + yy * sa) // (self.period / 2)) % 2).astype(np.float32)
        elif self.kind == "checks":
            u, v = (xx * ca + yy * sa) // self.period, (yy * ca - xx * sa) // self.period
            t = ((u + v) % 2).astype(np.float32)
        else:  # gradient across the region
            proj = xx * ca + yy * sa
            lo, hi = float(proj.min(initial=0.0)), float(proj.max(initial=1.0))
            t = (proj - lo) / max(hi - lo, 1.0)
        return self.c1 + t[..., None] * (self.c2 - self.c1)


def _draw_clutter(
    rng: np.random.Generator, canvas: np.ndarray, yy: np.ndarray, xx: np.ndarray, short: int
) -> None:
    """Paint thin lines and small dots (background distractors) onto ``canvas`` in place."""
    h, w = yy.shape
    for _ in range(int(rng.integers(2, 7))):
        colour = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.5:  # thin line segment
            a = rng.uniform(0.0, math.pi)
            length = rng.uniform(0.2, 0.6) * short
            width = rng.uniform(0.5, 1.2)
            reach = length / 2 + width + 1
        else:  # small dot
            a = length = width = 0.0
            rad = rng.uniform(1.0, 0.04 * short + 1.0)
            reach = rad + 1
        y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        if length:
            along = dx * math.cos(a) + dy * math.sin(a)
            across = -dx * math.sin(a) + dy * math.cos(a)
            mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width)
        else:
            mask = dy * dy + dx * dx <= rad * rad
        canvas[y0:y1, x0:x1][mask] = colour


def _ignore_band(label: np.ndarray, width: int) -> np.ndarray:
    """Set pixels within ``width`` (Chebyshev distance) of a label change to ignore."""
    from scipy.ndimage import maximum_filter, minimum_filter

    size = 2 * width + 1
    band = maximum_filter(label, size=size, mode="nearest") != minimum_filter(
        label, size=size, mode="nearest"
    )
    out = label.copy()
    out[band] = IGNORE_INDEX
    return out


@register_dataset(
    "synthetic",
    description="Built-in procedural shapes (6 classes + background); no files needed",
    splits=SPLITS,
    needs_root=False,
)
def build_synthetic(root: Any = None, split: str = "train", **options: Any) -> SyntheticShapes:
    """Registry builder; ``root`` is ignored (the dataset needs no files)."""
    return SyntheticShapes(split, **options)
