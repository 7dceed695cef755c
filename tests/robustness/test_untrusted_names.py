"""Strings read from files are data: hostile node, input and output names, doc strings, paths and manifest ids
never drive the terminal or a CI log, never act as rich markup, Markdown or HTML, and stay exact in JSON.

Real files through the real CLI: an ONNX model whose node, input and output names and doc strings carry ESC/BEL
sequences, a newline plus a forged ``::error`` workflow command, rich markup (``[/x]`` used to crash the run
after the report was written), a bidi override, NUL, CR, U+2028, NEL (a YAML line break), an Azure ``##vso``
command and HTML, saved under a file name that holds a newline and an ESC; a traced TorchScript module whose
submodule names carry them; a config and a manifest whose paths and ids do. Every output is checked: the table,
hints, notes, warnings, progress and verdict lines, the GitHub annotations and job summary, JUnit, Markdown,
``inspect``'s IR table, ``init``'s starter config and ``batch``'s lines.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from lrpaudit.display import markdown, one_line, safe
from lrpaudit.reports.schema_check import validate_report
from tests.helpers.cli import run_cli

FC1 = "\x1b]0;pwned\x07fc1\n::error file=x,line=1::injected"
RELU = "[/x][bold]relu\u202e<script>alert(1)</script>"
FC2 = "fc2\x00\r##vso[task.setvariable variable=a]b\u2028:white_check_mark:\x85rules: [evil]"
INPUT = "in\x1b[31m[/x]\n::warning ::input"
LOGITS = "logits\n::error ::output"
PROBS = "probs[/x]\x07"
DOC = "\x1b]0;doc\x07\n::error ::doc string"
HOSTILE = (FC1, RELU, FC2, INPUT, LOGITS, PROBS)

# what must never reach an output: C0/C1 controls but the line feed, DEL, bidi and zero-width format characters,
# line and paragraph separators, NEL
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")
COMMAND = re.compile(
    r"^\s*(::[a-z-]+[ :]|##(vso)?\[)"
)  # GitHub workflow commands, ##[...] and Azure's ##vso[


def assert_neutral(text: str, annotations: bool = False, exact: bool = False) -> None:
    """No raw control/format character; no line that a CI runner reads as a command, except (with
    ``annotations``) lrpaudit's own ``::error``/``::notice`` lines, whose message holds no ``::``; and (unless
    ``exact``: JSON keeps the strings, inside quoted one-line values) no forged command anywhere."""
    found = RAW.search(text)
    assert found is None, (
        f"raw {found.group()!r} in output: {text[max(found.start() - 60, 0) : found.end() + 20]!r}"
    )
    for line in text.splitlines():
        if not COMMAND.match(line):
            continue
        assert annotations and re.match(r"^::(error|notice) [^:]*(%3A[^:]*)*::", line), line
        assert "::" not in line.split("::", 2)[2], line
    for forged in ("::error file=x", "::warning ::input", "::error ::output", "##vso[", "::error ::doc"):
        assert exact or forged not in text, forged


def hostile_onnx(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Gemm", [INPUT, "W1", "b1"], ["h"], transB=1, name=FC1, doc_string=DOC),
        helper.make_node("Relu", ["h"], ["r"], name=RELU, doc_string=DOC),
        helper.make_node("Gemm", ["r", "W2"], [LOGITS], transB=1, name=FC2),
        helper.make_node("Softmax", [LOGITS], [PROBS], name=PROBS, axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        DOC,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, 3], doc_string=DOC)],
        [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, [None, 2])],
        inits,
        doc_string=DOC,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, doc_string=DOC
    )
    model.producer_name = DOC
    inner = folder / "models\n::error ::dir"
    inner.mkdir()
    path = inner / "m\x1b[2J\u202e.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return hostile_onnx(tmp_path_factory.mktemp("hostile"))


def test_the_one_home_neutralises_every_member_of_the_class():
    for text in (*HOSTILE, DOC, "\udcff\U000f0001\ufffe\t\x7f\x9b"):
        shown = safe(text)
        assert shown.isprintable() and "::" not in shown and "##" not in shown, shown
        assert safe(shown) == shown  # idempotent: applying it twice never double-escapes
    assert one_line("aten::linear") == "aten::linear" and safe("aten::linear") == "aten:\\x3alinear"
    assert markdown("[x](http://e) <b>|*_`~&") == "\\[x\\](http\\://e) \\<b\\>\\|\\*\\_\\`\\~\\&"


def test_check_with_every_report_and_github_annotations(model, tmp_path):
    config = (
        tmp_path / "lrp\n::error ::cfg[bold].yaml"
    )  # a rule that matches nothing: a warning names the file
    config.write_text(
        "version: 1\nextends: epsilon\nrules:\n  - match: {name: 'nothing*'}\n    rule: zero\n",
        encoding="utf-8",
    )
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    reports = {name: tmp_path / name for name in ("a.json", "a.xml", "a.md")}
    result = run_cli(
        "check", model, "--random", "3", "-c", config, "--json-report", reports["a.json"],
        "--junit-xml", reports["a.xml"], "--markdown", reports["a.md"], "-v", env=env,
    )  # fmt: skip
    assert result.exit_code == 1, (
        result.output
    )  # a verdict, not a crash (rich markup in names used to exit 3)
    assert_neutral(result.stdout)
    assert_neutral(result.stderr, annotations=True)
    stderr = result.stderr.splitlines()
    assert all(line.startswith(("lrpaudit: ", "::error ", "::notice ")) for line in stderr), result.stderr
    assert any(line.startswith("::error ") for line in stderr)
    assert any(
        "matches no node" in line and "lrp\\n::error ::cfg" in line for line in stderr
    )  # mid-line: inert
    progress = [line for line in stderr if line.endswith("3/3 samples") or line.endswith("3 samples")]
    verdict = [line for line in stderr if ": FAIL: " in line]
    assert len(progress) == 1 and len(verdict) == 1  # the newline in the model path split neither line
    assert "models\\n:\\x3aerror :\\x3adir/m\\x1b[2J\\u202e.onnx" in verdict[0]
    # shown as written, never interpreted: rich would have swallowed "[bold]" and crashed on "[/x]"
    assert (
        "[/x][bold]relu\\u202e<scrip" in result.stdout
    )  # (the -v table may fold the rest onto the next line)
    assert "note: stripped trailing softmax" in result.stdout
    for name, path in reports.items():
        assert_neutral(path.read_text(encoding="utf-8"), exact=name.endswith(".json"))
    assert_neutral(summary.read_text(encoding="utf-8"))
    data = json.loads(reports["a.json"].read_text(encoding="utf-8"))
    validate_report(data)
    ids = {row["id"] for row in data["runs"][0]["layers"]}
    assert {FC1, RELU, FC2} <= ids  # JSON keeps the exact strings
    assert data["runs"][0]["model"]["path"] == str(model)
    root = ET.parse(reports["a.xml"]).getroot()
    names = [case.get("name") for case in root.iter("testcase")]
    assert any(name.startswith(safe(FC1)) for name in names), names
    md = reports["a.md"].read_text(encoding="utf-8")
    assert "`" + safe(RELU) + "`" in md  # ids in code spans, where HTML is text
    prose = re.sub(r"`[^`\n]*`", "", md)
    assert "<script>" not in prose and prose.count("<details>") == prose.count("</details>") == 1
    assert "[/x]" not in prose.replace("\\[/x\\]", "")  # Markdown link and markup characters escaped


def test_inspect_init_and_a_yaml_round_trip(model, tmp_path):
    shown = run_cli("inspect", model)
    assert shown.exit_code == 0, shown.output
    assert_neutral(shown.stdout)
    assert_neutral(shown.stderr)
    assert "aten" not in shown.stdout and "[/x][bold]relu" in shown.stdout.replace("\n", "")
    starter = run_cli("init", model, "-o", "-")
    assert starter.exit_code == 0, starter.output
    assert_neutral(starter.stdout, exact=True)  # the example glob is a quoted YAML value: exact
    # NEL and U+2028 are YAML line breaks: a node id in a comment must not write a key
    assert yaml.safe_load(starter.stdout) == {"version": 1, "extends": "epsilon-plus-flat", "rules": []}
    written = tmp_path / "lrp.yaml"
    assert run_cli("init", model, "-o", written).exit_code == 0
    again = run_cli("check", model, "--random", "2", "-c", written, "-q")
    assert again.exit_code in (0, 1), again.output


def test_batch_lines_and_table(model, tmp_path):
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(
        "version: 1\nmodels:\n"
        f"  - path: {json.dumps(str(model))}\n    random: 2\n    name: {json.dumps(FC1 + RELU)}\n"
        f"configs:\n  - preset: epsilon\n    name: {json.dumps(INPUT)}\n",
        encoding="utf-8",
    )
    result = run_cli("batch", manifest)
    assert result.exit_code == 1, result.output
    assert_neutral(result.stdout)
    assert_neutral(result.stderr)
    assert all(line.startswith("lrpaudit: ") for line in result.stderr.splitlines()), result.stderr
    assert "[/x][bold]relu" in result.stdout.replace("\n", "")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        # torch's own printer cannot reload every such name (a newline, a bidi character), so these are the ones
        # a TorchScript archive can carry
        self.add_module("\x1b]0;pwned\x07fc1 ::error ::x", nn.Linear(3, 4))
        self.add_module("[/x][bold]", nn.ReLU())
        self.add_module("fc2\x00##vso[x]", nn.Linear(4, 2))

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def test_torchscript_module_and_attribute_names(tmp_path):
    path = tmp_path / "tiny.pt"
    with torch.no_grad():
        torch.jit.trace(Tiny().eval(), torch.randn(1, 3)).save(str(path))
    report = tmp_path / "a.json"
    result = run_cli("check", path, "--random", "2", "-v", "--json-report", report)
    assert result.exit_code in (0, 1), result.output
    assert_neutral(result.stdout)
    assert_neutral(result.stderr)
    assert "[/x][bold]" in result.stdout
    ids = {row["id"] for row in json.loads(report.read_text(encoding="utf-8"))["runs"][0]["layers"]}
    assert "\x1b]0;pwned\x07fc1 ::error ::x" in ids and "fc2\x00##vso[x]" in ids
    shown = run_cli("inspect", path)
    assert shown.exit_code == 0, shown.output
    assert_neutral(shown.stdout)
    assert "aten::linear" in shown.stdout  # inside the framed IR table, op names stay as written


def test_an_error_naming_a_hostile_node_stays_one_line(tmp_path):
    model = hostile_onnx(tmp_path)
    broken = tmp_path / "broken.onnx"
    proto = __import__("onnx").load(str(model))
    proto.graph.node[1].op_type = "Neg"  # unsupported: the error names the node
    broken.write_bytes(proto.SerializeToString())
    result = run_cli("check", broken, "--random", "2")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrpaudit: error: ") and "Neg" in lines[0]
    assert_neutral(result.stderr)
