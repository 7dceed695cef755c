"""Running a batch manifest's audits as tasks on an executor, and putting the runs back together.

Each run is one :class:`~lrpaudit.api.AuditRequest` (the manifest's model entry under one of its configs); a model
with ``shards: N`` makes each of its runs N tasks, one per sample shard (:mod:`lrpaudit.inputs.sharding`), whose
results are merged exactly as ``lrpaudit merge`` merges shard reports (:func:`lrpaudit.merge.merge_results`). A
task that cannot be carried out (a user-facing error: a model that does not load, inputs that do not fit, a
forward pass that does not match the runtime) becomes an :class:`Outcome` with the message, so that the other
runs still go ahead and one CI log names every broken combination; a run with such a shard is such a run.

Executors (:class:`Executor`: ``run(tasks, done)`` calls ``done`` with each task's Outcome as it finishes):

- :class:`LocalExecutor`, the default and the reference: in this process, or with ``jobs > 1`` in that many
  processes (``spawn``), each with ``max(1, cpus // jobs)`` torch threads;
- :class:`lrpaudit.dask_executor.DaskExecutor`: tasks on a Dask distributed cluster (``lrpaudit[dask]``).

Run outcomes are reported as each run's last task finishes and returned in manifest order. A task returns its
run's (or shard's) ``AuditResult``: plain numbers, strings and numpy arrays, no tensors or models.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .errors import LrpauditError
from .inputs.shapes import parse_shape
from .inputs.sharding import Shard

EXIT_USAGE = 2


@dataclass
class Outcome:
    """What one run or task gave: an AuditResult, or the message of a user-facing error (and its exit code)."""

    index: int
    seconds: float
    result: Any = None
    error: str | None = None
    exit_code: int = EXIT_USAGE


@dataclass(frozen=True)
class Task:
    """One audit to carry out: a whole run (``request.shard`` is None) or one shard of it."""

    index: int  # position in the task list (what its Outcome's index is)
    run: int  # the manifest run it belongs to
    request: Any  # an AuditRequest

    @property
    def label(self) -> str:
        shard = self.request.shard
        return f"shard {shard}" if shard is not None else "run"


class Executor(Protocol):
    """Carries out audit tasks; ``done(outcome)`` is called once per task, in any order, as each finishes."""

    def describe(self, tasks: int) -> str: ...

    def run(self, tasks: Sequence[Task], done: Callable[[Outcome], None]) -> None: ...


def request_for(run, keep: bool = False):
    """The audit request of one manifest run (``config.manifest.Run``); ``keep``: keep the relevance maps and the
    inputs (``batch --html`` shows the worst samples' heatmaps)."""
    from .api import AuditRequest

    model, config = run.model, run.config
    return AuditRequest(
        model=model.path,
        config=config.path,
        preset=config.preset,
        inputs=model.inputs,
        random=model.random,
        seed=model.seed,
        input_shapes=parse_shape(model.input_shape),
        batch_size=model.batch_size,
        trust_code=model.trust_code,
        keep_relevance=keep,
        keep_inputs=keep,
    )


def tasks_for(manifest, keep: bool = False) -> list[Task]:
    """The manifest's runs as tasks: one per run, or one per shard of a model with ``shards: N``."""
    tasks: list[Task] = []
    for run in manifest.runs:
        request = request_for(run, keep and run.model.shards == 1)  # shards' maps are not merged
        count = run.model.shards
        shards = [None] if count == 1 else [Shard(i, count) for i in range(1, count + 1)]
        for shard in shards:
            tasks.append(Task(len(tasks), run.index, replace(request, shard=shard)))
    return tasks


def execute(index: int, request) -> Outcome:
    """Run one audit; a user-facing error becomes an Outcome (errors with custom ``__init__`` do not pickle)."""
    from .api import run_audit

    started = time.perf_counter()
    try:
        result = run_audit(request)
    except LrpauditError as exc:
        return Outcome(index, time.perf_counter() - started, error=str(exc), exit_code=exc.exit_code)
    return Outcome(index, time.perf_counter() - started, result=result)


class WorkerCrash(Exception):
    """An internal error inside a worker process; the message carries the worker's traceback."""


def execute_in_worker(index: int, request) -> Outcome:
    """:func:`execute` in a worker process: a bug comes home as a :class:`WorkerCrash` carrying its traceback."""
    try:
        return execute(index, request)
    except MemoryError:  # a limit, not a bug: it pickles, and the command reports it as such
        raise
    except Exception as exc:  # a bug: carried back as text, so that any exception type gets home
        raise WorkerCrash(
            f"{type(exc).__name__}: {exc}\n\nworker traceback:\n{traceback.format_exc()}"
        ) from None


def init_worker(threads: int | None) -> None:
    """A worker's settings: quiet deprecation noise, and ``threads`` torch threads (None: leave as it is)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@dataclass
class LocalExecutor:
    """This machine: in this process (``jobs`` 1), or in ``jobs`` spawned processes."""

    jobs: int = 1

    def describe(self, tasks: int) -> str:
        workers = min(self.jobs, tasks)
        return f" in {workers} processes" if workers > 1 else ""

    def run(self, tasks: Sequence[Task], done: Callable[[Outcome], None]) -> None:
        workers = min(self.jobs, len(tasks))
        if workers <= 1:
            for task in tasks:
                done(execute(task.index, task.request))
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, cpu_count() // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(threads,),
        ) as pool:
            futures = [pool.submit(execute_in_worker, task.index, task.request) for task in tasks]
            try:
                for future in as_completed(futures):
                    done(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


class _Runs:
    """Collects task outcomes and turns each run's into the run's Outcome once its last task is in."""

    def __init__(self, manifest, tasks: Sequence[Task], report: Callable[[Outcome], None]) -> None:
        self.manifest, self.report = manifest, report
        self.tasks_of: dict[int, list[Task]] = {}
        for task in tasks:
            self.tasks_of.setdefault(task.run, []).append(task)
        self.task_outcomes: dict[int, Outcome] = {}
        self.outcomes: list[Outcome | None] = [None] * len(manifest.runs)
        self.by_task = {task.index: task for task in tasks}

    def add(self, outcome: Outcome) -> None:
        self.task_outcomes[outcome.index] = outcome
        run = self.by_task[outcome.index].run
        tasks = self.tasks_of[run]
        if all(task.index in self.task_outcomes for task in tasks):
            self.outcomes[run] = self._run_outcome(run, tasks)
            self.report(self.outcomes[run])

    def _run_outcome(self, run: int, tasks: Sequence[Task]) -> Outcome:
        from .merge import MergeError, Part, merge_results

        outcomes = [self.task_outcomes[task.index] for task in tasks]
        seconds = sum(outcome.seconds for outcome in outcomes)
        failed = [(task, o) for task, o in zip(tasks, outcomes) if o.error is not None]
        if failed:
            sharded = tasks[0].request.shard is not None
            error = "; ".join(f"{task.label}: {o.error}" if sharded else o.error for task, o in failed)
            return Outcome(run, seconds, error=error, exit_code=max(o.exit_code for _, o in failed))
        if tasks[0].request.shard is None:
            return replace(outcomes[0], index=run)
        parts = [Part(task.label, outcome.result) for task, outcome in zip(tasks, outcomes)]
        try:
            return Outcome(run, seconds, result=merge_results(parts))
        except MergeError as exc:
            return Outcome(run, seconds, error=str(exc), exit_code=exc.exit_code)


def run_all(
    manifest, jobs: int, report, executor: Executor | None = None, keep: bool = False
) -> list[Outcome]:
    """Every run of the manifest, in manifest order; ``report(outcome)`` is called as each run finishes.

    ``executor`` defaults to a :class:`LocalExecutor` with ``jobs`` processes; ``keep`` keeps relevance maps.
    """
    tasks = tasks_for(manifest, keep)
    runs = _Runs(manifest, tasks, report)
    (executor or LocalExecutor(jobs)).run(tasks, runs.add)
    return runs.outcomes
