"""Cancellation of a run by SIGTERM/SIGINT: the one record of whether, why and when a run was cancelled.

A signal cancels a run until its outputs are published (:meth:`OutputGuard.commit
<CTNormalizeLib.io.outputs.OutputGuard.commit>`, a command's last step). After that the outputs are
complete and verified, so a late signal does not turn the run into a failure (exit 130 with the new
output in place and no ``done`` event): it is recorded, the command finishes reporting, and the
process says on stderr that the cancel came too late to stop anything.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Optional

from .errors import CancelledError

_reason: list = []
_published: list = []
_publishing: list = []
_holding: list = []
_depth: list = []


def reset():
    """Forget an earlier cancel and publication (a new run starts)."""
    _reason.clear()
    _published.clear()
    _publishing.clear()


def request(signum, frame=None):
    """Signal handler: record the cancel and raise :class:`CancelledError`, unless the outputs are
    being published or are published (then only record it)."""
    _reason[:] = [f"Cancelled by {signal.Signals(signum).name}."]
    if not _published and not _publishing and not _holding:
        raise CancelledError(_reason[0])


@contextlib.contextmanager
def holding():
    """Inside the block a signal is recorded, not raised: the run is removing what it staged (a failed or
    cancelled run) or reporting why, and a second Ctrl-C there would leave half of it or report twice. A
    cancel recorded meanwhile stays recorded (:func:`pending`): a run that was going to end well ends as
    cancelled (:func:`CTNormalizeLib.cli.main.main`), one that was failing ends with its error."""
    _holding.append(True)
    try:
        yield
    finally:
        _holding.pop()


@contextlib.contextmanager
def publishing():
    """Inside the block (the outputs are being moved into place) a signal is recorded, not raised;
    when the block ends without an exception the outputs are published (:func:`mark_published`).

    Blocking the signals (``pthread_sigmask``) is not enough: it holds them off only in the
    calling thread, and a process-directed signal is then taken by another thread (numpy's,
    a worker's), whose Python handler still runs in the main thread at once.
    """
    _publishing.append(True)
    try:
        yield
        mark_published()
    finally:
        _publishing.pop()


def check():
    """Raise :class:`CancelledError` if a signal asked to cancel before the outputs were published.

    The handler raises at once, but library code that catches broad exceptions could swallow that;
    commands call this before they write outputs, so a cancelled run never writes any.
    """
    if pending():
        raise CancelledError(_reason[0])


def pending() -> bool:
    """Whether a signal asked to cancel before the outputs were published. An exception raised then
    is the cancel's, whatever its type: a library may wrap the handler's exception (pydicom's writer
    adds its traceback; a C extension being imported turns it into ImportError)."""
    return bool(_reason) and not _published and not _publishing


def pending_here() -> bool:
    """:func:`pending`, inside a block that turns signals into cancels (:func:`on_signals`). What code that
    records a failure and goes on (the benchmarks' methods) asks: a cancel left from an earlier run in the
    same process must not turn a later failure into a cancel."""
    return bool(_depth) and pending()


def as_cancel(exc: BaseException) -> BaseException:
    """``exc``, or the cancel it stands for while one is pending (:func:`pending`)."""
    return CancelledError(_reason[0]) if pending() else exc


def reason() -> Optional[str]:
    """Why the run was cancelled (``"Cancelled by SIGINT."``), or None."""
    return _reason[0] if _reason else None


def mark_published():
    """The run's outputs are in place: from now on a signal is recorded, not raised."""
    _published[:] = [True]


def late_cancel() -> Optional[str]:
    """The message for a cancel that arrived after the outputs were published, or None."""
    if _reason and _published:
        return (f"{_reason[0][:-1]} after the outputs were complete and published: the run had finished "
                "its work, so they are kept.")
    return None


@contextlib.contextmanager
def on_signals(restore: bool = True):
    """Turn SIGTERM and SIGINT into :class:`CancelledError` inside the block, until the outputs are
    published. ``restore=False`` leaves the handler installed after the block (a process's own
    handler: it only records a signal once the run has marked its end, see :func:`mark_published`).

    The exception is raised from the signal handler, i.e. at the next Python bytecode in the main
    thread, so long computations must be chunked (per slice / per tile) to cancel within about a
    second. Writers clean their temp files in ``finally``.
    """
    if not _depth:  # nested blocks keep what the outer one recorded (a cancel a library swallowed)
        reset()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, request)
    _depth.append(True)
    try:
        yield
    finally:
        _depth.pop()
        if restore:
            for s, h in old.items():
                signal.signal(s, h)
