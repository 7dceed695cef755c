"""Scale-out timing: the sample-scaling series on the local executor and on 1 and 2 local Dask workers.

    python benchmarks/scaleout.py                                   # 16, 256, 4096 samples, 3 repeats
    python benchmarks/scaleout.py --samples 16 256 --repeats 5

One run of ``batch``'s runner (:func:`lrpaudit.runner.run_all`: the tasks, and the merge of a run's shards) on
``sample_models/digits_cnn.onnx`` with ``--random N`` samples in batches of 16 under ``epsilon-plus-flat``; JSON
and the other reports are not written (they cost the same on every executor). Per sample count:

  local 1        the local executor in this process (torch's default threads): the reference
  local 1 t1     the same with one torch thread
  local 2 x2     the local executor, 2 spawned processes (1 torch thread each), the run in 2 shards
  dask 1         a local Dask cluster of 1 worker (all CPUs' torch threads), the run whole
  dask 2 x2      a local Dask cluster of 2 workers x 1 thread (1 torch thread each), the run in 2 shards

Each executor is started once and warmed up with one run; then medians of ``--repeats`` runs. Printed: seconds,
ratios to ``local 1`` and to ``local 1 t1``, the cluster's start-up time, and the overhead per task: the warm 1-worker Dask time of
the same run split into ``--tasks`` shards, minus the in-process local time of those shards, divided by the
number of tasks (both with one torch thread, so that the difference is Dask's: scheduling, transfers, the
worker's call). Not part of the tests: timings never go in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrpaudit.config.manifest import load_manifest  # noqa: E402
from lrpaudit.dask_executor import DaskExecutor, submit_and_collect  # noqa: E402
from lrpaudit.runner import LocalExecutor, cpu_count, run_all  # noqa: E402

MODEL = REPO / "sample_models" / "digits_cnn.onnx"


class OnClient:
    """The Dask executor on an already started cluster (so that start-up is timed apart)."""

    def __init__(self, client, threads: int | None) -> None:
        self.client, self.threads = client, threads

    def describe(self, tasks: int) -> str:
        return ""

    def run(self, tasks, done) -> None:
        submit_and_collect(self.client, tasks, self.threads, done)


def manifest(folder: Path, samples: int, shards: int):
    path = folder / f"n{samples}-s{shards}.yaml"
    path.write_text(
        f"version: 1\nmodels:\n  - path: {MODEL}\n    random: {samples}\n    batch_size: 16\n"
        f"    shards: {shards}\nconfigs:\n  - preset: epsilon-plus-flat\n"
    )
    return load_manifest(path)


FIRST: dict[str, float] = {}  # executor name -> seconds of its very first run (cold workers)


def timed(plan, executor, repeats: int, name: str = "") -> float:
    """Median wall seconds of ``run_all`` after one warm-up run; every run must succeed."""
    times = []
    for k in range(repeats + 1):
        started = time.perf_counter()
        outcomes = run_all(plan, 1, lambda outcome: None, executor)
        elapsed = time.perf_counter() - started
        assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
        if k:
            times.append(elapsed)
        else:
            FIRST.setdefault(name, elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", type=int, default=[16, 256, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=16, help="tasks for the overhead measurement")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {cpu_count()} CPUs ({os.cpu_count()} logical), torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads in this process)"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plans = {(n, s): manifest(folder, n, s) for n in args.samples for s in (1, 2)}
        default_threads = torch.get_num_threads()
        for n in args.samples:
            rows[n] = {"local 1": timed(plans[(n, 1)], LocalExecutor(1), args.repeats, "local 1")}
            torch.set_num_threads(1)
            rows[n]["local 1 t1"] = timed(plans[(n, 1)], LocalExecutor(1), args.repeats, "local 1 t1")
            torch.set_num_threads(default_threads)
        pool = LocalExecutor(2)
        for n in args.samples:
            rows[n]["local 2 x2"] = timed(plans[(n, 2)], pool, args.repeats, "local 2 x2")
        overhead = {}
        for workers, shards, name in ((1, 1, "dask 1"), (2, 2, "dask 2 x2")):
            started = time.perf_counter()
            with DaskExecutor(jobs=workers).connect() as (client, threads):
                client.wait_for_workers(workers)
                up = time.perf_counter() - started
                executor = OnClient(client, threads)
                for n in args.samples:
                    rows[n][name] = timed(plans[(n, shards)], executor, args.repeats, name)
                if workers == 1:
                    many = manifest(folder, 16 * args.tasks, args.tasks)
                    dask_many = timed(many, OnClient(client, 1), args.repeats)
                    torch.set_num_threads(1)
                    local_many = timed(many, LocalExecutor(1), args.repeats)
                    torch.set_num_threads(default_threads)
                    overhead = {"dask": dask_many, "local": local_many}
            print(
                f"{name}: cluster start-up (scheduler, {workers} worker processes) {up:.2f} s, then its first run "
                f"({args.samples[0]} samples, cold workers) {FIRST[name]:.2f} s"
            )
    print(f"local 1: first run in this process {FIRST['local 1']:.2f} s (imports, first graph build)")
    print()
    names = ["local 1", "local 1 t1", "local 2 x2", "dask 1", "dask 2 x2"]
    for reference in ("local 1", "local 1 t1"):
        others = [name for name in names if name != reference]
        print(
            "| samples | "
            + " | ".join(f"{n} s" for n in names)
            + " | "
            + " | ".join(f"{n} / {reference}" for n in others)
            + " |"
        )
        print("|---" * (1 + len(names) + len(others)) + "|")
        for n, row in rows.items():
            base = row[reference]
            cells = [f"{row[name]:.3f}" for name in names] + [f"{row[name] / base:.2f}" for name in others]
            print(f"| {n} | " + " | ".join(cells) + " |")
        print()
    per_task = (overhead["dask"] - overhead["local"]) / args.tasks
    print()
    print(
        f"overhead per task: {args.tasks} tasks of one batch (16 samples) each: dask 1 worker "
        f"{overhead['dask']:.3f} s, local in process {overhead['local']:.3f} s (1 torch thread each): "
        f"{per_task * 1000:.1f} ms per task"
    )


if __name__ == "__main__":
    main()
