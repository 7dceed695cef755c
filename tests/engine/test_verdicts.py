"""Rows and verdicts are decided once and every report ranks them the same way (issue 17).

* computed once: a whole ``check`` with every report (table, JSON, JUnit, Markdown, GitHub annotations and job
  summary) builds each per-sample row at most once and each aggregated row once;
* immutable: rows and results cannot be changed after the fact (a copy cannot go stale);
* one ranking: with a plain failure that has the larger ``rel_error`` and an *unexplained* one with the smaller,
  the verdict line, the table, JSON, JUnit, Markdown, the annotations and the batch table all name the
  unexplained row as the worst (verdict severity first, then the gated figure).
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

import lrpaudit
from lrpaudit import Rule, Tolerance
from lrpaudit.cli import main
from lrpaudit.reports import github
from lrpaudit.reports.batch_table import run_worst
from lrpaudit.reports.json_report import build_report
from lrpaudit.reports.junit import build_junit
from lrpaudit.reports.markdown import build_markdown
from lrpaudit.reports.table import summary_line
from lrpaudit.results import refinalize
from lrpaudit.verdicts import ordered_rows, rank_key, worst_row
from tests.helpers.paths import REPO as REPO_ROOT

SAMPLES = REPO_ROOT / "sample_models"
CNN_ONNX = SAMPLES / "digits_cnn.onnx"
IMAGES = SAMPLES / "digits_samples.npy"


def test_a_whole_check_builds_every_row_once(monkeypatch, tmp_path):
    import lrpaudit.results as results

    built = []
    real = results.make_row

    def counting(meta, figures, tolerance, gate, verdict, **extra):
        built.append((meta["id"], "aggregate" if extra else "sample"))
        return real(meta, figures, tolerance, gate, verdict, **extra)

    monkeypatch.setattr(results, "make_row", counting)
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "NO_COLOR": "1"}
    args = ["check", str(CNN_ONNX), "--inputs", str(IMAGES), "-v", "--json-report", str(tmp_path / "a.json")]
    args += ["--junit-xml", str(tmp_path / "a.xml"), "--markdown", str(tmp_path / "a.md")]
    outcome = CliRunner(env=env).invoke(main, args)
    assert outcome.exit_code == 1, outcome.output
    report = json.loads((tmp_path / "a.json").read_text())
    layers, samples = len(report["runs"][0]["layers"]), len(report["runs"][0]["samples"])
    assert (layers, samples) == (10, 16)
    assert sum(kind == "aggregate" for _, kind in built) == layers
    assert sum(kind == "sample" for _, kind in built) == layers * samples  # each (node, sample) row once
    assert summary.read_text().startswith("## lrpaudit: FAIL")


@pytest.fixture(scope="module")
def audited():
    return lrpaudit.audit(CNN_ONNX, Rule("epsilon"), str(IMAGES), batch_size=8)


def test_rows_and_results_are_immutable(audited):
    row = audited.layer_rows()[0]
    with pytest.raises(TypeError):
        row["rel_error"] = 0.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.verdict = "pass"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        audited.samples[0].verdict = "pass"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        audited.tolerance.gate = "explained"  # type: ignore[misc]
    assert audited.layer_rows() == audited.layer_rows() and audited.layer_rows()[0] is row


@pytest.fixture(scope="module")
def mixed(audited):
    """Node A fails plainly with rel_error 0.05; node B (later in graph order) is unexplained at 0.001."""
    layer_data = audited.layer_data()
    linear = [k for k, (meta, _) in enumerate(layer_data) if meta["op"] in ("conv", "linear")]
    first, second = linear[0], linear[1]
    for k, (_, values) in enumerate(layer_data):
        error, residual = (0.05, 0.0) if k == first else (0.001, 0.001) if k == second else (0.0, 0.0)
        for key in ("leak", "absorbed_bias", "absorbed_stabilizer", "degenerate", "residual"):
            values[key][:] = 0.0
        scale = values["scale"]
        values["leak"][:] = error * scale
        values["residual"][:] = residual * scale
        values["absorbed_bias"][:] = (error - residual) * scale
        values["rel_error"][:] = error
        values["rel_residual"][:] = residual
    result = refinalize(audited, layer_data)
    by_verdict = {row["verdict"]: row["id"] for row in result.layer_rows()}
    assert set(by_verdict) == {"pass", "fail", "unexplained"}
    return result, by_verdict["unexplained"], by_verdict["fail"]


def test_every_report_names_the_same_worst_row(mixed):
    result, unexplained, plain = mixed
    rows = result.layer_rows()
    assert worst_row(rows, "strict")["id"] == unexplained
    assert [row["id"] for row in ordered_rows(rows, "strict")[:2]] == [unexplained, plain]
    assert f"worst {unexplained} " in summary_line(result)
    assert build_report([result])["summary"]["worst"]["layer"] == unexplained
    assert run_worst(result)["id"] == unexplained
    markdown = build_markdown([result])
    table = markdown.split("### Failing layers, worst first")[1]
    assert table.index(f"`{unexplained}`") < table.index(f"`{plain}`")
    first_error = next(line for line in github.annotations([result], env={}) if line.startswith("::error"))
    assert f"::{unexplained} (" in first_error
    root = ET.fromstring(build_junit([result]))
    messages = [
        case.find("failure").get("message")
        for case in root.iter("testcase")
        if case.find("failure") is not None
    ]
    assert any("unexplained residual" in m for m in messages)


def test_the_ranking_uses_the_gated_figure():
    low_error_high_residual = {"verdict": "fail", "rel_error": 0.01, "rel_residual": 0.009}
    high_error_no_residual = {"verdict": "fail", "rel_error": 0.5, "rel_residual": 0.0}
    rows = [low_error_high_residual, high_error_no_residual]
    assert worst_row(rows, "strict") is high_error_no_residual
    assert worst_row(rows, "explained") is low_error_high_residual
    nan = {"verdict": "fail", "rel_error": float("nan"), "rel_residual": 0.0}
    assert worst_row([*rows, nan], "strict") is nan  # NaN ranks as the largest figure
    assert rank_key({"verdict": "non_finite", "rel_error": 0.0}, "strict") < rank_key(nan, "strict")


def test_a_gate_override_reaches_every_row(audited):
    explained = refinalize(dataclasses.replace(audited, tolerance=Tolerance(gate="explained")))
    assert all(layer.gate == "explained" for layer in explained.layers)
    assert explained.verdict == "pass" and audited.verdict == "fail"
