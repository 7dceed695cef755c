"""`lrpaudit batch MANIFEST.yaml`: the shipped sample batch, --jobs, explicit runs, relative paths, errors."""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lrpaudit.config.manifest import load_manifest
from lrpaudit.reports.schema_check import validate_report
from lrpaudit.runner import execute, request_for
from tests.helpers.cli import run_cli
from tests.helpers.paths import REPO as REPO_ROOT

REPO = REPO_ROOT
SAMPLES = REPO / "sample_models"
MANIFEST = "sample_models/batch.yaml"
# (model, preset) of the shipped batch, in manifest order: model by model, each under every preset.
MODELS = ["digits_mlp.onnx", "digits_cnn.onnx", "digits_resnet.onnx", "digits_cnn.pt"]
PRESETS = ["conservative", "epsilon-plus-flat", "epsilon"]
PAIRS = [(model, preset) for model in MODELS for preset in PRESETS]


def invoke(args, cwd: Path = REPO):
    return run_cli("batch", *args, cwd=cwd)


@pytest.fixture(scope="module")
def sample_batch(tmp_path_factory):
    """The shipped sample batch, sequential, every report written; (result, report, folder)."""
    out = tmp_path_factory.mktemp("batch")
    result = invoke(
        [
            MANIFEST,
            "--json-report",
            out / "audit.json",
            "--junit-xml",
            out / "audit.xml",
            "--markdown",
            out / "audit.md",
        ]
    )
    report = json.loads((out / "audit.json").read_text())
    return result, report, out


def test_sample_batch_report_has_one_valid_run_per_combination(sample_batch):
    result, report, _ = sample_batch
    assert result.exit_code == 1, result.output  # epsilon-plus-flat and epsilon keep bias relevance
    validate_report(report)
    assert report["summary"]["runs"] == len(PAIRS) == 12
    assert report["summary"]["verdict"] == "fail"
    for run, (model, preset) in zip(report["runs"], PAIRS):
        assert run["model"]["path"] == f"sample_models/{model}"
        assert run["model"]["format"] == ("torchscript" if model.endswith(".pt") else "onnx")
        assert run["config"]["resolved"]["preset"] == preset
        assert run["verdict"] == ("pass" if preset == "conservative" else "fail")
        assert run["fidelity"]["passed"] is True
        assert len(run["samples"]) == 16
    assert report["batch"]["manifest"] == MANIFEST
    assert [(r["model"], r["config"]) for r in report["batch"]["runs"]] == PAIRS
    # The same CNN as ONNX and as TorchScript gives the same figures, node by node.
    onnx_runs = report["runs"][3:6]
    pt_runs = report["runs"][9:12]
    for a, b in zip(onnx_runs, pt_runs):
        assert [row["rel_error"] for row in a["layers"]] == pytest.approx(
            [row["rel_error"] for row in b["layers"]], rel=1e-6, abs=1e-12
        )


def test_sample_batch_streams_one_line_per_run_and_prints_the_summary_table(sample_batch):
    result, report, _ = sample_batch
    lines = result.stderr.splitlines()
    assert lines[0] == f"lrpaudit: {MANIFEST}: 12 runs"
    run_lines = [line for line in lines if re.match(r"lrpaudit: \[\d+/12\] ", line)]
    assert len(run_lines) == 12
    for k, (line, (model, preset)) in enumerate(zip(run_lines, PAIRS), start=1):
        verdict = "PASS" if preset == "conservative" else "FAIL"
        assert re.match(rf"lrpaudit: \[{k}/12\] {re.escape(model)} x {preset}: {verdict} \(\d+\.\d s\)", line)
    assert "worst features.4 rel_error 0.0867 (bias)" in run_lines[4]
    assert re.fullmatch(
        r"lrpaudit: sample_models/batch\.yaml: FAIL: 4/12 runs pass; worst digits_resnet\.onnx x epsilon: "
        r"layer1\.1\.conv1 rel_error 0\.81 \(in \d+\.\d s\)",
        lines[-1],
    )
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s*\d+\s+digits_", line)]
    assert [(row[1], row[2]) for row in rows] == PAIRS
    for row, run in zip(rows, report["runs"]):
        worst = max(run["layers"], key=lambda r: (r["verdict"] != "pass", r["rel_error"]))
        assert row[4] == worst["id"] and row[-1] == run["verdict"].upper()
        assert float(row[5]) == pytest.approx(worst["rel_error"], rel=5e-3)
        passing = sum(r["verdict"] == "pass" for r in run["layers"])
        assert row[3] == f"{passing}/{len(run['layers'])}"


def test_sample_batch_junit_and_markdown(sample_batch):
    _, report, out = sample_batch
    root = ET.parse(out / "audit.xml").getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 12
    assert (
        int(root.get("failures")) == sum(int(suite.get("failures")) for suite in suites)
        and int(root.get("failures")) > 0
    )
    markdown = (out / "audit.md").read_text()
    assert "digits_resnet.onnx" in markdown and "digits_cnn.pt" in markdown


def test_audit_results_pickle_without_tensors():
    """What a --jobs worker sends back: an AuditResult that pickles and keeps its numbers."""
    manifest = load_manifest(SAMPLES / "batch.yaml")
    run = manifest.runs[10]  # digits_cnn.pt x epsilon-plus-flat
    outcome = execute(run.index, request_for(run))
    assert outcome.error is None
    copy = pickle.loads(pickle.dumps(outcome))
    assert copy.result.layer_rows() == outcome.result.layer_rows()
    assert copy.result.verdict == "fail"
    assert "torch" not in {type(v).__module__.split(".")[0] for v in vars(copy.result).values()}


def _numbers(report: dict) -> list:
    """Every figure of every run (timings and the environment left out)."""
    return [{key: value for key, value in run.items() if key not in ("elapsed_s",)} for run in report["runs"]]


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and isinstance(b, float) and math.isfinite(a):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300)
    else:
        assert a == b


def test_jobs_2_gives_the_numbers_of_jobs_1_in_manifest_order(sample_batch):
    _, sequential, _ = sample_batch
    result = invoke([MANIFEST, "--jobs", "2", "--format", "json", "-q", "--exit-zero"])
    assert result.exit_code == 0, result.output  # --exit-zero: failing runs exit 0
    parallel = json.loads(result.stdout)
    validate_report(parallel)
    assert parallel["batch"] == sequential["batch"]
    _same(_numbers(parallel), _numbers(sequential))
    assert parallel["summary"] == sequential["summary"]
    # -q: no per-run lines, only the verdict
    assert result.stderr.splitlines()[-1].startswith(
        "lrpaudit: sample_models/batch.yaml: FAIL: 4/12 runs pass"
    )
    assert not re.search(r"\[\d+/12\]", result.stderr)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """models/ with the MLP and CNN, a config file in configs/, manifests go in jobs/."""
    (tmp_path / "models").mkdir()
    for name in ("digits_mlp.onnx", "digits_cnn.onnx", "digits_samples.npy", "digits_samples_flat.npy"):
        shutil.copy(SAMPLES / name, tmp_path / "models" / name)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "loose.yaml").write_text(
        "version: 1\nextends: epsilon-plus-flat\ntolerance:\n  layer_rtol: 0.5\n  end_to_end_rtol: 0.5\n"
    )
    (tmp_path / "jobs").mkdir()
    return tmp_path


def test_explicit_runs_with_paths_relative_to_the_manifest(workdir, tmp_path_factory):
    manifest = workdir / "jobs" / "audit.yaml"
    manifest.write_text(
        "version: 1\n"
        "models:\n"
        "  - {path: ../models/digits_mlp.onnx, inputs: ../models/digits_samples_flat.npy, name: mlp}\n"
        "  - {path: ../models/digits_cnn.onnx, random: 4, seed: 3, input_shape: [1, 1, 8, 8], name: cnn}\n"
        "  - {path: ../models/digits_cnn.onnx, inputs: ../models/digits_samples.npy, batch_size: 5}\n"
        "configs:\n"
        "  - {path: ../configs/loose.yaml, name: loose}\n"
        "  - preset: conservative\n"
        "runs:\n"
        "  - {model: cnn, config: conservative}\n"
        "  - {model: mlp, config: loose}\n"
        "  - {model: ../models/digits_cnn.onnx, config: loose}\n"
    )
    elsewhere = tmp_path_factory.mktemp("cwd")
    report_path = elsewhere / "report.json"
    result = invoke([manifest, "--json-report", report_path], cwd=elsewhere)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    validate_report(report)
    runs = report["runs"]
    assert [Path(run["model"]["path"]).name for run in runs] == [
        "digits_cnn.onnx",
        "digits_mlp.onnx",
        "digits_cnn.onnx",
    ]
    assert [len(run["samples"]) for run in runs] == [4, 16, 16]
    assert runs[0]["samples"][0]["source"].startswith("random")
    assert runs[0]["config"]["resolved"]["preset"] == "conservative"
    assert runs[1]["config"]["path"] == str(workdir / "jobs" / "../configs/loose.yaml")
    assert runs[1]["tolerance"]["layer_rtol"] == 0.5 and runs[1]["verdict"] == "pass"
    assert [(r["model"], r["config"]) for r in report["batch"]["runs"]] == [
        ("cnn", "conservative"),
        ("mlp", "loose"),
        ("../models/digits_cnn.onnx", "loose"),
    ]
    assert "[3 listed runs]" in result.stdout
    assert "lrpaudit: [2/3] mlp x loose: PASS" in result.stderr


def test_a_run_that_cannot_load_its_model_exits_2_and_writes_nothing(workdir):
    (workdir / "models" / "broken.onnx").write_bytes(b"not a model")
    manifest = workdir / "jobs" / "audit.yaml"
    manifest.write_text(
        "version: 1\n"
        "models:\n"
        "  - {path: ../models/broken.onnx, random: 2}\n"
        "  - {path: ../models/digits_mlp.onnx, inputs: ../models/digits_samples_flat.npy}\n"
        "configs:\n"
        "  - preset: conservative\n"
    )
    report_path = workdir / "report.json"
    result = invoke([manifest, "--json-report", report_path, "--format", "json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert not report_path.exists()
    assert re.search(
        r"\[1/2\] \.\./models/broken\.onnx x conservative: ERROR \(\d+\.\d s\): .*broken\.onnx", result.stderr
    )
    assert "[2/2] ../models/digits_mlp.onnx x conservative: PASS" in result.stderr  # the others still ran
    assert (
        "1 of 2 runs could not be audited ([1] ../models/broken.onnx x conservative); no report written"
        in (result.stderr)
    )
    assert "Traceback" not in result.output


GOOD_MODEL = "  - {path: ../models/digits_mlp.onnx, inputs: ../models/digits_samples_flat.npy}\n"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "version: 1\nmodels:\n  - path: ../models/digits_mlp.onnx\n    input: x.npy\n"
            "configs:\n  - preset: conservative\n",
            "4:5: models[0].input",
            "unknown key (did you mean 'inputs'?)",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\nrun:\n  - {{}}\n",
            "6:1: run",
            "unknown key (did you mean 'runs'?)",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}"
            "  - {path: ../models/missing.onnx, random: 2}\nconfigs:\n  - preset: conservative\n",
            "4:12: models[1].path",
            "no such model file: ",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: epsilon-plus-flt\n",
            "5:13: configs[0].preset",
            "unknown preset 'epsilon-plus-flt' (did you mean 'epsilon-plus-flat'?",
        ),
        (
            f"models:\n{GOOD_MODEL}configs:\n  - preset: conservative\n",
            "1:1: version",
            "missing required key (a manifest starts with 'version: 1')",
        ),
        (
            f"version: 2\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\n",
            "1:10: version",
            "unsupported version 2",
        ),
        (
            "version: 1\nmodels:\n  - {path: ../models/digits_mlp.onnx}\nconfigs:\n  - preset: conservative\n",
            "3:5: models[0]",
            "give either inputs: PATH or random: N",
        ),
        (
            "version: 1\nmodels:\n  - {path: ../models/digits_mlp.onnx, random: 0}\n"
            "configs:\n  - preset: conservative\n",
            "3:47: models[0].random",
            "must be >= 1",
        ),
        (
            "version: 1\nmodels:\n  - {path: ../models/digits_mlp.onnx, random: 2, shards: 0}\n"
            "configs:\n  - preset: conservative\n",
            "3:58: models[0].shards",
            "must be >= 1",
        ),
        (
            "version: 1\nmodels:\n  - {path: ../models/digits_mlp.onnx, random: 2, input_shape: [1, x]}\n"
            "configs:\n  - preset: conservative\n",
            "3:63: models[0].input_shape",
            "expected a list of positive integers",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}{GOOD_MODEL}configs:\n  - preset: conservative\n",
            "4:5: models[1]",
            "duplicate model id '../models/digits_mlp.onnx' (also models[0]; give one a distinct name:)",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - {{preset: conservative, path: x.yaml}}\n",
            "5:5: configs[0]",
            "give either preset: NAME or path: FILE",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\n"
            "runs:\n  - {model: ../models/digits_mlp.onnx, config: consrvative}\n",
            "7:48: runs[0].config",
            "unknown config id 'consrvative' (did you mean 'conservative'?)",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\nruns: []\n",
            "6:7: runs",
            "must not be empty",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs: conservative\n",
            "4:10: configs",
            "expected a list, got string 'conservative'",
        ),
        (
            f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\nconfigs: []\n",
            "6:1: configs",
            "duplicate key (first defined at line 4)",
        ),
    ],
)
def test_manifest_errors_exit_2_with_file_line_col(workdir, text, where, message):
    manifest = workdir / "jobs" / "bad.yaml"
    manifest.write_text(text)
    result = invoke([manifest.relative_to(workdir)], cwd=workdir)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"lrpaudit: error: jobs/bad.yaml:{where}: {message}"), result.stderr
    assert "Traceback" not in result.output


def test_a_broken_config_file_is_reported_at_its_own_line(workdir):
    (workdir / "configs" / "typo.yaml").write_text(
        "version: 1\nextends: conservative\ntolerance:\n  layer_rtl: 1\n"
    )
    manifest = workdir / "jobs" / "audit.yaml"
    manifest.write_text(f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - path: ../configs/typo.yaml\n")
    result = invoke([manifest])
    assert result.exit_code == 2
    assert (
        "configs/typo.yaml:4:3: tolerance.layer_rtl: unknown key (did you mean 'layer_rtol'?)"
        in result.stderr
    )


def test_missing_manifest_and_missing_report_folder_exit_2_before_any_audit(workdir):
    result = invoke([workdir / "nothere.yaml"])
    assert result.exit_code == 2 and "nothere.yaml: no such manifest file" in result.stderr
    manifest = workdir / "jobs" / "audit.yaml"
    manifest.write_text(f"version: 1\nmodels:\n{GOOD_MODEL}configs:\n  - preset: conservative\n")
    result = invoke([manifest, "--junit-xml", workdir / "no" / "such" / "audit.xml"])
    assert result.exit_code == 2 and "no such folder" in result.stderr
    assert "[1/1]" not in result.stderr
