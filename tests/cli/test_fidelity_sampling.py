"""The forward fidelity check compares the batches it says it compares (``--fidelity sample|all|off``), and the
report records them.

What was really compared is observed at the runtime: a wrapper around the loaded model's ``reference_outputs``
(the real onnxruntime call) records the samples it was given; each sample carries its own index in its first
feature, so the recorded feeds name their batches.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import lrpaudit
from lrpaudit.errors import InputError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.frontends import load_model
from lrpaudit.inputs.sharding import Shard
from lrpaudit.reports.json_report import build_report
from lrpaudit.reports.schema_check import validate_report
from lrpaudit.rules import Rule
from tests.helpers.cli import run_cli
from tests.helpers.paths import SAMPLES

MLP = SAMPLES / "digits_mlp.onnx"
SAMPLES_N, BATCH = 161, 2  # 81 batches: 80 of two samples, the last of one


def marked_inputs(n: int = SAMPLES_N) -> np.ndarray:
    x = np.random.default_rng(0).uniform(0.0, 1.0, (n, 64)).astype(np.float32)
    x[:, 0] = np.arange(n)  # sample i says i
    return x


def audited(mode: str, seed: int = 0, shard=None, n: int = SAMPLES_N):
    """(result, the batches the runtime ran, in order) of an audit of the marked inputs."""
    model = load_model(MLP)
    ran: list[int] = []
    reference = model.reference_outputs

    def recording(feeds, names=None):
        first = feeds["input"][:, 0]
        assert np.array_equal(first, np.arange(first[0], first[0] + len(first)))  # one whole batch
        ran.append(int(first[0]) // BATCH)
        return reference(feeds, names)

    model.reference_outputs = recording
    request = lrpaudit.AuditRequest(
        model,
        preset="epsilon",
        inputs={"input": marked_inputs(n)},
        batch_size=BATCH,
        seed=seed,
        fidelity=mode,
        shard=shard,
        allow_empty=shard is not None,
    )
    return lrpaudit.run_audit(request), ran


def test_sample_compares_the_first_batch_the_odd_sized_last_and_a_seeded_few_between():
    result, ran = audited("sample")
    compared = result.fidelity_compared
    assert list(compared.batches) == ran  # what the report says is what the runtime ran
    assert ran[0] == 0 and ran[-1] == 80  # the first batch, and the last (the only batch of one sample)
    middle = ran[1:-1]
    assert 2 <= len(middle) <= 30  # a sample of the 79 others (one in 8 expected), not all, not none
    assert compared.samples == 2 * (len(ran) - 1) + 1
    assert compared.mode == "sample" and compared.seed == 0
    assert result.fidelity.passed


def test_the_sample_is_seeded():
    first, again, other = audited("sample", 0)[1], audited("sample", 0)[1], audited("sample", 7)[1]
    assert first == again
    assert first != other and other[0] == 0 and other[-1] == 80


def test_all_and_off():
    every, ran = audited("all", n=9)
    assert ran == list(every.fidelity_compared.batches) == [0, 1, 2, 3, 4]
    assert every.fidelity_compared.samples == 9
    none, ran = audited("off", n=9)
    assert ran == [] and none.fidelity is None
    record = build_report([none])["runs"][0]["fidelity"]
    assert record["checked"] is False and record["mode"] == "off" and record["batches"] == []
    assert record["samples"] == 0


def test_each_shard_compares_its_part_of_the_unsharded_choice():
    whole = audited("sample")[1]
    parts = [audited("sample", shard=Shard(i, 3))[1] for i in (1, 2, 3)]
    for index, part in enumerate(parts):
        assert all(batch % 3 == index for batch in part)
    assert sorted(b for part in parts for b in part) == whole


def test_an_unknown_mode_is_refused():
    with pytest.raises(InputError, match="fidelity 'some'"):
        audited("some", n=2)


@pytest.mark.parametrize("mode", ["all", "off"])
def test_the_json_report_records_what_was_compared(tmp_path, mode):
    inputs = tmp_path / "x.npy"
    np.save(inputs, marked_inputs(5))
    out = tmp_path / "r.json"
    args = ["check", MLP, "--preset", "epsilon", "--inputs", inputs, "--batch-size", "2", "--seed", "3"]
    result = run_cli(*args, "--fidelity", mode, "--json-report", out, "--exit-zero")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    validate_report(report)
    record = report["runs"][0]["fidelity"]
    expected = {"all": ([0, 1, 2], 5, True), "off": ([], 0, False)}[mode]
    assert (record["batches"], record["samples"], record["checked"]) == expected
    assert record["mode"] == mode and record["seed"] == 3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_check_on_the_audits_own_forward_finds_what_a_separate_check_finds(dtype):
    """A float32 audit hands its forward to the check (computed once); the figures are those of the check run on
    its own, batch by batch."""
    x = marked_inputs(6)
    result = lrpaudit.audit(MLP, Rule("epsilon"), {"input": x}, batch_size=4, dtype=dtype, fidelity="all")
    model = load_model(MLP)
    alone = [check_fidelity(model, model.graph({"input": p.shape}), {"input": p}) for p in (x[:4], x[4:])]
    worst = max(alone, key=lambda f: (f.max_rel_diff, f.max_abs_diff))
    assert (result.fidelity.max_abs_diff, result.fidelity.max_rel_diff) == (
        worst.max_abs_diff,
        worst.max_rel_diff,
    )
    assert result.fidelity.max_abs_diff > 0  # onnxruntime and torch round differently: a real comparison
