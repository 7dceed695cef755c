"""``lrpaudit check`` through click's CliRunner: every flag family, exit code and output format (DESIGN 8-9).

The shipped sample models (8x8 digits) and a small biased CNN with average pooling exported here keep each run
well under a second. Exit codes: 0 pass, 1 conservation failure or baseline regression, 2 usage/config/model/
input error, 3 internal error.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrpaudit.reports.schema_check import validate_report
from tests.helpers.cli import assert_clean_error, assert_one_line_error, run_cli, words
from tests.helpers.paths import REPO as REPO_ROOT
from tests.helpers.reference_models import export_onnx

ROOT = REPO_ROOT
SAMPLES = ROOT / "sample_models"
CNN_ONNX = SAMPLES / "digits_cnn.onnx"
CNN_PT = SAMPLES / "digits_cnn.pt"
MLP_ONNX = SAMPLES / "digits_mlp.onnx"
RESNET_ONNX = SAMPLES / "digits_resnet.onnx"
IMAGES = SAMPLES / "digits_samples.npy"  # (16, 1, 8, 8)
FLAT = SAMPLES / "digits_samples_flat.npy"  # (16, 64)
ACCOUNTING_HEADERS = (
    "r_received",
    "r_passed",
    "leak",
    "bias share",
    "stab share",
    "degenerate",
    "residual",
    "rel_error",
    "rel_resid",
    "tol",
)


class BiasedAvgCNN(nn.Module):
    """conv+relu+avgpool, conv+relu+avgpool, linear+relu+linear on 1x8x8 inputs; every layer has a sizable bias."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.fc2 = nn.Linear(8 * 2 * 2, 16), nn.Linear(16, 10)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
                layer.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture(scope="module")
def avg_cnn(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("check_models")
    return export_onnx(BiasedAvgCNN().eval(), torch.randn(2, 1, 8, 8), folder / "avg_cnn.onnx", False, 17)


def invoke(*args, env: dict | None = None):
    """Run ``lrpaudit check ARGS``; never inherits a CI's GITHUB_ACTIONS / GITHUB_STEP_SUMMARY."""
    return run_cli("check", *args, env=env)


def report_of(result) -> dict:
    """The JSON report on stdout (``--format json``), validated against the shipped schema."""
    report = json.loads(result.stdout)
    validate_report(report)
    return report


def sample_figures(report: dict, run: int = 0) -> list[tuple]:
    return [
        (s["index"], s["source"], s["target"], s["r_output"], s["r_input"], s["rel_error"])
        for s in report["runs"][run]["samples"]
    ]


# ------------------------------------------------------------------------------------------ formats


def test_format_json_stdout_is_only_a_valid_report(tmp_path):
    result = invoke(CNN_ONNX, "--preset", "epsilon-plus-flat", "--inputs", IMAGES, "--format", "json")
    assert result.exit_code == 1, result.output
    assert result.stdout.lstrip().startswith("{") and result.stdout.rstrip().endswith("}")
    report = report_of(result)
    assert report["summary"]["verdict"] == "fail" and report["summary"]["runs"] == 1
    assert report["summary"]["samples"] == 16 and len(report["runs"][0]["samples"]) == 16
    run = report["runs"][0]
    assert run["model"]["path"] == str(CNN_ONNX) and run["model"]["format"] == "onnx"
    assert run["config"]["name"] == "preset epsilon-plus-flat"
    assert run["fidelity"]["passed"] is True and run["fidelity"]["reference"] == "onnxruntime"
    # progress and the verdict go to stderr
    err = result.stderr.splitlines()
    assert f"lrpaudit: {CNN_ONNX}: 16 samples" in err
    assert err[-1].startswith(f"lrpaudit: {CNN_ONNX} [preset epsilon-plus-flat]: FAIL: 7/10 layers pass")


def test_table_is_the_default_format_and_names_bias_absorption():
    result = invoke(CNN_ONNX, "--preset", "epsilon-plus-flat", "--inputs", IMAGES)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert words(out).startswith(f"{CNN_ONNX} [preset epsilon-plus-flat] float64, gate strict layer op rule")
    fail_rows = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(fail_rows) == 3
    for row in fail_rows:
        assert re.search(r"\bbias \d", row), row  # the `largest` column: bias share
    assert out.count("hint: bias absorbs") == 3 and "bias: ignore or distribute" in out
    assert "6 pass/route layers conserve exactly; -v shows them" in out
    assert all(len(line) <= 100 for line in out.splitlines())
    assert "lrpaudit:" not in out  # verdict lines are on stderr
    assert "FAIL: 7/10 layers pass, 0/16 samples pass; worst /features/features.4/Conv" in result.stderr


@pytest.mark.parametrize(
    "wanted",
    [("json", "junit", "markdown"), ("json",), ("junit", "markdown"), ("json", "markdown"), ("junit",)],
)
def test_report_files_in_any_combination(tmp_path, wanted):
    paths = {
        "json": tmp_path / "audit.json",
        "junit": tmp_path / "audit.xml",
        "markdown": tmp_path / "audit.md",
    }
    flags = {"json": "--json-report", "junit": "--junit-xml", "markdown": "--markdown"}
    args = [CNN_ONNX, "--preset", "epsilon-plus-flat", "--random", "3", "--format", "json"]
    for kind in wanted:
        args += [flags[kind], paths[kind]]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    stdout_report = report_of(result)
    for kind, path in paths.items():
        assert path.exists() == (kind in wanted), kind
    if "json" in wanted:
        written = json.loads(paths["json"].read_text())
        validate_report(written)
        assert written == stdout_report  # one report, two destinations
    if "junit" in wanted:
        check_junit(ET.parse(paths["junit"]).getroot(), stdout_report)
    if "markdown" in wanted:
        text = paths["markdown"].read_text()
        assert text.startswith("## lrpaudit: FAIL")
        assert "3 of 10 layer checks failed" in text and "/features/features.4/Conv" in text
        assert "<details>" in text and "</details>" in text
    expected = [paths[kind].name for kind in wanted]
    if "markdown" in wanted:  # the Markdown's conservation plot, an image next to it
        expected.append(paths["markdown"].with_suffix(".conservation.png").name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)


def test_report_into_a_missing_folder_exits_2(tmp_path):
    target = tmp_path / "missing" / "audit.xml"
    line = assert_one_line_error(invoke(MLP_ONNX, "--random", "2", "-q", "--junit-xml", target))
    assert str(target) in line and not target.exists()


def check_junit(root: ET.Element, report: dict) -> None:
    """testsuites > testsuite (one per run) > testcase (one per layer and per sample); counts consistent."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == len(report["runs"])
    total_tests = total_failures = 0
    for suite, run in zip(suites, report["runs"]):
        cases = suite.findall("testcase")
        failures = [case for case in cases if case.find("failure") is not None]
        assert int(suite.get("tests")) == len(cases) == len(run["layers"]) + len(run["samples"])
        assert int(suite.get("failures")) == len(failures)
        assert int(suite.get("errors")) == 0 and int(suite.get("skipped")) == 0
        expected = sum(r["verdict"] != "pass" for r in run["layers"])
        expected += sum(s["verdict"] != "pass" for s in run["samples"])
        assert len(failures) == expected
        for case in failures:
            failure = case.find("failure")
            assert failure.get("type") and failure.get("message") and failure.text
        layer_names = [case.get("name") for case in cases[: len(run["layers"])]]
        assert [name.split(" [")[0] for name in layer_names] == [row["id"] for row in run["layers"]]
        total_tests += len(cases)
        total_failures += len(failures)
    assert int(root.get("tests")) == total_tests and int(root.get("failures")) == total_failures
    summary = report["summary"]
    assert total_failures == summary["failures"] + summary["sample_failures"]


# ------------------------------------------------------------------------------------------ verdicts


def test_conservative_preset_passes_on_the_shipped_biased_cnn():
    result = invoke(CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "--format", "json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["summary"]["verdict"] == "pass" and report["summary"]["failures"] == 0
    assert report["summary"]["sample_failures"] == 0
    assert "PASS: 10/10 layers pass, 16/16 samples pass" in result.stderr


def test_conservative_passes_and_epsilon_plus_flat_fails_on_a_biased_avgpool_cnn(avg_cnn):
    good = invoke(avg_cnn, "--preset", "conservative", "--inputs", IMAGES, "--format", "json")
    assert good.exit_code == 0, good.output
    report = report_of(good)
    ops = {row["op"] for row in report["runs"][0]["layers"]}
    assert {"conv", "avgpool", "linear"} <= ops, ops
    assert all(row["verdict"] == "pass" for row in report["runs"][0]["layers"])

    bad = invoke(avg_cnn, "--preset", "epsilon-plus-flat", "--inputs", IMAGES, "--format", "json")
    assert bad.exit_code == 1, bad.output
    failing = [row for row in report_of(bad)["runs"][0]["layers"] if row["verdict"] != "pass"]
    assert failing
    assert {row["largest_category"] for row in failing} == {"absorbed_bias"}
    assert all("bias absorbs" in row["hint"] for row in failing)


def test_failing_rows_name_bias_absorption_in_json_and_exit_zero():
    args = [CNN_ONNX, "--preset", "epsilon-plus-flat", "--inputs", IMAGES, "--format", "json"]
    result = invoke(*args)
    assert result.exit_code == 1
    report = report_of(result)
    failing = [row for row in report["runs"][0]["layers"] if row["verdict"] != "pass"]
    assert [row["id"] for row in failing] == [
        "/features/features.4/Conv",
        "/classifier/classifier.1/Gemm",
        "/classifier/classifier.3/Gemm",
    ]
    for row in failing:
        assert row["largest_category"] == "absorbed_bias"
        assert row["rel_residual"] <= 1e-9  # the whole leak is explained
        assert row["passing_tolerance"] >= row["rel_error"] > row["tolerance"]
    zero = invoke(*args, "--exit-zero")
    assert zero.exit_code == 0, zero.output
    assert report_of(zero)["summary"]["verdict"] == "fail"  # the report still says fail


def test_explained_gate_accepts_a_leak_fully_explained_by_bias():
    result = invoke(
        CNN_ONNX,
        "--preset",
        "epsilon-plus-flat",
        "--inputs",
        IMAGES,
        "--gate",
        "explained",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    report = report_of(result)
    run = report["runs"][0]
    assert run["tolerance"]["gate"] == "explained" and run["verdict"] == "pass"
    # the leak is still reported, it is just allowed
    assert max(row["rel_error"] for row in run["layers"]) > 1e-2
    assert "float64, gate explained" in words(
        invoke(CNN_ONNX, "--inputs", IMAGES, "--gate", "explained").stdout
    )


def test_default_preset_is_epsilon_plus_flat():
    result = invoke(CNN_ONNX, "--inputs", IMAGES, "--format", "json")
    assert result.exit_code == 1
    run = report_of(result)["runs"][0]
    assert run["config"]["name"] == "preset epsilon-plus-flat"
    assert run["config"]["resolved"]["preset"] == "epsilon-plus-flat"
    explicit = report_of(
        invoke(CNN_ONNX, "--preset", "epsilon-plus-flat", "--inputs", IMAGES, "--format", "json")
    )
    assert sample_figures(explicit) == sample_figures(report_of(result))


# ------------------------------------------------------------------------------------------ errors (exit 2, 3)


def test_bad_config_key_names_file_line_column(tmp_path):
    config = tmp_path / "lrp.yaml"
    config.write_text("version: 1\nextends: conservative\ntolerance:\n  layer_rtl: 0.1\n")
    result = invoke(CNN_ONNX, "-c", config, "--inputs", IMAGES)
    line = assert_one_line_error(result)
    assert re.search(rf"{re.escape(str(config))}:4:3: tolerance\.layer_rtl: unknown key", line), line
    assert "did you mean 'layer_rtol'" in line


@pytest.mark.parametrize(
    "args, needles",
    [
        (["missing.onnx", "--inputs", IMAGES], ["missing.onnx", "no such file"]),
        ([CNN_ONNX, "--inputs", "missing.npy"], ["missing.npy", "no such file"]),
        ([CNN_ONNX, "--inputs", IMAGES, "--random", "2"], ["--inputs", "--random"]),
        ([CNN_ONNX, "-c", "lrp.yaml", "--preset", "zero", "--random", "2"], ["-c/--config", "--preset"]),
        ([CNN_ONNX, "--preset", "epsilon-plus-flt", "--random", "2"], ["unknown preset 'epsilon-plus-flt'"]),
        ([CNN_ONNX, "--random", "2", "--target", "ten"], ["--target"]),
        ([CNN_ONNX, "--random", "2", "--dtype", "float16"], ["--dtype"]),
        ([CNN_ONNX, "--random", "0"], ["--random"]),
        ([CNN_ONNX, "--random", "2", "--format", "yaml"], ["--format"]),
    ],
    ids=[
        "missing-model",
        "missing-inputs",
        "inputs-and-random",
        "config-and-preset",
        "unknown-preset",
        "bad-target",
        "bad-dtype",
        "zero-random",
        "bad-format",
    ],
)
def test_usage_and_input_errors_exit_2_without_traceback(tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(invoke(*args), *needles)


def test_no_inputs_anywhere_audits_seeded_random_samples_and_says_so(tmp_path, monkeypatch):
    """The first run (issue 15): `lrpaudit check model.onnx` with nothing configured audits 8 seeded samples."""
    monkeypatch.chdir(tmp_path)
    result = invoke(CNN_ONNX, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    report = report_of(result)
    assert len(report["runs"][0]["samples"]) == 8
    assert {s["source"].split("#")[0] for s in report["runs"][0]["samples"]} == {"random[seed=0]"}
    assert "no inputs given: auditing 8 seeded random samples (--random 8 --seed 0)" in result.stderr
    assert "--inputs PATH" in result.stderr
    explicit = report_of(invoke(CNN_ONNX, "--format", "json", "--random", "8", "--seed", "0"))
    assert sample_figures(explicit) == sample_figures(report)  # the same audit as typing it out
    assert "no inputs given" not in invoke(CNN_ONNX, "-q", "--random", "2").stderr


def test_inputs_that_do_not_fit_the_model_exit_2():
    assert_one_line_error(invoke(CNN_ONNX, "--inputs", FLAT))  # (16, 64) into a (N, 1, 8, 8) model


def test_target_index_and_pred(tmp_path):
    base = [CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "--format", "json"]
    default = report_of(invoke(*base))
    pred = report_of(invoke(*base, "--target", "pred"))
    assert sample_figures(pred) == sample_figures(default)
    labels = np.load(SAMPLES / "digits_labels.npy")
    targets = [s["target"] for s in pred["runs"][0]["samples"]]
    assert (
        np.mean(np.asarray(targets) == labels[: len(targets)]) >= 0.75
    )  # a trained model predicts the digit
    fixed = invoke(*base, "--target", "3")
    assert fixed.exit_code == 0, fixed.output
    samples = report_of(fixed)["runs"][0]["samples"]
    assert [s["target"] for s in samples] == [3] * 16
    assert [s["r_output"] for s in samples] != [s["r_output"] for s in pred["runs"][0]["samples"]]


@pytest.mark.parametrize("index", ["10", "12", "-11"])
def test_target_index_out_of_range_exits_2(index):
    line = assert_one_line_error(invoke(CNN_ONNX, "--random", "2", "--target", index))
    assert "target" in line and "out of range" in line and "10 entries" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_exits_2():
    line = assert_one_line_error(invoke(CNN_ONNX, "--random", "2", "--device", "cuda"))
    assert "--device cuda" in line and "no CUDA device" in line


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda0", "cpu:1"])
def test_unknown_device_is_a_usage_error(device):
    assert_clean_error(invoke(CNN_ONNX, "--random", "2", "--device", device), "--device", device)


def test_internal_error_exits_3_with_a_short_message(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated engine bug")

    monkeypatch.setattr("lrpaudit.api.propagate", boom)
    monkeypatch.setattr("lrpaudit.cli._common.tempfile.gettempdir", lambda: str(tmp_path))
    report = tmp_path / "audit.json"
    result = invoke(CNN_ONNX, "--random", "2", "--json-report", report, "--exit-zero")
    assert result.exit_code == 3, result.output  # never 1, and --exit-zero does not hide it
    assert "Traceback" not in result.output and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("lrpaudit: internal error")]
    assert len(lines) == 1
    assert "RuntimeError: simulated engine bug" in lines[0]
    log = tmp_path / "lrpaudit-traceback.txt"
    assert str(log) in lines[0] and "simulated engine bug" in log.read_text()
    assert not report.exists()


# ------------------------------------------------------------------------------------------ inputs and numbers


def test_dtype_float32():
    result = invoke(
        CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "--dtype", "float32", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["environment"]["dtype"] == "float32" and report["runs"][0]["dtype"] == "float32"
    assert report["runs"][0]["tolerance"]["unexplained_bound"] == pytest.approx(1e-4)
    table = invoke(CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "--dtype", "float32")
    assert "float32, gate strict" in words(table.stdout)


def test_batch_size_does_not_change_the_numbers():
    reports = {
        size: report_of(
            invoke(CNN_ONNX, "--inputs", IMAGES, "--batch-size", size, "--format", "json", "--exit-zero")
        )
        for size in (1, 5, 16)
    }
    reference = reports[16]["runs"][0]
    for size in (1, 5):
        run = reports[size]["runs"][0]
        assert len(run["samples"]) == 16
        for new, old in zip(run["samples"], reference["samples"]):
            assert (new["index"], new["source"], new["target"]) == (
                old["index"],
                old["source"],
                old["target"],
            )
            for key in ("r_output", "r_input", "leak", "rel_error"):
                assert new[key] == pytest.approx(old[key], rel=1e-12, abs=1e-14), (size, key)
        for new, old in zip(run["layers"], reference["layers"]):
            assert new["id"] == old["id"] and new["verdict"] == old["verdict"]
            assert new["rel_error"] == pytest.approx(old["rel_error"], rel=1e-9, abs=1e-15)
    progress = invoke(CNN_ONNX, "--inputs", IMAGES, "--batch-size", "5", "-q", "--exit-zero")
    assert progress.stderr.count("\n") == 1  # -q: no progress lines
    lines = invoke(CNN_ONNX, "--inputs", IMAGES, "--batch-size", "5", "--exit-zero").stderr.splitlines()
    assert [line for line in lines if line.endswith("samples")] == [
        f"lrpaudit: {CNN_ONNX}: {n} samples" for n in (5, 10, 15, 16)
    ]


def test_random_samples_are_seeded():
    def figures(seed: int) -> list[tuple]:
        result = invoke(MLP_ONNX, "--random", "4", "--seed", seed, "--format", "json", "--exit-zero")
        assert result.exit_code == 0, result.output
        report = report_of(result)
        assert [s["source"] for s in report["runs"][0]["samples"]] == [
            f"random[seed={seed}]#{i}" for i in range(4)
        ]
        return [(s["r_output"], s["r_input"], s["rel_error"]) for s in report["runs"][0]["samples"]]

    first, again, other = figures(7), figures(7), figures(8)
    assert first == again
    assert first != other


def test_torchscript_with_and_without_input_shape():
    plain = invoke(CNN_PT, "--preset", "conservative", "--inputs", IMAGES, "--format", "json")
    assert plain.exit_code == 0, plain.output
    shaped = invoke(
        CNN_PT, "--preset", "conservative", "--inputs", IMAGES, "--input-shape", "1,1,8,8", "--format", "json"
    )
    assert shaped.exit_code == 0, shaped.output
    assert sample_figures(report_of(plain)) == sample_figures(report_of(shaped))
    run = report_of(plain)["runs"][0]
    assert run["model"]["format"] == "torchscript" and len(run["samples"]) == 16
    for args in ([], ["--input-shape", "1,1,8,8"], ["--input-shape", "x=1,1,8,8"]):
        random = invoke(CNN_PT, "--preset", "conservative", "--random", "2", *args, "--format", "json")
        assert random.exit_code == 0, (args, random.output)
        assert len(report_of(random)["runs"][0]["samples"]) == 2
    assert_clean_error(invoke(CNN_PT, "--random", "2", "--input-shape", "1,x,8"), "not a shape")


def test_save_relevance_npz(tmp_path):
    path = tmp_path / "rel" / "maps.npz"
    result = invoke(
        CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "--save-relevance", path, "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = report_of(result)
    samples = report["runs"][0]["samples"]
    names = list(samples[0]["r_input_by_name"])
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    assert set(arrays) == {*names, "targets", "output_relevance"}
    (name,) = names
    assert arrays[name].shape == (16, 1, 8, 8)
    assert arrays["targets"].shape == (16,) and arrays["output_relevance"].shape == (16, 10)
    assert arrays["targets"].tolist() == [s["target"] for s in samples]
    sums = arrays[name].reshape(16, -1).sum(axis=1)
    np.testing.assert_allclose(sums, [s["r_input"] for s in samples], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        arrays["output_relevance"].sum(axis=1), [s["r_output"] for s in samples], rtol=1e-12, atol=1e-12
    )
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left


# ------------------------------------------------------------------------------------------ baseline


def test_baseline_against_itself_passes(tmp_path):
    baseline = tmp_path / "base.json"
    first = invoke(CNN_ONNX, "--inputs", IMAGES, "--json-report", baseline)
    assert first.exit_code == 1  # epsilon-plus-flat fails ...
    again = invoke(CNN_ONNX, "--inputs", IMAGES, "--baseline", baseline, "--format", "json")
    assert again.exit_code == 0, again.output  # ... but nothing regressed
    assert (
        "lrpaudit: baseline: 0 regressions, 0 improvements, 0 new layers, 0 vanished layers" in again.stderr
    )
    assert f"against {baseline})" in again.stderr
    assert report_of(again)["baseline"]["failed"] is False


def test_baseline_regression_of_a_worse_config_exits_1(tmp_path):
    config = tmp_path / "lrp.yaml"
    baseline = tmp_path / "base.json"
    config.write_text("version: 1\nextends: conservative\n")
    made = invoke(CNN_ONNX, "-c", config, "--inputs", IMAGES, "--json-report", baseline)
    assert made.exit_code == 0, made.output
    config.write_text("version: 1\nextends: epsilon-plus-flat\n")  # the config got worse in a change
    result = invoke(CNN_ONNX, "-c", config, "--inputs", IMAGES, "--baseline", baseline, "--format", "json")
    assert result.exit_code == 1, result.output
    regressions = [
        line for line in result.stderr.splitlines() if line.startswith("lrpaudit: baseline: regression")
    ]
    assert any("/features/features.4/Conv" in line and "verdict pass -> fail" in line for line in regressions)
    report = report_of(result)
    assert report["baseline"]["failed"] is True
    assert {c["item"] for c in report["baseline"]["regressions"]} >= {
        "/features/features.4/Conv",
        "/classifier/classifier.1/Gemm",
        "/classifier/classifier.3/Gemm",
    }
    assert (
        invoke(CNN_ONNX, "-c", config, "--inputs", IMAGES, "--baseline", baseline, "--exit-zero").exit_code
        == 0
    )


def test_baseline_new_and_vanished_layers_are_listed_not_failed(tmp_path, avg_cnn):
    model = tmp_path / "model.onnx"
    baseline = tmp_path / "base.json"
    shutil.copy(CNN_ONNX, model)
    made = invoke(model, "--preset", "conservative", "--inputs", IMAGES, "--json-report", baseline)
    assert made.exit_code == 0, made.output
    shutil.copy(avg_cnn, model)  # the architecture changed, same file name and config
    result = invoke(model, "--preset", "conservative", "--inputs", IMAGES, "--baseline", baseline)
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "lrpaudit: baseline: new layer:" in err and "lrpaudit: baseline: vanished layer:" in err
    assert "/features/features.4/Conv" in err  # vanished
    assert "0 regressions" in err


@pytest.mark.parametrize("content", ["not json {", '{"schema_version": "1.0"}', "[1, 2]"])
def test_garbage_baseline_exits_2(tmp_path, content):
    baseline = tmp_path / "base.json"
    baseline.write_text(content)
    line = assert_one_line_error(invoke(MLP_ONNX, "--random", "2", "--baseline", baseline))
    assert line.startswith(f"lrpaudit: error: baseline {baseline}: ")  # before any audit work


def test_missing_baseline_exits_2(tmp_path):
    assert_one_line_error(
        invoke(MLP_ONNX, "--random", "2", "--baseline", tmp_path / "none.json"), "no such file"
    )


# ------------------------------------------------------------------------------------------ display flags


def test_verify_rules_table_and_json():
    result = invoke(CNN_ONNX, "--preset", "conservative", "--random", "2", "--verify-rules")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "rule self-verification (dense formula vs engine)" in out
    for header in ("units checked", "max abs dev", "rel dev"):
        assert header in out
    report = report_of(
        invoke(CNN_ONNX, "--preset", "conservative", "--random", "2", "--verify-rules", "--format", "json")
    )
    checks = report["runs"][0]["rule_checks"]
    assert [c["node_id"] for c in checks] == [
        "/features/features.0/Conv",
        "/features/features.4/Conv",
        "/classifier/classifier.1/Gemm",
        "/classifier/classifier.3/Gemm",
    ]
    assert all(c["rel_dev"] is not None and c["rel_dev"] <= 1e-10 for c in checks)
    assert all(c["units_checked"] >= 1 for c in checks)
    plain = report_of(invoke(CNN_ONNX, "--preset", "conservative", "--random", "2", "--format", "json"))
    assert plain["runs"][0]["rule_checks"] is None


@pytest.mark.parametrize("preset, code", [("epsilon-plus-flat", 1), ("conservative", 0)])
def test_verbose_table_has_every_accounting_column(preset, code):
    result = invoke(CNN_ONNX, "--preset", preset, "--inputs", IMAGES, "-v")
    assert result.exit_code == code
    out = result.stdout
    assert all(len(line) <= 230 for line in out.splitlines())
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    for name in ("layer", "op", "rule", "bias", *ACCOUNTING_HEADERS, "largest", "verdict"):
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", header), (name, header)
    assert "pass/route layers conserve exactly" not in out  # -v shows every row
    assert "/features/features.2/Relu" in out and "winner_take_all" in out
    assert "end to end (worst samples)" in out


def test_quiet_prints_only_the_verdict_line():
    result = invoke(CNN_ONNX, "--preset", "epsilon-plus-flat", "--inputs", IMAGES, "-q")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lrpaudit: {CNN_ONNX} [preset epsilon-plus-flat]: FAIL")
    passing = invoke(CNN_ONNX, "--preset", "conservative", "--inputs", IMAGES, "-q")
    assert passing.exit_code == 0 and passing.stdout == ""
    assert passing.stderr.splitlines() == [
        f"lrpaudit: {CNN_ONNX} [preset conservative]: PASS: 10/10 layers pass, 16/16 samples pass"
    ]


# ------------------------------------------------------------------------------------------ several models, CI


def test_several_models_one_report(tmp_path):
    maps = tmp_path / "maps.npz"
    # the TorchScript twin under a name of its own: two models sharing a stem would both write
    # maps.digits_cnn.npz, which is refused before the audit (tests/robustness/test_reports_atomic.py)
    pt = tmp_path / "digits_cnn_ts.pt"
    pt.write_bytes(CNN_PT.read_bytes())
    result = invoke(
        CNN_ONNX, MLP_ONNX, pt, "--preset", "conservative", "--random", "2", "--format", "json",
        "--save-relevance", maps,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert [run["model"]["path"] for run in report["runs"]] == [str(CNN_ONNX), str(MLP_ONNX), str(pt)]
    assert report["summary"]["runs"] == 3 and report["summary"]["samples"] == 6
    assert [run["model"]["format"] for run in report["runs"]] == ["onnx", "onnx", "torchscript"]
    verdicts = [line for line in result.stderr.splitlines() if "PASS:" in line]
    assert len(verdicts) == 3
    # one relevance file per model, named after it
    for model, shape in ((CNN_ONNX, (2, 1, 8, 8)), (MLP_ONNX, (2, 64))):
        with np.load(tmp_path / f"maps.{model.stem}.npz") as data:
            inputs = [k for k in data.files if k not in ("targets", "output_relevance")]
            assert len(inputs) == 1 and data[inputs[0]].shape == shape
    # a failing model among passing ones fails the run
    mixed = invoke(CNN_ONNX, MLP_ONNX, "--random", "2", "--format", "json")
    assert mixed.exit_code == 1
    assert report_of(mixed)["summary"]["verdict"] == "fail"


def test_github_actions_annotations_and_step_summary(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = invoke(CNN_ONNX, RESNET_ONNX, MLP_ONNX, CNN_PT, "--random", "2", "--format", "json", env=env)
    assert result.exit_code == 1
    report = report_of(result)  # annotations do not spoil stdout
    failures = report["summary"]["failures"]
    assert failures > 10
    errors = [line for line in result.stderr.splitlines() if line.startswith("::error")]
    assert len(errors) == 10  # GitHub shows at most 10 per step
    assert all(
        re.match(r"::error file=[^,]+(,line=\d+)?(,col=\d+)?,title=lrpaudit%3A [^:]+::", e) for e in errors
    )
    assert all("bias absorbs" in e for e in errors)
    notices = [line for line in result.stderr.splitlines() if line.startswith("::notice")]
    assert len(notices) == 1 and f"{failures - 10} more failing checks" in notices[0]
    text = summary.read_text()
    assert text.startswith("# earlier step\n## lrpaudit: FAIL")  # appended, not overwritten
    for model in (CNN_ONNX, RESNET_ONNX, MLP_ONNX, CNN_PT):
        assert model.name in text
    # a passing run writes no annotations but still appends its summary
    ok = invoke(CNN_ONNX, "--preset", "conservative", "--random", "2", env=env)
    assert ok.exit_code == 0 and "::error" not in ok.stderr
    assert summary.read_text().count("## lrpaudit:") == 2 and "## lrpaudit: PASS" in summary.read_text()
    # outside GitHub Actions nothing is annotated or appended
    before = summary.read_text()
    off = invoke(CNN_ONNX, "--random", "2", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert "::error" not in off.stderr and summary.read_text() == before


def test_github_annotations_point_at_real_files(tmp_path):
    """A rule chosen by a preset is anchored to the model file; one from a config file to its line."""
    env = {"GITHUB_ACTIONS": "true"}
    result = invoke(CNN_ONNX, "--preset", "epsilon-plus-flat", "--random", "2", "-q", env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("::error")]
    assert len(errors) == 3
    for line in errors:
        file = re.match(r"::error file=([^,]+)", line).group(1)
        assert Path(file.replace("%3A", ":")).is_file(), line
    config = tmp_path / "lrp.yaml"
    config.write_text("version: 1\nrules:\n  - match: {op: [conv, linear]}\n    rule: zero\n")
    result = invoke(CNN_ONNX, "-c", config, "--random", "2", "-q", env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("::error")]
    assert errors and all(line.startswith(f"::error file={config},line=3") for line in errors), errors
