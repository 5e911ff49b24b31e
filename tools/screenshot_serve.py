"""The README's screenshot of `fcnkit serve` (docs/serve.png): a headless Chromium uploads a
photo to a running page and captures it.

    python tools/screenshot_serve.py MODEL PHOTO [--out docs/serve.png] [--heatmap]

MODEL is what `fcnkit serve` takes. Needs the [serve] extra, selenium, Chromium and
chromedriver (tools/install-test-browser.sh).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import fcnkit
from fcnkit.serve import SegmentService, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("photo", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--heatmap", action="store_true", help="also show the Fig. 2 view")
    parser.add_argument("--name", default=None, help="model name shown (default: MODEL's)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = SegmentService(
        fcnkit.Segmenter(args.model), model_name=args.name or Path(args.model).name
    )
    server = uvicorn.Server(uvicorn.Config(create_app(service), port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "file").send_keys(str(args.photo.resolve()))
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-ready") == "1")
        if args.heatmap:
            driver.find_element(By.ID, "heatmap-button").click()
            wait.until(lambda d: d.find_element(By.ID, "heatmap-figure").is_displayed())
        time.sleep(0.5)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(1600, height + 90))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
