"""Running every method of a benchmark on one source scan: outputs, times, and what failed or was skipped.

A method that fails is a result, not a crash (recorded as an error); one that does not cover
the pair (:class:`~CTNormalizeLib.errors.NoModelError`) is skipped. A cancel (Ctrl-C, SIGTERM)
while a method runs is neither: it ends the benchmark, whatever exception a library wrapped it in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .. import cancellation
from ..errors import NoModelError

log = logging.getLogger(__name__)


@dataclass
class MethodRuns:
    """What :func:`run_methods` found: ``outputs`` by method name, wall and CPU seconds (all threads) per
    method, and the ``errors`` and ``skipped`` reasons."""

    outputs: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    cpu_seconds: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def run_methods(methods, source, sprot, tprot, reference, case_name: str) -> MethodRuns:
    """``m.fn(source, sprot, tprot, reference=reference)`` for every method ``m`` (see the module docstring)."""
    runs = MethodRuns()
    for m in methods:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            runs.outputs[m.name] = m.fn(source, sprot, tprot, reference=reference)
        except NoModelError as exc:
            runs.skipped[m.name] = exc.message
        except Exception as exc:  # noqa: BLE001 - a failing method is a result, not a crash
            if cancellation.pending_here():
                raise cancellation.as_cancel(exc) from exc
            runs.errors[m.name] = f"{type(exc).__name__}: {exc}"
            log.warning("method %s failed on %s: %s", m.name, case_name, exc)
        runs.seconds[m.name] = time.perf_counter() - t0
        runs.cpu_seconds[m.name] = time.process_time() - c0
    return runs
