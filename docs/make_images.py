"""Remake the pictures README.md shows, with the tool itself: `python docs/make_images.py` (from the repository).

It runs the README's picture command on the sample CNN (epsilon everywhere, so biases keep relevance), copies one
heatmap, its overlay and the conservation plot of the Markdown report into docs/images/, and takes a screenshot
of the HTML report in headless Chromium (Debian's `chromium`, driven by Playwright).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
SAMPLE = 3  # a "0" with clear positive and negative evidence


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        command = [sys.executable, "-m", "lrpaudit", "check", "sample_models/digits_cnn.onnx"]
        command += ["--preset", "epsilon", "--inputs", "sample_models/digits_samples.npy", "-q"]
        command += ["--html", str(work / "audit.html"), "--heatmaps", str(work / "heatmaps")]
        command += ["--markdown", str(work / "audit.md"), "--isolated"]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(done.stderr)
        stem = f"digits_cnn.input.sample{SAMPLE:05d}"
        shutil.copy(work / "heatmaps" / f"{stem}.png", IMAGES / "heatmap.png")
        shutil.copy(work / "heatmaps" / f"{stem}.overlay.png", IMAGES / "heatmap-overlay.png")
        shutil.copy(work / "audit.conservation.png", IMAGES / "conservation.png")
        screenshot(work / "audit.html", IMAGES / "html-report.png")


def screenshot(page_file: Path, target: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(page_file.as_uri())
        page.screenshot(path=str(target))
        browser.close()


if __name__ == "__main__":
    main()
