"""The benchmark's fixed, versioned set of held-out cases and its grid of source protocols.

Cases (never used for training):
- procedural phantoms with seeds >= 1000, with emphysema and nodules (``simulate.make_phantom``);
- lung2 from pyradiomics' test data (real anatomy, 5 mm slices): a fixed crop around
  its tumour (full in-plane, so the lungs and the skin are whole). Being 5 mm, it is simulated at its native
  thickness, so only kernel and dose vary.

Change anything here (seeds, sizes, crops, grid, sampling) -> bump ``BENCHMARK_VERSION``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..imaging import lung_mask
from ..protocols import KERNEL_CLASSES, Protocol, parse_spec, resolve_protocol
from ..simulate.phantom import make_phantom
from ..volume import Volume

BENCHMARK_VERSION = "1"

DOSES = (0.1, 0.25, 0.5, 1.0)
THICKNESSES = (1.0, 2.0, 3.0)
DEFAULT_TARGETS = ("emphysema-reference",)
FULL_TARGETS = ("emphysema-reference", "radiomics-reference", "lung-detail")

# The default size's sampled subset of the grid: each axis of the problem alone and combined.
DEFAULT_SOURCES = (
    "kernel=very-sharp,dose=1,thickness=1",   # kernel only
    "kernel=standard,dose=0.1,thickness=1",   # dose only (plus a milder kernel change)
    "kernel=smooth,dose=1,thickness=3",       # thickness only
    "kernel=sharp,dose=0.25,thickness=2",     # all three
)

LUNG2_CROP = (slice(17, 23), slice(0, 512), slice(0, 512))  # z, y, x of the 61x512x512 volume: a tumour slab


@dataclass(frozen=True)
class Case:
    """One held-out case: a phantom (by seed) or a crop of lung2."""

    name: str
    kind: str  # "phantom" | "lung2"
    seed: int = 0
    shape: tuple = (48, 128, 128)
    spacing: tuple = (0.5, 0.8, 0.8)
    options: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class CaseData:
    """A loaded case: the truth volume, nodule labels and lung mask on its grid (or None), and notes."""

    case: Case
    truth: Volume
    nodules: Optional[np.ndarray]
    info: dict
    lung: Optional[np.ndarray] = None


def benchmark_cases(size: str = "default") -> list[Case]:
    """The cases of a benchmark size (``"default"``, ``"full"`` or ``"tiny"`` for tests)."""
    emph = (0.05, 0.25, 0.12, 0.35, 0.0, 0.2)
    if size == "tiny":
        return [Case("phantom-1000", "phantom", 1000, (24, 96, 96), options={"emphysema": 0.15, "nodules": 2})]
    if size == "full":
        return [Case(f"phantom-{s}", "phantom", s, (96, 192, 192), options={"emphysema": emph[i], "nodules": 3})
                for i, s in enumerate(range(1000, 1006))] + [Case("lung2", "lung2")]
    return [Case("phantom-1000", "phantom", 1000, options={"emphysema": emph[0], "nodules": 3}),
            Case("phantom-1001", "phantom", 1001, options={"emphysema": emph[1], "nodules": 3}),
            Case("lung2", "lung2")]


def _phantom(case: Case) -> CaseData:
    ph = make_phantom(case.seed, case.shape, case.spacing, emphysema=case.options.get("emphysema", 0.15),
                      nodules=case.options.get("nodules", 3))
    return CaseData(case, ph.volume, ph.nodule_labels,
                    {"truth": "simulate.make_phantom", "seed": case.seed,
                     "laa950_percent_truth": ph.info.get("laa950_percent"),
                     "nodules": len(ph.info.get("nodules", [])), "lung_mask": "phantom ground truth"},
                    lung=ph.masks.get("lungs"))


def _lung2(case: Case) -> CaseData:
    import SimpleITK as sitk

    from .. import testdata

    img_p, lab_p = testdata.pyradiomics_case("lung2")
    img = sitk.ReadImage(str(img_p))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_p)))
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    zc, yc, xc = LUNG2_CROP
    sp = tuple(reversed(img.GetSpacing()))
    origin = np.asarray(img.GetOrigin()) + np.asarray([xc.start * sp[2], yc.start * sp[1], zc.start * sp[0]])
    meta = {"Modality": "CT", "SliceThickness": f"{sp[0]:g}", "source_path": str(img_p)}
    truth = Volume(hu[LUNG2_CROP], sp, tuple(origin), img.GetDirection(), meta)
    labels = (lab[LUNG2_CROP] > 0).astype(np.uint8)
    lung = lung_mask(truth.hu, truth.spacing, truth.direction).lungs
    return CaseData(case, truth, labels, {"truth": "pyradiomics lung2 (real CT, 5 mm), crop "
                                                   f"z{zc.start}:{zc.stop} y{yc.start}:{yc.stop} x{xc.start}:{xc.stop}",
                                          "lung_mask": "imaging.lung_mask on the unscanned volume"}, lung=lung)


def load_case(case: Case) -> CaseData:
    """Build or read a case's truth volume and its nodule labels."""
    return _lung2(case) if case.kind == "lung2" else _phantom(case)


def full_grid() -> list[str]:
    """Every source protocol of the grid: kernel class x dose x thickness."""
    return [f"kernel={k},dose={d:g},thickness={t:g}" for k, d, t in itertools.product(KERNEL_CLASSES, DOSES, THICKNESSES)]


def source_protocols(size: str, native_thickness: float) -> list[Protocol]:
    """Source protocols for a case: the sampled subset (default) or the whole grid (full).

    Thicknesses below the case's native one are raised to it ("where z allows"): for
    lung2 (5 mm) only kernel and dose vary. Duplicates after that are dropped.
    """
    specs = full_grid() if size == "full" else list(DEFAULT_SOURCES[:2] if size == "tiny" else DEFAULT_SOURCES)
    out, seen = [], set()
    for s in specs:
        p = parse_spec(s)
        t = max(float(p.thickness), native_thickness)
        key = (p.kernel, p.dose, t)
        if key in seen:
            continue
        seen.add(key)
        out.append(Protocol(kernel=p.kernel, dose=p.dose, thickness=t, spacing=t, sources=p.sources))
    return out


def target_protocols(size: str, native_thickness: float) -> list[tuple[str, Protocol]]:
    """(preset name, protocol) of the targets, thickness raised to the native one where needed."""
    names = FULL_TARGETS if size == "full" else DEFAULT_TARGETS
    out = []
    for n in names:
        p = resolve_protocol(n)
        t = max(float(p.thickness), native_thickness)
        out.append((n, Protocol(kernel=p.kernel, dose=p.dose, thickness=t, spacing=t, sources=p.sources)))
    return out
