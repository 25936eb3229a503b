"""The "before" pass over a cohort: headers and image noise per case, no normalization."""

from __future__ import annotations

import time

from ..version import __version__
from .manifest import Case


def characterize_case(case: Case, edge: bool = True) -> dict:
    """Read one case and measure its :func:`~CTNormalizeLib.cohort.measure.scan_signature`.

    Returns a record like :func:`~CTNormalizeLib.cohort.case.run_case`'s (``status``
    ``done`` with ``before``, or ``failed`` with a one-line ``error``); never raises for a
    bad case.
    """
    from ..errors import BadInputError, CTNormalizeError
    from ..io import read_volume
    from ..io.validate import validate_ct
    from .batch import failed_record
    from .measure import scan_signature

    t0 = time.perf_counter()
    try:
        from pathlib import Path

        if not Path(case.input).exists():
            raise BadInputError(f"Input not found: {case.input}")
        vol = read_volume(case.input, series_uid=case.series_uid, validate=False)
        validate_ct(vol)
        sig = scan_signature(vol, edge=edge)
    except CTNormalizeError as exc:
        return failed_record(case, f"{exc.code}: {' '.join(exc.message.split())[:500]}", time.perf_counter() - t0)
    except MemoryError:
        return failed_record(case, "OOM: out of host memory", time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
        return failed_record(case, f"INTERNAL: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                             time.perf_counter() - t0)
    return {"case": case.name, "folder": case.folder, "input": case.input, "group": case.group,
            "extra": case.extra, "status": "done", "error": "", "before": sig,
            "input_warnings": vol.meta.get("warnings", []), "engine_version": __version__,
            "seconds": round(time.perf_counter() - t0, 3)}
