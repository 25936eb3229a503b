"""Paired training data: simulated scans of phantoms / lung1 crops, or a user manifest.

A :class:`PairBank` holds, per truth volume, a few *source* scans and a few *target*
scans of the same anatomy (noise independent). A training sample is drawn by picking a
truth, a source scan and a target scan, resampling the source onto the target's z grid
(the same :func:`~CTNormalizeLib.inference.zgrid.resample_z` the inference engine uses),
and cutting a patch: ``context`` neighbouring slices of the resampled source as input,
the matching target slice as the label.

Held-out rules (docs/DEVELOPING.md): phantom seeds >= 1000 and lung2 are refused here.
Batches are a pure function of ``(seed, step)``, so training resumes exactly.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..imaging.progress import Progress
from ..inference.zgrid import resample_z
from ..models.conditioning import pair_features
from ..protocols import KERNEL_CLASSES, Protocol, parse_spec
from ..volume import Volume

log = logging.getLogger(__name__)

HELD_OUT_SEED = 1000


@dataclass
class Scan:
    """One scan of a truth with its protocol (thickness and z spacing filled)."""

    hu: np.ndarray
    protocol: Protocol


@dataclass
class TruthScans:
    """Source and target scans of one truth volume (``spacing_yx``: in-plane pixel size, mm)."""

    name: str
    sources: list
    targets: list
    spacing_yx: tuple = (0.7, 0.7)


@dataclass
class PairBank:
    """All scans available for sampling training pairs."""

    truths: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    _converted: dict = field(default_factory=dict, repr=False)

    def source_for(self, ti: int, si: int, target_kernel: str, frontend: Optional[str]) -> Scan:
        """The source scan, passed through the model's front-end for ``target_kernel`` (cached)."""
        src = self.truths[ti].sources[si]
        if frontend is None:
            return src
        key = (ti, si, target_kernel, frontend)
        if key not in self._converted:
            from ..inference.frontend import apply_frontend

            sp = self.truths[ti].spacing_yx
            hu = apply_frontend(frontend, src.hu, (1.0,) + tuple(sp), src.protocol.kernel, target_kernel)
            self._converted[key] = Scan(hu, src.protocol)
        return self._converted[key]

    def pairs(self, pair_filter: Optional[Callable] = None) -> list:
        """``(truth, source_scan, target_scan)`` index triples allowed by ``pair_filter(src_prot, tgt_prot)``."""
        out = []
        for ti, t in enumerate(self.truths):
            for si, s in enumerate(t.sources):
                for gi, g in enumerate(t.targets):
                    if pair_filter is None or pair_filter(s.protocol, g.protocol):
                        out.append((ti, si, gi))
        return out

    def sample(self, rng: np.random.Generator, batch: int, patch: int, context: int, lo: float, hi: float,
               offset: float, divisor: float, pair_filter: Optional[Callable] = None,
               frontend: Optional[str] = None):
        """A batch ``(x [B, context, P, P], y [B, 1, P, P], cond [B, F])`` of float32 arrays (scaled units)."""
        triples = self.pairs(pair_filter)
        if not triples:
            raise BadInputError("No training pair matches the model's protocol space.")
        xs, ys, cs = [], [], []
        while len(xs) < batch:
            ti, si, gi = triples[rng.integers(len(triples))]
            t = self.truths[ti]
            tgt = t.targets[gi]
            src = self.source_for(ti, si, tgt.protocol.kernel, frontend)
            out = _pair_patch(src, tgt, rng, patch, context)
            if out is None:
                continue
            x, y = out
            xs.append(x)
            ys.append(y[None])
            cs.append(pair_features(src.protocol, tgt.protocol))
        sc = lambda a: ((np.clip(np.asarray(a, np.float32), lo, hi) - offset) / divisor).astype(np.float32)  # noqa: E731
        return sc(np.stack(xs)), sc(np.stack(ys)), np.asarray(cs, np.float32)


def _pair_patch(src: Scan, tgt: Scan, rng, patch: int, context: int):
    ps, pt = src.protocol, tgt.protocol
    ny, nx = tgt.hu.shape[1:]
    if ny < patch or nx < patch:
        raise BadInputError(f"Training scans ({ny}x{nx}) are smaller than the patch ({patch}).")
    n_t = min(tgt.hu.shape[0], int(math.floor((src.hu.shape[0] - 1) * ps.spacing / pt.spacing + 1e-6)) + 1)
    if n_t < 1:
        return None
    k = int(rng.integers(n_t))
    y0, x0 = int(rng.integers(ny - patch + 1)), int(rng.integers(nx - patch + 1))
    label = tgt.hu[k, y0:y0 + patch, x0:x0 + patch]
    if float((label > -500).mean()) < 0.05 and rng.random() < 0.8:
        return None  # mostly air outside the body: keep a few, skip most
    crop = src.hu[:, y0:y0 + patch, x0:x0 + patch]
    res = resample_z(crop, ps.spacing, pt.spacing, ps.thickness, pt.thickness)
    half = context // 2
    idx = np.clip(np.arange(k - half, k + half + 1), 0, res.shape[0] - 1)
    x = res[idx]
    if rng.random() < 0.5:  # in-plane flips: anatomy is roughly symmetric, noise texture is
        x, label = x[:, :, ::-1], label[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(label)


# -- simulated banks -------------------------------------------------------------------------

DEFAULT_TARGET_KERNELS = ("smooth", "standard", "sharp")


@dataclass
class SimSettings:
    """What the simulated bank holds (recorded in the model card)."""

    phantom_seeds: tuple = tuple(range(0, 8))
    phantom_shape: tuple = (64, 128, 128)
    phantom_spacing: tuple = (0.5, 0.7, 0.7)
    sources_per_truth: int = 6
    target_kernels: tuple = DEFAULT_TARGET_KERNELS
    target_thicknesses: tuple = (1.0, 2.0)
    source_thicknesses: tuple = (1.0, 1.5, 2.0, 3.0)
    dose_range: tuple = (0.1, 1.0)
    lung1_crops: int = 4
    lung1_size: int = 160
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _random_source(rng, thicknesses, dose_range, native: float) -> Protocol:
    kernel = KERNEL_CLASSES[rng.integers(len(KERNEL_CLASSES))]
    lo, hi = dose_range
    dose = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if rng.random() < 0.2:
        dose = 1.0
    th = max(float(thicknesses[rng.integers(len(thicknesses))]), native)
    return Protocol(kernel=kernel, dose=round(dose, 3), thickness=th, spacing=th)


def _simulate_truth(name: str, truth: Volume, settings: SimSettings, rng, native: float,
                    target_thicknesses) -> TruthScans:
    from ..simulate import project_truth, simulate_scan

    proj = project_truth(truth)
    sources, targets = [], []
    for i in range(settings.sources_per_truth):
        p = _random_source(rng, settings.source_thicknesses, settings.dose_range, native)
        v = simulate_scan(truth, p, int(rng.integers(2 ** 31)), projections=proj)
        sources.append(Scan(v.hu, p))
    for kern in settings.target_kernels:
        for th in sorted({max(t, native) for t in target_thicknesses}):
            p = Protocol(kernel=kern, dose=1.0, thickness=th, spacing=th)
            v = simulate_scan(truth, p, int(rng.integers(2 ** 31)), projections=proj)
            targets.append(Scan(v.hu, p))
    return TruthScans(name, sources, targets, tuple(float(v) for v in truth.spacing[1:]))


def lung1_crops(n: int, size: int, seed: int) -> list[Volume]:
    """``n`` in-plane crops (``size`` px) of pyradiomics lung1 around the lungs (real anatomy, 5 mm)."""
    import SimpleITK as sitk

    from .. import testdata

    img_p, _ = testdata.pyradiomics_case("lung1")
    img = sitk.ReadImage(str(img_p))
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(reversed(img.GetSpacing()))
    rng = np.random.default_rng([seed, 77])
    nz, ny, nx = hu.shape
    out = []
    lungish = (hu < -500).mean(axis=0) > 0.3
    ys, xs = np.where(lungish[size // 2: ny - size // 2, size // 2: nx - size // 2])
    for _ in range(n):
        j = rng.integers(len(ys)) if len(ys) else None
        cy = ys[j] + size // 2 if j is not None else ny // 2
        cx = xs[j] + size // 2 if j is not None else nx // 2
        z0 = int(rng.integers(0, max(1, nz - 24)))
        crop = hu[z0:z0 + 24, cy - size // 2: cy + size // 2, cx - size // 2: cx + size // 2]
        out.append(Volume(crop, sp, meta={"Modality": "CT", "SliceThickness": f"{sp[0]:g}"}))
    return out


def simulated_bank(settings: SimSettings, progress: Progress = None) -> PairBank:
    """Simulate the bank (phantoms with seeds < 1000, and lung1 crops). Deterministic in ``settings``."""
    from ..simulate.phantom import make_phantom

    bad = [s for s in settings.phantom_seeds if s >= HELD_OUT_SEED]
    if bad:
        raise BadInputError(f"Phantom seeds {bad} are held out (>= {HELD_OUT_SEED}); train on seeds below 1000.")
    rng = np.random.default_rng([settings.seed, 4242])
    bank = PairBank(settings=settings.to_dict())
    jobs = len(settings.phantom_seeds) + settings.lung1_crops
    for i, s in enumerate(settings.phantom_seeds):
        ph = make_phantom(int(s), settings.phantom_shape, settings.phantom_spacing, emphysema=None, nodules=None)
        bank.truths.append(_simulate_truth(f"phantom-{s}", ph.volume, settings, rng, settings.phantom_spacing[0],
                                           settings.target_thicknesses))
        if progress:
            progress("simulate", (i + 1) / jobs)
    if settings.lung1_crops:
        for j, v in enumerate(lung1_crops(settings.lung1_crops, settings.lung1_size, settings.seed)):
            native = float(v.spacing[0])
            bank.truths.append(_simulate_truth(f"lung1-crop{j}", v, settings, rng, native, (native,)))
            if progress:
                progress("simulate", (len(settings.phantom_seeds) + j + 1) / jobs)
    return bank


def save_bank(bank: PairBank, path) -> Path:
    """Store a bank as one ``.npz`` (arrays) with the protocols in a JSON string (no pickle)."""
    from ..io.atomic import atomic_output

    arrays, index = {}, []
    for ti, t in enumerate(bank.truths):
        entry = {"name": t.name, "sources": [], "targets": [], "spacing_yx": list(t.spacing_yx)}
        for role in ("sources", "targets"):
            for si, sc in enumerate(getattr(t, role)):
                key = f"t{ti}_{role}_{si}"
                arrays[key] = sc.hu.astype(np.float32)
                entry[role].append({"key": key, "spec": sc.protocol.spec()})
        index.append(entry)
    arrays["index_json"] = np.frombuffer(json.dumps({"truths": index, "settings": bank.settings}).encode(), np.uint8)
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_bank(path) -> PairBank:
    """Read a bank written by :func:`save_bank` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["index_json"]).decode())
        bank = PairBank(settings=meta["settings"])
        for e in meta["truths"]:
            roles = {}
            for role in ("sources", "targets"):
                roles[role] = [Scan(z[s["key"]], _filled(parse_spec(s["spec"]))) for s in e[role]]
            sp = e.get("spacing_yx") or _legacy_spacing(e["name"], meta["settings"])
            bank.truths.append(TruthScans(e["name"], roles["sources"], roles["targets"], tuple(sp)))
    return bank


def _legacy_spacing(name: str, settings: dict) -> tuple:
    # banks written before spacing_yx was stored: phantoms use the settings, lung1 its own grid
    if name.startswith("lung1"):
        return (0.5703125, 0.5703125)
    return tuple(settings.get("phantom_spacing", (0.5, 0.7, 0.7))[1:])


def _filled(p: Protocol) -> Protocol:
    from dataclasses import replace

    th = p.thickness or 1.0
    return replace(p, thickness=th, spacing=p.spacing or th, dose=p.dose or 1.0)


# -- user manifest ---------------------------------------------------------------------------

def manifest_bank(manifest) -> PairBank:
    """A bank from a JSON manifest of paired volumes.

    Format: ``{"pairs": [{"source": PATH, "target": PATH, "source_protocol": SPEC,
    "target_protocol": SPEC}, ...]}``; relative paths are relative to the manifest. The
    two volumes must already be registered (same in-plane grid, first slices aligned);
    this function checks the in-plane grid and refuses otherwise.
    """
    from ..io import read_volume

    mpath = Path(manifest)
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"Cannot read the training manifest {mpath}: {exc}") from None
    bank = PairBank(settings={"manifest": str(mpath)})
    for i, pair in enumerate(data.get("pairs", [])):
        try:
            sp, tp = (mpath.parent / pair["source"]), (mpath.parent / pair["target"])
            ps, pt = parse_spec(pair["source_protocol"]), parse_spec(pair["target_protocol"])
        except KeyError as exc:
            raise BadInputError(f"Manifest pair {i} lacks {exc}.") from None
        vs, vt = read_volume(sp), read_volume(tp)
        if vs.shape[1:] != vt.shape[1:] or not np.allclose(vs.spacing[1:], vt.spacing[1:], rtol=1e-3):
            raise BadInputError(f"Manifest pair {i}: source and target are not on the same in-plane grid; "
                                "register and resample them first.")
        ps = _filled_from(ps, vs)
        pt = _filled_from(pt, vt)
        bank.truths.append(TruthScans(f"pair{i}", [Scan(vs.hu, ps)], [Scan(vt.hu, pt)], tuple(vs.spacing[1:])))
    if not bank.truths:
        raise BadInputError(f"The manifest {mpath} lists no pairs.")
    return bank


def _filled_from(p: Protocol, v: Volume) -> Protocol:
    from dataclasses import replace

    sz = float(v.spacing[0])
    return replace(p, thickness=p.thickness or sz, spacing=sz, dose=p.dose or 1.0)
