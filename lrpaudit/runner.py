"""Running a batch manifest's audits: one after another in this process, or in a pool of worker processes.

Each run is one :class:`~lrpaudit.api.AuditRequest` (the manifest's model entry under one of its configs). A run
that cannot be carried out (a user-facing error: a model that does not load, inputs that do not fit, a forward
pass that does not match the runtime) becomes an :class:`Outcome` with the message, so that the other runs still
go ahead and one CI log names every broken combination.

``jobs > 1`` runs the audits in that many processes (``spawn``), each with ``max(1, cpus // jobs)`` torch threads;
outcomes are reported as they finish and returned in manifest order. A worker returns the run's ``AuditResult``
(plain numbers, strings and numpy arrays: no tensors or models).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

from .errors import LrpauditError
from .inputs.shapes import parse_shape

EXIT_USAGE = 2


@dataclass
class Outcome:
    """What one run gave: an AuditResult, or the message of a user-facing error (and its exit code)."""

    index: int
    seconds: float
    result: Any = None
    error: str | None = None
    exit_code: int = EXIT_USAGE


def request_for(run):
    """The audit request of one manifest run (``config.manifest.Run``)."""
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
    )


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


def _execute_in_worker(index: int, request) -> Outcome:
    try:
        return execute(index, request)
    except MemoryError:  # a limit, not a bug: it pickles, and the command reports it as such
        raise
    except Exception as exc:  # a bug: carried back as text, so that any exception type gets home
        raise WorkerCrash(
            f"{type(exc).__name__}: {exc}\n\nworker traceback:\n{traceback.format_exc()}"
        ) from None


def _init_worker(threads: int) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(threads)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def run_all(manifest, jobs: int, report) -> list[Outcome]:
    """Every run of the manifest, in manifest order; ``report(outcome)`` is called as each one finishes."""
    runs = manifest.runs
    outcomes: list[Outcome | None] = [None] * len(runs)
    workers = min(jobs, len(runs))
    if workers <= 1:
        for run in runs:
            outcome = execute(run.index, request_for(run))
            outcomes[run.index] = outcome
            report(outcome)
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, cpu_count() // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        futures = [pool.submit(_execute_in_worker, run.index, request_for(run)) for run in runs]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[outcome.index] = outcome
                report(outcome)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return outcomes
