"""Run an engine command in a child process and follow its JSON-lines protocol.

The core (line parsing, state machine, process-tree kill) is plain Python: a thread reads
the child's stdout into a queue and :meth:`EngineRun.poll` drains it on the caller's thread.
Inside Slicer a ``qt.QTimer`` calls ``poll`` (:class:`QtPoller`), so the GUI stays responsive;
tests and batch scripts call :meth:`EngineRun.wait` instead.

We read the pipe ourselves rather than use ``launchConsoleProcess(blocking=False)`` because
that argument only exists from Slicer 5.12 on, and we support 5.10.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from typing import Callable, Optional

from .i18n import _
from .proctree import kill_process_tree

log = logging.getLogger(__name__)

EXIT_CODES = {0: "OK", 1: "INTERNAL", 2: "BAD_INPUT", 3: "NO_MODEL", 4: "OOM", 130: "CANCELLED"}
#: Exit statuses of a child killed by a signal it did not ask for (POSIX: -signal; a shell: 128 + signal).
KILLED_BY_SYSTEM = {-9: "SIGKILL", 137: "SIGKILL", -6: "SIGABRT", 134: "SIGABRT", -11: "SIGSEGV", 139: "SIGSEGV"}
KILLED_MESSAGE = _("The engine was stopped by the system ({signal}), for example because the computer ran out "
                   "of memory. Try the CPU device, close other programs, or use a smaller volume.")


class RunState(enum.Enum):
    """Where a run stands. Terminal states: COMPLETED, CANCELLED, FAILED."""

    IDLE = "idle"
    STARTING = "starting"
    IN_PROGRESS = "in progress"
    IMPORT_RESULTS = "importing results"
    CANCEL_REQUESTED = "cancel requested"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RunState.COMPLETED, RunState.CANCELLED, RunState.FAILED)

    @property
    def running(self) -> bool:
        return self in (RunState.STARTING, RunState.IN_PROGRESS, RunState.IMPORT_RESULTS,
                        RunState.CANCEL_REQUESTED)


def parse_event_line(line: str) -> Optional[dict]:
    """The event of one output line, or None when the line is a log line.

    A line is an event when it is a JSON object with an ``"event"`` key. Slicer's
    ``launchConsoleProcess`` merges stderr into stdout, so log lines are expected and kept.
    """
    text = line.strip()
    if not text.startswith("{") or not text.endswith("}"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        return None
    return obj


def parse_json_document(lines: list[str]):
    """The JSON document printed by a ``--json`` command, from its output lines.

    Log lines (stderr merged in) are skipped; the document is the longest run of lines that
    parses. Returns None when nothing parses.
    """
    text = "\n".join(lines)
    try:
        return json.loads(text)
    except ValueError:
        pass
    # Look for the first line opening a JSON value and try successive spans from it.
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("{", "[")):
            for j in range(len(lines), i, -1):
                try:
                    return json.loads("\n".join(lines[i:j]))
                except ValueError:
                    continue
    return None


def default_launcher(args: list[str], env: Optional[dict] = None, cwd: Optional[str] = None):
    """Start ``args`` with stdout piped (stderr merged), the way Slicer does.

    Inside Slicer this is ``slicer.util.launchConsoleProcess`` (console hidden on Windows,
    Slicer's startup environment); elsewhere a plain ``subprocess.Popen`` with the same pipes.
    """
    try:
        import slicer

        app = getattr(slicer, "app", None)
    except ImportError:
        app = None
    if app is not None:
        return slicer.util.launchConsoleProcess(args, updateEnvironment=env, cwd=cwd)
    full_env = os.environ.copy()
    full_env.update(env or {})
    return subprocess.Popen(args, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, encoding="utf-8",
                            errors="replace")


class EngineRun:
    """One engine command in a child process, followed through its events.

    Parameters
    ----------
    args : list of str
        The command line.
    env : dict, optional
        Extra environment variables.
    cwd : str, optional
        Working directory of the child.
    on_event : callable(run, event), optional
        Called on the polling thread for every event (``started``, ``progress``, ``warning``,
        ``done``, ``error``) and for ``{"event": "log", "line": ...}``.
    on_finished : callable(run), optional
        Called once, on the polling thread, when the run reaches COMPLETED / FAILED / CANCELLED.
        A run whose child exited 0 stays in IMPORT_RESULTS until the owner calls
        :meth:`set_completed` (or :meth:`set_failed`) after importing the outputs, unless
        ``auto_complete``.
    cleanup : callable(), optional
        Called once when the run finishes, whatever happened (temp dir removal).
    launcher : callable(args, env, cwd) -> Popen, optional
    auto_complete : bool
        Go straight to COMPLETED on a clean exit (commands with nothing to import).
    """

    def __init__(self, args, env=None, cwd=None, on_event=None, on_finished=None, cleanup=None,
                 launcher: Callable = default_launcher, auto_complete: bool = False):
        self.args = [str(a) for a in args]
        self.env = dict(env or {})
        self.cwd = cwd
        self.on_event = on_event
        self.on_finished = on_finished
        self.cleanup = cleanup
        self.launcher = launcher
        self.auto_complete = auto_complete
        self.id = uuid.uuid4().hex  # the run's identity: results are matched by it, never by node ID
        self.state = RunState.IDLE
        self.proc = None
        self.returncode: Optional[int] = None
        # the engine's events as the typed records of CTNormalizeLib.contracts.events
        self.started_event = None
        self.progress_event = None
        self.done_event = None
        self.error_event = None
        self.protocol_error: Optional[str] = None
        self.warnings: list[dict] = []
        self.log_lines: list[str] = []
        self.output_lines: list[str] = []
        self.error_message: Optional[str] = None
        self.error_code: Optional[str] = None
        self.t_start: Optional[float] = None
        self.t_end: Optional[float] = None
        self._queue: queue.Queue = queue.Queue()
        self._reader: Optional[threading.Thread] = None
        self._finished_called = False
        self._cleaned = False

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> "EngineRun":
        """Launch the child and the reader thread; returns self."""
        if self.state is not RunState.IDLE:
            raise RuntimeError(f"This run was already started (state {self.state.value}).")
        self.state = RunState.STARTING
        self.t_start = time.monotonic()
        try:
            self.proc = self.launcher(self.args, self.env, self.cwd)
        except Exception as exc:  # the executable is missing, permissions, ...
            self._fail("INTERNAL", f"Could not start the engine: {exc}")
            self._finished_called = True  # the caller gets the exception: one message, not two
            self._finish()
            raise
        self._reader = threading.Thread(target=self._read, name="ctnormalize-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self):
        stream = _utf8_lines(self.proc.stdout)
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(("line", line.rstrip("\r\n")))
        except (ValueError, OSError) as exc:  # pipe closed under us
            self._queue.put(("line", f"[reader stopped: {exc}]"))
        self.proc.wait()
        self._queue.put(("exit", self.proc.returncode))

    def poll(self) -> RunState:
        """Handle everything the child said since the last call; returns the state.

        Call this on the thread that owns the scene (Slicer's main thread).
        """
        while True:
            try:
                kind, data = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "line":
                self._handle_line(data)
            else:
                self._handle_exit(int(data))
        return self.state

    def _handle_line(self, line: str):
        self.output_lines.append(line)
        event = parse_event_line(line)
        if event is None:
            if _is_json_document_line(line):  # a --json command's result: read by the owner, not logged
                return
            if line.strip():
                self.log_lines.append(line)
                self._notify({"event": "log", "line": line})
            return
        from CTNormalizeLib.contracts.events import parse_event, to_dict

        try:
            typed = parse_event(event)
        except ValueError as exc:
            # not one of the engine's events: the engine and this module do not speak the same protocol
            self.protocol_error = self.protocol_error or str(exc)
            self.log_lines.append(line)
            self._notify({"event": "log", "line": line})
            return
        kind = typed.event
        if kind == "started":
            self.started_event = typed
            if self.state is RunState.STARTING:
                self.state = RunState.IN_PROGRESS
        elif kind == "progress":
            self.progress_event = typed
            if self.state is RunState.STARTING:
                self.state = RunState.IN_PROGRESS
        elif kind == "warning":
            self.warnings.append({"code": typed.code, "message": typed.message})
        elif kind == "done":
            self.done_event = typed
        elif kind == "error":
            self.error_event = typed
        self._notify(to_dict(typed))

    def _handle_exit(self, code: int):
        self.returncode = code
        self.t_end = time.monotonic()
        if self.state is RunState.CANCEL_REQUESTED or code in (130, -15, -2):
            self.state = RunState.CANCELLED
            self.error_code = "CANCELLED"
            self.error_message = _("Cancelled.")
            self._finish()
        elif code == 0 and self.error_event is None and self.protocol_error is not None:
            self._fail("PROTOCOL", _("The engine sent an event this module does not understand ({error}); the engine "
                                     "and the module are from different versions: reinstall the extension.").format(
                                         error=self.protocol_error))
            self._finish()
        elif code == 0 and self.error_event is None:
            if self.auto_complete:
                self.state = RunState.COMPLETED
                self._finish()
            else:
                self.state = RunState.IMPORT_RESULTS
                self._notify({"event": "import"})
        elif code in KILLED_BY_SYSTEM and self.error_event is None:
            self._fail("KILLED", KILLED_MESSAGE.format(signal=KILLED_BY_SYSTEM[code]))
            self._finish()
        else:
            if self.error_event is not None:
                self._fail(self.error_event.code or EXIT_CODES.get(code, "INTERNAL"), self.error_event.message)
            else:
                tail = "\n".join(self.log_lines[-5:])
                self._fail(EXIT_CODES.get(code, "INTERNAL"),
                           _("The engine stopped with exit code {code}.").format(code=code)
                           + (f"\n{tail}" if tail else ""))
            self._finish()

    def _fail(self, code: str, message: str):
        self.state = RunState.FAILED
        self.error_code = code
        self.error_message = message or f"The engine failed ({code})."

    def _notify(self, event: dict):
        if self.on_event is not None:
            try:
                self.on_event(self, event)
            except Exception:  # a GUI callback must not break the run's bookkeeping
                log.exception("CTNormalize: event callback failed")

    def _finish(self):
        if not self._cleaned:
            self._cleaned = True
            if self.cleanup is not None:
                try:
                    self.cleanup()
                except Exception:
                    log.exception("CTNormalize: cleanup failed")
        if not self._finished_called:
            self._finished_called = True
            if self.on_finished is not None:
                self.on_finished(self)

    def set_completed(self):
        """Mark a run in IMPORT_RESULTS as COMPLETED (outputs imported) and finish it."""
        self.state = RunState.COMPLETED
        self._finish()

    def set_failed(self, code: str, message: str):
        """Mark the run FAILED (e.g. the output could not be imported) and finish it."""
        self._fail(code, message)
        self._finish()

    def cancel(self, timeout: float = 5.0, block: bool = False):
        """Stop the child and all its descendants. Safe to call in any state.

        SIGTERM first (the engine then cleans up and exits 130 within about a second), SIGKILL
        for what is left after ``timeout`` s. Unless ``block``, the waiting happens on a helper
        thread so the GUI never freezes; the run reaches CANCELLED through :meth:`poll`.
        """
        if self.state.finished:
            return
        if self.proc is None:
            self.state = RunState.CANCELLED
            self._finish()
            return
        self.state = RunState.CANCEL_REQUESTED
        self._notify({"event": "cancel"})
        if self.proc.poll() is None:
            if block:
                kill_process_tree(self.proc.pid, timeout=timeout)
            else:
                threading.Thread(target=kill_process_tree, args=(self.proc.pid, timeout),
                                 name="ctnormalize-cancel", daemon=True).start()

    def abandon(self, reason: str = "", timeout: float = 5.0):
        """Stop the child now and finish the run synchronously (scene close, reload, exit).

        Unlike :meth:`cancel`, this waits for the process tree to end, removes the temp
        folder before returning and never imports a result.
        """
        if self.state.finished:
            return
        if self.proc is not None and self.proc.poll() is None:
            kill_process_tree(self.proc.pid, timeout=timeout)
        self.state = RunState.CANCELLED
        self.error_code = "CANCELLED"
        self.error_message = reason or _("Cancelled.")
        self.t_end = time.monotonic()
        self._finish()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> RunState:
        """Poll until the child has exited and every line is handled (for scripts and tests).

        Returns in IMPORT_RESULTS (clean exit, outputs to import) or a finished state.
        Raises TimeoutError after ``timeout`` s, leaving the child running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.poll()
            if state.finished or state is RunState.IMPORT_RESULTS:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(_("The engine did not finish within {seconds} s.").format(seconds=timeout))
            time.sleep(interval)

    # -- progress ----------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        if self.state in (RunState.IMPORT_RESULTS, RunState.COMPLETED):
            return 1.0
        ev = self.progress_event
        return float(ev.fraction or 0.0) if ev else 0.0

    @property
    def stage(self) -> str:
        ev = self.progress_event
        return str(ev.stage) if ev else ""

    @property
    def eta_s(self) -> Optional[float]:
        ev = self.progress_event
        return ev.eta_s if ev else None

    @property
    def elapsed_s(self) -> float:
        if self.t_start is None:
            return 0.0
        return (self.t_end or time.monotonic()) - self.t_start


def _utf8_lines(stream):
    """The child's output as UTF-8 text whatever the locale, undecodable bytes replaced.

    ``launchConsoleProcess`` opens the pipe in the locale's encoding (cp1252 on many Windows
    machines), where one odd byte would raise and end the reader; the engine writes UTF-8.
    """
    import io

    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return stream
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="replace", newline=None)


def _is_json_document_line(line: str) -> bool:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")) and not (text.startswith("[") and text.endswith("]")):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def format_eta(seconds: Optional[float]) -> str:
    """``"1 min 05 s"`` style text for an ETA in seconds ('' when unknown)."""
    if seconds is None:
        return ""
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class QtPoller:
    """Drive :meth:`EngineRun.poll` from the Qt event loop (the thin Slicer adapter).

    Re-arms a ``qt.QTimer.singleShot`` every ``interval_ms`` until the run leaves the running
    states; ``on_tick`` (optional) is called after each poll for GUI updates.
    """

    def __init__(self, run: EngineRun, interval_ms: int = 200, on_tick: Optional[Callable] = None):
        self.run = run
        self.interval_ms = int(interval_ms)
        self.on_tick = on_tick
        self.stopped = False

    def start(self):
        import qt

        qt.QTimer.singleShot(0, self._tick)
        return self

    def stop(self):
        self.stopped = True

    def _tick(self):
        if self.stopped:
            return
        import qt

        state = self.run.poll()
        if self.on_tick is not None:
            self.on_tick(self.run)
        if state.running and state is not RunState.IMPORT_RESULTS:
            qt.QTimer.singleShot(self.interval_ms, self._tick)


def remove_dir(path: Optional[str]):
    """Remove a temp folder, ignoring errors (files may be held open on Windows)."""
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
