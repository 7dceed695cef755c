"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright (no browser download).

The page must open from disk offline (no request leaves the file: pictures are data URIs), render without console
errors, show a screenshot that is not blank (the verdict banner's red, the plot, the heatmaps), and keep hostile
names from a model file as text (a node id with markup neither injects elements nor runs script).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lrpaudit
from lrpaudit import Rule
from lrpaudit.reports.html import write_html
from lrpaudit.results import refinalize
from tests.helpers.paths import SAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARGS += ["--disable-sync", "--no-first-run"]
HOSTILE = '<script>document.title="owned"</script>[/x]"><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    images = np.load(SAMPLES / "digits_samples.npy")[:5]
    failing = lrpaudit.audit(
        SAMPLES / "digits_cnn.onnx", Rule("epsilon"), images, keep_relevance=True, keep_inputs=True
    )
    layer_data = failing.layer_data()
    layer_data[0][0]["id"] = HOSTILE
    hostile = refinalize(failing, layer_data)
    passing = lrpaudit.audit(SAMPLES / "digits_mlp.onnx", Rule("zplus", bias="ignore"), images.reshape(5, 64))
    path = tmp_path_factory.mktemp("html") / "audit.html"
    write_html([hostile, passing], path)
    return path


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems, requests = [], []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems, requests


def test_the_page_renders_offline_without_errors(browser, page_file, tmp_path):
    page, problems, requests = open_page(browser, page_file)
    assert problems == []
    assert [url for url in requests if not url.startswith("data:")] == [page_file.as_uri()]
    assert page.title() == "lrpaudit: FAIL"
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert len(images) >= 1 + 2 * 4 and all(w > 0 and h > 0 for w, h in images)  # plot(s) + worst maps
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB"), dtype=float)
    (tmp_path / "screenshot.png").write_bytes(page.screenshot())
    assert shot.std() > 10, "the screenshot is blank"
    banner_red = (np.abs(shot - np.array([0xC6, 0x28, 0x28])).sum(axis=2) < 20).sum()
    assert banner_red > 500  # the FAIL verdict is drawn
    page.close()


def test_hostile_names_stay_text(browser, page_file):
    page, problems, _ = open_page(browser, page_file)
    assert problems == []
    assert page.title() == "lrpaudit: FAIL"  # the injected script did not run
    assert page.eval_on_selector_all("script", "els => els.length") == 0
    assert page.eval_on_selector_all("img[onerror]", "els => els.length") == 0
    first_cells = page.eval_on_selector_all("td.id", "els => els.map(e => e.textContent)")
    assert HOSTILE in first_cells
    page.close()


def test_text_models_get_a_per_token_view(browser, transformer_export, tmp_path):
    """A BERT file fed token ids: the page colours each token by its relevance (summed over the embedding)."""
    path = transformer_export("bert", "legacy")
    result = lrpaudit.audit(path, lrpaudit.Rule("epsilon"), random=3, keep_relevance=True, keep_inputs=True)
    assert result.token_inputs == ("input_ids",)
    per_token = result.relevance["input_ids"]
    assert per_token.shape == (3, 8)
    page_file = tmp_path / "bert.html"
    write_html([result], page_file)
    page, problems, _ = open_page(browser, page_file)
    assert problems == []
    rows = page.eval_on_selector_all(
        "p.tokens",
        "ps => ps.map(p => [...p.querySelectorAll('span')].map(s => [s.textContent, s.title, "
        "getComputedStyle(s).backgroundColor]))",
    )
    assert len(rows) == 3 and all(len(row) == 8 for row in rows)
    ids = result.inputs["input_ids"]
    shown = {tuple(label for label, _, _ in row) for row in rows}
    assert shown == {tuple(str(int(v)) for v in ids[k]) for k in range(3)}  # the token ids, in order
    for row in rows:  # the strongest positive token is red-ish, the strongest negative blue-ish
        values = [float(title.split("R = ")[1]) for _, title, _ in row]
        colours = [tuple(int(c) for c in colour[4:-1].split(",")[:3]) for _, _, colour in row]
        top, bottom = int(np.argmax(values)), int(np.argmin(values))
        if values[top] > 0:
            assert colours[top][0] == 255 and colours[top][2] < 255
        if values[bottom] < 0:
            assert colours[bottom][2] == 255 and colours[bottom][0] < 255
    page.close()
