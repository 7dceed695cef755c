"""Audit tasks on a Dask distributed cluster (``batch --executor dask``; the optional extra ``lrpaudit[dask]``).

Without a scheduler address a ``LocalCluster`` is started on this machine, bound to 127.0.0.1 (no dashboard):
``jobs`` worker processes of one thread each, every task with ``max(1, cpus // jobs)`` torch threads, as the
local executor's processes, so that the two give the same numbers. With an address the cluster's own workers
run the tasks with the torch threads their environment gives (the nanny sets ``OMP_NUM_THREADS=1``).

What travels: a task is the run's ``AuditRequest`` (paths, not data): every worker reads the model, config and
input files by the same path, so they must be on a file system the workers share, and the workers need the same
lrpaudit (checked before anything is submitted). A task returns its ``AuditResult`` (the report fragment: the
per-node, per-sample figures); the runner merges shards exactly as ``lrpaudit merge`` does.

A worker that dies with a task (killed, out of memory) costs the task one retry on another worker; if that worker
dies too, the run is reported as an errored run (Dask's ``KilledWorker``), never dropped. The local cluster is
started with ``distributed.scheduler.allowed-failures: 1``; on your own scheduler that setting is the scheduler's
(Dask's default is 3 retries; start it with ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1`` to match).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._version import __version__
from .errors import InputError, first_line
from .runner import Outcome, Task, cpu_count, execute_in_worker, init_worker

EXTRA = "pip install 'lrpaudit[dask]'"
EXIT_USAGE = 2
CONNECT_TIMEOUT = "20s"  # to reach an existing scheduler


def _distributed():
    """The ``distributed`` package, or an InputError naming the extra that installs it."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"--executor dask needs the Dask distributed package: {EXTRA}") from None
    return distributed


def run_task(index: int, request, threads: int | None) -> Outcome:
    """What a Dask worker runs: one audit task (see :func:`lrpaudit.runner.execute_in_worker`)."""
    init_worker(threads)
    return execute_in_worker(index, request)


def worker_version() -> str:
    """The lrpaudit version a worker imports (checked against this one before submitting)."""
    return __version__


@dataclass
class DaskExecutor:
    """A Dask cluster at ``scheduler`` (``tcp://host:8786``), or a local one of ``jobs`` workers."""

    jobs: int | None = None
    scheduler: str | None = None
    announce: Callable[[str], None] | None = None  # told the scheduler's address once the cluster is up

    def __post_init__(self) -> None:
        _distributed()  # fail before anything runs when the extra is missing

    @property
    def workers(self) -> int:
        return self.jobs or cpu_count()

    def describe(self, tasks: int) -> str:
        if self.scheduler:
            return f" on the Dask cluster at {self.scheduler}"
        return f" on a local Dask cluster of {self.workers} workers"

    def run(self, tasks: Sequence[Task], done: Callable[[Outcome], None]) -> None:
        with self.connect() as (client, threads):
            submit_and_collect(client, tasks, threads, done)

    @contextlib.contextmanager
    def connect(self):
        """``(client, torch threads per task)`` for the cluster at ``scheduler``, or for a local cluster started
        here (and closed on exit); the threads are None on an existing cluster (its workers decide)."""
        distributed = _distributed()
        import dask

        if self.scheduler:
            try:
                client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(
                    f"--scheduler {self.scheduler}: cannot reach a Dask scheduler there ({first_line(exc)})"
                ) from None
            with client:
                _check_workers(client, self.scheduler)
                self._announce(client, "")
                yield client, None
            return
        workers = self.workers
        settings = {"distributed.scheduler.allowed-failures": 1}
        with (
            dask.config.set(settings),
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,  # what goes wrong is reported by run
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            self._announce(client, f"a local cluster of {workers} workers x 1 thread, ")
            yield client, max(1, cpu_count() // workers)

    def _announce(self, client, what: str) -> None:
        if self.announce is not None:
            workers = len(client.scheduler_info().get("workers", {}))
            self.announce(f"Dask scheduler {client.scheduler.address} ({what}{workers} workers connected)")


def _check_workers(client, address: str) -> None:
    """The cluster's workers must import this lrpaudit (one line naming the problem otherwise)."""
    try:
        versions = client.run(worker_version)
    except Exception as exc:  # the workers cannot even unpickle the function: no lrpaudit there
        raise InputError(
            f"--scheduler {address}: the Dask workers cannot run lrpaudit ({type(exc).__name__}: "
            f"{first_line(exc)}); install lrpaudit {__version__} on them"
        ) from None
    other = sorted({v for v in versions.values() if v != __version__})
    if other:
        raise InputError(
            f"--scheduler {address}: the Dask workers run lrpaudit {', '.join(other)}, this is {__version__}; "
            "install the same version on them"
        )


def submit_and_collect(client, tasks: Sequence[Task], threads: int | None, done) -> None:
    """Submit every task, then report each as it finishes; a task whose workers died twice is an errored task."""
    distributed = _distributed()
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            run_task,
            task.index,
            task.request,
            threads,
            key=f"lrpaudit-{token}-task{task.index}",
            pure=False,
            retries=0,
        ): task
        for task in tasks
    }
    try:
        for future in distributed.as_completed(list(futures), loop=client.loop):
            task = futures[future]
            if future.status == "error":
                exc = future.exception()
                if isinstance(exc, distributed.KilledWorker):
                    done(
                        Outcome(
                            task.index,
                            0.0,
                            error=(
                                "the Dask workers running it died (killed or out of memory), on the retry too; "
                                "no result"
                            ),
                            exit_code=EXIT_USAGE,
                        )
                    )
                    continue
                raise exc
            done(future.result())
    finally:
        for future in futures:
            future.release()
