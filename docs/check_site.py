"""Serve the built site on localhost and check it in headless Chromium (needs chromium, chromium-driver).

Checks that the home page, a worked example (with its figures actually loaded) and the API
reference render, and saves a screenshot of each into ``--shots`` (default ``site-shots/``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request log on stderr
        pass


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=options)


CHECKS = {
    # page -> (text that must appear, minimum number of loaded images)
    "index.html": ("One API for adversarial robustness", 0),
    "examples/fgsm-sweep/index.html": ("FGSM sweep", 4),
    "examples/ood-baselines/index.html": ("OOD baselines", 10),
    "api/index.html": ("attack_table()", 0),
    "backends/index.html": ("Agreement, measured when these docs were built", 0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--shots", type=Path, default=ROOT / "site-shots")
    args = parser.parse_args()
    if not (args.site / "index.html").exists():
        print(f"no built site at {args.site}: run `make docs` first", file=sys.stderr)
        return 2
    args.shots.mkdir(parents=True, exist_ok=True)
    failures = []
    with serve(args.site) as url:
        driver = browser()
        try:
            for page, (text, min_images) in CHECKS.items():
                driver.get(f"{url}/{page}")
                body = driver.find_element("tag name", "body").text
                loaded = driver.execute_script(
                    "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length"
                )
                broken = driver.execute_script(
                    "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
                )
                shot = args.shots / (page.replace("/", "_").replace(".html", "") + ".png")
                driver.save_screenshot(str(shot))
                ok = text in body and loaded >= min_images and not broken
                print(
                    f"{'ok ' if ok else 'BAD'} {page}: text {'found' if text in body else 'missing'}, {loaded} images loaded, {len(broken)} broken -> {shot}"
                )
                if not ok:
                    failures.append(page)
        finally:
            driver.quit()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
