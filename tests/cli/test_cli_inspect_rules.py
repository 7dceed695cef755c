"""`lrpaudit inspect -c/--preset`: each node shows its rule and the config line that chose it (DESIGN section 8)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from lrpaudit.cli import main
from tests.helpers.paths import REPO as REPO_ROOT

CNN = REPO_ROOT / "sample_models" / "digits_cnn.onnx"


def _row(output: str, node_id: str) -> str:
    return next(line for line in output.splitlines() if node_id in line)


def test_inspect_with_preset_shows_rule_and_source():
    result = CliRunner().invoke(
        main, ["inspect", str(CNN), "--preset", "epsilon-gamma-box"], terminal_width=240
    )
    assert result.exit_code == 0, result.output
    assert "zbox" in _row(result.stdout, "features.0")
    assert "gamma" in _row(result.stdout, "features.4")
    assert "preset epsilon-gamma-box" in _row(result.stdout, "features.4")
    assert "default" in _row(result.stdout, "features.3")


def test_inspect_with_config_names_the_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path keeps the "chosen by" cell on one line
    config = Path("lrp.yaml")
    config.write_text(
        textwrap.dedent(
            """\
            version: 1
            extends: epsilon
            rules:
              - match: {node_name: "/classifier/classifier.3/Gemm"}
                rule: zplus
                bias: ignore
            """
        )
    )
    result = CliRunner().invoke(main, ["inspect", str(CNN), "-c", str(config)], terminal_width=240)
    assert result.exit_code == 0, result.output
    row = _row(result.stdout, "classifier.3")
    assert "zplus bias=ignore" in row and "lrp.yaml:4" in row
    assert "epsilon" in _row(result.stdout, "classifier.1")


def test_inspect_rejects_config_and_preset_together(tmp_path):
    config = tmp_path / "lrp.yaml"
    config.write_text("version: 1\nextends: epsilon\n")
    result = CliRunner().invoke(main, ["inspect", str(CNN), "-c", str(config), "--preset", "zero"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_rules_lists_the_transformer_rules_with_their_ops_and_leaks():
    from tests.helpers.cli import run_cli

    result = run_cli("rules")
    assert result.exit_code == 0, result.output
    entries: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            name = line
            entries[name] = []
        else:
            entries[name].append(line.strip())
    expected_ops = {
        "norm_identity": "layernorm, groupnorm",
        "taylor": "softmax",
        "uniform": "matmul, einsum, mul",
        "constant_factor": "matmul, einsum, mul",
    }
    for rule, ops in expected_ops.items():
        assert f"ops:        {ops}" in entries[rule], entries.get(rule)
    assert any("absorbed_softmax" in line for line in entries["taylor"])
    assert "bias modes: absorb, ignore, distribute" in entries["norm_identity"]
    assert any("where" in line for line in entries["route"])
