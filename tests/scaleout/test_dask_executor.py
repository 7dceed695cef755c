"""`batch --executor dask` on a real Dask LocalCluster: the report of the local executor, number for number; a
worker that is really killed mid-run costs one retry, and a second death is reported as an errored run.

One cluster for the module: the local cluster ``batch --executor dask --jobs 2`` starts without ``--scheduler``
(2 worker processes x 1 thread on 127.0.0.1, ``allowed-failures: 1``), reached with ``--scheduler`` so that the
tests can kill its workers. Each fresh worker costs about 6 CPU-seconds (torch and the first graph build), so
every test of the module runs in one xdist worker (``SERIAL_MODULES`` in conftest), in order: the first warms
both workers, the kill tests come last; the audits are tiny. Both sides run torch with one thread (the test process: conftest; the
workers: Dask's nanny), which makes the numbers the same to the last bit (README "Scale-out").
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

from lrpaudit.dask_executor import DaskExecutor
from lrpaudit.runner import cpu_count
from tests.helpers.cli import run_cli
from tests.helpers.paths import SAMPLES
from tests.helpers.robustness import assert_one_line_error


@pytest.fixture(scope="module")
def cluster():
    """The executor's own local cluster: (scheduler address, a client of it)."""
    with DaskExecutor(jobs=2).connect() as (client, threads):
        address = client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:") and threads == max(1, cpu_count() // 2)
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
        yield address, client


def write_manifest(folder: Path, name: str, models: list[str]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text("version: 1\nmodels:\n" + "".join(models) + "configs:\n  - preset: epsilon-plus-flat\n")
    return path


def model(path: str, inputs: str, batch: int, shards: int = 1) -> str:
    lines = f"  - path: {SAMPLES / path}\n    {inputs}\n    batch_size: {batch}\n"
    return lines + (f"    shards: {shards}\n" if shards > 1 else "")


def batch(manifest: Path, out: Path | None, *args):
    """`lrpaudit batch MANIFEST [--json-report OUT] ARGS`; (result, report or None)."""
    report = ("--json-report", out) if out is not None else ()
    result = run_cli("batch", manifest, *report, "--exit-zero", *args)
    return result, (json.loads(out.read_text()) if out is not None and out.exists() else None)


def numbers(report: dict) -> dict:
    """The report without timings and without the manifest's own path and hash."""
    runs = [{k: v for k, v in run.items() if k != "elapsed_s"} for run in report["runs"]]
    return {**report, "runs": runs, "batch": report["batch"]["runs"]}


def test_a_dask_run_with_sample_shards_gives_the_local_report(cluster, tmp_path):
    address, _ = cluster
    images = f"inputs: {SAMPLES / 'digits_samples.npy'}"
    # ONNX only: every new frontend a cold worker meets costs it seconds (TorchScript is in test_shard_merge)
    whole = [
        model("digits_cnn.onnx", images, 3),
        model("digits_mlp.onnx", "random: 10", 3),
        model("digits_resnet.onnx", images, 5),
    ]
    sharded = [
        model("digits_cnn.onnx", images, 3, shards=3),
        model("digits_mlp.onnx", "random: 10", 3),
        model("digits_resnet.onnx", images, 5, shards=2),
    ]
    _, local = batch(write_manifest(tmp_path, "whole", whole), tmp_path / "local.json")
    sharded_manifest = write_manifest(tmp_path, "sharded", sharded)
    _, local_sharded = batch(sharded_manifest, tmp_path / "local-sharded.json")
    result, remote = batch(
        sharded_manifest, tmp_path / "dask.json", "--executor", "dask", "--scheduler", address
    )
    assert result.exit_code == 0, result.output
    assert f"3 runs (6 tasks: runs x sample shards) on the Dask cluster at {address}" in result.stderr
    assert f"lrpaudit: Dask scheduler {address} (2 workers connected)" in result.stderr
    assert local["summary"]["verdict"] == "fail" and len(remote["runs"]) == 3
    assert numbers(remote) == numbers(local) == numbers(local_sharded)


def kill_workers_running_it(client: Client, runner: threading.Thread, times: int) -> list[int]:
    """SIGKILL the worker process that holds the audit task, ``times`` times (a new worker each time)."""
    killed: list[int] = []
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while runner.is_alive() and len(killed) < times and time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if worker not in seen and any(str(key).startswith("lrpaudit-") for key in keys):
                pid = client.run(os.getpid, workers=[worker])[worker]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                seen.add(worker)
        time.sleep(0.005)
    return killed


def run_in_thread(*args) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(batch(*args)))
    thread.start()
    return thread, out


# about half a second of work on one thread; the tests write no report (building one would cost as much)
LONG = [model("digits_resnet.onnx", "random: 300", 100)]


def test_a_worker_killed_mid_run_is_retried_once_on_another(cluster, tmp_path):
    address, client = cluster
    manifest = write_manifest(tmp_path, "long", LONG)
    thread, out = run_in_thread(manifest, None, "--executor", "dask", "--scheduler", address)
    killed = kill_workers_running_it(client, thread, times=1)
    thread.join(timeout=180)
    assert len(killed) == 1
    result, _ = out[0]
    assert result.exit_code == 0, result.output  # --exit-zero: the run fails its tolerances, not an error
    model_id = SAMPLES / "digits_resnet.onnx"
    assert f"[1/1] {model_id} x epsilon-plus-flat: FAIL" in result.stderr and "ERROR" not in result.stderr
    assert f"FAIL: 0/1 runs pass; worst {model_id} x epsilon-plus-flat" in result.stderr.splitlines()[-1]
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()  # really gone: the nanny started a new process


def test_a_run_whose_workers_die_twice_is_reported_as_an_errored_run(cluster, tmp_path):
    address, client = cluster
    client.wait_for_workers(2, timeout=60)
    manifest = write_manifest(tmp_path, "long", LONG)
    out_file = tmp_path / "dask.json"
    thread, out = run_in_thread(manifest, out_file, "--executor", "dask", "--scheduler", address, "-q")
    killed = kill_workers_running_it(client, thread, times=2)
    thread.join(timeout=180)
    assert len(killed) == 2
    result, report = out[0]
    assert result.exit_code == 2, result.output
    assert f"[1/1] {SAMPLES / 'digits_resnet.onnx'} x epsilon-plus-flat: ERROR" in result.stderr
    assert "the Dask workers running it died (killed or out of memory), on the retry too" in result.stderr
    assert "1 of 1 runs could not be audited" in result.stderr.splitlines()[-1]
    assert report is None and not out_file.exists()


def test_without_distributed_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import distributed` meets when absent
    manifest = write_manifest(tmp_path, "small", [model("digits_mlp.onnx", "random: 2", 2)])
    line = assert_one_line_error(run_cli("batch", manifest, "--executor", "dask"))
    assert "pip install 'lrpaudit[dask]'" in line


def test_scheduler_errors(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, "small", [model("digits_mlp.onnx", "random: 2", 2)])
    usage = run_cli("batch", manifest, "--scheduler", "tcp://127.0.0.1:1")
    assert usage.exit_code == 2 and "--scheduler needs --executor dask" in usage.stderr
    monkeypatch.setattr("lrpaudit.dask_executor.CONNECT_TIMEOUT", "1s")
    line = assert_one_line_error(
        run_cli("batch", manifest, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1")
    )
    assert "--scheduler tcp://127.0.0.1:1: cannot reach a Dask scheduler there" in line
