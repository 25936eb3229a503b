"""Run one task per case on Dask distributed: a LocalCluster, or a cluster given by its scheduler.

Every case is one task. The task itself turns a bad case into a ``failed`` record, so an
exception that reaches the client means the infrastructure failed: most often the worker
running it died (out of memory, a crash in native code). Such a case is submitted once
more; if that fails too it is recorded as failed with the reason. The LocalCluster is
made with ``allowed-failures`` 0, so the scheduler does not retry on its own and "retried
once" holds exactly; an external scheduler keeps its own setting (its retries come first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Optional

from .manifest import Case

EventFn = Optional[Callable[[dict], None]]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Torch / SimpleITK threads per worker: the usable cores shared between the workers."""
    return max(1, usable_cores() // max(1, int(workers)))


def failed_record(case: Case, error: str, seconds: float = 0.0) -> dict:
    """The record of a case that did not run to its end."""
    return {"case": case.name, "folder": case.folder, "input": case.input, "group": case.group,
            "extra": case.extra, "status": "failed", "error": error, "seconds": round(seconds, 3)}


@contextlib.contextmanager
def dask_client(workers: Optional[int] = None, scheduler: Optional[str] = None):
    """A distributed ``Client``: on ``scheduler`` if given, else on a new LocalCluster of
    ``workers`` single-threaded worker processes (closed on exit)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    # Our events say what happened to each case; the cluster's own INFO/WARNING lines would
    # only repeat it on stderr.
    from .worker_signals import spawned_ignoring_sigint

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # the wrapper stays while the cluster lives: a worker the nanny restarts starts through it too
        with spawned_ignoring_sigint():
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                # Loopback only; the scheduler's HTTP server on a free port (8787 may be taken).
                cluster = LocalCluster(n_workers=max(1, int(workers or 1)), threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                       silence_logs=logging.ERROR, preload=[f"{__package__}.worker_signals"])
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
                cluster.close()
    finally:
        quiet.setLevel(level)


def run_cases(cases: list, task: Callable[[Case], dict], workers: Optional[int] = None,
              scheduler: Optional[str] = None, on_event: EventFn = None) -> list:
    """Run ``task(case)`` for every case and return the records in the order of ``cases``.

    Parameters
    ----------
    cases : list of Case
    task : callable
        Picklable (a module-level function or a ``functools.partial`` of one); returns
        the case's record dict with at least ``case`` and ``status``.
    workers : int, optional
        LocalCluster size (default 1); ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    on_event : callable(dict), optional
        Called in the client with ``{"event": "started", "cases", "workers", "slots"}`` (``slots``:
        the worker threads, cases that run at once), then
        ``{"event": "case", "case", "status", "seconds", "error", "done", "total"}`` per
        finished case and ``{"event": "retry", "case", "error"}`` when a case is resubmitted.
    """
    from distributed import as_completed

    emit = on_event or (lambda ev: None)
    records: dict = {}
    started = {}
    with dask_client(workers, scheduler) as client:
        workers_info = client.scheduler_info(n_workers=-1).get("workers", {})
        slots = sum(int(w.get("nthreads") or 1) for w in workers_info.values())  # cases that run at once
        emit({"event": "started", "cases": len(cases), "workers": len(workers_info), "slots": slots})
        pending, futures = {}, []
        for i, case in enumerate(cases):
            fut = client.submit(task, case, key=f"case-{i}-{case.folder}-0", pure=False)
            pending[fut.key] = (case, 0, i)
            futures.append(fut)
            started[case.name] = time.perf_counter()
        done = 0
        queue = as_completed(futures)
        for fut in queue:
            case, attempt, i = pending.pop(fut.key)
            if fut.status == "finished":
                rec = fut.result()
            else:
                reason = _reason(fut)
                if attempt == 0:
                    emit({"event": "retry", "case": case.name, "error": reason})
                    retry = client.submit(task, case, key=f"case-{i}-{case.folder}-1", pure=False)
                    pending[retry.key] = (case, 1, i)
                    queue.add(retry)
                    continue
                rec = failed_record(case, f"WORKER_DIED: tried twice; {reason}",
                                    time.perf_counter() - started[case.name])
            records[case.name] = rec
            done += 1
            emit({"event": "case", "case": case.name, "status": rec.get("status"), "seconds": rec.get("seconds"),
                  "error": rec.get("error", ""), "done": done, "total": len(cases)})
            fut.release()
    return [records[c.name] for c in cases]


def _reason(fut) -> str:
    """One line on why a task did not finish."""
    try:
        exc = fut.exception()
    except Exception as err:  # noqa: BLE001 - the future itself may be lost with its worker
        exc = err
    if type(exc).__name__ == "KilledWorker":
        return "the worker process running it died (out of memory or a crash)"
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
