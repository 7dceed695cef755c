"""`check --shard I/N` + `lrpaudit merge` give the report of the unsharded `check`; bad merges are refused.

The expectation is always the unsharded audit itself (the ordinary code path), compared key by key after
removing the timings, which the merge sums by design.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrpaudit.inputs import random_batches
from lrpaudit.reports.schema_check import validate_report
from tests.helpers.cli import run_cli
from tests.helpers.paths import SAMPLES
from tests.helpers.reference_models import export_onnx
from tests.helpers.robustness import assert_one_line_error

CNN = {"onnx": SAMPLES / "digits_cnn.onnx", "torchscript": SAMPLES / "digits_cnn.pt"}
IMAGES = SAMPLES / "digits_samples.npy"
MLP = SAMPLES / "digits_mlp.onnx"


def without_timings(report: dict) -> dict:
    return {**report, "runs": [{k: v for k, v in run.items() if k != "elapsed_s"} for run in report["runs"]]}


def junit_without_times(path: Path) -> str:
    return re.sub(r' (time|timestamp)="[^"]*"', "", path.read_text())


def audit(tmp: Path, name: str, *args):
    """`check ARGS --json-report tmp/name.json`; (result, report)."""
    out = tmp / f"{name}.json"
    result = run_cli("check", *args, "--json-report", out, "--exit-zero")
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def shard_reports(tmp: Path, count: int, *args) -> list[Path]:
    paths = []
    for index in range(1, count + 1):
        audit(tmp, f"shard{index}", *args, "--shard", f"{index}/{count}")
        paths.append(tmp / f"shard{index}.json")
    return paths


def merged(tmp: Path, paths, *extra):
    out = tmp / "merged.json"
    result = run_cli("merge", *paths, "-o", out, *extra)
    return result, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_shards_merge_into_the_unsharded_report(fmt, tmp_path):
    """16 samples in batches of 3 (6 batches) over 4 shards, failing layers and samples, --verify-rules."""
    args = (
        CNN[fmt],
        "--inputs",
        IMAGES,
        "--preset",
        "epsilon-plus-flat",
        "--batch-size",
        "3",
        "--verify-rules",
    )
    full_run, full = audit(
        tmp_path, "full", *args, "--junit-xml", tmp_path / "full.xml", "--markdown", tmp_path / "full.md"
    )
    assert full["summary"]["verdict"] == "fail" and full["summary"]["sample_failures"] > 0
    paths = shard_reports(tmp_path, 4, *args)
    held = {}
    for index, path in enumerate(paths, start=1):
        run = json.loads(path.read_text())["runs"][0]
        assert run["shard"]["index"] == index and run["shard"]["count"] == 4
        assert run["shard"]["total_samples"] == 16 and run["shard"]["batch_size"] == 3
        held[index] = [sample["index"] for sample in run["samples"]]
    # batch b (samples 3b..3b+2) belongs to shard b % 4 + 1; indices stay global
    assert held == {1: [0, 1, 2, 12, 13, 14], 2: [3, 4, 5, 15], 3: [6, 7, 8], 4: [9, 10, 11]}

    result, report = merged(
        tmp_path,
        [paths[2], paths[0], paths[3], paths[1]],  # any order
        "--junit-xml",
        tmp_path / "merged.xml",
        "--markdown",
        tmp_path / "merged.md",
    )
    assert result.exit_code == 1, result.output  # the merged audit fails, as the unsharded one
    validate_report(report)
    assert without_timings(report) == without_timings(full)
    assert report["runs"][0]["elapsed_s"] == pytest.approx(
        sum(json.loads(p.read_text())["runs"][0]["elapsed_s"] for p in paths)
    )
    assert report["runs"][0]["rule_checks"] and report["runs"][0]["shard"] is None
    assert junit_without_times(tmp_path / "merged.xml") == junit_without_times(tmp_path / "full.xml")
    merged_md = (tmp_path / "merged.md").read_text()
    assert (
        merged_md.replace("(merged.conservation.png)", "(full.conservation.png)")
        == (tmp_path / "full.md").read_text()
    )
    assert (tmp_path / "merged.conservation.png").read_bytes() == (
        tmp_path / "full.conservation.png"
    ).read_bytes()
    assert result.stdout == full_run.stdout  # the same tables and notes as the unsharded check


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, export_cache):
    """x[?, 3] -> Linear(3, 4) with negative biases -> ReLU -> Linear(4, 2, no bias): x = 0 (and any x that
    leaves every unit dead) gives logits exactly 0, nothing to explain; elsewhere the biases absorb relevance."""

    def model() -> nn.Module:
        net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
        with torch.no_grad():
            net[0].weight.copy_(
                torch.tensor([[1.0, -0.5, 0.3], [-0.7, 0.8, 0.2], [0.4, 0.4, -0.9], [0.6, -0.2, 0.5]])
            )
            net[0].bias.fill_(-0.3)
            net[2].weight.copy_(torch.tensor([[0.9, -0.6, 0.5, 0.7], [-0.4, 0.8, 0.6, -0.5]]))
        return net.eval()

    example = torch.zeros(2, 3)

    def onnx_file(path: Path) -> None:
        export_onnx(model(), example, path, dynamo=False, opset=17)

    def torchscript_file(path: Path) -> None:
        torch.jit.trace(model(), example).save(str(path))

    folder = tmp_path_factory.mktemp("tiny")
    rows = np.random.default_rng(5).standard_normal((5, 3))
    inputs = np.concatenate([np.zeros((2, 3)), rows]).astype(np.float32)
    np.save(folder / "mixed.npy", inputs)
    np.save(folder / "zeros.npy", np.zeros((4, 3), np.float32))
    files = {
        "onnx": export_cache("scaleout-tiny.onnx", onnx_file),
        "torchscript": export_cache("scaleout-tiny.pt", torchscript_file),
    }
    return files, folder


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_nothing_to_explain_an_all_vacuous_shard_and_an_empty_shard_merge_exactly(fmt, tiny, tmp_path):
    """7 samples in batches of 2 over 5 shards: shard 1 holds only the two x = 0 samples (nothing to explain,
    which alone would be an empty audit), shard 5 holds no batch at all."""
    files, folder = tiny
    args = (files[fmt], "--inputs", folder / "mixed.npy", "--preset", "epsilon", "--batch-size", "2")
    _, full = audit(tmp_path, "full", *args)
    samples = full["runs"][0]["samples"]
    vacuous = [s["nothing_to_explain"] for s in samples]
    assert vacuous[:2] == [True, True] and not all(vacuous)
    assert any(s["verdict"] != "pass" and not s["nothing_to_explain"] for s in samples)
    note = f"{sum(vacuous)} of 7 samples have nothing to explain"
    assert any(note in text for text in full["runs"][0]["notes"])
    paths = shard_reports(tmp_path, 5, *args)
    first = json.loads(paths[0].read_text())["runs"][0]
    assert all(s["nothing_to_explain"] for s in first["samples"]) and len(first["samples"]) == 2
    assert json.loads(paths[4].read_text())["runs"][0]["samples"] == []
    result, report = merged(tmp_path, paths)
    assert result.exit_code == 1, result.output
    assert without_timings(report) == without_timings(full)


def test_an_audit_that_checks_nothing_is_refused_when_merged_as_check_refuses_it(tiny, tmp_path):
    files, folder = tiny
    args = (files["onnx"], "--inputs", folder / "zeros.npy", "--batch-size", "2")
    expected = assert_one_line_error(run_cli("check", *args))
    paths = shard_reports(tmp_path, 2, *args)  # each shard alone cannot tell: both are written
    result, report = merged(tmp_path, paths)
    assert assert_one_line_error(result) == expected and report is None
    _, full = audit(tmp_path, "full", *args, "--allow-empty")
    allowed = shard_reports(tmp_path, 2, *args, "--allow-empty")
    result, report = merged(tmp_path, allowed)
    assert result.exit_code == 0, result.output
    assert without_timings(report) == without_timings(full)


def test_random_samples_are_the_same_numbers_sharded_or_not_and_two_models_merge_run_by_run(tmp_path):
    args = (MLP, SAMPLES / "digits_mlp.pt", "--random", "10", "--seed", "3", "--batch-size", "3")
    _, full = audit(tmp_path, "full", *args, "--preset", "epsilon")
    result, report = merged(tmp_path, shard_reports(tmp_path, 3, *args, "--preset", "epsilon"))
    assert result.exit_code == 1, result.output
    assert len(report["runs"]) == 2 and without_timings(report) == without_timings(full)


def test_random_sample_i_is_child_i_of_the_seed_whatever_the_batches():
    declared = {"a": [None, 2, 3], "b": [None, 4]}
    expected = {"a": [], "b": []}
    for i in range(5):  # numpy's own spawned streams, drawn one sample at a time, inputs in declared order
        rng = np.random.default_rng(np.random.SeedSequence(11, spawn_key=(i,)))
        expected["a"].append(rng.standard_normal((2, 3)).astype(np.float32))
        expected["b"].append(rng.standard_normal(4).astype(np.float32))
    for batch_size in (1, 2, 5):
        batches = list(random_batches(declared, 5, batch_size, seed=11))
        for name in declared:
            assert np.array_equal(np.concatenate([b.arrays[name] for b in batches]), np.stack(expected[name]))
        assert [b.first_index for b in batches] == list(range(0, 5, batch_size))


@pytest.fixture(scope="module")
def mlp_shards(tmp_path_factory):
    """Shard reports of digits_mlp.onnx (16 samples, batches of 4) and variants to refuse."""
    tmp = tmp_path_factory.mktemp("refused")
    base = ("--inputs", SAMPLES / "digits_samples_flat.npy", "--batch-size", "4")

    def write(name, *args):
        audit(tmp, name, *args)
        return tmp / f"{name}.json"

    paths = {
        "1/2": write("s1", MLP, *base, "--shard", "1/2"),
        "2/2": write("s2", MLP, *base, "--shard", "2/2"),
        "2/2 pt": write("pt2", SAMPLES / "digits_mlp.pt", *base, "--shard", "2/2"),
        "2/2 conservative": write("c2", MLP, *base, "--preset", "conservative", "--shard", "2/2"),
        "2/3": write("t2", MLP, *base, "--shard", "2/3"),
        "2/2 batch 2": write("b2", MLP, *base, "--batch-size", "2", "--shard", "2/2"),
        "whole": write("whole", MLP, *base),
    }
    for name, edit in (("tool", ("tool", "version", "0.0.1")), ("schema", ("schema_version", None, "1.9"))):
        report = json.loads(paths["2/2"].read_text())
        key, sub, value = edit
        if sub:
            report[key][sub] = value
        else:
            report[key] = value
        paths[f"2/2 {name}"] = tmp / f"{name}.json"
        paths[f"2/2 {name}"].write_text(json.dumps(report))
    paths["garbage"] = tmp / "garbage.json"
    paths["garbage"].write_text("{not json")
    return paths


def test_the_mlp_shards_themselves_merge(mlp_shards, tmp_path):
    result, report = merged(tmp_path, [mlp_shards["1/2"], mlp_shards["2/2"]], "--exit-zero")
    assert result.exit_code == 0, result.output
    assert without_timings(report) == without_timings(json.loads(mlp_shards["whole"].read_text()))
    # --baseline belongs to the merge: against the unsharded report, nothing regressed (exit 0 without --exit-zero)
    result, report = merged(
        tmp_path, [mlp_shards["1/2"], mlp_shards["2/2"]], "--baseline", mlp_shards["whole"]
    )
    assert result.exit_code == 0, result.output
    assert report["baseline"]["regressions"] == [] and report["baseline"]["compared"] > 0


@pytest.mark.parametrize(
    ("second", "needle"),
    [
        ("2/2 pt", "shards of different models"),
        ("2/2 conservative", "shards of different configs"),
        ("2/3", "shards of different shard counts (2 vs 3)"),
        ("2/2 batch 2", "shards of different batch sizes (4 vs 2)"),
        ("2/2 tool", "reports of different lrpaudit versions"),
        ("2/2 schema", "reports of different schema versions (1.2 vs 1.9)"),
        ("1/2", "both hold shard 1/2 (overlapping shards)"),
        ("whole", "not a shard report"),
        ("garbage", "not valid JSON"),
    ],
)
def test_bad_merges_are_refused_in_one_line_naming_the_files(mlp_shards, second, needle, tmp_path):
    first, other = mlp_shards["1/2"], mlp_shards[second]
    result, report = merged(tmp_path, [first, other])
    line = assert_one_line_error(result, needle, str(other))
    if second not in ("garbage", "whole"):
        assert str(first) in line
    assert report is None and not list(tmp_path.iterdir())  # nothing written, not even a temp file


def test_an_incomplete_set_is_refused(mlp_shards, tmp_path):
    result, report = merged(tmp_path, [mlp_shards["2/3"]])
    line = assert_one_line_error(result, str(mlp_shards["2/3"]), "shards 1, 3 of 3 missing")
    assert "never merged into a partial report" in line and report is None


def test_merge_never_overwrites_a_shard_it_reads(mlp_shards, tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_bytes(mlp_shards["1/2"].read_bytes())
    second.write_bytes(mlp_shards["2/2"].read_bytes())
    before = second.read_bytes()
    result = run_cli("merge", first, second, "-o", second)
    assert_one_line_error(result, f"-o {second}", "a file this command reads")  # the flag merge was given
    assert second.read_bytes() == before and sorted(tmp_path.iterdir()) == [first, second]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--shard", "0/2"), "I must be between 1 and N"),
        (("--shard", "3/2"), "I must be between 1 and N"),
        (("--shard", "half"), "expected I/N"),
        (("--shard", "1/2", "--baseline", "old.json"), "give it to `lrpaudit merge`"),
    ],
)
def test_shard_usage_errors(args, needle):
    result = run_cli("check", MLP, "--random", "2", *args)
    assert result.exit_code == 2 and needle in result.stderr, result.output
