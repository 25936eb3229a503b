"""Stopping a child process together with everything it started (psutil, with a fallback)."""

from __future__ import annotations

import os
import time


def kill_process_tree(pid: int, timeout: float = 5.0) -> None:
    """Terminate a process and all its descendants; kill what is left after ``timeout`` s.

    The whole tree matters: Slicer's ``PythonSlicer`` launcher starts the real interpreter
    as a child, and killing only the launcher leaves the worker running.
    """
    try:
        import psutil
    except ImportError:  # psutil is installed on first use; without it only the direct child goes
        _kill_without_psutil(pid, timeout)
        return
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        procs = [parent]
    # SIGTERM first: the engine cancels cleanly and removes its partial outputs (exit 130).
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = _wait_without_reaping(procs, timeout)
    # Descendants before the launcher: once the launcher exits the run counts as finished,
    # so nothing of the tree may outlive that moment.
    alive.sort(key=lambda p: p.pid == parent.pid)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_without_reaping(alive, timeout)


def _wait_without_reaping(procs, timeout: float) -> list:
    """The processes still running after up to ``timeout`` s.

    Not ``psutil.wait_procs``: for our own child it calls ``waitpid`` and reaps it, and then
    ``subprocess.Popen`` can no longer read the exit status (it reports 0 instead of 130).
    A zombie counts as exited; its parent (the Popen owner) collects the status.
    """
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _kill_without_psutil(pid: int, timeout: float) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    except OSError:
        pass
