"""Pictures from the command line (issue 15): --heatmaps, --html (check and batch), the Markdown's plot, the job
summary's chart, the missing extra, and the first run with project settings (lrpaudit.yaml, pyproject.toml).

Oracles: the relevance saved by the same run (``--save-relevance``) decides the sign of every heatmap pixel; the
settings tests compare against the same audit typed out in flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.paths import REPO, SAMPLES

CNN = SAMPLES / "digits_cnn.onnx"
IMAGES = SAMPLES / "digits_samples.npy"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    out = tmp_path_factory.mktemp("pictures")
    x = np.load(IMAGES)[:3]
    np.save(out / "three.npy", x)
    args = ["check", CNN, "--inputs", out / "three.npy", "--preset", "epsilon", "-q", "--isolated"]
    args += ["--heatmaps", out / "maps", "--html", out / "audit.html", "--save-relevance", out / "r.npz"]
    args += ["--markdown", out / "audit.md"]
    result = run_cli(*args)
    assert result.exit_code == 1, result.output  # epsilon on biased layers fails: the pictures are still made
    return out, x


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)


def test_one_heatmap_and_one_overlay_per_sample(pictures):
    out, _ = pictures
    names = sorted(p.name for p in (out / "maps").iterdir())
    expected = [f"digits_cnn.input.sample{k:05d}{kind}.png" for k in range(3) for kind in (".overlay", "")]
    assert names == sorted(expected)


def test_every_heatmap_pixel_has_the_sign_of_the_relevance(pictures):
    out, _ = pictures
    relevance = np.load(out / "r.npz")["input"]  # the same run's maps, (3, 1, 8, 8)
    for k in range(3):
        rgb = _rgb(out / "maps" / f"digits_cnn.input.sample{k:05d}.png")
        scale = rgb.shape[0] // 8
        pixels = rgb[scale // 2 :: scale, scale // 2 :: scale]  # one pixel per input position
        summed = relevance[k].sum(axis=0)
        red, blue = pixels[..., 0], pixels[..., 2]
        assert np.all(red[summed > 0] == 255) and np.all(blue[summed > 0] < 255)
        assert np.all(blue[summed < 0] == 255) and np.all(red[summed < 0] < 255)
        assert np.all(pixels[summed == 0] == 255)  # exactly no relevance is white
        strongest = np.unravel_index(np.argmax(np.abs(summed)), summed.shape)
        assert min(red[strongest], blue[strongest]) < 60  # saturated where |R| is largest


def test_the_html_page_and_the_markdown_plot(pictures):
    out, _ = pictures
    page = (out / "audit.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 + 2 * 3  # the plot, 3 maps and 3 overlays
    assert "http://" not in page and "https://" not in page and "<script" not in page
    markdown = (out / "audit.md").read_text()
    assert "](audit.conservation.png)" in markdown and "![conservation plot of digits\\_cnn.onnx" in markdown
    plot = _rgb(out / "audit.conservation.png")
    assert plot.shape[1] > 600 and plot.std() > 20


def test_the_job_summary_gets_a_mermaid_chart(tmp_path):
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = run_cli("check", CNN, "--random", "2", "--isolated", "-q", env=env)
    assert result.exit_code in (0, 1), result.output
    text = summary.read_text()
    start = text.index("```mermaid\nxychart-beta\n")
    chart = text[start : text.index("```", start + 10)]
    values = chart.split("line [")[1].split("]")[0].split(", ")
    assert len(values) == 10  # one point per node of the CNN
    assert all(v.lstrip("-").replace(".", "", 1).isdigit() for v in values)  # plain decimals: no exponents


def test_batch_writes_one_page_for_every_run(tmp_path):
    page = tmp_path / "batch.html"
    result = run_cli("batch", SAMPLES / "batch.yaml", "--html", page, "-q", cwd=REPO)
    assert result.exit_code == 1, result.output
    text = page.read_text()
    assert text.count("<h2>") == 12 and text.count('alt="conservation plot of') == 12


def test_a_missing_matplotlib_fails_before_the_audit(tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    code = "from lrpaudit.cli import main; main()"
    args = [sys.executable, "-c", code, "check", str(CNN), "--random", "2", "--isolated"]
    args += ["--html", str(tmp_path / "a.html"), "--json-report", str(tmp_path / "a.json")]
    env = {"PYTHONPATH": f"{blocker}:{REPO}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "lrpaudit: error: pictures need matplotlib: pip install 'lrpaudit[plots]' (or pip install matplotlib)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]  # nothing audited, nothing written


# ---------------------------------------------------------------- the first run and project settings


def _report(result) -> dict:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _figures(report: dict) -> list:
    return [(s["index"], s["r_output"], s["r_input"]) for s in report["runs"][0]["samples"]]


def test_settings_file_gives_config_inputs_and_reports(tmp_path):
    np.save(tmp_path / "x.npy", np.load(IMAGES)[:4])
    (tmp_path / "lrpaudit.yaml").write_text(
        "version: 1\npreset: zero\ninputs: x.npy\njson_report: out/audit.json\nlayer_rtol: 0.5\n"
    )
    (tmp_path / "out").mkdir()
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    result = run_cli("check", CNN, "--format", "json", cwd=nested)  # found from a folder below
    report = _report(result)
    assert f"settings from {tmp_path / 'lrpaudit.yaml'}" in result.stderr
    typed = _report(run_cli("check", CNN, "--preset", "zero", "--inputs", tmp_path / "x.npy", "--format", "json",
                            "--isolated"))  # fmt: skip
    assert _figures(report) == _figures(typed)
    assert report["runs"][0]["config"]["name"] == "preset zero"
    assert report["runs"][0]["tolerance"]["layer_rtol"] == 0.5  # the project's tolerance beats the preset's
    assert (
        json.loads((tmp_path / "out" / "audit.json").read_text())["runs"][0]["samples"]
        == report["runs"][0]["samples"]
    )


def test_flags_beat_settings_and_isolated_ignores_them(tmp_path):
    (tmp_path / "lrpaudit.yaml").write_text("version: 1\npreset: zero\nrandom: 3\n")
    flagged = _report(run_cli("check", CNN, "--preset", "epsilon", "--format", "json", cwd=tmp_path))
    assert (
        flagged["runs"][0]["config"]["name"] == "preset epsilon" and len(flagged["runs"][0]["samples"]) == 3
    )
    inputs = _report(run_cli("check", CNN, "--random", "2", "--format", "json", cwd=tmp_path))
    assert len(inputs["runs"][0]["samples"]) == 2  # --random replaces the project's random: 3
    isolated = run_cli("check", CNN, "--format", "json", "--isolated", cwd=tmp_path)
    assert _report(isolated)["runs"][0]["config"]["name"] == "preset epsilon-plus-flat"
    assert "no inputs given: auditing 8 seeded random samples" in isolated.stderr


def test_pyproject_tool_table_is_read_and_checked(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.lrpaudit]\npreset = "zero"\nrandom = 2\n'
    )
    report = _report(run_cli("check", CNN, "--format", "json", cwd=tmp_path))
    assert report["runs"][0]["config"]["name"] == "preset zero" and len(report["runs"][0]["samples"]) == 2
    (tmp_path / "pyproject.toml").write_text('[tool.lrpaudit]\npreset = "zero"\nrandm = 2\n')
    line = assert_one_line_error(run_cli("check", CNN, cwd=tmp_path))
    assert "pyproject.toml: tool.lrpaudit.randm: unknown key (did you mean 'random'?)" in line


def test_a_bad_settings_file_is_one_line_with_its_position(tmp_path):
    (tmp_path / "lrpaudit.yaml").write_text("version: 1\npreset: zero\nbatch_size: many\n")
    line = assert_one_line_error(run_cli("check", CNN, cwd=tmp_path))
    assert "lrpaudit.yaml:3:13: batch_size:" in line
    (tmp_path / "lrpaudit.yaml").write_text("version: 1\nconfig: a.yaml\npreset: zero\n")
    assert "give either config or preset" in assert_one_line_error(run_cli("check", CNN, cwd=tmp_path))
    (tmp_path / "lrpaudit.yaml").write_text("preset: zero\n")
    assert "version: 1" in assert_one_line_error(run_cli("check", CNN, cwd=tmp_path))


def test_the_first_run_from_a_fresh_clone(tmp_path):
    """`lrpaudit check sample_models/digits_cnn.onnx` with no other flag: the mission's own example works."""
    result = run_cli("check", Path("sample_models") / "digits_cnn.onnx", cwd=REPO)
    assert result.exit_code == 1, (
        result.output
    )  # epsilon-plus-flat lets biases keep relevance: a real verdict
    assert "no inputs given: auditing 8 seeded random samples" in result.stderr
    assert "/features/features.4/Conv" in result.stdout
