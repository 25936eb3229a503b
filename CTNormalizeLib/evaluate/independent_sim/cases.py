"""Held-out cases of the independent scanner, cached in ``~/.cache/ctnormalize/heldout/``.

A case is one truth (lung2 or a phantom with seed >= 1000, optionally with inserted
emphysema and a patient-size factor) scanned with a source and a target
:class:`~.physics.HeldOutPhysics`: source, target, replicate (target physics,
independent noise), noise-free target, the truth on the scan grid, lung and emphysema
masks, and the protocol strings a user would type.

- :func:`issue11_cases` — the three cases of issue 11's table (sharp filter 25 % dose ->
  smooth full dose; the same with emphysema; a standard-like filter 10 % -> full dose).
- :func:`benchmark_cases` — those (``default``), plus more cases (``full``), or one
  small phantom (``tiny``, for tests).
- :func:`classification_cases` — single scans across filters, dose 10-100 % and two
  patient sizes, each with its true MTF50 and kernel class (for the kernel-from-pixels test).

Change a definition -> bump :data:`HELDOUT_VERSION` (it is part of every cache key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import numpy as np

from ...errors import BadInputError
from ...volume import Volume
from . import anatomy as anat
from .physics import FILTERS, HeldOutPhysics, filter_mtf50, kernel_class_for_mtf50
from .scanner import mask_on_scan_grid, project, scan, simulate_set

log = logging.getLogger(__name__)

HELDOUT_VERSION = "1"
EMPHYSEMA_FRACTION = 0.03  # inserted cluster volume / lung volume of the emphysema case (target EI ~1-2 %)


@dataclass(frozen=True)
class AnatomySpec:
    """Which truth: ``lung2`` (``in_plane`` matrix) or ``phantom`` (``seed``, ``in_plane``, ``pixel_mm``)."""

    kind: str = "lung2"
    in_plane: int = 256
    seed: int = 1000
    pixel_mm: float = 0.7
    n_slices: int = 16
    patient_scale: float = 1.0
    emphysema: float = 0.0
    emphysema_seed: int = 1

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CaseSpec:
    """A held-out case: anatomy, source and target physics, noise seed, and a description."""

    name: str
    anatomy: AnatomySpec
    source: HeldOutPhysics
    target: HeldOutPhysics
    seed: int
    description: str = ""

    def key(self) -> str:
        parts = [HELDOUT_VERSION, self.anatomy.key(), self.source.key(), self.target.key(), str(self.seed)]
        return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


@dataclass
class HeldOutCase:
    """A generated case (see the module docstring)."""

    spec: CaseSpec
    source: Volume
    target: Volume
    replicate: Volume
    target_noise_free: Volume
    truth: Volume
    lung: np.ndarray
    emphysema: Optional[np.ndarray]
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source_spec(self) -> str:
        """What a user would type for the source, e.g. ``kernel=sharp,dose=0.25,thickness=5``."""
        return self.spec.source.nominal_spec()

    @property
    def target_spec(self) -> str:
        return self.spec.target.nominal_spec()


def load_truth(a: AnatomySpec) -> anat.Truth:
    """Build the truth of an anatomy spec (lung2 slab or phantom, size factor, emphysema)."""
    if a.kind == "lung2":
        t = anat.lung2_truth(a.in_plane)
    elif a.kind == "phantom":
        t = anat.phantom_truth(a.seed, a.in_plane, a.pixel_mm, a.n_slices)
    else:
        raise BadInputError(f"Unknown anatomy kind {a.kind!r} (lung2 or phantom).")
    t = anat.scale_patient(t, a.patient_scale)
    if a.emphysema > 0:
        t = anat.insert_emphysema(t, a.emphysema, a.emphysema_seed)
    return t


def _lung2_physics(filt, dose):
    return HeldOutPhysics(filter=filt, dose=dose, thickness_mm=5.0, slice_profile="triangle")


def issue11_cases(in_plane: int = 256) -> list[CaseSpec]:
    """The three cases of issue 11's table on lung2 (``in_plane`` 256: 1.25 mm pixels; 512: 0.63 mm)."""
    plain = AnatomySpec("lung2", in_plane)
    emph = replace(plain, emphysema=EMPHYSEMA_FRACTION, emphysema_seed=11)
    return [
        CaseSpec("lung2-sharp25-to-smooth", plain, _lung2_physics("ramp", 0.25), _lung2_physics("hann", 1.0), 101,
                 "sharp filter (ramp) at 25 % dose -> smooth filter (hann) at full dose"),
        CaseSpec("lung2-emph-sharp25-to-smooth", emph, _lung2_physics("ramp", 0.25), _lung2_physics("hann", 1.0), 102,
                 "the same with emphysema inserted into the parenchyma"),
        CaseSpec("lung2-standard10-to-full", plain, _lung2_physics("cosine", 0.1), _lung2_physics("cosine", 1.0), 103,
                 "a standard-like filter (cosine) at 10 % dose -> the same filter at full dose"),
    ]


def benchmark_cases(size: str = "default") -> list[CaseSpec]:
    """Cases of a benchmark size: ``tiny`` (a small phantom, tests), ``default`` (issue 11's three
    on lung2 at 256 x 256, 1.25 mm), ``native`` (the same at lung2's 512 x 512, 0.63 mm: clinical
    pixels, about 4x the time), ``full`` (native plus phantom cases: a sharpening, a larger patient,
    and a thin sharp scan to a thick smooth one)."""
    if size == "tiny":
        a = AnatomySpec("phantom", 96, seed=1000, pixel_mm=1.4, n_slices=8, emphysema=0.04, emphysema_seed=3)
        p = lambda f, d: HeldOutPhysics(filter=f, dose=d, thickness_mm=2.0, n_views=120)  # noqa: E731
        return [CaseSpec("phantom1000-tiny", a, p("shepp-logan", 0.25), p("hann", 1.0), 7,
                         "tiny phantom: shepp-logan 25 % -> hann full dose")]
    if size == "default":
        return issue11_cases(256)
    if size == "native":
        return issue11_cases(512)
    if size != "full":
        raise BadInputError(f"Unknown held-out size {size!r} (tiny, default, native, full).")
    ph = lambda seed, n_slices=12, **kw: AnatomySpec("phantom", 384, seed=seed, pixel_mm=0.7, n_slices=n_slices,  # noqa: E731
                                                     **kw)
    p = lambda f, d: HeldOutPhysics(filter=f, dose=d, thickness_mm=2.0)  # noqa: E731
    return issue11_cases(512) + [
        CaseSpec("phantom1001-smooth10-to-sharp", ph(1001, emphysema=0.03, emphysema_seed=5), p("hann", 0.1),
                 p("ramp", 1.0), 104, "smooth 10 % -> sharp full dose (sharpening)"),
        CaseSpec("phantom1002-large-sl50-to-hamming", ph(1002, patient_scale=1.25), p("shepp-logan", 0.5),
                 p("hamming", 1.0), 105, "larger patient: shepp-logan 50 % -> hamming full dose"),
        CaseSpec("phantom1003-thin-sharp25-to-thick-smooth", ph(1003, n_slices=36, emphysema=0.03, emphysema_seed=6),
                 HeldOutPhysics(filter="ramp", dose=0.25, thickness_mm=1.0),
                 HeldOutPhysics(filter="hann", dose=1.0, thickness_mm=3.0), 106,
                 "thin sharp 25 % (1 mm) -> thick smooth full dose (3 mm): kernel, dose and thickness at once"),
    ]


def _cache_path(spec: CaseSpec):
    return anat._cache_dir() / f"{spec.name}-{spec.key()}.npz"


def _save(path, arrays: dict, meta: dict):
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # two processes may build the same case
    np.savez_compressed(tmp, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    tmp.replace(path)


def _vol_meta(v: Volume) -> dict:
    return {"spacing": list(v.spacing), "origin": list(v.origin), "direction": list(v.direction), "meta": v.meta}


def generate_case(spec: CaseSpec, use_cache: bool = True, progress=None) -> HeldOutCase:
    """Generate (or read from the cache) one held-out case."""
    path = _cache_path(spec)
    roles = ("source", "target", "replicate", "target_noise_free", "truth")
    if use_cache and path.is_file():
        try:
            z = np.load(path)
            meta = json.loads(z["meta"].tobytes().decode())
            vols = {r: Volume(z[r], **meta["volumes"][r]) for r in roles}
            emph = z["emphysema"] if "emphysema" in z.files else None
            return HeldOutCase(spec, **vols, lung=z["lung"], emphysema=emph, info=meta["info"])
        except (OSError, KeyError, ValueError) as exc:  # a broken cache file is regenerated
            log.warning("held-out cache %s unreadable (%s); regenerating", path, exc)
    truth = load_truth(spec.anatomy)
    out = simulate_set(truth.volume, spec.source, spec.target, spec.seed, progress=progress)
    proj = out.pop("projections")
    lung = mask_on_scan_grid(proj, truth.lung)
    emph = mask_on_scan_grid(proj, truth.emphysema)
    d = proj.pixel_mm
    info = {"anatomy": truth.info, "heldout_version": HELDOUT_VERSION, "pixel_mm": d,
            "source_physics": spec.source.spec(), "target_physics": spec.target.spec(),
            "source_nominal": spec.source.nominal_spec(), "target_nominal": spec.target.nominal_spec(),
            "description": spec.description}
    for role, p in (("source", spec.source), ("target", spec.target)):
        m50 = filter_mtf50(p.filter, d)
        cls, margin = kernel_class_for_mtf50(m50)
        info[f"{role}_mtf50"], info[f"{role}_kernel_class"], info[f"{role}_class_margin"] = m50, cls, margin
    case = HeldOutCase(spec, **out, lung=lung, emphysema=emph, info=info)
    if use_cache:
        arrays = {r: getattr(case, r).hu for r in roles}
        arrays["lung"] = lung
        if emph is not None:
            arrays["emphysema"] = emph
        _save(path, arrays, {"volumes": {r: _vol_meta(getattr(case, r)) for r in roles}, "info": info})
    return case


REFERENCE_SEED = 2000  # held-out phantom whose scans serve methods that need a reference (histogram_match)


def reference_scan(physics: HeldOutPhysics, in_plane: int, pixel_mm: float, use_cache: bool = True) -> Volume:
    """A scan of another held-out anatomy (phantom seed 2000) with the given physics and grid."""
    n_slices = int(np.ceil(3 * physics.thickness_mm / 0.5)) + 1
    a = AnatomySpec("phantom", int(in_plane), seed=REFERENCE_SEED, pixel_mm=float(pixel_mm), n_slices=n_slices)
    key = hashlib.sha256(":".join([HELDOUT_VERSION, a.key(), physics.key()]).encode()).hexdigest()[:16]
    path = anat._cache_dir() / f"reference-{key}.npz"
    if use_cache and path.is_file():
        z = np.load(path)
        return Volume(z["hu"], **json.loads(z["meta"].tobytes().decode())["volume"])
    truth = load_truth(a)
    vol = scan(project(truth.volume, physics), physics, REFERENCE_SEED)
    if use_cache:
        _save(path, {"hu": vol.hu}, {"volume": _vol_meta(vol)})
    return vol


@dataclass
class ClassificationScan:
    """One scan of the kernel-classification set with its true kernel (by MTF50)."""

    name: str
    volume: Volume
    physics: HeldOutPhysics
    nominal_spec: str
    mtf50: float  # analytic, cycles/mm
    kernel_class: str  # engine class whose MTF50 interval holds mtf50
    class_margin: float  # log distance to the nearest class boundary
    patient: str


CLASSIFICATION_DOSES = (0.1, 0.25, 0.5, 1.0)
# Two patients: a small one at 0.5 mm pixels (body ~190 mm) and a large one at 0.78 mm (~350 mm).
CLASSIFICATION_PATIENTS = {
    "small": AnatomySpec("phantom", 384, seed=1010, pixel_mm=0.5, n_slices=12),
    "large": AnatomySpec("phantom", 448, seed=1011, pixel_mm=0.78, n_slices=12),
}


def classification_cases(filters=FILTERS, doses=CLASSIFICATION_DOSES, patients=None, thickness_mm: float = 2.0,
                         use_cache: bool = True, progress=None) -> list[ClassificationScan]:
    """Single scans across filters, doses and two patient sizes, labelled by their true MTF50.

    One projection per patient is shared by all filters and doses; each scan is cached.
    Scans whose ``class_margin`` is small (a few %) sit on a class boundary by nature.
    """
    patients = dict(CLASSIFICATION_PATIENTS if patients is None else patients)
    out = []
    combos = [(pn, f, d) for pn in patients for f in filters for d in doses]
    projs: dict = {}
    for i, (pname, filt, dose) in enumerate(combos):
        a = patients[pname]
        phys = HeldOutPhysics(filter=filt, dose=dose, thickness_mm=thickness_mm)
        seed = int.from_bytes(hashlib.sha256(f"cls:{pname}:{filt}:{dose}".encode()).digest()[:4], "little")
        key = hashlib.sha256(":".join([HELDOUT_VERSION, a.key(), phys.key(), str(seed)]).encode()).hexdigest()[:16]
        path = anat._cache_dir() / f"cls-{pname}-{filt}-{dose:g}-{key}.npz"
        if use_cache and path.is_file():
            z = np.load(path)
            vol = Volume(z["hu"], **json.loads(z["meta"].tobytes().decode())["volume"])
        else:
            if pname not in projs:
                projs[pname] = project(load_truth(a).volume, phys)
            vol = scan(projs[pname], phys, seed)
            if use_cache:
                _save(path, {"hu": vol.hu}, {"volume": _vol_meta(vol)})
        m50 = filter_mtf50(filt, vol.spacing[1])
        cls, margin = kernel_class_for_mtf50(m50)
        out.append(ClassificationScan(f"{pname}-{filt}-{dose:g}", vol, phys, phys.nominal_spec(), m50, cls, margin,
                                      pname))
        if progress:
            progress("classification-set", (i + 1) / len(combos))
    return out
