"""CLI: `lrpaudit presets`, `lrpaudit presets NAME`, `lrpaudit init MODEL`, and config errors through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lrpaudit.cli import main
from lrpaudit.config import list_presets, load_config, preset_path
from lrpaudit.frontends import load_model
from tests.helpers.config_models import SmallCNN
from tests.helpers.config_models import export_small as _export


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _export(SmallCNN(input_bn=True), tmp_path_factory.mktemp("cli_models") / "cnn.onnx")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_presets_lists_names_and_descriptions(runner):
    result = runner.invoke(main, ["presets"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(list_presets())
    for (name, description), line in zip(list_presets(), lines):
        assert line.startswith(name) and line.endswith(description)


def test_presets_shows_yaml(runner):
    result = runner.invoke(main, ["presets", "epsilon-plus-flat"])
    assert result.exit_code == 0
    assert result.stdout == preset_path("epsilon-plus-flat").read_text()


def test_presets_unknown_name(runner):
    result = runner.invoke(main, ["presets", "epsilon-plus-flt"])
    assert result.exit_code == 2
    assert "unknown preset 'epsilon-plus-flt' (did you mean 'epsilon-plus-flat'?" in result.stderr
    assert "Traceback" not in result.output


def test_init_writes_a_loadable_config(runner, model, tmp_path):
    out = tmp_path / "sub" / "lrp.yaml"
    result = runner.invoke(main, ["init", str(model), "-o", str(out), "--preset", "epsilon-gamma-box"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr and "5 linear-type nodes" in result.stderr
    text = out.read_text()
    assert "version: 1\nextends: epsilon-gamma-box" in text
    for node_id in ("bn0", "conv1", "conv2", "fc1", "fc2"):
        assert node_id in text
    assert "[1, 3, 16, 16] -> [1, 8, 16, 16]" in text and "zbox" in text and "position: first" in text
    assert "not counted by index/position" in text
    config = load_config(out)
    assert config.rules[0].origin.preset == "epsilon-gamma-box" and config.sources["dtype"] == "default"
    graph = load_model(model).graph({"x": (1, 3, 16, 16)})
    assignment = config.assign(graph)
    assert assignment.rules["conv1"].name == "zbox" and assignment.warnings == []
    assert not [p for p in out.parent.iterdir() if p.name != "lrp.yaml"]  # no temp files left behind


def test_init_refuses_to_overwrite(runner, model, tmp_path):
    out = tmp_path / "lrp.yaml"
    out.write_text("# mine\n")
    result = runner.invoke(main, ["init", str(model), "-o", str(out)])
    assert result.exit_code == 2
    assert "exists; not overwriting it (use --force)" in result.stderr
    assert out.read_text() == "# mine\n"
    result = runner.invoke(main, ["init", str(model), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert "extends: epsilon-plus-flat" in out.read_text()


def test_init_to_stdout_and_bad_arguments(runner, model, tmp_path):
    result = runner.invoke(main, ["init", str(model), "-o", "-", "--preset", "zero"])
    assert result.exit_code == 0 and result.stdout.startswith("# lrpaudit config for")
    assert "extends: zero" in result.stdout
    result = runner.invoke(main, ["init", str(model), "-o", str(tmp_path / "x.yaml"), "--preset", "nope"])
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.stderr
    assert not (tmp_path / "x.yaml").exists()
    result = runner.invoke(main, ["init", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "y.yaml")])
    assert result.exit_code == 2 and not (tmp_path / "y.yaml").exists()


@pytest.mark.skipif("check" not in main.commands, reason="the check command is not registered")
def test_bad_config_through_check_exits_2(runner, model, tmp_path):
    result = runner.invoke(main, ["check", str(model), "-c", str(tmp_path / "missing.yaml"), "--random", "1"])
    assert result.exit_code == 2, result.output
    assert "missing.yaml: no such config file" in result.stderr
    bad = tmp_path / "lrp.yaml"
    bad.write_text("version: 1\nrules:\n  - match: {op: conv}\n    rule: zplus\n    alpah: 2\n")
    result = runner.invoke(main, ["check", str(model), "-c", str(bad), "--random", "1"])
    assert result.exit_code == 2, result.output
    assert f"{bad}:5:5: rules[0].alpah: unknown key" in result.stderr
    assert "Traceback" not in result.output
