"""Run one long C call (a SimpleITK read/write, a heavy import) so that signals stay prompt.

Python runs signal handlers in the main thread between bytecodes, so while the main thread
sits in one C call (``sitk.WriteImage`` of a large compressed volume, the import of torch)
a SIGTERM waits until the call returns, which can take seconds. Here the call runs in a
worker thread while the main thread waits in short, interruptible sleeps: the handler runs
at once and its exception (:class:`~CTNormalizeLib.errors.CancelledError`) propagates from
the wait. The worker is a daemon thread and is abandoned; callers make sure whatever it
still writes lands somewhere that is cleaned up (a temp folder that is removed).
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")

POLL_S = 0.05
_workers: list = []


def call_interruptibly(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, with the calling (main) thread free to handle signals.

    Off the main thread (where signals are not delivered anyway) ``fn`` is called directly.

    Returns
    -------
    Whatever ``fn`` returns; an exception raised by ``fn`` is re-raised here.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    box: dict = {}

    def work():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"interruptible-{getattr(fn, '__name__', 'call')}", daemon=True)
    _workers[:] = [w for w in _workers if w.is_alive()] + [worker]
    worker.start()
    while worker.is_alive():
        worker.join(POLL_S)
    if "error" in box:
        raise box["error"]
    return box["result"]


def abandoned() -> bool:
    """True while a worker of an interrupted call is still running (the process should end
    with ``os._exit`` rather than wait for it in interpreter shutdown)."""
    return any(w.is_alive() for w in _workers)
