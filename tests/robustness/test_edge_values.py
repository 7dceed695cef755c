"""Edge values are never an internal error (exit 3): each is one ``lrpaudit: error:`` line (exit 2), or it works.

The class: negative and huge numbers (``--seed -1``, a manifest ``seed: -1``, a 5,000-digit integer in a config
or a baseline, huge targets and batch sizes), names at the limits (a report file name of 255 and of 300 bytes, a
path longer than PATH_MAX, undecodable bytes in a model's file name), deep structures (a baseline nested 100,000
deep), and names that collide with what lrpaudit writes (graph inputs called ``targets``, ``output_relevance``,
``file``, ``allow_pickle`` with ``--save-relevance``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.onnx_builders import make_model
from tests.helpers.robustness import assert_one_line_error, check, invoke, mlp, no_traceback, node, write


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write(mlp(), tmp_path_factory.mktemp("edges") / "mlp.onnx")


def test_a_negative_seed(model, tmp_path):
    for command in ("check", "inspect"):
        args = (command, model, "--seed", "-1") + (("--random", "2") if command == "check" else ())
        assert_one_line_error(invoke(*args), "seed -1", ">= 0")
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(
        f"version: 1\nmodels:\n  - {{path: {model}, random: 2, seed: -1}}\n  - {{path: {model}, random: 2, "
        "name: second}\nconfigs:\n  - preset: epsilon\n"
    )
    line = assert_one_line_error(invoke("batch", manifest), f"{manifest}:3:", "models[0].seed", ">= 0")
    assert "runs" not in line  # refused while the manifest is checked: no run started, none skipped


def test_huge_numbers(model, tmp_path):
    digits = "9" * 5000
    huge = "9" * 40
    result = check(model, "--random", "2", "--seed", huge, "-q")
    assert result.exit_code in (0, 1), result.output  # any non-negative seed is a seed
    assert_one_line_error(check(model, "--random", "2", "--target", huge), "out of range")
    assert check(model, "--random", "2", "--batch-size", huge, "-q").exit_code in (0, 1)
    for flag in ("--seed", "--target", "--batch-size", "--random"):  # more digits than Python converts
        result = check(model, "--random", "2", flag, digits)
        no_traceback(result)
        assert result.exit_code == 2, result.output
    config = tmp_path / "lrp.yaml"
    config.write_text(f"version: 1\nextends: epsilon\ntarget: {digits}\n")
    assert_one_line_error(
        check(model, "--random", "2", "-c", config), f"{config}:3:9", "integer out of range"
    )
    baseline = tmp_path / "old.json"
    baseline.write_text('{"schema_version": ' + digits + "}")
    assert_one_line_error(check(model, "--random", "2", "--baseline", baseline), f"baseline {baseline}")


def test_a_baseline_nested_100000_deep(model, tmp_path):
    for opening, closing in (("[", "]"), ('{"a":', "}")):
        baseline = tmp_path / "deep.json"
        baseline.write_text(opening * 100_000 + "1" + closing * 100_000)
        assert_one_line_error(check(model, "--random", "2", "--baseline", baseline), "nested too deeply")
    baseline.write_text("[" * 100 + "]" * 100)  # parses, but nests deeper than any report
    assert_one_line_error(check(model, "--random", "2", "--baseline", baseline), "nested over 64 levels")


def test_report_file_names_at_the_limit(model, tmp_path):
    longest = tmp_path / ("r" * 250 + ".json")  # 255 bytes: a valid name, and lrpaudit's temp name still fits
    result = check(model, "--random", "2", "--json-report", longest, "-q")
    assert result.exit_code in (0, 1), result.output
    assert json.loads(longest.read_text())["schema_version"]
    for flag in ("--json-report", "--junit-xml", "--markdown", "--save-relevance"):
        too_long = tmp_path / ("r" * 300 + ".json")
        line = assert_one_line_error(check(model, "--random", "2", flag, too_long), "cannot write")
        assert "longer than 255 bytes" in line or "too long" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [longest.name]


def test_paths_longer_than_path_max(model, tmp_path):
    deep = "/".join(["d" * 200] * 30) + "/x"  # over 4096 bytes
    for flag in ("model", "--inputs", "-c", "--baseline", "--json-report"):
        path = tmp_path / (deep + (".onnx" if flag == "model" else ".yaml"))
        args = (path, "--random", "2") if flag == "model" else (model, "--random", "2", flag, path)
        if flag == "--inputs":
            args = (model, "--inputs", path)
        result = check(*args)
        no_traceback(result)
        assert result.exit_code == 2, result.output


def test_a_model_file_name_that_is_not_utf8(model, tmp_path):
    raw = os.fsencode(tmp_path) + b"/m\xff\xfe.onnx"
    with open(raw, "wb") as out:
        out.write(Path(model).read_bytes())
    path = os.fsdecode(raw)  # surrogate escapes, as Python receives such a name in argv
    report = tmp_path / "a.json"
    result = check(path, "--random", "2", "--json-report", report, "--markdown", tmp_path / "a.md")
    no_traceback(result)
    assert result.exit_code in (0, 1), result.output
    assert "m\\udcff\\udcfe.onnx" in result.stderr  # shown as escapes
    assert json.loads(report.read_text())["runs"][0]["model"]["path"] == path  # exact in JSON


@pytest.mark.parametrize("name", ["targets", "output_relevance"])
def test_a_graph_input_named_like_a_reserved_relevance_key(tmp_path, name):
    path = write(
        make_model([node("Relu", [name], ["y"], name="relu")], {name: [None, 3]}, ["y"], 17),
        tmp_path / "m.onnx",
    )
    maps = tmp_path / "maps.npz"
    line = assert_one_line_error(
        check(path, "--random", "2", "--save-relevance", maps), f"graph input {name!r}"
    )
    assert "reserve" in line and not maps.exists()
    result = check(
        path, "--random", "2", "-q", "--allow-empty"
    )  # without --save-relevance the name is harmless
    assert result.exit_code in (0, 1), result.output


def test_graph_inputs_named_like_np_savez_arguments_are_saved(tmp_path):
    nodes = [node("Add", ["file", "allow_pickle"], ["y"], name="add")]
    path = write(
        make_model(nodes, {"file": [None, 3], "allow_pickle": [None, 3]}, ["y"], 17), tmp_path / "m.onnx"
    )
    maps = tmp_path / "maps.npz"
    result = check(path, "--random", "2", "--save-relevance", maps, "-q")
    assert result.exit_code in (0, 1), result.output
    with np.load(maps, allow_pickle=False) as data:
        assert sorted(data.files) == ["allow_pickle", "file", "output_relevance", "targets"]
        assert data["file"].shape == (2, 3)
