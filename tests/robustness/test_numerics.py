"""Numbers that go wrong inside the audit: NaN/Inf weights, zero denominators, targets with nothing to explain.

NaN/Inf inside the model is a ``non_finite`` failure (exit 1) in valid JSON; a zero denominator is counted as
degenerate, never divided by.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.onnx_builders import make_model
from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    mlp,
    model_file,
    no_traceback,
    node,
    save_npy,
    strict_json,
    weights,
)


def _mlp_with(**changes) -> onnx.ModelProto:
    params = weights()
    for key, (index, value) in changes.items():
        params[key] = params[key].copy()
        params[key][index] = value
    return mlp(params)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_fail_as_non_finite_in_valid_json(files, tmp_path, value):
    """onnxruntime computes the same NaN/Inf: the forward is faithful, the propagation reports non_finite."""
    path = model_file(tmp_path, _mlp_with(W2=((0, 0), value)))
    report = tmp_path / "audit.json"
    result = check(path, "--inputs", files.inputs, "--json-report", report, "--junit-xml", tmp_path / "a.xml")
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert "NON_FINITE" in result.stdout and "NaN/Inf at fc2" in result.stdout
    ET.parse(tmp_path / "a.xml")  # well-formed JUnit with the non-finite figures
    data = strict_json(report.read_text())
    row = next(r for r in data["runs"][0]["layers"] if r["id"] == "fc2")
    assert row["verdict"] == "non_finite" and row["non_finite"] is True and row["rel_error"] is None
    assert data["summary"]["worst"]["verdict"] == "non_finite"


def test_fidelity_compares_non_finite_entries_by_position():
    """NaN/Inf in the same places as the runtime is faithful (finite entries compared as usual); a NaN where the
    runtime has a number, or an Inf of the other sign, is a divergence."""
    from lrpaudit.fidelity import compare

    same = compare(
        "y", "fc2", torch.tensor([[np.nan, np.inf, 1.0]]), np.array([[np.nan, np.inf, 1.0 + 1e-9]])
    )
    assert same.rel_diff < 1e-8
    for ref in ([[0.5, np.inf, 1.0]], [[np.nan, -np.inf, 1.0]]):
        diff = compare("y", "fc2", torch.tensor([[np.nan, np.inf, 1.0]]), np.array(ref))
        assert math.isinf(diff.rel_diff)


def test_zero_rule_with_a_zero_denominator_fails_as_degenerate(tmp_path):
    """LRP-0 on a unit with z = 0 that receives relevance (init: one): reported, never divided by zero."""
    w = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    model = make_model(
        [node("Gemm", ["x", "W"], ["y"], transB=1, name="fc")], {"x": [None, 3]}, ["y"], 17, {"W": w}
    )
    path = model_file(tmp_path, model)
    inputs = save_npy(tmp_path, np.array([[1.0, 1.0, 0.0]], np.float32))  # y[0] = 0 exactly
    config = tmp_path / "zero.yaml"
    config.write_text("version: 1\ninit: one\ntarget: 0\nrules:\n  - match: {op: linear}\n    rule: zero\n")
    report = tmp_path / "audit.json"
    result = check(path, "--inputs", inputs, "-c", config, "--json-report", report)
    no_traceback(result)
    assert result.exit_code == 1, result.output
    row = strict_json(report.read_text())["runs"][0]["layers"][0]
    assert row["verdict"] == "fail" and row["largest_category"] == "degenerate"
    assert row["degenerate"] == pytest.approx(1.0) and row["rel_error"] == pytest.approx(1.0)
    assert "degenerate units" in row["hint"]


def test_a_target_with_zero_output_is_flagged_not_divided_by(files, tmp_path):
    """x = 0 gives logits exactly 0 (no biases): that sample has nothing to explain; the others still count."""
    params = weights()
    params["b1"] = np.zeros(4, np.float32)
    path = model_file(tmp_path, mlp(params))
    inputs = save_npy(tmp_path, np.concatenate([np.zeros((1, 3)), np.ones((2, 3))]).astype(np.float32))
    result = check(path, "--inputs", inputs, "--format", "json", "--allow-empty")
    no_traceback(result)
    assert result.exit_code in (0, 1), result.output
    run = strict_json(result.stdout)["runs"][0]
    flags = [s["nothing_to_explain"] for s in run["samples"]]
    assert flags == [True, False, False]
    empty = run["samples"][0]
    assert empty["output_scale"] == 0 and empty["rel_error"] == 0.0 and empty["non_finite"] is False
    assert any(
        "1 of 3 samples have nothing to explain" in note and "samples 0" in note for note in run["notes"]
    )
    assert f"lrpaudit: warning: {path}: 1 of 3 samples have nothing to explain" in result.stderr
    table = check(path, "--inputs", inputs)
    assert "note: 1 of 3 samples have nothing to explain" in table.stdout.replace("\n", " ")
    quiet = check(path, "--inputs", inputs, "-q")
    assert "1 of 3 samples have nothing to explain" in quiet.stderr


def test_all_targets_with_zero_output_is_an_empty_audit(tmp_path):
    params = weights()
    params["W2"] = np.zeros((2, 4), np.float32)
    path = model_file(tmp_path, mlp(params))
    inputs = save_npy(tmp_path, np.ones((3, 3), np.float32))
    report = tmp_path / "r.json"
    line = assert_one_line_error(check(path, "--inputs", inputs, "--json-report", report), str(path))
    assert "exactly 0 for all 3 samples" in line and "init: one" in line and "--allow-empty" in line
    assert not report.exists()
    assert check(path, "--inputs", inputs, "--allow-empty", "-q").exit_code == 0


@pytest.mark.parametrize(
    "target,needle",
    [("7", "target 7 is out of range for an output with 2 entries"), ("-1", "target -1 is out of range")],
)
def test_target_out_of_range(files, target, needle):
    assert_one_line_error(check(files.onnx, "--random", "2", "--target", target), str(files.onnx), needle)
