"""Configs that are valid YAML but wrong for the model, or odd: warnings, missing rules, tolerances, edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    no_traceback,
)


def _config(folder: Path, text: str) -> Path:
    path = folder / "lrp.yaml"
    path.write_text(text)
    return path


def test_a_rule_that_matches_no_node_warns_and_runs(files, tmp_path):
    config = _config(
        tmp_path, "version: 1\nextends: epsilon\nrules:\n  - match: {name: 'nothing*'}\n    rule: zero\n"
    )
    result = check(files.onnx, "--random", "2", "-c", config, "-q")
    no_traceback(result)
    assert result.exit_code in (0, 1)
    assert "lrpaudit: warning:" in result.stderr and "matches no node" in result.stderr
    assert f"{config}:4" in result.stderr


def test_a_linear_node_without_a_rule_lists_the_node_ids(files, tmp_path):
    config = _config(tmp_path, "version: 1\nrules:\n  - match: {name: fc1}\n    rule: zero\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", config), str(config), "'fc2' (linear)")


@pytest.mark.parametrize(
    "body,key",
    [
        ("tolerance:\n  layer_rtol: 0\n", "tolerance.layer_rtol: must be > 0"),
        ("tolerance:\n  end_to_end_rtol: -1.0e-3\n", "tolerance.end_to_end_rtol: must be > 0"),
        (
            "tolerance:\n  overrides:\n    - match: {name: fc1}\n      layer_rtol: 0\n",
            "overrides[0].layer_rtol",
        ),
    ],
)
def test_tolerance_must_be_positive(files, tmp_path, body, key):
    config = _config(tmp_path, "version: 1\nextends: epsilon\n" + body)
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", config), str(config), key)


def test_config_edge_cases(files, tmp_path):
    deep = _config(tmp_path, "version: 1\nrules: " + "[" * 2000 + "]" * 2000 + "\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", deep), "nested too deeply")
    huge_target = _config(tmp_path, "version: 1\nextends: epsilon\ntarget: 99999999999999999999999\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", huge_target), "out of range")
    not_yaml = tmp_path / "passwd"
    not_yaml.write_text("root:x:0:0:root:/root:/bin/bash " * 40)
    wrapper = _config(tmp_path, f"version: 1\nextends: {not_yaml}\n")
    line = assert_one_line_error(check(files.onnx, "--random", "2", "-c", wrapper), str(not_yaml))
    assert (
        len(line) < 300 and "root:x" not in line
    )  # a foreign file is never quoted (an absolute path: refused)
    zbox = _config(
        tmp_path,
        "version: 1\nrules:\n  - match: {op: linear}\n    rule: zbox\n    low: [1, 2]\n    high: [3, 4]\n",
    )
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", zbox), "node 'fc", "zbox bounds")
    python_tag = _config(
        tmp_path, f"version: 1\nrules: !!python/object/apply:os.system ['touch {tmp_path}/X']\n"
    )
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", python_tag), str(python_tag))
    assert not (tmp_path / "X").exists()
