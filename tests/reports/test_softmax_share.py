"""The softmax (Taylor bias) share in every report, on a real attention block audited under attnlrp.

Under the strict gate the softmax row fails with ``absorbed_softmax`` as its largest category: the table names it
(``smax``, and a ``smax share`` column under ``-v``), the hint says what it is, JSON carries it in every row and in
the sample totals (schema 1.2, validated), JUnit and Markdown show it; under the explained gate the audit passes,
because the share is accounted for.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jsonschema
import numpy as np
import pytest

import lrpaudit
from lrpaudit.config import load_config
from lrpaudit.reports.json_report import build_report
from lrpaudit.reports.junit import build_junit
from lrpaudit.reports.markdown import build_markdown
from lrpaudit.reports.schema_check import load_schema
from tests.helpers.attention_block import block_example, block_files
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def block(export_cache):
    return block_files(export_cache)["legacy"]


@pytest.fixture(scope="module")
def audited(block):
    result = lrpaudit.audit(str(block), load_config(preset="attnlrp"), block_example().numpy())
    assert result.verdict == "fail"
    return result


def _softmax_row(result):
    (row,) = [row for row in result.layer_rows() if row["op"] == "softmax"]
    return row


def test_the_softmax_row_names_its_share(audited):
    row = _softmax_row(audited)
    assert row["verdict"] == "fail" and row["largest_category"] == "absorbed_softmax"
    assert abs(row["leak"] - row["absorbed_softmax"]) <= 1e-12 * row["scale"]
    assert row["hint"].startswith("softmax (Taylor bias) absorbs ")
    assert "cp-lrp" in row["hint"] and "raise the tolerance to" in row["hint"]
    others = [r for r in audited.layer_rows() if r["op"] != "softmax"]
    assert all(r["absorbed_softmax"] == 0.0 for r in others)


def test_json_carries_the_share_in_rows_and_sample_totals(audited):
    report = build_report([audited])
    jsonschema.Draft202012Validator(load_schema()).validate(report)
    assert report["schema_version"] == "1.2"
    run = report["runs"][0]
    assert all("absorbed_softmax" in row for row in run["layers"])
    for position, sample in enumerate(run["samples"]):
        per_layer = sum(row["absorbed_softmax"] for row in sample["layers"])
        assert sample["totals"]["absorbed_softmax"] == pytest.approx(per_layer, rel=1e-12, abs=1e-15)
        assert per_layer == audited.samples[position].totals["absorbed_softmax"]


def test_junit_and_markdown_show_the_share(audited):
    row = _softmax_row(audited)
    root = ET.fromstring(build_junit([audited]).encode("utf-8"))
    case = next(c for c in root.iter("testcase") if c.get("name").startswith(f"{row['id']} [softmax/taylor]"))
    failure = case.find("failure")
    assert "largest category: softmax (Taylor bias) (" in failure.get("message")
    assert "absorbed_softmax" in failure.text
    markdown = build_markdown([audited])
    assert "| softmax |" in markdown and "softmax (Taylor bias)" in markdown


def test_table_and_explained_gate(block, tmp_path):
    inputs = tmp_path / "x.npy"
    np.save(inputs, block_example().numpy())
    compact = run_cli("check", block, "--preset", "attnlrp", "--inputs", inputs, env={"COLUMNS": "120"})
    assert compact.exit_code == 1
    line = next(line for line in compact.stdout.splitlines() if " softmax " in line)
    assert "taylor" in line and "smax " in line and "FAIL" in line
    wide = run_cli("check", block, "--preset", "attnlrp", "--inputs", inputs, "-v", env={"COLUMNS": "230"})
    header = next(line for line in wide.stdout.splitlines() if line.startswith("layer "))
    assert "smax share" in header
    explained = run_cli("check", block, "--preset", "attnlrp", "--inputs", inputs, "--gate", "explained")
    assert explained.exit_code == 0, explained.output
