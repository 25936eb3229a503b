"""One case of a batch, as run on a Dask worker: normalize, measure, record.

:func:`run_case` never raises for a bad case: it returns a record with ``status``
``failed`` and a one-line ``error``. A case whose record says it was done with the same
input (sha256), the same plan and the same engine version, and whose output is still
there, is ``skipped`` and its earlier results are returned.

Each case gets a folder ``OUTDIR/cases/<case>/`` with the normalized volume (or DICOM
series) and ``record.json``, written last and atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..version import __version__
from .manifest import CASE_RECORD, Case

_OUTPUT_NAMES = {"nrrd": "normalized.nrrd", "nii.gz": "normalized.nii.gz", "dicom": "normalized"}


@dataclass
class BatchSettings:
    """What every case of a batch does.

    ``threads`` is the torch / SimpleITK thread count per worker (None: leave as is).
    """

    target: str
    method: str = "auto"
    source: str = "auto"
    device: str = "auto"
    output_format: str = "nrrd"
    output_type: str = "int16"
    texture: str = "clean"
    emphysema: bool = False
    threshold: float = -950.0
    radiomics: bool = False
    radiomics_params: Optional[str] = None
    measure: bool = True
    threads: Optional[int] = None

    def __post_init__(self):
        from ..io.write import check_output_type

        check_output_type(self.output_type, self.output_format == "dicom", "choose output_format nrrd / nii.gz")

    def plan(self, case: Case) -> dict:
        """Everything that decides a case's outputs (compared on a re-run)."""
        return {
            "target": self.target, "method": self.method, "source": case.source or self.source,
            "series_uid": case.series_uid, "output_format": self.output_format,
            "output_type": self.output_type if self.output_format != "dicom" else None, "texture": self.texture,
            "emphysema": self.emphysema, "threshold": self.threshold if self.emphysema else None,
            "radiomics": self.radiomics, "radiomics_params": self.radiomics_params if self.radiomics else None,
            "segments": case.segments if self.radiomics else None, "measure": self.measure,
        }


def _hash_files(files, h) -> None:
    for f in files:
        h.update(Path(f).name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)


def input_hash(case: Case, settings: BatchSettings) -> str:
    """sha256 of the case's input (every file of a DICOM folder; a header's data file too),
    and of its segments and params file when radiomics is on."""
    h = hashlib.sha256()
    p = Path(case.input)
    if p.is_dir():
        _hash_files(sorted(f for f in p.iterdir() if f.is_file()), h)
    else:
        files = [p]
        if p.suffix.lower() in (".mhd", ".nhdr"):
            files += sorted(f for f in p.parent.glob(p.stem + ".*") if f != p and f.is_file())
        _hash_files(files, h)
    if settings.radiomics:
        for extra in (case.segments, settings.radiomics_params):
            if extra and Path(extra).is_file():
                _hash_files([extra], h)
    return h.hexdigest()


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def output_path(outdir, case: Case, settings: BatchSettings) -> Path:
    return Path(outdir) / "cases" / case.folder / _OUTPUT_NAMES[settings.output_format]


def _previous(outdir, case: Case, settings: BatchSettings, digest: str) -> Optional[dict]:
    """The earlier record when it matches this run and its output is still there."""
    path = Path(outdir) / "cases" / case.folder / CASE_RECORD
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (rec.get("status") == "done" and rec.get("engine_version") == __version__
            and rec.get("input_sha256") == digest and rec.get("plan_sha256") == plan_hash(settings.plan(case)))
    return rec if same and output_path(outdir, case, settings).exists() else None


def set_threads(n: Optional[int]) -> None:
    """Thread count for torch (now or when imported later), BLAS/OpenMP and SimpleITK."""
    if not n:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))


def _jsonable(obj):
    """NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj) -> str:
    """One-line strict JSON of a record."""
    return json.dumps(_jsonable(obj), allow_nan=False, default=str)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def run_case(case: Case, settings: BatchSettings, outdir: str, run_id: str = "") -> dict:
    """Run one case (see the module notes); returns its record, never raises for a bad case.

    ``run_id`` names the batch run: a case that Dask computes again in the same run (its
    result was lost with a worker) returns its record as ``done``, not ``skipped``.
    """
    from ..errors import CTNormalizeError

    t0 = time.perf_counter()
    base = {"case": case.name, "folder": case.folder, "input": case.input, "group": case.group,
            "extra": case.extra, "engine_version": __version__}
    try:
        digest = input_hash(case, settings) if Path(case.input).exists() else None
        prev = _previous(outdir, case, settings, digest) if digest else None
        if prev is not None and run_id and prev.get("run_id") == run_id:
            return prev
        if prev is not None:
            # its seconds stay those of the run that normalized it: the time the case takes, in the tables
            return {**prev, "status": "skipped", "seconds_check": round(time.perf_counter() - t0, 3)}
        set_threads(settings.threads)
        rec = _normalize_and_measure(case, settings, outdir)
        rec.update(base, status="done", error="", input_sha256=digest, plan=settings.plan(case),
                   plan_sha256=plan_hash(settings.plan(case)), settings=asdict(settings), run_id=run_id,
                   seconds=round(time.perf_counter() - t0, 3))
        from ..io.atomic import atomic_write_text

        atomic_write_text(Path(outdir) / "cases" / case.folder / CASE_RECORD, dumps(rec) + "\n")
        return rec
    except CTNormalizeError as exc:
        error = f"{exc.code}: {_one_line(exc.message)}"
    except MemoryError:
        error = "OOM: out of host memory"
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
        error = f"INTERNAL: {type(exc).__name__}: {_one_line(exc)}"
    return {**base, "status": "failed", "error": error, "seconds": round(time.perf_counter() - t0, 3)}


def _after_warnings(sig: dict, kernel_tag: str, case_warnings: list) -> dict:
    """The normalized scan's signature, its kernel check said of the output (tagged with the kernel
    the method made, :meth:`~CTNormalizeLib.contracts.derivation.Derivation.kernel_tag`); dropped where
    the run's own read-back (``OUTPUT_KERNEL_NOT_REACHED`` in ``case_warnings``) already said it."""
    from ..signature.readback import KERNEL_NOT_REACHED

    if any(w.get("code") == KERNEL_NOT_REACHED for w in case_warnings):
        sig["warnings"] = [w for w in sig.get("warnings", []) if w.get("code") != "KERNEL_TAG_DISAGREES"]
    for w in sig.get("warnings", []):
        if w.get("code") == "KERNEL_TAG_DISAGREES" and sig.get("kernel_class_pixels"):
            w["code"] = "OUTPUT_KERNEL_DIFFERS"
            w["message"] = (f"The normalized scan's remaining noise looks like a {sig['kernel_class_pixels']} kernel, "
                            f"not the {kernel_tag} of its tag: the kernel conversion may be "
                            "partial (see the case's warnings), or too little noise is left to read the kernel from "
                            "(the clean texture removes most of it).")
    return sig


def _normalize_and_measure(case: Case, settings: BatchSettings, outdir: str) -> dict:
    from ..io import read_volume, write_volume
    from ..io.write import as_written, output_type
    from ..contracts.derivation import derivation_from_report
    from ..io.dicom_write import write_derived_series
    from ..io.validate import validate_ct
    from ..normalization import normalize
    from ..plan import source_given
    from ..quantify.coverage import Z_EXTENT_DIFFERS, z_extent_warning
    from .measure import scan_signature

    if not Path(case.input).exists():
        from ..errors import BadInputError

        raise BadInputError(f"Input not found: {case.input}")
    clock = _Clock()
    vol = read_volume(case.input, series_uid=case.series_uid, validate=False)
    validate_ct(vol)
    rec: dict = {"input_warnings": vol.meta.get("warnings", []), "timings": clock.times}
    clock.lap("read_s")
    segments = _check_segments(case, vol) if settings.radiomics else None  # before the work they would waste
    source = case.source or settings.source
    outcome = normalize(vol, source, settings.target, method=settings.method,
                        device=settings.device, texture=settings.texture)
    plan = outcome.plan
    clock.lap("normalize_s")
    # without a source protocol from the user the plan measured the input with its tags as the only
    # priors, as the cohort's figures do: its signature is the one the tables report
    rec["before"] = (scan_signature(vol, measured=None if source_given(source) else plan.source_signature)
                     if settings.measure else None)
    clock.lap("signature_before_s")
    out = output_path(outdir, case, settings)
    run_report = outcome.report(case.input, str(out))
    derivation = derivation_from_report(run_report)
    out_vol = outcome.volume
    warnings = list(outcome.warnings)
    if settings.output_format == "dicom":
        written = write_derived_series(out_vol, out, vol, derivation)
        warnings += written.warnings
        # a derived series stores whole HU when they fit int16 (slope 1), as a volume file does
        out_vol = as_written(out_vol, output_type(out_vol.hu, "int16")[0])
        dtype = "int16"  # a derived series always stores int16 (whole HU when they fit, else with a slope)
    else:
        dtype, warning = output_type(out_vol.hu, settings.output_type)
        if warning:
            warnings.append(warning)
        write_volume(out_vol, out, dtype=dtype, write_tags=True)  # the output's tags (Derivation.output_meta)
        out_vol = as_written(out_vol, dtype)  # the measurements below are of the file's values
    run_report.output_type = dtype
    rec.update(output=str(out), method=plan.method, source_spec=plan.source.spec(), target_spec=plan.target.spec(),
               warnings=warnings, report=run_report.to_dict())
    clock.lap("write_s")
    rec["after"] = (_after_warnings(scan_signature(out_vol), out_vol.meta.get("ConvolutionKernel", ""), warnings)
                    if settings.measure else None)
    clock.lap("signature_after_s")
    if settings.emphysema:
        rec["emphysema"] = {name: _emphysema(v, name, settings.threshold, warnings)
                            for name, v in (("original", vol), ("normalized", out_vol))}
        if not any(w.get("code") == Z_EXTENT_DIFFERS for w in warnings):  # the plan's says it already
            warnings += z_extent_warning(vol, out_vol)
        clock.lap("emphysema_s")
    if settings.radiomics:
        rec["radiomics"] = _radiomics(settings, vol, out_vol, segments)
        clock.lap("radiomics_s")
    return rec


def _emphysema(vol, name: str, threshold: float, warnings: list) -> Optional[dict]:
    """The emphysema index of one image, or None with a ``NO_LUNGS`` warning when it has no lungs
    (in a cohort that is one empty measurement, not a failed case)."""
    from ..errors import NoLungsError
    from ..quantify import emphysema_index

    try:
        result = emphysema_index(vol, threshold=threshold)
        # the measurement's caveats (a clean-texture output reads low, airways not removed) reach the tables
        warnings.extend({**w, "message": f"{name} emphysema: {w['message']}", "scope": name} for w in result.warnings)
        return result.to_dict()
    except NoLungsError as exc:
        warnings.append({"code": exc.code, "message": f"{name}: {exc.message}", "scope": name})
        return None


class _Clock:
    """Seconds per stage of a case (``times``), measured between laps."""

    def __init__(self):
        self.times: dict = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._t, 3)
        self._t = now


def _check_segments(case: Case, vol):
    """The case's segments, checked on its scan (present, readable, none empty there)."""
    from ..errors import BadInputError
    from ..quantify.radiomics import check_segments

    if not case.segments:
        raise BadInputError(f"Case {case.name!r} has no segments file for radiomics (set its segments column).")
    return check_segments(case.segments, vol)


def _radiomics(settings: BatchSettings, vol, out_vol, segments) -> dict:
    """Features of the original and the normalized scan in ``segments`` (checked by :func:`_check_segments`)."""
    from ..quantify.radiomics import extract_radiomics

    res = extract_radiomics({"original": vol, "normalized": out_vol}, segments, params=settings.radiomics_params)
    return {"rows": res.wide(), "warnings": res.warnings, "provenance": {
        k: res.provenance.get(k) for k in ("params_path", "pyradiomics_version", "engine_version", "segments")}}
