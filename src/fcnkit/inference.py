"""Segmenting images with a trained FCN: ``Segmenter(weights).predict(image)``.

An FCN takes inputs of any size and returns scores of the same size (paper Sec. 3), so
inference needs no resizing. Around the plain forward pass this module adds:

- sliding-window inference with overlapping tiles, for images whose activations do not fit
  in memory (fc6 of VGG16 FCNs on multi-megapixel images);
- shift-and-stitch (paper Sec. 3.2): dense output from a coarse net with output stride ``f``
  (the VGG16 FCNs' ``coarse_scores``) by running the ``f^2`` shifted inputs, interleaving
  the outputs and placing each on its receptive field's centre (the coordinate map);
- test-time augmentation: horizontal flip and several input scales (:func:`dense_scores`).

Scores are logits (``C x H x W``); predictions are their argmax. With tiles, label maps are
made band by band (:func:`sliding_window_bands`), so a prediction never holds a float map of
the whole image. Image files are read upright (EXIF orientation), converted to RGB by a rule
per PIL mode and refused over a pixel limit (:func:`load_image`).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnkit.coord_map import CoordMap, layer_map, place_scores
from fcnkit.data.base import IMAGE_EXTENSIONS, colorize, overlay  # noqa: F401 (re-exports)
from fcnkit.metrics import scores_to_labels
from fcnkit.models.outputs import Outputs, heads, map_heads, same_form, select_head, zip_heads
from fcnkit.preprocessing import Preprocessing, get_preprocessing

ImageLike = Union[str, os.PathLike, "Image.Image", np.ndarray, torch.Tensor]  # noqa: F821, UP007


# --------------------------------------------------------------------------- outputs
# The output contract (a tensor, or a dict of heads with the primary first) and its helpers
# live in fcnkit.models.outputs; `select_head` is re-exported here for one release.


def _as_outputs(out: Any) -> Outputs:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        return dict(out)
    raise TypeError(f"model returned {type(out).__name__}; expected a tensor or a dict of them")


# --------------------------------------------------------------------------- sliding window
@dataclass(frozen=True)
class SlidingWindow:
    """Overlapping tiles of at most ``tile`` pixels; overlapping scores are averaged.

    ``overlap`` is the fraction of a tile shared with its neighbour. Images smaller than a
    tile along a side are not padded on that side. ``batch_size`` tiles run at once.
    """

    tile: int | tuple[int, int] = 512
    overlap: float = 1 / 3
    batch_size: int = 1

    def __post_init__(self) -> None:
        th, tw = self.tile_hw
        if th < 1 or tw < 1:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")

    @property
    def tile_hw(self) -> tuple[int, int]:
        return (self.tile, self.tile) if isinstance(self.tile, int) else tuple(self.tile)

    @classmethod
    def for_budget(cls, max_pixels: int, overlap: float = 1 / 3) -> SlidingWindow:
        """Square tiles of at most ``max_pixels`` pixels (a memory budget per forward pass)."""
        return cls(max(1, math.isqrt(int(max_pixels))), overlap)

    def starts(self, size: int, tile: int) -> list[int]:
        if size <= tile:
            return [0]
        step = max(1, int(tile * (1 - self.overlap)))
        return sorted({*range(0, size - tile, step), size - tile})

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(top, left, bottom, right)`` of each tile, covering every pixel."""
        th, tw = self.tile_hw
        return [
            (y, x, min(y + th, height), min(x + tw, width))
            for y in self.starts(height, th)
            for x in self.starts(width, tw)
        ]


def sliding_window_forward(
    forward: Callable[[torch.Tensor], Outputs], x: torch.Tensor, window: SlidingWindow
) -> Outputs:
    """Run ``forward`` (input-sized scores) tile by tile over ``x`` and average the overlaps."""
    n, _, h, w = x.shape
    boxes = window.windows(h, w)
    if len(boxes) == 1:
        return forward(x)
    total: dict[str, torch.Tensor] = {}
    count = torch.zeros(1, 1, h, w, device=x.device)
    for i in range(0, len(boxes), window.batch_size):
        chunk = boxes[i : i + window.batch_size]
        tiles = torch.cat([x[:, :, t:b, l:r] for t, l, b, r in chunk])  # all tiles same size
        out = forward(tiles)
        for k, s in heads(out).items():
            if k not in total:
                total[k] = s.new_zeros(n, s.shape[1], h, w, dtype=torch.float32)
            for j, (t, l, b, r) in enumerate(chunk):
                total[k][:, :, t:b, l:r] += s[j * n : (j + 1) * n].float()
        for t, l, b, r in chunk:
            count[:, :, t:b, l:r] += 1
    return same_form(out, {k: s / count for k, s in total.items()})


# --------------------------------------------------------------------------- shift-and-stitch
Maps = tuple[CoordMap, CoordMap]  # one coordinate map per spatial axis (height, width)


def _coarse_path(
    net: Callable[[torch.Tensor], Any],
    stride: int | None = None,
    offset: float | Fraction | tuple[float | Fraction, float | Fraction] | None = None,
) -> tuple[Callable[[torch.Tensor], Any], Maps]:
    """The function giving ``net``'s coarse scores and their coordinate maps (cell ``i`` of
    an axis centred on input pixel ``scale * i + shift``), or a ``ValueError`` saying why
    shift-and-stitch cannot serve ``net``.

    From, in order: the model's own ``coarse_scores(x)`` and ``coarse_map(axis)`` (the VGG16
    FCNs: the scores before the final upsampler); the module's layers
    (:func:`fcnkit.coord_map.layer_map`: convolutions, pools, ``nn.Sequential``); ``stride``
    and ``offset`` given by the caller. A given ``stride`` (or ``offset``) must agree with
    what the net says.
    """
    name = getattr(net, "model_name", type(net).__name__)
    forward: Callable[[torch.Tensor], Any] = net
    maps: Maps | None = None
    if callable(getattr(net, "coarse_scores", None)) and callable(getattr(net, "coarse_map", None)):
        forward, maps = net.coarse_scores, (net.coarse_map(0), net.coarse_map(1))
    elif isinstance(net, nn.Module):
        try:
            maps = (layer_map(net, 0), layer_map(net, 1))
        except (TypeError, ValueError):
            maps = None
    if maps is None:
        if stride is None or offset is None:
            raise ValueError(
                f"shift-and-stitch cannot place the outputs of {name}: it has no "
                "coarse_scores()/coarse_map() and its coordinate map cannot be derived from "
                "its layers; give stride= and offset= (the input pixel on which output cell "
                "0 is centred, per axis)"
            )
        shifts = offset if isinstance(offset, tuple) else (offset, offset)
        maps = (CoordMap(stride, Fraction(shifts[0])), CoordMap(stride, Fraction(shifts[1])))
    else:
        if stride is not None and any(m.scale != stride for m in maps):
            raise ValueError(
                f"shift-and-stitch stride {stride} does not match {name}'s output stride "
                f"{_stride_text(maps)}: give the net's own stride"
            )
        if offset is not None:
            shifts = offset if isinstance(offset, tuple) else (offset, offset)
            if tuple(Fraction(o) for o in shifts) != tuple(m.shift for m in maps):
                raise ValueError(
                    f"offset {offset} does not match {name}'s coordinate map (output cell 0 "
                    f"on input pixel {', '.join(str(m.shift) for m in maps)})"
                )
    if any(m.scale == 1 for m in maps):
        raise ValueError(
            f"{name}'s output is already input-sized (stride 1): there is nothing to stitch; "
            "shift-and-stitch serves a coarse net (e.g. the VGG16 FCNs through their "
            "coarse_scores: stride 32 for FCN-32s)"
        )
    if len({m.scale for m in maps}) != 1 or maps[0].scale.denominator != 1:
        raise ValueError(
            f"{name}: shift-and-stitch needs one integer stride, got {_stride_text(maps)}"
        )
    return forward, maps


def _stride_text(maps: Maps) -> str:
    scales = {str(m.scale) for m in maps}
    return scales.pop() if len(scales) == 1 else " x ".join(str(m.scale) for m in maps)


def stitched_scores(
    net: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    stride: int | None = None,
    *,
    offset: float | Fraction | tuple[float | Fraction, float | Fraction] | None = None,
    factor: int | None = None,
) -> tuple[Outputs, Maps]:
    """Shift-and-stitch (paper Sec. 3.2) on the coarse grid: ``net``'s coarse scores made
    ``factor`` times denser per axis, and their coordinate maps.

    ``net``'s coarse output cell ``i`` is centred on input pixel ``F i + c`` (``F``: its
    stride; ``c``: the offset its coordinate map gives, see :func:`_coarse_path`). As the
    paper, the input is shifted right and down, zero-filled at the top and left so that no
    pixel is lost: pass ``k`` (``0 <= k < factor`` per axis) moves it ``s k`` pixels (``s =
    F / factor``), so its cell ``i`` is centred on pixel ``F i + c - s k``; stored at
    ``factor * i + factor - 1 - k``, the passes interleave into one map with stride ``s``
    whose cell ``j`` is centred on pixel ``s j + c - (F - s)``. ``factor`` defaults to ``F``
    (dense, stride 1; ``F^2`` passes of ``net``); a divisor of ``F`` stitches partially
    (the passes shift by whole cells of the finer grid). The map ends where the first pass
    ends. This is what :func:`fcnkit.models.rarefy.rarefy` computes in one pass.
    """
    coarse, maps = _coarse_path(net, stride, offset)
    big = int(maps[0].scale)
    f = big if factor is None else int(factor)
    if f < 1 or big % f:
        raise ValueError(f"factor must divide the net's stride {big}, got {factor}")
    step = big // f
    n, _, h, w = x.shape
    stitched: dict[str, torch.Tensor] = {}
    ends = [[0] * f, [0] * f]  # per axis and pass: where that pass's cells end
    out: Outputs | None = None
    for ky in range(f):
        for kx in range(f):
            shifted = F.pad(x, (step * kx, 0, step * ky, 0))
            out = _as_outputs(coarse(shifted))
            for k, s in heads(out).items():
                if s.shape[-2:] == shifted.shape[-2:]:
                    raise ValueError(
                        "the net's output is already input-sized: shift-and-stitch needs its "
                        "coarse scores (a stride-F map); see coarse_scores() of the VGG16 FCNs"
                    )
                if k not in stitched:  # room for the first pass; later passes end later
                    size = (f * s.shape[-2] + f - 1, f * s.shape[-1] + f - 1)
                    stitched[k] = s.new_zeros(n, s.shape[1], *size)
                r, q = f - 1 - ky, f - 1 - kx
                rows = len(range(r, stitched[k].shape[-2], f))
                cols = len(range(q, stitched[k].shape[-1], f))
                part = s[:, :, :rows, :cols]
                stitched[k][:, :, r::f, q::f][:, :, : part.shape[-2], : part.shape[-1]] = part
                ends[0][ky] = f * s.shape[-2] + r
                ends[1][kx] = f * s.shape[-1] + q
    height, width = min(ends[0]), min(ends[1])
    if height < 1 or width < 1:
        raise ValueError(f"input {h} x {w} is too small for the net: a pass has no output")
    dense = {k: s[:, :, :height, :width] for k, s in stitched.items()}
    return same_form(out, dense), (
        CoordMap(step, maps[0].shift - (big - step)),
        CoordMap(step, maps[1].shift - (big - step)),
    )


def shift_and_stitch(
    net: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    stride: int | None = None,
    *,
    offset: float | Fraction | tuple[float | Fraction, float | Fraction] | None = None,
    factor: int | None = None,
) -> Outputs:
    """Input-sized scores from a coarse net by shift-and-stitch (paper Sec. 3.2).

    :func:`stitched_scores` (the interleaved passes), each cell placed on the pixel at the
    centre of its receptive field by the coordinate map
    (:func:`fcnkit.coord_map.place_scores`): a cell on a pixel is copied, a half-pixel offset
    (VGG16's) averages the two neighbours, a partial ``factor`` interpolates bilinearly, and
    the border pixels the stitched map cannot reach (those past the last cell, where a
    shifted pass has no window) repeat the nearest cell (edge replication).

    ``net``: a model with ``coarse_scores(x)`` / ``coarse_map(axis)`` (the VGG16 FCNs: the
    scores before their final upsampler, e.g. FCN-32s ``score_fr``), a module whose
    coordinate map fcnkit derives (``nn.Sequential`` of convolutions and pools), or any
    function of a tensor with ``stride`` and ``offset`` (the input pixel on which output
    cell 0 is centred). Refused with a ``ValueError``: a net whose output is input-sized
    already, a ``stride`` that is not the net's, a ``factor`` that does not divide it.
    Costs ``factor^2`` passes (``stride^2`` by default: 1024 for FCN-32s).
    """
    dense, maps = stitched_scores(net, x, stride, offset=offset, factor=factor)
    size = tuple(x.shape[-2:])
    return map_heads(dense, lambda s: place_scores(s, maps, size))


# --------------------------------------------------------------------------- dense scores
def _input_sized(
    model: Callable[[torch.Tensor], Any], stride: int | None, amp: bool
) -> Callable[[torch.Tensor], Outputs]:
    """``model`` as a function giving float32 scores of its input's size (shift-and-stitched
    with ``stride``, else bilinearly upsampled; autocast on CUDA with ``amp``)."""

    def forward(t: torch.Tensor) -> Outputs:
        with torch.autocast("cuda", enabled=amp):
            out = shift_and_stitch(model, t, stride) if stride else _as_outputs(model(t))
        size = t.shape[-2:]

        def resize(s: torch.Tensor) -> torch.Tensor:
            s = s.float()
            if s.shape[-2:] != size:
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            return s

        return map_heads(out, resize)

    return forward


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """``scales`` as a tuple of finite numbers > 0 (at least one), else ``ValueError``."""
    values = tuple(float(s) for s in scales)
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"scales: expected one or more numbers > 0, got {list(scales)}")
    return values


def rescaled_scores(
    run: Callable[[torch.Tensor], Outputs], x: torch.Tensor, scale: float
) -> Outputs:
    """``run`` on ``x`` resized by ``scale`` (bilinear, antialiased when shrinking, as the
    training scale augmentation resizes), its scores resized back to ``x``'s size (bilinear,
    ``align_corners=False``). Scale 1 runs ``x`` itself: the very scores of no rescaling."""
    if scale == 1.0:
        return run(x)
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    back = (h, w)
    return map_heads(
        run(t), lambda s: F.interpolate(s, size=back, mode="bilinear", align_corners=False)
    )


@torch.no_grad()
def dense_scores(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    sliding_window: SlidingWindow | None = None,
    flip: bool = False,
    shift_and_stitch_stride: int | None = None,
    amp: bool = False,
    scales: Sequence[float] = (1.0,),
) -> Outputs:
    """Input-sized float32 scores of ``model`` on normalised input ``x`` (``N x C x H x W``).

    With ``shift_and_stitch_stride`` the model's coarse scores are shift-and-stitched
    (:func:`shift_and_stitch`); otherwise a model whose output is smaller than its input is
    upsampled bilinearly. ``sliding_window`` runs
    it tile by tile; ``flip`` averages with the horizontally flipped input's scores.
    ``scales`` (multi-scale test-time augmentation): the mean of the scores at each input
    scale (:func:`rescaled_scores`; each scale flipped too with ``flip``). Scores (logits),
    not probabilities, are averaged, as ``flip`` always has: ``scales=(1,)`` with ``flip``
    is the flip TTA unchanged, and the result stays logits for every consumer.
    """
    scales = check_scales(scales)
    forward = _input_sized(model, shift_and_stitch_stride, amp and x.device.type == "cuda")

    def tiled(t: torch.Tensor) -> Outputs:
        if sliding_window is None:
            return forward(t)
        return sliding_window_forward(forward, t, sliding_window)

    def flipped(t: torch.Tensor) -> Outputs:
        out = tiled(t)
        if flip:
            mirrored = map_heads(tiled(t.flip(-1)), lambda s: s.flip(-1))
            out = zip_heads([out, mirrored], lambda a, b: (a + b) / 2)
        return out

    if scales == (1.0,):
        return flipped(x)
    outs = [rescaled_scores(flipped, x, s) for s in scales]
    return zip_heads(outs, lambda *each: torch.stack(each).mean(0))


# --------------------------------------------------------------------------- label bands
def sliding_window_bands(
    forward: Callable[[torch.Tensor], Outputs],
    image: torch.Tensor,
    window: SlidingWindow,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    flip: bool = False,
    head: str | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The scores of ``head`` that :func:`dense_scores` gives with ``window``, one finished
    band of rows at a time: ``(top, bottom, N x K x (bottom - top) x W float32 scores)``.

    Float scores are held only for the rows that tiles still to run overlap (one tile's
    height, or the rows a batch of tiles spans), never for the whole image, so the memory of
    a prediction is bounded by the tile size times the image width; finished rows are
    yielded in pieces of an eighth of that buffer. ``prepare`` maps each
    crop of ``image`` to network input (e.g. normalisation): ``image`` can stay ``uint8``.
    Overlapping tiles are averaged, and ``flip`` averaged with the mirrored input, with the
    same sums in the same order as :func:`sliding_window_forward`: the values are equal.
    """
    passes = [_band_pass(forward, image, window, prepare, head, mirrored=False)]
    if flip:
        passes.append(_band_pass(forward, image, window, prepare, head, mirrored=True))
    for bands in zip(*passes, strict=True):  # the same tiles: the same bands
        top, bottom, scores = bands[0]
        if flip:
            scores = (scores + bands[1][2]) / 2
        yield top, bottom, scores


@torch.no_grad()
def _band_pass(
    forward: Callable[[torch.Tensor], Outputs],
    image: torch.Tensor,
    window: SlidingWindow,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None,
    head: str | None,
    mirrored: bool,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """One pass of :func:`sliding_window_bands` (``mirrored``: over the flipped image, the
    bands flipped back)."""
    n, _, h, w = image.shape
    boxes = window.windows(h, w)
    step = window.batch_size
    capacity = _band_rows(boxes, step, h)
    piece = max(1, capacity // 8)  # rows per yielded band
    top = 0  # first row not yet finished; the buffers hold rows top, top + 1, ...
    total = count = None
    for i in range(0, len(boxes), step):
        chunk = boxes[i : i + step]
        crops = []
        for t, l, b, r in chunk:
            crop = image[:, :, t:b, w - r : w - l].flip(-1) if mirrored else image[:, :, t:b, l:r]
            crops.append(prepare(crop) if prepare is not None else crop)
        scores = select_head(forward(torch.cat(crops)), head)
        if total is None:  # allocated once, reused: no copy grows or shifts the band
            total = scores.new_zeros(n, scores.shape[1], capacity, w, dtype=torch.float32)
            count = torch.zeros(1, 1, capacity, w, device=image.device)
        for j, (t, l, b, r) in enumerate(chunk):
            total[:, :, t - top : b - top, l:r] += scores[j * n : (j + 1) * n].float()
            count[:, :, t - top : b - top, l:r] += 1
        # rows above the next tile's top are finished: no later tile covers them
        done = boxes[i + step][0] if i + step < len(boxes) else h
        if done > top:
            k = done - top
            for a in range(0, k, piece):  # finished rows in pieces: no band-sized quotient
                b = min(a + piece, k)
                band = total[:, :, a:b] / count[:, :, a:b]
                yield top + a, top + b, band.flip(-1) if mirrored else band
            _shift_up(total, k)
            _shift_up(count, k)
            top = done


def _band_rows(boxes: list[tuple[int, int, int, int]], step: int, height: int) -> int:
    """The most rows :func:`_band_pass`'s buffers hold at once: from the first unfinished
    row to the lowest row of a batch of tiles (about one tile's height)."""
    rows, top = 0, 0
    for i in range(0, len(boxes), step):
        rows = max(rows, max(b for _, _, b, _ in boxes[i : i + step]) - top)
        done = boxes[i + step][0] if i + step < len(boxes) else height
        top = max(top, done)
    return rows


def _shift_up(buffer: torch.Tensor, k: int) -> None:
    """Move rows ``k ..`` of ``buffer`` (dim 2) to the top, in place, and zero the rest: row
    blocks of ``k`` that do not overlap, copied top down (no temporary of the band's size)."""
    rows = buffer.shape[2]
    for start in range(0, rows - k, k):
        end = min(start + k, rows - k)
        buffer[:, :, start:end].copy_(buffer[:, :, start + k : end + k])
    buffer[:, :, max(rows - k, 0) :].zero_()


# --------------------------------------------------------------------------- images
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000
"""Image files with more pixels than this are refused before decoding (``max_image_pixels``)."""

_PIL_LIMIT = threading.Lock()  # PIL's own limit is a module global: one reader changes it
_ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageReadError(ValueError):
    """An image fcnkit cannot use: unreadable, over the pixel limit, or of a refused mode
    (the message names the file)."""


def load_image(
    source: ImageLike, *, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """An image as a ``uint8``-valued ``C x H x W`` tensor (RGB, extra channels kept).

    Accepts a file path, a PIL image, a numpy ``H x W x C`` (or ``H x W``) array, or a tensor
    ``C x H x W`` (``uint8``, or float in 0..255). For multi-modal models (RGB-D, RGB + HHA)
    pass the modalities stacked along the channels as an array or tensor.

    Files and PIL images are turned upright by their EXIF orientation (the image as viewers
    show it; outputs are in that orientation) and converted to RGB by their mode:

    - ``RGB``; ``L`` and ``1`` (replicated); ``P`` (the palette's colours); ``CMYK`` (PIL's
      conversion, no colour profile): as PIL converts them.
    - ``RGBA``, ``LA``, ``PA``: the alpha channel is ignored (colours as stored, not
      composited over a background).
    - ``I;16`` (16-bit PNG/TIFF) and ``I`` (32-bit integer) holding 0..65535: scaled to
      0..255 (value / 257, rounded). ``I`` with values outside 0..65535 is refused.
    - ``F`` (32-bit float) is refused: it has no standard range; pass an array in 0..255.

    A file with more than ``max_image_pixels`` pixels (``None``: no limit) is refused from its
    header, before decoding. Every problem with a file raises :class:`ImageReadError` (a
    ``ValueError``) naming the file.
    """
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        source = _read_image_file(Path(source), max_image_pixels)
    if isinstance(source, Image.Image):
        source = _pil_rgb(source, f"PIL image (mode {source.mode})")
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3:
            raise ValueError(f"expected an H x W x C image array, got shape {array.shape}")
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
                warnings.warn("float image in 0..1: fcnkit expects 0..255", stacklevel=2)
            array = array.astype(np.float32)
        if not (array.flags.c_contiguous and array.flags.writeable):
            array = np.array(array)
        return torch.from_numpy(array).permute(2, 0, 1)
    if isinstance(source, torch.Tensor):
        if source.dim() == 2:
            source = source.unsqueeze(0).expand(3, -1, -1)
        if source.dim() != 3:
            raise ValueError(f"expected a C x H x W image tensor, got shape {tuple(source.shape)}")
        if source.is_floating_point() and source.numel() and float(source.max()) <= 1.0:
            warnings.warn("float image in 0..1: fcnkit expects 0..255", stacklevel=2)
        return source
    raise TypeError(f"cannot read an image from {type(source).__name__}")


def _read_image_file(path: Path, max_image_pixels: int | None) -> np.ndarray:
    """The file's pixels (``H x W x 3`` ``uint8``, upright); see :func:`load_image`."""
    from PIL import Image, UnidentifiedImageError

    size = "?"
    try:
        with _PIL_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours applies
            try:
                with Image.open(path) as im:
                    width, height = im.size
                    size = f"{width} x {height}"
                    if max_image_pixels is not None and width * height > max_image_pixels:
                        raise ImageReadError(
                            f"{path}: {size} = {width * height:,} pixels is over the limit of "
                            f"{max_image_pixels:,} (raise it with max_image_pixels= or "
                            "--max-image-pixels)"
                        )
                    im.load()
                    return _pil_rgb(im, str(path))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image PIL can read") from None
    except MemoryError:
        raise ImageReadError(f"{path}: out of memory decoding {size} pixels") from None
    except Exception as err:  # PIL raises many types for truncated or malformed files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"{path}: cannot decode this image ({reason})") from err


def _pil_rgb(im: Any, where: str) -> np.ndarray:
    """``im`` upright by its EXIF orientation, as ``H x W x 3`` ``uint8`` RGB (the rules of
    :func:`load_image`); ``where`` names it in errors."""
    from PIL import ImageOps

    if im.getexif().get(_ORIENTATION, 1) in range(2, 9):
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "F":
        raise ImageReadError(
            f"{where}: 32-bit float image (mode F) has no standard range; save it as 8-bit "
            "RGB or pass an array in 0..255"
        )
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(
                f"{where}: 32-bit integer image with values {values.min()}..{values.max()}; "
                "fcnkit reads mode I as 16-bit (0..65535): save it as 8-bit RGB"
            )
        wide = values.astype(np.uint32)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(value / 257)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


# --------------------------------------------------------------------------- Segmenter
class Segmenter:
    """Segment images of any size with a trained FCN.

    Args:
        weights_or_model: a checkpoint file or run directory, a known weight entry name or a
            weights file with ``model_name`` (loaded with
            :func:`fcnkit.weights.load_any`), or an ``nn.Module``.
        device: where to run.
        batch_size: images of the same size run together, this many at a time.
        tta: average with the horizontally flipped image's scores.
        scales: multi-scale test-time augmentation, e.g. ``(0.75, 1.0, 1.25)``: the mean of
            the scores at each input scale, resized back to the image (each scale flipped
            too with ``tta``; :func:`dense_scores`). ``(1.0,)``: off. With tiles, several
            scales hold the full float map (no band-by-band labelling).
        sliding_window: a :class:`SlidingWindow` or a tile size; ``None`` = whole images.
        max_pixels: memory budget: images larger than this many pixels are processed in
            square tiles of at most ``max_pixels`` pixels (ignored if ``sliding_window``).
            With tiles, :meth:`predict` keeps float scores for one band of tiles only (see
            :func:`sliding_window_bands`); :meth:`scores` returns the full map.
        max_image_pixels: image files with more pixels are refused before decoding
            (``ValueError`` naming the file); ``None``: no limit. See :func:`load_image`.
        shift_and_stitch: make the model's coarse scores dense by shift-and-stitch (paper
            Sec. 3.2, :func:`shift_and_stitch`): the stride ``f`` of those scores (32 for
            FCN-32s, whose ``coarse_scores`` are ``score_fr``; ``f^2`` passes per image).
            A model without coarse scores (output already input-sized) or another stride
            is refused here with a ``ValueError``.
        preprocessing, classes, palette: override what the checkpoint / model records
            (``classes``/``palette`` are the primary head's; see :meth:`classes_for`).
        amp: autocast on CUDA (never on CPU).
        model_name, num_classes, model_options: build this model for an entry name or a
            weights file that is not a checkpoint (see :func:`fcnkit.weights.load_any`); the
            names of ``create_model`` and of the checkpoint's metadata (``model=`` is the older
            spelling of ``model_name=``, kept for one release).
        meta: with an ``nn.Module``, its checkpoint metadata (``classes``, ``palette``,
            ``targets``, ``palettes``), as returned by ``load_any``/``load_model``.
        backend, precision, channels_last, compile, calibration, threads, pad100: how the model
            runs (:func:`fcnkit.backends.build_runner`; speed and accuracy of each in
            ``docs/speed.md``). The default (eager fp32) is the model's own maths. An
            exported ``.onnx`` file as ``weights_or_model`` runs with ONNX Runtime; its
            metadata gives the preprocessing, class names and palette. The fast backends do
            not serve ``shift_and_stitch``, which needs the model's coarse scores.
            ``pad100=False``: a VGG16 FCN in the no-pad-100 geometry (faster; scores near
            the borders change). ``copy_model``: with an ``nn.Module``, a mode that changes
            the module (channels-last; bf16, fp16 and channels-last fold BatchNorm) works on
            a copy; ``False`` lets it change the module
            in place, holding one copy of the weights instead of two (a model loaded here
            from weights is never copied).

    Images have the model's ``input_channels`` (3 for RGB models; 4 for RGB-D, 6 for
    RGB + HHA, given as stacked arrays or tensors); anything else raises ``ValueError``.
    """

    def __init__(
        self,
        weights_or_model: str | os.PathLike | nn.Module,
        device: str | torch.device = "cpu",
        *,
        batch_size: int = 4,
        tta: bool = False,
        scales: Sequence[float] = (1.0,),
        sliding_window: SlidingWindow | int | None = None,
        max_pixels: int | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        shift_and_stitch: int | None = None,
        preprocessing: str | Preprocessing | dict | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        amp: bool = False,
        model_name: str | None = None,
        num_classes: int | None = None,
        model_options: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        model: str | None = None,
        backend: str | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        calibration: Iterable[torch.Tensor] | None = None,
        threads: int | None = None,
        pad100: bool = True,
        copy_model: bool = True,
    ) -> None:
        from fcnkit.backends import is_onnx_file, onnx_metadata

        self.device = torch.device(device)
        model_name = model_name or model  # ``model=``: the older spelling, one more release
        onnx_file = is_onnx_file(weights_or_model)
        if onnx_file:
            net, meta = None, {**onnx_metadata(weights_or_model), **(meta or {})}
        elif isinstance(weights_or_model, nn.Module):
            net, meta = weights_or_model, dict(meta or {})
        else:
            from fcnkit.weights import load_any

            net, meta = load_any(
                weights_or_model,
                model_name=model_name,
                num_classes=num_classes,
                model_options=model_options,
                map_location=self.device,
            )
        self.model: nn.Module | None = net.to(self.device).eval() if net is not None else None
        self.meta: dict[str, Any] = meta
        if preprocessing is None:
            preprocessing = getattr(net, "preprocessing", None) or meta.get("preprocessing")
        if preprocessing is None:
            raise ValueError("the model records no preprocessing; pass preprocessing=")
        self.preprocessing = get_preprocessing(preprocessing)
        self.classes = list(classes) if classes is not None else meta.get("classes")
        self.palette = [tuple(c) for c in (palette or meta.get("palette") or [])] or None
        self.targets: dict[str, list[str]] = dict(meta.get("targets") or {})
        self.palettes: dict[str, list] = dict(meta.get("palettes") or {})
        channels = getattr(net, "input_channels", None) or meta.get("input_channels")
        self.input_channels: int | None = channels if isinstance(channels, int) else None
        self.batch_size = max(1, int(batch_size))
        self.tta = tta
        self.scales = check_scales(scales)
        if isinstance(sliding_window, int):
            sliding_window = SlidingWindow(sliding_window)
        self.sliding_window = sliding_window
        self.max_pixels = max_pixels
        self.max_image_pixels = max_image_pixels
        self.runner = self._runner(
            weights_or_model if onnx_file else net,
            backend=backend or ("onnxruntime" if onnx_file else "eager"),
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            calibration=calibration,
            threads=threads,
            pad100=pad100,
            own_model=not (copy_model and isinstance(weights_or_model, nn.Module)),
        )
        if shift_and_stitch is not None and self.runner is not None:
            raise ValueError(
                f"shift_and_stitch needs the model's coarse scores: it runs with the eager "
                f"fp32 backend only, not {self.runner.name}"
            )
        if shift_and_stitch is not None:
            _coarse_path(self.model, shift_and_stitch)  # refuses what it cannot serve, now
        self.shift_and_stitch = shift_and_stitch
        self.amp = amp

    def _runner(
        self,
        model: Any,
        *,
        backend: str,
        calibration: Iterable[ImageLike] | None,
        **options: Any,
    ) -> Any:
        """The backend runner (:func:`fcnkit.backends.build_runner`), or ``None`` for the
        faithful eager fp32 module. ``calibration`` images are read and normalised here."""
        from fcnkit.backends import build_runner, is_faithful

        if isinstance(model, nn.Module) and is_faithful(backend, **options):
            if options["threads"]:
                torch.set_num_threads(int(options["threads"]))
            return None
        batches = None
        if calibration is not None:
            batches = (self.preprocessing.normalize(self._load(im)[None]) for im in calibration)
        return build_runner(model, backend, calibration=batches, device=self.device, **options)

    def classes_for(self, head: str | None = None) -> list[str] | None:
        """Class names of ``head`` (default: the primary head)."""
        from fcnkit.weights.checkpoint import head_classes

        return head_classes(self._head_meta(), head)

    def palette_for(self, head: str | None = None) -> list[tuple[int, ...]] | None:
        """Colours of ``head`` (default: the primary head); ``None``: the VOC colour map."""
        from fcnkit.weights.checkpoint import head_palette

        palette = head_palette(self._head_meta(), head)
        return [tuple(c) for c in palette] if palette else None

    def _head_meta(self) -> dict[str, Any]:
        """The checkpoint metadata with this segmenter's ``classes`` / ``palette`` overrides."""
        return {
            "classes": self.classes,
            "palette": self.palette,
            "targets": self.targets,
            "palettes": self.palettes,
        }

    def check_channels(self, image: torch.Tensor) -> None:
        """``ValueError`` naming the model's expected input unless ``image`` (``C x H x W``)
        has the model's ``input_channels``."""
        expected = self.input_channels
        if expected is None or image.shape[0] == expected:
            return
        name = self.model_name
        modality = getattr(self.model, "modality", None)
        what = f"{name}" + (f" (modality {modality})" if modality else "")
        layout = {4: "RGB then depth", 6: "RGB then HHA"}.get(expected, f"{expected} channels")
        raise ValueError(
            f"{what} expects {expected}-channel input ({layout}), got an image with "
            f"{image.shape[0]} channels: image files are read as RGB; pass the modalities "
            f"stacked as a {expected} x H x W tensor or H x W x {expected} array"
        )

    @property
    def model_name(self) -> str:
        """The model's registered name (or its class name)."""
        if self.model is None:
            return self.runner.model_name  # type: ignore[union-attr]
        return getattr(self.model, "model_name", type(self.model).__name__)

    @property
    def _net(self) -> Callable[[torch.Tensor], Any]:
        """What computes the scores: the backend's runner, else the model itself."""
        return self.runner if self.runner is not None else self.model  # type: ignore[return-value]

    def _window_for(self, h: int, w: int) -> SlidingWindow | None:
        if self.sliding_window is not None:
            return self.sliding_window
        if self.max_pixels is not None and h * w > self.max_pixels:
            return SlidingWindow.for_budget(self.max_pixels)
        return None

    def _load(self, image: ImageLike) -> torch.Tensor:
        return load_image(image, max_image_pixels=self.max_image_pixels)

    def _batches(self, images: list[torch.Tensor]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(indices, uint8 batch on device)`` of same-size images, ``batch_size`` at once."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            self.check_channels(image)
            groups.setdefault(tuple(image.shape), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                same = [images[i] for i in chunk]
                batch = same[0][None] if len(same) == 1 else torch.stack(same)  # 1: no copy
                yield chunk, batch.to(self.device)

    def _dense(self, batch: torch.Tensor, window: SlidingWindow | None) -> Outputs:
        return dense_scores(
            self._net,
            self.preprocessing.normalize(batch),
            sliding_window=window,
            flip=self.tta,
            shift_and_stitch_stride=self.shift_and_stitch,
            amp=self.amp,
            scales=self.scales,
        )

    def _scores(self, images: list[torch.Tensor], head: str | None) -> list[torch.Tensor]:
        """Scores (``C x H x W``, on ``device``) of images, batched by size."""
        results: list[torch.Tensor | None] = [None] * len(images)
        for chunk, batch in self._batches(images):
            scores = select_head(self._dense(batch, self._window_for(*batch.shape[-2:])), head)
            for j, i in enumerate(chunk):
                results[i] = scores[j]
        return results  # type: ignore[return-value]

    def _labels(self, batch: torch.Tensor, head: str | None) -> tuple[torch.Tensor, int]:
        """Label maps (``N x H x W``) of a batch and the number of classes scored.

        Tiled images are labelled band by band (:func:`sliding_window_bands`): no float map
        of the whole image is ever held; labels are ``uint8`` (``int32`` past 256 classes).
        """
        window = self._window_for(*batch.shape[-2:])
        if window is None or self.scales != (1.0,):
            scores = select_head(self._dense(batch, window), head)
            return scores_to_labels(scores, dim=1), scores.shape[1]
        forward = _input_sized(
            self._net, self.shift_and_stitch, self.amp and self.device.type == "cuda"
        )
        bands = sliding_window_bands(
            forward,
            batch,
            window,
            prepare=self.preprocessing.normalize,
            flip=self.tta,
            head=head,
        )
        labels, classes = None, 0
        for top, bottom, scores in bands:
            if labels is None:
                classes = scores.shape[1]
                dtype = torch.uint8 if classes <= 256 else torch.int32
                n, _, h, w = batch.shape
                labels = torch.empty(n, h, w, dtype=dtype, device=batch.device)
            labels[:, top:bottom] = scores_to_labels(scores, dim=1)
        return labels, classes  # type: ignore[return-value]

    def scores(self, image: ImageLike, head: str | None = None) -> torch.Tensor:
        """Class scores (logits, ``C x H x W`` float32 on ``device``) for one image."""
        return self._scores([self._load(image)], head)[0]

    def scores_batch(self, images: Iterable[ImageLike], head: str | None = None) -> list:
        return self._scores([self._load(im) for im in images], head)

    def predict(self, image: ImageLike, head: str | None = None) -> np.ndarray | torch.Tensor:
        """The label map of one image (``H x W``).

        A tensor input gives an ``int64`` tensor on the input's device; anything else a numpy
        array (``uint8`` for up to 256 classes, else ``int32``). ``head`` picks a head of a
        multi-head model (default: the primary one).
        """
        return self.predict_batch([image], head)[0]

    def predict_batch(
        self, images: Iterable[ImageLike], head: str | None = None
    ) -> list[np.ndarray | torch.Tensor]:
        """Label maps of images of any sizes; same-size images share forward passes."""
        images = list(images)
        loaded = [self._load(im) for im in images]
        results: list[np.ndarray | torch.Tensor | None] = [None] * len(images)
        for chunk, batch in self._batches(loaded):
            labels, classes = self._labels(batch, head)
            for j, i in enumerate(chunk):
                if isinstance(images[i], torch.Tensor):
                    results[i] = labels[j].to(images[i].device, torch.int64)
                else:
                    dtype = np.uint8 if classes <= 256 else np.int32
                    results[i] = labels[j].cpu().numpy().astype(dtype, copy=False)
        return results  # type: ignore[return-value]

    def __repr__(self) -> str:
        backend = f", backend={self.runner.name}" if self.runner is not None else ""
        return (
            f"Segmenter({self.model_name}, device={self.device}{backend}, "
            f"preprocessing={self.preprocessing.name})"
        )
