"""fcnkit serve end to end in a real headless browser (Chromium + chromedriver from Debian's
packages, driven by Selenium): upload a real photo, wait for the overlay, check the legend
and that the label map the page shows equals `fcnkit predict` on the same image; a bad upload
shows the error on the page and the next photo still works.

The README's test command installs Chromium and its driver where they are missing (apt);
elsewhere the test is skipped with the reason."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fcnkit[serve] is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="fcnkit[serve] is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

import fcnkit  # noqa: E402
from cli_fixtures import lite0_with_random_scores  # noqa: E402
from fcnkit.cli import main  # noqa: E402
from fcnkit.serve import SegmentService, create_app  # noqa: E402
from fcnkit.weights import save_checkpoint  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Chromium or chromedriver missing (apt-get install chromium chromium-driver)",
)
CLASSES = ["sky", "building", "road"]
PALETTE = [(128, 128, 255), (200, 60, 20), (90, 90, 90)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = lite0_with_random_scores(3)
    path = tmp_path_factory.mktemp("browser") / "model.pt"
    save_checkpoint(path, model, classes=CLASSES, palette=PALETTE)
    return path


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[str]:
    service = SegmentService(fcnkit.Segmenter(checkpoint), model_name="browser-test")
    port = _free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started and time.time() < deadline:
        time.sleep(0.05)
    assert instance.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 90) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(condition)


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(path))


def _shown_labels(driver) -> np.ndarray:
    from selenium.webdriver.common.by import By

    src = driver.find_element(By.ID, "labels").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_upload_a_photo_see_the_overlay_legend_and_predict_s_labels(
    server: str, browser, checkpoint: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).resize((160, 120)).save(photo, quality=92)
    browser.get(server)
    _wait(browser, lambda d: "browser-test" in d.find_element(By.ID, "model-info").text)
    _upload(browser, photo)
    _wait(browser, lambda d: d.find_element(By.ID, "result").get_attribute("data-ready") == "1")
    overlay = browser.find_element(By.ID, "overlay")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    _wait(browser, lambda d: d.execute_script(loaded, overlay) == 160)
    labels = _shown_labels(browser)
    assert main(["predict", str(checkpoint), str(photo), "--out", str(tmp_path / "out")]) == 0
    expected = np.asarray(Image.open(tmp_path / "out/labels/astronaut.png"))
    assert np.array_equal(labels, expected)
    legend = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    present = [int(i) for i in np.unique(expected)]
    assert sorted(int(li.get_attribute("data-index")) for li in legend) == present
    for li in legend:
        index = int(li.get_attribute("data-index"))
        assert li.find_element(By.CLASS_NAME, "name").text == CLASSES[index]
        share = float(li.find_element(By.CLASS_NAME, "share").text.rstrip(" %"))
        assert share == pytest.approx(100 * (expected == index).mean(), abs=0.051)
    assert "ms on cpu" in browser.find_element(By.ID, "stats").text
    slider = browser.find_element(By.ID, "opacity")
    browser.execute_script(
        "arguments[0].value = 20; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert float(overlay.value_of_css_property("opacity")) == pytest.approx(0.2)


def test_bad_upload_shows_the_error_and_the_page_keeps_working(
    server: str, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    browser.get(server)
    _upload(browser, bad)
    error = browser.find_element(By.ID, "error")
    _wait(browser, lambda d: error.is_displayed())
    assert "'notes.png' is not an image" in error.text
    good = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 50), 128, np.uint8)).save(good)
    _upload(browser, good)
    _wait(browser, lambda d: not error.is_displayed())
    _wait(browser, lambda d: d.find_element(By.ID, "result").get_attribute("data-ready") == "1")
    assert _shown_labels(browser).shape == (40, 50)
