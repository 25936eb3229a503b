"""Batch's LocalCluster workers ignore SIGINT, from their first instruction.

A Ctrl-C on a terminal reaches the whole foreground process group. The batch process
cancels the run and closes the cluster; without this, each worker process also raised
KeyboardInterrupt in its event loop and printed a traceback (or the nanny reported the
worker dead) over the batch's own "cancelled" line.

Two parts: :func:`spawned_ignoring_sigint` makes multiprocessing start the worker processes
through a two-line shell wrapper that ignores SIGINT before it execs Python (an ignored signal
stays ignored across exec, and Python then installs no handler), so a Ctrl-C while they import
cannot reach them; the preload :func:`dask_setup` sets the same in case the wrapper could not
be used (not POSIX).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading


def dask_setup(worker) -> None:
    """Called by distributed in each worker process as it starts (see ``preload``)."""
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def spawned_ignoring_sigint():
    """While in the block, processes multiprocessing spawns start with SIGINT ignored (POSIX; else a no-op).

    multiprocessing has one spawn executable per process; the batch process starts no other
    processes while its cluster lives, and the executable is restored afterwards.
    """
    if os.name != "posix":
        yield
        return
    import multiprocessing.spawn as spawn
    import shlex
    import shutil
    import tempfile

    python = spawn.get_executable()
    folder = tempfile.mkdtemp(prefix="ctnormalize-worker-")
    try:
        wrapper = os.path.join(folder, "python")
        with open(wrapper, "w", encoding="utf-8") as fh:
            fh.write(f"#!/bin/sh\ntrap '' INT\nexec {shlex.quote(os.fsdecode(python))} \"$@\"\n")
        os.chmod(wrapper, 0o700)
        spawn.set_executable(wrapper)
        yield
    finally:
        spawn.set_executable(python)
        shutil.rmtree(folder, ignore_errors=True)
