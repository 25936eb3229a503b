"""Events of the background-process protocol (DESIGN.md section 4).

In ``json`` mode every event is one JSON object on one line of stdout, flushed at once;
nothing else may be printed to stdout then (logs go to stderr). In ``bar`` mode the same
events drive a tqdm bar on stderr. ``none`` prints warnings and errors to stderr only.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from .. import cancellation
from ..errors import CancelledError
from ..imaging.progress import ProgressFn
from ..io.jsonfile import dumps


class EventStream:
    """Emit started / progress / warning / done / error events.

    Parameters
    ----------
    mode : {"json", "bar", "none"}
    steps : int
        Number of stages announced in ``started``.
    stream : file
        Where JSON lines go (stdout by default).
    """

    def __init__(self, mode: str = "bar", steps: int = 1, stream=None):
        if mode not in ("json", "bar", "none"):
            raise ValueError(f"progress mode must be json, bar or none, not {mode!r}")
        self.mode = mode
        self.steps = max(1, int(steps))
        self.stream = stream if stream is not None else sys.stdout
        self._t0 = time.monotonic()
        self._bar = None
        self._last_emit = 0.0
        self._last_fraction = -1.0
        self.warnings: list[dict] = []

    def _emit(self, event: dict):
        if self.mode == "json":
            from ..contracts.events import parse_event

            parse_event(event)  # only the contract's events go out (contracts/events.py)
            self.stream.write(dumps(event) + "\n")
            self.stream.flush()

    def started(self, method: str, device: str = "cpu", model_sha256: Optional[str] = None, **extra):
        self._t0 = time.monotonic()
        ev = {"event": "started", "steps": self.steps, "device": device, "method": method,
              "model_sha256": model_sha256}
        ev.update(extra)
        self._emit(ev)
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=100, file=sys.stderr, unit="%", desc=method,
                             bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}]")

    def progress(self, stage: str, fraction: float, step: Optional[int] = None, force: bool = False):
        """Report overall progress ``fraction`` in [0, 1] during ``stage``.

        Throttled to about 5 events a second unless ``force``. Raises :class:`CancelledError`
        when a signal asked to cancel and some library code swallowed the handler's exception
        (MONAI's import machinery does), so a cancel always lands at the next progress report.
        """
        check_cancelled()
        fraction = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        if not force and now - self._last_emit < 0.2 and fraction < 1.0:
            return
        self._last_emit = now
        elapsed = now - self._t0
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 1e-3 else None
        if step is None:
            step = min(self.steps, 1 + int(fraction * self.steps))
        self._emit({"event": "progress", "step": step, "steps": self.steps, "stage": stage,
                    "fraction": round(fraction, 4), "eta_s": None if eta is None else round(eta, 1)})
        if self._bar is not None:
            self._bar.set_description(stage)
            self._bar.n = round(100 * fraction)
            self._bar.refresh()
        self._last_fraction = fraction

    def callback(self) -> ProgressFn:
        """A ``progress(stage, fraction)`` function for library calls."""
        return lambda stage, fraction: self.progress(stage, fraction)

    def warning(self, code: str, message: str):
        self.warnings.append({"code": code, "message": message})
        self._emit({"event": "warning", "code": code, "message": message})
        if self.mode != "json":
            self._write_stderr(f"warning [{code}]: {message}")

    def done(self, output: Optional[str], report: dict):
        self._close_bar()
        self._emit({"event": "done", "output": output, "report": report})

    def error(self, code: str, message: str):
        self._close_bar()
        self._emit({"event": "error", "code": code, "message": message})
        self._write_stderr(f"ctnormalize: error [{code}]: {message}")

    def _write_stderr(self, text: str):
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def check_cancelled():
    """Raise :class:`CancelledError` if a signal asked to cancel inside :func:`cancel_on_signals`
    (see :func:`CTNormalizeLib.cancellation.check`)."""
    cancellation.check()


#: Turn SIGTERM and SIGINT into :class:`CancelledError` inside the block, until the outputs are published.
cancel_on_signals = cancellation.on_signals


def run_with_events(events: EventStream, work: Callable, oom_hint: str = "") -> int:
    """Run ``work(guard)`` as a process-protocol command and return its exit code.

    ``guard`` is an :class:`~CTNormalizeLib.io.outputs.OutputGuard` with no outputs yet:
    ``work`` registers its inputs and outputs, checks them before its work, stages its files
    and commits them at the end. SIGTERM/SIGINT cancel the run; every failure becomes one
    ``error`` event (and a line on stderr) with the code and exit code of DESIGN.md section
    4, and the staged files are removed, so no half-finished output is left and no file that
    existed before the run is deleted. A closed stdout (``| head``) ends the run like a
    cancel and re-raises ``BrokenPipeError`` for :func:`~CTNormalizeLib.cli.main.main`.
    """
    import traceback

    from ..errors import CTNormalizeError, ResourceExhaustedError, from_os_error
    from ..io.outputs import OutputGuard

    guard = OutputGuard()

    def fail(code: str, message: str, exit_code: int) -> int:
        with cancellation.holding():  # a second Ctrl-C now would only print the error twice
            guard.abort()
            events.error(code, guard.public(message))
        return exit_code

    try:
        with cancel_on_signals():
            return work(guard)
    except BrokenPipeError:
        guard.abort()
        raise
    except Exception as exc:  # noqa: BLE001 - the protocol wants every failure as an event
        with cancellation.holding():  # a second Ctrl-C must not cut the error event short
            if cancellation.pending():  # whatever a library wrapped the cancel in
                exc = cancellation.as_cancel(exc)
            elif isinstance(exc, MemoryError):
                exc = ResourceExhaustedError(f"Out of host memory. {oom_hint}".strip())
            elif isinstance(exc, OSError):
                exc = from_os_error(exc)
            elif not isinstance(exc, CTNormalizeError):
                traceback.print_exc(file=sys.stderr)
                return fail("INTERNAL", f"Internal error: {type(exc).__name__}: {exc}", 1)
            return fail(exc.code, exc.message, exc.exit_code)
    finally:
        guard.abort()  # after a commit there is nothing left to remove


def default_progress_mode() -> str:
    """``bar`` on a terminal, ``none`` otherwise."""
    return "bar" if sys.stderr.isatty() else "none"
