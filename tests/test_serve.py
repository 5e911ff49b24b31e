"""fcnkit serve's HTTP API: the label map equals `fcnkit predict`'s, bad uploads get a 4xx
and one sentence while the server keeps serving, the queue is bounded, localhost by default."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fcnkit[serve] is not installed")
pytest.importorskip("httpx", reason="the FastAPI test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

import fcnkit  # noqa: E402
from cli_fixtures import lite0_with_random_scores
from fcnkit.cli import main  # noqa: E402
from fcnkit.cli.serve import default_model  # noqa: E402
from fcnkit.serve import SegmentService, create_app  # noqa: E402
from fcnkit.weights import save_checkpoint  # noqa: E402

CLASSES = ["sky", "building", "road"]
PALETTE = [(128, 128, 255), (200, 60, 20), (90, 90, 90)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with a checkpoint of a 3-class FCN-8s (random EfficientNet-Lite0
    trunk, score layers perturbed so that more than one class is predicted)."""
    import torch

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = lite0_with_random_scores(3)
    save_checkpoint(root / "run/checkpoints/best.pt", model, classes=CLASSES, palette=PALETTE)
    return root / "run"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photograph (scikit-image's astronaut), 96 x 128, as a JPEG."""
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).resize((128, 96)).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def service(run_dir: Path) -> SegmentService:
    return SegmentService(fcnkit.Segmenter(run_dir), model_name="test-run", max_queue=4)


@pytest.fixture(scope="module")
def client(service: SegmentService) -> TestClient:
    return TestClient(create_app(service))


def upload(path_or_bytes: Path | bytes, name: str = "photo.jpg") -> dict:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return {"image": (name, data, "application/octet-stream")}


def test_label_map_equals_fcnkit_predict(
    client: TestClient, run_dir: Path, photo: Path, tmp_path: Path
) -> None:
    response = client.post("/predict", files=upload(photo))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    served = Image.open(io.BytesIO(response.content))
    assert main(["predict", str(run_dir), str(photo), "--out", str(tmp_path / "out")]) == 0
    written = Image.open(tmp_path / "out/labels/astronaut.png")
    assert served.mode == written.mode == "P"
    assert np.array_equal(np.asarray(served), np.asarray(written))
    assert served.getpalette()[:9] == [v for c in PALETTE for v in c]
    labels = np.asarray(served)
    assert len(np.unique(labels)) >= 2  # the fixture predicts more than one class
    shares = json.loads(response.headers["x-class-shares"])
    for index, name in enumerate(CLASSES):
        assert shares.get(name, 0.0) == pytest.approx((labels == index).mean(), abs=1e-6)
    assert float(response.headers["x-inference-ms"]) > 0
    assert response.headers["x-device"] == "cpu"


def test_json_variant_has_shares_timing_and_the_same_png(client: TestClient, photo: Path) -> None:
    import base64

    png = client.post("/predict", files=upload(photo)).content
    body = client.post("/predict?format=json", files=upload(photo)).json()
    assert (body["width"], body["height"]) == (128, 96)
    assert base64.b64decode(body["label_png"]) == png
    assert sum(c["share"] for c in body["classes"]) == pytest.approx(1.0, abs=1e-5)
    assert [c["share"] for c in body["classes"]] == sorted(
        (c["share"] for c in body["classes"]), reverse=True
    )
    first = body["classes"][0]
    assert first["name"] == CLASSES[first["index"]]
    assert tuple(first["colour"]) == PALETTE[first["index"]]
    assert body["inference_ms"] > 0 and body["device"] == "cpu"


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and 'id="opacity"' in page.text
    info = client.get("/api/info").json()
    assert info["classes"] == CLASSES
    assert [tuple(c) for c in info["palette"]] == PALETTE
    assert info["device"] == "cpu"


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff_float() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ones((8, 8), np.float32)).save(buffer, format="TIFF")
    return buffer.getvalue()


BAD_UPLOADS = {
    "text": (b"just some text", 415, "not an image"),
    "empty": (b"", 400, "empty"),
    "truncated": (_png_bytes(Image.new("RGB", (64, 64), (10, 20, 30)))[:60], 400, "decoded"),
    "float mode F": (_tiff_float(), 415, "mode F"),
}


@pytest.mark.parametrize("kind", BAD_UPLOADS)
def test_bad_upload_is_a_4xx_sentence_and_the_server_keeps_serving(
    client: TestClient, photo: Path, kind: str
) -> None:
    data, status, words = BAD_UPLOADS[kind]
    response = client.post("/predict", files=upload(data, f"{kind}.bin"))
    assert response.status_code == status
    message = response.json()["error"]
    assert words in message and "Traceback" not in message
    assert client.post("/predict", files=upload(photo)).status_code == 200


def test_missing_field_and_bad_format(client: TestClient, photo: Path) -> None:
    response = client.post("/predict", data={"picture": "x"})
    assert response.status_code == 422
    assert "'image'" in response.json()["error"]
    response = client.post("/predict?format=xml", files=upload(photo))
    assert response.status_code == 422 and "format" in response.json()["error"]


def test_size_limits(service: SegmentService, photo: Path) -> None:
    small = SegmentService(service.segmenter, "limits", max_upload_bytes=1000)
    response = TestClient(create_app(small)).post("/predict", files=upload(photo))
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    few_pixels = SegmentService(service.segmenter, "limits", max_image_pixels=100 * 100)
    response = TestClient(create_app(few_pixels)).post("/predict", files=upload(photo))
    assert response.status_code == 413
    assert "128 x 96 = 12,288 pixels" in response.json()["error"]


def test_queue_is_bounded(service: SegmentService, photo: Path) -> None:
    busy = SegmentService(service.segmenter, "busy", max_queue=1)
    client = TestClient(create_app(busy))
    assert busy._slots.acquire(blocking=False)  # one request in flight
    try:
        response = client.post("/predict", files=upload(photo))
        assert response.status_code == 503 and "busy" in response.json()["error"]
    finally:
        busy._slots.release()
    assert client.post("/predict", files=upload(photo)).status_code == 200


def test_concurrent_requests_all_answered_with_the_same_labels(
    client: TestClient, photo: Path
) -> None:
    expected = client.post("/predict", files=upload(photo)).content
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/predict", files=upload(photo)), range(4)))
    assert all(a.status_code == 200 and a.content == expected for a in answers)


def test_heatmap_finds_the_cat(client: TestClient) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    data = _png_bytes(Image.fromarray(skimage_data.chelsea()))
    body = client.post("/heatmap", files=upload(data, "chelsea.png")).json()
    assert "cat" in " ".join(t["class"] for t in body["top5"][:3])
    assert body["max_probability"] > 0
    response = client.post("/heatmap?class_name=no such thing", files=upload(data))
    assert response.status_code == 422 and "ImageNet class" in response.json()["error"]


def test_cli_binds_localhost_by_default_and_finds_the_demo_run(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcnkit.weights
    from fcnkit.cli import CLIError, build_parser

    shipped = [e.name for e in fcnkit.weights.shipped_models() if e.available]
    if shipped:  # what the package ships comes first
        assert default_model(tmp_path / "runs") == shipped[0]
    monkeypatch.setattr(fcnkit.weights, "shipped_models", lambda: [])

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.weights is None
    with pytest.raises(CLIError, match="run `fcnkit demo` first"):
        default_model(tmp_path / "runs")
    for name in ("demo", "demo-2"):
        (tmp_path / "runs" / name / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs/demo/checkpoints/best.pt").write_bytes(b"old")
    newer = tmp_path / "runs/demo-2/checkpoints/best.pt"
    newer.write_bytes(b"new")
    import os

    os.utime(tmp_path / "runs/demo/checkpoints/best.pt", (1, 1))
    assert default_model(tmp_path / "runs") == str(tmp_path / "runs/demo-2")


def test_one_request_at_a_time_on_the_model(service: SegmentService, photo: Path) -> None:
    """Inference holds the service's lock: a second call waits (no re-entrant forward)."""
    image = service.decode(photo.read_bytes(), "photo.jpg")
    service._run.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (service.predict(image), done.set()))
    worker.start()
    try:
        assert not done.wait(0.5)
    finally:
        service._run.release()
    worker.join(60)
    assert done.is_set()


def test_the_cli_builds_its_service_from_parsed_arguments(run_dir: Path) -> None:
    """`fcnkit serve MODEL` end to end up to the server start: every option the shared
    segmenter builder reads exists on the serve command (a missing one broke the command)."""
    from fcnkit.cli import build_parser
    from fcnkit.cli.serve import build_service

    args = build_parser().parse_args(["serve", str(run_dir), "--max-queue", "2"])
    service = build_service(args)
    assert service.max_queue == 2 and service.segmenter.classes_for() == CLASSES
    args = build_parser().parse_args(["serve", str(run_dir), "--backend", "onnxruntime"])
    assert build_service(args).segmenter.predict(np.zeros((20, 24, 3), np.uint8)).shape == (20, 24)
