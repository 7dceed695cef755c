"""Report writers (JSON + schema, JUnit, Markdown, GitHub annotations, baseline) on real audits of real exports."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import torch
from torch import nn

import lrpaudit
from lrpaudit import Rule, Tolerance
from lrpaudit.errors import InputError, OutputError
from lrpaudit.reports import github
from lrpaudit.reports.baseline import compare, load_baseline
from lrpaudit.reports.json_report import build_report, to_json_text, write_json
from lrpaudit.reports.junit import build_junit, write_junit
from lrpaudit.reports.markdown import build_markdown, write_markdown
from lrpaudit.reports.schema_check import (
    SUPPORTED_KEYWORDS,
    ReportSchemaError,
    check_subset,
    load_schema,
    validate_report,
)
from lrpaudit.results import refinalize
from lrpaudit.verdicts import CATEGORIES
from tests.helpers.paths import REPO as REPO_ROOT
from tests.helpers.reference_models import export_onnx

ROW_KEYS = [
    "id",
    "op",
    "rule",
    "rule_source",
    "bias_mode",
    "r_received",
    "r_passed",
    "leak",
    "absorbed_bias",
    "absorbed_stabilizer",
    "absorbed_softmax",
    "degenerate",
    "residual",
    "rel_error",
    "rel_residual",
    "tolerance",
    "verdict",
]
SAMPLE_KEYS = ["index", "source", "target", "r_output", "r_input", "leak", "rel_error", "verdict", "layers"]


# ---------------------------------------------------------------- fixtures: real exports, real audits


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return torch.softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), -1)


def deep_mlp() -> nn.Module:
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for _ in range(12):
        layers += [nn.Linear(8, 8), nn.ReLU()]
    return nn.Sequential(nn.Linear(6, 8), *layers, nn.Linear(8, 3)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    cnn = export_onnx(SmallCNN().eval(), torch.randn(2, 1, 6, 6), folder / "cnn.onnx", dynamo=False, opset=17)
    mlp = export_onnx(deep_mlp(), torch.randn(2, 6), folder / "deep.onnx", dynamo=False, opset=17)
    return {"cnn": cnn, "deep": mlp}


@pytest.fixture(scope="module")
def failing(models):
    result = lrpaudit.audit(models["cnn"], Rule("epsilon"), random=4, batch_size=2)
    assert result.verdict == "fail"
    return result


@pytest.fixture(scope="module")
def passing(models):
    result = lrpaudit.audit(models["cnn"], Rule("zplus", bias="ignore"), random=4)
    assert result.verdict == "pass"
    return result


@pytest.fixture(scope="module")
def explained(models):
    """epsilon under the explained gate: the bias share is accounted for, so it passes."""
    result = lrpaudit.audit(models["cnn"], Rule("epsilon"), random=4, tolerance=Tolerance(gate="explained"))
    assert result.verdict == "pass"
    return result


@pytest.fixture(scope="module")
def deep(models):
    result = lrpaudit.audit(models["deep"], Rule("epsilon"), random=3)
    assert sum(row["verdict"] != "pass" for row in result.layer_rows()) > 10
    return result


@pytest.fixture(scope="module")
def end_to_end_only(models):
    """Every layer passes its own (loose) check but the end-to-end tolerance is tiny."""
    tol = Tolerance(layer_rtol=1e-2, end_to_end_rtol=1e-9)
    result = lrpaudit.audit(models["cnn"], Rule("zplus", bias="ignore"), random=2, tolerance=tol)
    assert all(row["verdict"] == "pass" for row in result.layer_rows()) and result.verdict == "fail"
    return result


@pytest.fixture(scope="module")
def explained_fail(models):
    """The explained gate with an absurd tolerance: rows fail on rel_residual (rounding), not on rel_error."""
    tol = Tolerance(gate="explained", layer_rtol=1e-30, end_to_end_rtol=1e-30)
    result = lrpaudit.audit(models["cnn"], Rule("epsilon"), random=2, tolerance=tol)
    assert any(row["verdict"] == "fail" for row in result.layer_rows())
    return result


def with_nan(result):
    """A copy whose first linear node has NaN/inf figures on sample 1 (what a zero denominator produces)."""
    layer_data = result.layer_data()
    meta, values = next((meta, values) for meta, values in layer_data if meta["op"] in ("conv", "linear"))
    for key in ("r_passed", "leak", "rel_error", "rel_residual"):
        values[key][1] = float("nan")
    values["residual"][1] = float("inf")
    samples = result.raw_samples()
    samples[1] = dataclasses.replace(samples[1], r_input=float("nan"), r_input_by_name={"x": float("nan")})
    return refinalize(result, layer_data, samples), meta["id"]


def with_meta(result, position: int, **meta):
    """A copy whose ``position``-th node has another description (id, rule_source, ...)."""
    layer_data = result.layer_data()
    layer_data[position][0].update(meta)
    return refinalize(result, layer_data)


def validate(report: dict) -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator(schema).validate(report)
    check_subset(report, schema)  # the runtime fallback validator agrees


# ---------------------------------------------------------------- JSON report and schema


def test_schema_is_valid_draft_2020_12_and_ships_as_package_data():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert resources.files("lrpaudit").joinpath("report.schema.json").is_file()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^lrpaudit = \[[^\]]*"\*\.json"', pyproject, re.M)  # [tool.setuptools.package-data]


def test_schema_uses_only_keywords_the_fallback_validator_knows():
    def keywords(node, inside_properties=False):
        if isinstance(node, dict):
            for key, value in node.items():
                if not inside_properties:
                    yield key
                yield from keywords(
                    value, inside_properties=key in ("properties", "$defs") and not inside_properties
                )
        elif isinstance(node, list):
            for item in node:
                yield from keywords(item)

    assert set(keywords(load_schema())) <= SUPPORTED_KEYWORDS


def test_report_of_failing_and_passing_runs_matches_design_and_schema(failing, passing):
    report = build_report([failing, passing])
    validate(report)
    json.loads(json.dumps(report, allow_nan=False))
    assert report["schema_version"] == "1.2"
    assert report["tool"] == {"name": "lrpaudit", "version": lrpaudit.__version__}
    env = report["environment"]
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"].startswith(torch.__version__[:3])
    assert env["device"] == "cpu" and env["dtype"] == "float64"
    run = report["runs"][0]
    assert run["model"]["path"] == failing.model_path and run["model"]["sha256"] == failing.model_sha256
    assert run["model"]["format"] == "onnx"
    assert run["config"] == {
        "path": None,
        "sha256": None,
        "resolved": None,
        "name": None,
        "label": "epsilon",
        "non_finite": False,
    }
    assert run["fidelity"]["reference"] == "onnxruntime" and run["fidelity"]["passed"] is True
    assert run["verdict"] == "fail" and report["runs"][1]["verdict"] == "pass"
    assert any("softmax" in note for note in run["notes"]) and run["rule_checks"] is None
    assert run["shard"] is None  # an audit of the whole input set (schema 1.2)
    for row in run["layers"]:
        assert set(ROW_KEYS) <= set(row) and row["non_finite"] is False
    assert [row["id"] for row in run["layers"]] == [layer.node_id for layer in failing.layers]
    for sample in run["samples"]:
        assert set(SAMPLE_KEYS) <= set(sample)
        assert set(sample["totals"]) == set(CATEGORIES)
        assert len(sample["layers"]) == len(failing.layers)
        for row in sample["layers"]:
            assert set(ROW_KEYS) <= set(row)
    # aggregated rows are the worst sample's figures
    conv = run["layers"][0]
    per_sample = [s["layers"][0]["rel_error"] for s in run["samples"]]
    assert conv["rel_error"] == max(per_sample) and conv["worst_sample"] == per_sample.index(max(per_sample))

    summary = report["summary"]
    failing_rows = [r for r in failing.layer_rows() if r["verdict"] != "pass"]
    assert summary["verdict"] == "fail" and summary["runs"] == 2 and summary["samples"] == 8
    assert summary["layer_checks"] == len(failing.layers) + len(passing.layers)
    assert summary["failures"] == len(failing_rows) == 2
    assert summary["sample_failures"] == 4
    worst = max(failing_rows, key=lambda r: r["rel_error"])
    assert summary["worst"]["run"] == 0 and summary["worst"]["layer"] == worst["id"]
    assert summary["worst"]["rel_error"] == worst["rel_error"]
    assert summary["worst"]["sample"] == worst["worst_sample"]

    only_pass = build_report([passing])
    validate(only_pass)
    assert only_pass["summary"]["verdict"] == "pass" and only_pass["summary"]["failures"] == 0


def test_config_environment_and_rule_checks_are_carried(models, failing):
    config = {"name": "mine", "path": "lrp.yaml", "sha256": "ab" * 32, "resolved": {"rules": []}}
    result = dataclasses.replace(failing, config=config)
    report = build_report([result], environment={"device": "cuda (test)"})
    validate(report)
    config = report["runs"][0]["config"]
    assert (config["path"], config["sha256"], config["resolved"], config["label"]) == (
        "lrp.yaml",
        "ab" * 32,
        {"rules": []},
        "mine",
    )
    assert report["environment"]["device"] == "cuda (test)"
    verified = lrpaudit.audit(models["cnn"], Rule("epsilon"), random=1, verify=True)
    checks = build_report([verified])["runs"][0]["rule_checks"]
    assert checks and {"node_id", "rule", "max_abs_dev", "rel_dev"} <= set(checks[0])


def test_empty_run_list_still_has_every_key():
    report = build_report([])
    validate(report)
    assert report["summary"]["worst"]["layer"] is None and report["summary"]["verdict"] == "pass"


def test_non_finite_numbers_become_null_with_marker(failing):
    broken, node = with_nan(failing)
    fidelity = dataclasses.replace(failing.fidelity, max_rel_diff=float("inf"))
    broken = dataclasses.replace(broken, fidelity=fidelity)
    report = build_report([broken])
    text = json.dumps(report, allow_nan=False)  # must not raise
    assert not re.search(r"[:\[,]\s*(NaN|-?Infinity)\b", text)  # no bare NaN/Infinity tokens
    validate(report)
    run = report["runs"][0]
    row = next(r for r in run["layers"] if r["id"] == node)
    assert row["verdict"] == "non_finite" and row["non_finite"] is True
    assert row["rel_error"] is None and row["residual"] is None and row["passing_tolerance"] is None
    assert all(r["non_finite"] is False for r in run["layers"] if r["id"] != node)
    sample = run["samples"][1]
    assert (
        sample["r_input"] is None
        and sample["r_input_by_name"] == {"x": None}
        and sample["non_finite"] is True
    )
    sample_row = next(r for r in sample["layers"] if r["id"] == node)
    assert sample_row["non_finite"] is True and sample_row["leak"] is None
    assert run["samples"][0]["non_finite"] is False
    assert run["fidelity"]["max_rel_diff"] is None and run["fidelity"]["non_finite"] is True
    worst = report["summary"]["worst"]
    assert worst["layer"] == node and worst["verdict"] == "non_finite" and worst["non_finite"] is True


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.pop("schema_version"),
        lambda r: r["environment"].pop("onnxruntime"),
        lambda r: r["runs"][0]["model"].pop("sha256"),
        lambda r: r["runs"][0]["config"].pop("resolved"),
        lambda r: r["runs"][0]["fidelity"].pop("passed"),
        lambda r: r["runs"][0]["layers"][0].pop("rel_residual"),
        lambda r: r["runs"][0]["samples"][0]["layers"][1].pop("verdict"),
        lambda r: r["runs"][0]["samples"][0].pop("r_input"),
        lambda r: r["summary"]["worst"].pop("rel_error"),
        lambda r: r["runs"][0]["layers"][0].update(verdict="maybe"),
        lambda r: r["runs"][0].update(verdict="non_finite"),
        lambda r: r["runs"][0]["layers"][0].update(rel_error="0.1"),
        lambda r: r.update(schema_version="2.0"),
        lambda r: r["tool"].update(name="other"),
    ],
)
def test_schema_rejects_broken_reports(failing, breakage):
    report = build_report([failing])
    breakage(report)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_schema()).validate(report)
    with pytest.raises(ReportSchemaError):
        check_subset(report, load_schema())
    with pytest.raises(ReportSchemaError):
        validate_report(report)


def test_validate_report_without_jsonschema_installed(failing, monkeypatch):
    report = build_report([failing])
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails: the fallback validator runs
    validate_report(report)
    del report["summary"]["worst"]
    with pytest.raises(ReportSchemaError, match=r"report\.summary: 'worst' is a required property"):
        validate_report(report)


def test_json_write_is_atomic(failing, tmp_path):
    report = build_report([failing])
    target = tmp_path / "audit.json"
    write_json(report, target)
    assert json.loads(target.read_text()) == report
    assert json.loads(to_json_text(report)) == report
    before = target.read_bytes()

    bad = copy.deepcopy(report)
    bad["runs"][0]["layers"][0]["rel_error"] = float("nan")  # a writer bug: NaN that escaped the scrub
    with pytest.raises(ValueError):
        write_json(bad, target)
    with pytest.raises(ValueError):
        write_json(bad, tmp_path / "new.json")
    bad["runs"][0]["layers"][0]["rel_error"] = object()
    with pytest.raises(TypeError):
        write_json(bad, tmp_path / "new.json")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.json"]  # no temp files, no half file

    with pytest.raises(OutputError, match="missing"):
        write_json(report, tmp_path / "missing" / "audit.json")


# ---------------------------------------------------------------- JUnit

# The Surefire/Jenkins schema (junit-10.xsd, which pytest validates its own output against), as a structural
# check: allowed attributes, required attributes, allowed children, and the SUREFIRE_TIME pattern.
JUNIT_10 = {
    "testsuites": ({"name", "time", "tests", "failures", "errors"}, set(), {"testsuite"}),
    "testsuite": (
        {"name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp", "hostname", "id"}
        | {"package", "file", "log", "url", "version"},
        {"name", "tests", "failures", "errors"},
        {"testsuite", "properties", "testcase", "system-out", "system-err"},
    ),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": (
        {"name", "time", "classname", "group"},
        {"name"},
        {"skipped", "errors", "failure", "system-out", "system-err"}
        | {"rerunFailure", "rerunError", "flakyFailure", "flakyError"},
    ),
    "failure": ({"type", "message"}, set(), set()),
    "skipped": ({"type", "message"}, set(), set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]{0,3})?")


def check_junit_10(element: ET.Element) -> None:
    allowed, required, children = JUNIT_10[element.tag]
    assert set(element.attrib) <= allowed, (element.tag, set(element.attrib) - allowed)
    assert required <= set(element.attrib), (element.tag, required - set(element.attrib))
    if "time" in element.attrib and element.tag in ("testsuite", "testsuites"):
        assert SUREFIRE_TIME.fullmatch(element.get("time")), element.get("time")
    for child in element:
        assert child.tag in children, (element.tag, child.tag)
        check_junit_10(child)


def check_counts(root: ET.Element) -> None:
    totals = {"tests": 0, "failures": 0, "errors": 0}
    pairs = set()
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        failures = sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == failures
        assert suite.get("errors") == "0" and suite.get("skipped") == "0"
        assert all(c.find("error") is None and c.find("skipped") is None for c in cases)
        for case in cases:
            pair = (case.get("classname"), case.get("name"))
            assert pair not in pairs, pair  # GitLab keeps only the first of duplicates
            pairs.add(pair)
        for key in totals:
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        assert int(root.get(key)) == value
    suite_time = sum(float(s.get("time")) for s in root.findall("testsuite"))
    assert abs(float(root.get("time")) - suite_time) < 0.01


def test_junit_structure_counts_and_numbers(failing, passing):
    text = build_junit([failing, passing])
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    check_junit_10(root)
    check_counts(root)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "lrpaudit: cnn.onnx [epsilon]",
        "lrpaudit: cnn.onnx [zplus bias=ignore]",
    ]
    layers, samples = len(failing.layers), len(failing.samples)
    assert int(suites[0].get("tests")) == layers + samples
    failing_rows = [r for r in failing.layer_rows() if r["verdict"] != "pass"]
    assert int(suites[0].get("failures")) == len(failing_rows) + samples
    assert suites[1].get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in suites[0].find("properties")}
    assert props["model_sha256"] == failing.model_sha256 and props["gate"] == "strict"

    cases = {c.get("name"): c for c in suites[0].findall("testcase")}
    for row in failing.layer_rows():
        case = cases[f"{row['id']} [{row['op']}/{row['rule']}]"]
        assert failing.model_path in case.get("classname")
        failure = case.find("failure")
        assert (failure is None) == (row["verdict"] == "pass")
        if failure is not None:
            assert failure.get("type") == "ConservationError"
            message = failure.get("message")
            assert f"rel_error {row['rel_error']:.3g} > tolerance {row['tolerance']:.3g}" in message
            assert "bias" in message and row["hint"] in message and row["hint"] in failure.text
            assert f"{row['rel_error']:.6g}" in failure.text and "absorbed_bias" in failure.text
    for sample in failing.samples:
        case = cases[f"end-to-end sample {sample.index} ({sample.source})"]
        assert case.find("failure") is not None and f"{sample.rel_error:.3g}" in case.find("failure").get(
            "message"
        )
    assert "softmax" in suites[0].find("system-out").text


def test_junit_end_to_end_only_failure_and_hostile_ids(end_to_end_only, tmp_path):
    odd = with_meta(end_to_end_only, 0, id='a<b>&"c\x01 ]]>')
    path = write_junit([odd, end_to_end_only], tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    check_junit_10(root)
    check_counts(root)
    suite = root.findall("testsuite")[0]
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names[0].startswith('a<b>&"c\\x01 ]]>')  # the control character shown as its escape
    sample_failures = [c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert sample_failures and all(f.get("type") == "EndToEndConservation" for f in sample_failures)
    # the same model in two runs: classnames carry the run label so (classname, name) stays unique
    assert len({c.get("classname") for c in root.iter("testcase")}) == 2


def test_junit_marks_unexplained_and_non_finite(failing):
    broken, node = with_nan(failing)
    root = ET.fromstring(build_junit([broken]))
    check_counts(root)
    case = next(c for c in root.iter("testcase") if c.get("name").startswith(node))
    assert case.find("failure").get("type") == "NonFiniteRelevance"


# ---------------------------------------------------------------- Markdown


def test_markdown_header_tables_details_notes(failing, passing, tmp_path):
    text = build_markdown([failing])
    lines = text.splitlines()
    assert lines[0] == "## lrpaudit: FAIL — 2 of 4 layer checks failed, 4 of 4 samples failed end to end"
    assert "forward fidelity vs onnxruntime" in text and "stripped trailing softmax" in text
    assert text.count("<details>") == text.count("</details>") == 1 and "<summary>" in text
    worst_header = lines.index("### Failing layers, worst first")
    table = [line for line in lines[worst_header + 2 :] if line.startswith("| ")][:3]
    assert table[0].startswith("| verdict |")
    ids = [re.search(r"`([^`]+)`", line).group(1) for line in table[1:]]
    rows = sorted((r for r in failing.layer_rows() if r["verdict"] != "pass"), key=lambda r: -r["rel_error"])
    assert ids == [r["id"] for r in rows]
    assert "bias absorbs" in text

    ok = build_markdown([passing])
    assert ok.splitlines()[0] == "## lrpaudit: PASS — all 4 layer checks passed on 4 samples"
    assert "❌" not in ok

    both = write_markdown([failing, passing], tmp_path / "summary.md")
    assert (tmp_path / "summary.md").read_text() == both
    assert both.splitlines()[0].endswith("(2 runs)") and both.count("<details>") == 2
    assert both.count("stripped trailing softmax") == 1  # the same note of the same model once


def test_markdown_caps_the_worst_table_and_escapes_cells(deep):
    odd = with_meta(deep, 1, id="fc|1\nx")
    text = build_markdown([odd], worst=5)
    section = text.split("### Failing layers, worst first")[1].split("<details>")[0]
    assert (
        len([line for line in section.splitlines() if line.startswith("| ") and "verdict" not in line]) == 5
    )
    assert "more failing rows" in section
    assert "`fc\\|1\\nx`" in text  # the newline shown as its escape: the row stays one line


# ---------------------------------------------------------------- GitHub


def test_escaping_follows_actions_toolkit():
    assert github.escape_data("50% a\r\nb: c, d") == "50%25 a%0D%0Ab: c, d"
    assert github.escape_property("50% a\r\nb: c, d") == "50%25 a%0D%0Ab%3A c%2C d"


def test_annotations_worst_first_capped_and_escaped(deep, failing):
    lines = github.annotations([failing, deep], limit=10, env={})
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 10
    total = sum(r["verdict"] != "pass" for res in (failing, deep) for r in res.layer_rows())
    assert lines[-1].startswith("::notice ") and f"{total - 10} more failing checks" in lines[-1]
    for line in errors:
        props, message = line[len("::error ") :].split("::", 1)
        assert "\n" not in line and "\r" not in line
        assert props.count("title=lrpaudit%3A conservation") == 1
        assert re.fullmatch(r"file=[^,]+,title=[^,:]+", props)
        assert "%" not in message.replace("%25", "").replace("%0A", "").replace("%0D", "")
    figures = [float(re.search(r"rel_error ([0-9.e+-]+) >", line).group(1)) for line in errors]
    assert figures == sorted(figures, reverse=True)
    worst = max((r for res in (failing, deep) for r in res.layer_rows()), key=lambda r: r["rel_error"])
    assert errors[0].split("::")[2].startswith(f"{worst['id']} (linear, epsilon): rel_error ")
    assert "bias absorbs" in errors[0] and "%25" in errors[0]
    capped = github.annotations([deep], limit=3, env={})
    assert [x.startswith("::error") for x in capped] == [True, True, True, False]


def test_annotation_anchors_to_config_line_and_workspace(failing, tmp_path):
    anchored = with_meta(failing, 0, rule_source="configs/lrp.yaml:12:5")
    workspace = Path(anchored.model_path).parent
    lines = github.annotations([anchored], env={"GITHUB_WORKSPACE": str(workspace)})
    by_node = {line.split("::")[2].split(" (")[0]: line for line in lines}
    conv, gemm = (by_node[layer.node_id] for layer in anchored.layers if layer.op in ("conv", "linear"))
    assert conv.startswith("::error file=configs/lrp.yaml,line=12,col=5,title=")
    assert gemm.startswith("::error file=cnn.onnx,title=")  # relative to the workspace
    assert conv.endswith(f"; {anchored.model_path})") and gemm.endswith("samples fail)")


def test_annotations_for_end_to_end_only_failures_and_pass(end_to_end_only, passing):
    lines = github.annotations([end_to_end_only], env={})
    assert len(lines) == 2 and all("title=lrpaudit%3A end-to-end conservation" in line for line in lines)
    assert "sample 0" in lines[0]
    assert github.annotations([passing], env={}) == []


def test_step_summary_appends_only_when_set(tmp_path, passing):
    target = tmp_path / "summary.md"
    md = build_markdown([passing])
    assert github.append_step_summary(md, env={}) is False
    assert github.append_step_summary(md, env={"GITHUB_STEP_SUMMARY": str(target)}) is True
    assert github.append_step_summary("second", env={"GITHUB_STEP_SUMMARY": str(target)}) is True
    assert target.read_text() == md + "second\n"
    big = "<details>\n" + ("| row |\n" * 300_000)
    github.append_step_summary(big, env={"GITHUB_STEP_SUMMARY": str(tmp_path / "big.md")})
    written = (tmp_path / "big.md").read_text()
    assert len(written.encode()) < 1024 * 1024 and "truncated" in written and "</details>" in written
    assert github.in_github_actions({"GITHUB_ACTIONS": "true"}) and not github.in_github_actions({})


# ---------------------------------------------------------------- baseline


def test_baseline_identical_report_has_no_regressions(failing, tmp_path):
    report = build_report([failing])
    path = write_json(report, tmp_path / "base.json")
    result = compare(report, path)
    assert not result.failed and result.regressions == [] and result.improvements == []
    assert result.compared == len(failing.layers) + len(failing.samples)
    assert result.new_layers == [] and result.vanished_layers == []
    assert result.describe()[0].startswith("0 regressions, 0 improvements, 0 new layers, 0 vanished layers")


def test_baseline_pass_to_fail_is_a_regression(failing, passing):
    now, before = build_report([failing]), build_report([passing])
    for report in (now, before):  # same model, same config name: the runs pair up
        report["runs"][0]["config"]["name"] = "lrp"
    result = compare(now, before)
    assert result.failed
    failing_ids = {r["id"] for r in failing.layer_rows() if r["verdict"] != "pass"}
    assert {c.item for c in result.regressions} == failing_ids  # samples follow the layers: not repeated
    change = result.regressions[0]
    assert change.old_verdict == "pass" and change.new_verdict == "fail" and change.new > change.old
    assert "verdict pass -> fail" in change.reason
    assert any(line.startswith("regression: ") for line in result.describe())
    json.dumps(result.as_dict(), allow_nan=False)

    back = compare(before, now)
    assert not back.failed and {c.item for c in back.improvements} == failing_ids


def _row_report(failing, old: float | None, new: float | None, dtype="float64"):
    base = build_report([failing])
    now = copy.deepcopy(base)
    for report, value in ((base, old), (now, new)):
        report["runs"][0]["dtype"] = dtype
        row = report["runs"][0]["layers"][0]
        row.update(rel_error=value, verdict="fail", non_finite=value is None)
        for sample in report["runs"][0]["samples"]:
            sample["rel_error"] = 0.5
    return now, base


@pytest.mark.parametrize(
    ("old", "new", "dtype", "regressed"),
    [
        (1e-3, 1.4e-3, "float64", False),  # within 1.5x
        (1e-3, 1.6e-3, "float64", True),  # beyond 1.5x
        (0.0, 9e-7, "float64", False),  # below the absolute floor
        (0.0, 2e-6, "float64", True),
        (0.0, 9e-6, "float32", False),  # float32's floor is 1e-5
        (1e-3, None, "float64", True),  # finite -> non-finite
        (None, None, "float64", False),
        (None, 1e-3, "float64", False),
    ],
)
def test_baseline_margin_rule(failing, old, new, dtype, regressed):
    now, base = _row_report(failing, old, new, dtype)
    result = compare(now, base)
    assert result.failed is regressed
    if regressed:
        assert [c.item for c in result.regressions] == [failing.layers[0].node_id]


def test_baseline_margin_and_floor_are_parameters(failing):
    now, base = _row_report(failing, 1e-3, 1.4e-3)
    assert compare(now, base, margin=0.2).failed
    now, base = _row_report(failing, 0.0, 2e-6)
    assert not compare(now, base, floor=1e-5).failed


def test_baseline_new_and_vanished_layers_do_not_fail(failing, tmp_path):
    now = build_report([failing])
    base = copy.deepcopy(now)
    base["runs"][0]["layers"][0]["id"] = "old_conv"
    base["runs"][0]["model"]["path"] = "/elsewhere/checkout/cnn.onnx"  # paired by file name
    result = compare(now, base)
    assert not result.failed
    assert [ref.layer for ref in result.new_layers] == [failing.layers[0].node_id]
    assert [ref.layer for ref in result.vanished_layers] == ["old_conv"]
    assert result.new_runs == [] and result.vanished_runs == []
    assert any(line.startswith("new layer: ") for line in result.describe())

    other = copy.deepcopy(now)
    other["runs"][0]["model"]["path"] = "other.onnx"
    unmatched = compare(now, other)
    assert not unmatched.failed and unmatched.compared == 0
    assert unmatched.new_runs and unmatched.vanished_runs


def test_baseline_run_verdict_regression_without_row_change(failing, passing):
    base = build_report([passing])
    now = copy.deepcopy(base)
    now["runs"][0]["verdict"] = "fail"
    result = compare(now, base)
    assert result.failed and [c.kind for c in result.regressions] == ["run"]


def test_baseline_explained_gate_compares_rel_residual(explained):
    base = build_report([explained])
    now = copy.deepcopy(base)
    row = now["runs"][0]["layers"][0]
    row["rel_error"] *= 100  # not the gated figure
    assert not compare(now, base).failed
    row["rel_residual"] = 1e-3
    result = compare(now, base)
    assert result.failed and result.regressions[0].metric == "rel_residual"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"schema_version": "1.0"}', "not a valid lrpaudit report"),
        ('{"schema_version": "7.0", "runs": []}', "schema version 7.0"),
    ],
)
def test_bad_baseline_files_are_input_errors_naming_the_file(tmp_path, content, words):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(InputError, match=words) as info:
        load_baseline(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError):
        compare({"runs": []}, path)


def test_baseline_with_a_missing_required_key_is_rejected(failing, tmp_path):
    report = build_report([failing])
    del report["runs"][0]["layers"][0]["rel_error"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(report))
    with pytest.raises(InputError, match=r"old\.json.*rel_error"):
        load_baseline(path)
    with pytest.raises(InputError, match="no such file"):
        load_baseline(tmp_path / "absent.json")


def test_writers_use_the_gated_figure_under_the_explained_gate(explained_fail):
    rows = [r for r in explained_fail.layer_rows() if r["verdict"] == "fail"]
    by_residual = max(rows, key=lambda r: r["rel_residual"])
    report = build_report([explained_fail])
    validate(report)
    assert report["runs"][0]["tolerance"]["gate"] == "explained"
    assert report["summary"]["worst"]["layer"] == by_residual["id"]
    lines = github.annotations([explained_fail], env={})
    assert lines[0].split("::")[2].startswith(f"{by_residual['id']} (")
    assert all(
        "rel_residual" in line for line in lines if line.startswith("::error") and "sample" not in line
    )
    assert f"rel_residual {by_residual['rel_residual']:.3g}" in build_markdown([explained_fail])
    failure = ET.fromstring(build_junit([explained_fail])).find(".//failure")
    assert failure.get("message").startswith("rel_residual ")
