"""Pictures: heatmaps in the LRP convention, the conservation figures as identities, the plots as real PNGs.

Oracles: numpy's percentile and channel sums written out here, the accounting identities (the relevance in flight
after the last node is what the inputs received; the category shares of a node add up to its leak), and the
pixels of the rendered PNGs (zero relevance is white, positive red, negative blue).
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import lrpaudit
from lrpaudit import Rule
from lrpaudit.reports import heatmaps
from lrpaudit.reports.conservation import conservation
from lrpaudit.reports.plots import conservation_png, png_bytes
from lrpaudit.verdicts import CATEGORIES
from tests.helpers.paths import SAMPLES

IMAGES = np.load(SAMPLES / "digits_samples.npy")


@pytest.fixture(scope="module")
def resnet():
    """A residual net under epsilon: biases leak, relevance crosses residual adds."""
    return lrpaudit.audit(
        SAMPLES / "digits_resnet.onnx", Rule("epsilon"), IMAGES[:6], keep_relevance=True, keep_inputs=True
    )


def test_symmetric_limit_is_a_percentile_of_the_magnitudes():
    values = np.random.default_rng(0).standard_normal((40, 40)) ** 3
    assert heatmaps.symmetric_limit(values) == pytest.approx(np.percentile(np.abs(values), 99.5))
    assert heatmaps.symmetric_limit(values, 50) == pytest.approx(np.median(np.abs(values)))
    sparse = np.zeros((40, 40))
    sparse[3, 4] = -2.0  # the 99.5th percentile of |R| is 0: fall back to the largest magnitude
    assert heatmaps.symmetric_limit(sparse) == 2.0
    assert heatmaps.symmetric_limit(np.zeros((4, 4))) == 1.0
    assert heatmaps.symmetric_limit(np.array([np.nan, np.inf, 3.0])) == pytest.approx(3.0)


def test_maps_sum_channels_and_keep_the_sign():
    sample = np.random.default_rng(1).standard_normal((3, 5, 7))
    assert np.allclose(heatmaps.relevance_map(sample), sample[0] + sample[1] + sample[2])
    scaled = heatmaps.normalized(np.array([-4.0, -1.0, 0.0, 1.0, 4.0]), 2.0)
    assert scaled.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]  # symmetric: 0 stays 0, clipped at the limit
    assert heatmaps.kind_of(np.zeros((2, 3, 8, 8))) == "image"
    assert heatmaps.kind_of(np.zeros((2, 12, 16))) == "tokens"
    assert heatmaps.kind_of(np.zeros((2, 64))) is None


def test_colours_follow_the_lrp_convention():
    rgba = heatmaps.colours(np.array([[-1.0, 0.0, 1.0]]))[0]
    blue, white, red = (tuple(int(c) for c in pixel[:3]) for pixel in rgba)
    assert white == (255, 255, 255)
    assert blue == (0, 0, 255) and red == (255, 0, 0)
    half = tuple(int(c) for c in heatmaps.colours(np.array([0.5]))[0][:3])
    assert half == (255, 128, 128)  # linear between white and red
    over_grey = heatmaps.colours(np.array([[0.0]]), background=np.array([[0.25]]))[0, 0]
    assert tuple(int(c) for c in over_grey[:3]) == (64, 64, 64)  # no relevance: the input shows through


def test_pictures_cover_every_sample_of_image_inputs(resnet):
    pictures = heatmaps.pictures(resnet)
    assert [p.sample for p in pictures] == list(range(6))
    relevance = resnet.relevance["input"]
    for picture in pictures:
        expected = relevance[picture.sample].sum(axis=0)
        limit = np.percentile(np.abs(expected), 99.5)
        assert picture.limit == pytest.approx(limit)
        assert np.allclose(picture.scaled, np.clip(expected / limit, -1, 1))
        assert (
            picture.background.shape == (8, 8)
            and 0 <= picture.background.min() <= picture.background.max() <= 1
        )
    name = heatmaps.file_name("models/digits_resnet.onnx", pictures[3])
    assert name == "digits_resnet.input.sample00003.png"


def test_conservation_curve_ends_at_the_input_relevance(resnet):
    figures = conservation(resnet)
    assert figures.labels == tuple(layer.node_id for layer in reversed(resnet.layers))
    assert figures.remaining.shape == (6, len(resnet.layers) + 1)
    r_in = np.array([s.r_input / s.r_output for s in resnet.samples])
    assert np.allclose(figures.remaining[:, 0], 1.0)
    assert np.allclose(figures.remaining[:, -1], r_in, rtol=1e-12, atol=1e-12)
    total = sum(figures.shares[key] for key in CATEGORIES)
    leaks = -np.diff(figures.remaining, axis=1)
    assert np.allclose(total, leaks, rtol=1e-12, atol=1e-12)  # categories add up to each node's leak
    assert np.abs(figures.mean_shares()["absorbed_bias"]).max() > 0.01  # epsilon on biased convs leaks


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_the_plots_are_real_pngs_with_content(resnet):
    plot = _pixels(conservation_png(conservation(resnet), "digits_resnet.onnx [epsilon] $x_1$ [/x]"))
    assert plot.shape[0] > 300 and plot.shape[1] > 600
    assert plot.std() > 20  # not blank
    bias_orange = np.array([0xE6, 0x9F, 0x00], dtype=np.float64)
    assert (np.abs(plot - bias_orange).sum(axis=2) < 30).sum() > 100  # the bias bars are drawn
    tile = _pixels(png_bytes(heatmaps.colours(np.array([[1.0, -1.0]])), upscale=8))
    assert tile.shape == (8, 16, 3)
    assert tile[:, :8, 0].min() > 200 and tile[:, 8:, 2].min() > 200


def test_a_missing_matplotlib_is_one_line_naming_the_extra():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import numpy as np\n"
        "from lrpaudit.errors import InputError\n"
        "from lrpaudit.reports.plots import png_bytes\n"
        "try:\n    png_bytes(np.zeros((2, 2, 4), np.uint8))\nexcept InputError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert (
        out.strip() == "pictures need matplotlib: pip install 'lrpaudit[plots]' (or pip install matplotlib)"
    )
