"""Domain-randomized training pairs for signature-conditioned models (ctn-conditioned-v3).

Per truth volume (training phantoms, seeds < 1000, at random pixel sizes and patient
sizes; and whole-field-of-view slabs of lung1, real anatomy) this simulates a few noise-free
*target* scans (an engine kernel class or a random kernel, at a slice thickness) and a few
noisy *source* scans with randomized physics (:mod:`CTNormalizeLib.simulate.randomized`).
Each source's signature is **measured** from its pixels, as at inference, and the pair is
stored exactly as the inference engine will see it: the source through the fixed MTF-ratio
front-end (measured source transfer -> target transfer), resampled onto the target's z grid.
The label is the noise-free target: the network learns the best mean estimate (``clean``
texture); ``target`` texture adds the target's noise afterwards (noise insertion).

Batches are a pure function of ``(seed, step)``, so training resumes exactly.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..volume import Volume

log = logging.getLogger(__name__)

HELD_OUT_SEED = 1000


@dataclass
class DRSettings:
    """What the domain-randomized bank holds (recorded in the model card)."""

    phantom_seeds: tuple = tuple(range(0, 40))
    phantom_slices: int = 48
    phantom_size: int = 256
    pixel_range: tuple = (0.6, 1.3)
    lung1_slabs: int = 4
    lung1_slab_slices: int = 12
    sources_per_truth: int = 5
    targets_per_truth: int = 2
    thicknesses: tuple = (1.0, 1.5, 2.0, 3.0)
    same_thickness: float = 0.6
    views_factor: tuple = (0.5, 1.0)
    frontend_lambda: float = 0.04
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class DRPair:
    """One training pair: the network's input volume (target grid), its target's index and the features."""

    truth: str
    input_hu: np.ndarray
    target: int
    cond: list
    info: dict


@dataclass
class DRBank:
    """Targets (noise-free) and pairs; ``sample`` has the :class:`~.data.PairBank` interface."""

    targets: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def truths(self) -> list:  # the training loop only checks that there is data
        return self.pairs

    def sample(self, rng: np.random.Generator, batch: int, patch: int, context: int, lo: float, hi: float,
               offset: float, divisor: float, pair_filter=None, frontend=None):
        """A batch ``(x [B, context, P, P], y [B, 1, P, P], cond [B, F])`` in scaled units."""
        xs, ys, cs = [], [], []
        tries = 0
        while len(xs) < batch:
            tries += 1
            if tries > 50 * batch:
                raise BadInputError("Could not draw training patches (volumes smaller than the patch?).")
            pr = self.pairs[int(rng.integers(len(self.pairs)))]
            out = _patch(pr.input_hu, self.targets[pr.target], rng, patch, context)
            if out is None:
                continue
            x, y = out
            xs.append(x)
            ys.append(y[None])
            cs.append(pr.cond)
        sc = lambda a: ((np.clip(np.asarray(a, np.float32), lo, hi) - offset) / divisor).astype(np.float32)  # noqa: E731
        return sc(np.stack(xs)), sc(np.stack(ys)), np.asarray(cs, np.float32)


def _patch(inp: np.ndarray, tgt: np.ndarray, rng, patch: int, context: int):
    n = min(inp.shape[0], tgt.shape[0])
    ny, nx = tgt.shape[1:]
    if ny < patch or nx < patch or n < 1:
        return None
    k = int(rng.integers(n))
    y0, x0 = int(rng.integers(ny - patch + 1)), int(rng.integers(nx - patch + 1))
    label = tgt[k, y0:y0 + patch, x0:x0 + patch]
    if float((label > -500).mean()) < 0.05 and rng.random() < 0.85:
        return None  # mostly air outside the body: keep a few, skip most
    half = context // 2
    idx = np.clip(np.arange(k - half, k + half + 1), 0, n - 1)
    x = inp[idx, y0:y0 + patch, x0:x0 + patch]
    r = int(rng.integers(4))
    x, label = np.rot90(x, r, axes=(1, 2)), np.rot90(label, r)
    if rng.random() < 0.5:
        x, label = x[:, :, ::-1], label[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(label)


# -- building the bank ---------------------------------------------------------------------

def _truths(settings: DRSettings, rng) -> list:
    """``(name, truth Volume, native thickness)`` of the training phantoms and lung1 slabs."""
    from ..simulate.phantom import make_phantom

    bad = [s for s in settings.phantom_seeds if s >= HELD_OUT_SEED]
    if bad:
        raise BadInputError(f"Phantom seeds {bad} are held out (>= {HELD_OUT_SEED}); train on seeds below 1000.")
    out = []
    for s in settings.phantom_seeds:
        px = float(rng.uniform(*settings.pixel_range))
        shape = (settings.phantom_slices, settings.phantom_size, settings.phantom_size)
        ph = make_phantom(int(s), shape, (0.5, px, px), emphysema=None, nodules=None)
        out.append((f"phantom-{s}", ph.volume, 0.5))
    out += [(f"lung1-slab{j}", v, float(v.spacing[0])) for j, v in enumerate(lung1_slabs(settings, rng))]
    return out


def lung1_slabs(settings: DRSettings, rng) -> list[Volume]:
    """Whole-field-of-view slabs of pyradiomics lung1 (real anatomy, 5 mm), 2x down-sampled in-plane."""
    if not settings.lung1_slabs:
        return []
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from .. import testdata

    img_p, _ = testdata.pyradiomics_case("lung1")
    img = sitk.ReadImage(str(img_p))
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(reversed(img.GetSpacing()))
    # anti-aliased 2x down-sampling: the whole patient fits a 256 grid
    small = ndi.zoom(ndi.gaussian_filter(hu, (0, 0.8, 0.8)), (1, 0.5, 0.5), order=1)
    n = settings.lung1_slab_slices
    out = []
    for _ in range(settings.lung1_slabs):
        z0 = int(rng.integers(0, max(1, small.shape[0] - n)))
        out.append(Volume(small[z0:z0 + n], (sp[0], 2 * sp[1], 2 * sp[2]),
                          meta={"Modality": "CT", "SliceThickness": f"{sp[0]:g}"}))
    return out


def _thickness(rng, settings, native: float, like: Optional[float] = None) -> float:
    if native > 1.0:
        return native  # real slabs keep their 5 mm slices
    if like is not None and rng.random() < settings.same_thickness:
        return like
    return float(rng.choice(settings.thicknesses))


def draw_views(rng, settings, truth, det):
    """The scanner's views for one truth: matched to its grid, or (half the time) 50-100 % of that."""
    from dataclasses import replace

    if rng.random() < 0.5:
        from ..simulate.projector import ParallelGeometry

        g = ParallelGeometry(*truth.hu.shape[1:], *truth.spacing[1:])
        det = replace(det, views=int(g.n_views * rng.uniform(*settings.views_factor)) // 2 * 2)
    return det


def draw_target(rng, settings, native: float):
    """A target: ``(kernel name or "random", transfer, thickness)``."""
    from ..simulate.randomized import draw_target_transfer

    tname, w_t = draw_target_transfer(rng)
    return tname, w_t, _thickness(rng, settings, native)


def draw_source(rng, settings, native: float, target_thickness: float):
    """A source scanner: ``(RandomPhysics, thickness)``."""
    from ..simulate.randomized import draw_physics

    phys = draw_physics(rng)
    return phys, _thickness(rng, settings, native, like=target_thickness)


def network_pair(source_hu: np.ndarray, spacing, source_thickness: float, target_thickness: float, target_transfer,
                 frontend_lambda: float):
    """What the inference engine gives the network for a source scan: ``(input on the target z grid, cond, signature)``.

    The signature is measured from the pixels; the input is the source through the fixed
    MTF-ratio front-end (measured source transfer -> target transfer), resampled onto the
    target's z grid; ``cond`` is :func:`~CTNormalizeLib.models.conditioning.signature_features`.
    """
    from ..classical.mtf_ratio import convert_kernel, frontend_noise_factor
    from ..inference.zgrid import resample_z
    from ..models.conditioning import signature_features
    from ..signature import measure_signature

    sig = measure_signature(Volume(source_hu, spacing, meta={"Modality": "CT"}), with_edge=False)
    conv = convert_kernel(source_hu, spacing, sig.transfer, target_transfer, lam=frontend_lambda)
    inp = resample_z(conv, source_thickness, target_thickness, source_thickness, target_thickness)
    noise_in = (sig.noise_hu or 0.0) * frontend_noise_factor(sig.transfer, target_transfer, frontend_lambda,
                                                             sig.pixel_mm)
    cond = signature_features(sig.transfer, target_transfer, sig.noise_hu, noise_in, sig.pixel_mm,
                              source_thickness, target_thickness)
    return inp.astype(np.float32), cond, sig


def pair_info(phys, tname: str, t_s: float, t_t: float, sig) -> dict:
    """What a pair records about its physics and its measured signature."""
    return {"physics": phys.to_dict(), "target": tname, "source_thickness": t_s, "target_thickness": t_t,
            "noise_hu": sig.noise_hu, "measured_mtf50": sig.transfer.mtf50, "kernel": sig.kernel}


def _simulate_truth(name, truth, native, settings, rng, bank: DRBank):
    from dataclasses import replace

    from ..protocols import Protocol
    from ..simulate import DEFAULT_SCANNER, project_truth, simulate_scan

    det = draw_views(rng, settings, truth, replace(DEFAULT_SCANNER, views=None))
    proj = project_truth(truth, det)
    first = len(bank.targets)
    tinfo = []
    for _ in range(settings.targets_per_truth):
        tname, w_t, t_t = draw_target(rng, settings, native)
        tv = simulate_scan(truth, Protocol(kernel="standard", dose=1.0, thickness=t_t), 0, detector=det,
                           projections=proj, transfer=w_t, noise=False)
        bank.targets.append(tv.hu)
        tinfo.append((tname, w_t, t_t))
    for _ in range(settings.sources_per_truth):
        j = int(rng.integers(len(tinfo)))
        tname, w_t, t_t = tinfo[j]
        phys, t_s = draw_source(rng, settings, native, t_t)
        sv = simulate_scan(truth, Protocol(kernel="standard", dose=phys.dose, thickness=t_s),
                           int(rng.integers(2 ** 31)), detector=phys.detector(det), projections=proj,
                           transfer=phys.transfer(float(min(truth.spacing[1:]))))
        inp, cond, sig = network_pair(sv.hu, sv.spacing, t_s, t_t, w_t, settings.frontend_lambda)
        bank.pairs.append(DRPair(name, inp, first + j, cond, pair_info(phys, tname, t_s, t_t, sig)))


def build_dr_bank(settings: DRSettings, progress: Optional[Callable[[str, float], None]] = None) -> DRBank:
    """Simulate the domain-randomized bank (deterministic in ``settings``)."""
    rng = np.random.default_rng([settings.seed, 777])
    bank = DRBank(settings=settings.to_dict())
    truths = _truths(settings, rng)
    for i, (name, truth, native) in enumerate(truths):
        _simulate_truth(name, truth, native, settings, rng, bank)
        if progress:
            progress("simulate", (i + 1) / len(truths))
        log.info("bank: %s done (%d/%d)", name, i + 1, len(truths))
    return bank


def save_dr_bank(bank: DRBank, path) -> Path:
    """One ``.npz`` (arrays) with the pair index as JSON (no pickle)."""
    from ..io.atomic import atomic_output

    arrays = {f"target_{i}": t.astype(np.float32) for i, t in enumerate(bank.targets)}
    index = []
    for i, p in enumerate(bank.pairs):
        arrays[f"input_{i}"] = p.input_hu.astype(np.float32)
        index.append({"truth": p.truth, "target": p.target, "cond": [float(c) for c in p.cond], "info": p.info})
    arrays["index_json"] = np.frombuffer(json.dumps({"pairs": index, "settings": bank.settings,
                                                     "targets": len(bank.targets)}, default=float).encode(), np.uint8)
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_dr_bank(path) -> DRBank:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["index_json"]).decode())
        bank = DRBank(settings=meta["settings"], targets=[z[f"target_{i}"] for i in range(meta["targets"])])
        for i, e in enumerate(meta["pairs"]):
            bank.pairs.append(DRPair(e["truth"], z[f"input_{i}"], e["target"], e["cond"], e["info"]))
    return bank


def bank_summary(bank: DRBank) -> dict:
    """What the bank spans, measured: source noise, measured MTF50, kernel classes, thickness pairs."""
    noise = [p.info["noise_hu"] for p in bank.pairs if p.info.get("noise_hu")]
    m50 = [p.info["measured_mtf50"] for p in bank.pairs if math.isfinite(p.info.get("measured_mtf50") or math.inf)]
    kinds = {}
    for p in bank.pairs:
        kinds[p.info["physics"]["window"]] = kinds.get(p.info["physics"]["window"], 0) + 1
    return {"pairs": len(bank.pairs), "targets": len(bank.targets),
            "source_noise_hu": [float(np.min(noise)), float(np.max(noise))] if noise else None,
            "measured_mtf50": [float(np.min(m50)), float(np.max(m50))] if m50 else None,
            "windows": kinds}
