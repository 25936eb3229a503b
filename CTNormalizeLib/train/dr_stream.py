"""Domain-randomized training pairs simulated on the training device while it trains (v3's GPU recipe).

The CPU recipe (:mod:`.dr_data`) simulates 220 pairs once and draws every patch from them.
Here each *case* (one truth, one randomized source scanner, one target) is simulated on the
training device with :mod:`CTNormalizeLib.simulate.torch_scanner` (the reference's z grid,
slice profile, row counts and AEC; torch's projector, noise and FBP), and turned into the
network's input exactly as the CPU bank and the inference engine do
(:func:`.dr_data.network_pair`: signature measured from the pixels on the CPU, MTF-ratio
front-end, target z grid). Worker threads keep making cases while the device trains; each
new case replaces the oldest in a pool the batches are drawn from, so the model sees fresh
physics and fresh noise throughout instead of a fixed set of pairs.

Batches therefore depend on timing, not only on ``(seed, step)``: a stream run is not
resumable step for step (the CPU recipe is). The draws of physics, targets and thicknesses
are :mod:`.dr_data`'s own.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import BadInputError
from ..volume import Volume
from .dr_data import HELD_OUT_SEED, DRSettings, draw_source, draw_target, draw_views, network_pair, pair_info

log = logging.getLogger(__name__)


@dataclass
class StreamSettings(DRSettings):
    """What a stream draws from: :class:`.dr_data.DRSettings` plus the pool and the workers."""

    phantom_seeds: tuple = tuple(range(0, 96))
    pool: int = 192
    min_pool: int = 32
    workers: int = 0  # 0: one thread per 4 CPU cores, at least 1
    lung1_file: Optional[str] = None  # packed lung1 slabs (scripts/pack_v3_truths.py); None: read lung1 here

    def to_dict(self) -> dict:
        d = super().to_dict()
        for k in ("sources_per_truth", "targets_per_truth"):  # the bank's counts; a stream draws case by case
            d.pop(k)
        return d

    def n_workers(self) -> int:
        return self.workers or max(1, (os.cpu_count() or 4) // 4)


@dataclass
class Case:
    """One simulated pair on the device: the network's input and its noise-free target, both on the target z grid."""

    truth: str
    input_hu: object  # tensor [n, ny, nx]
    target_hu: object  # tensor [n, ny, nx]
    cond: list
    info: dict = field(default_factory=dict)


def _phantom(args):
    from ..simulate.phantom import make_phantom

    seed, shape, px = args
    return make_phantom(int(seed), shape, (0.5, px, px), emphysema=None, nodules=None).volume


def stream_truths(settings: StreamSettings, processes: int = 0) -> list:
    """``(name, truth, native thickness)``: the procedural phantoms (made in ``processes``) and the lung1 slabs."""
    bad = [s for s in settings.phantom_seeds if s >= HELD_OUT_SEED]
    if bad:
        raise BadInputError(f"Phantom seeds {bad} are held out (>= {HELD_OUT_SEED}); train on seeds below 1000.")
    slabs = lung1_truths(settings, _slab_rng(settings))  # first: a missing or stale pack is refused at once
    rng = np.random.default_rng([settings.seed, 778])
    shape = (settings.phantom_slices, settings.phantom_size, settings.phantom_size)
    jobs = [(s, shape, float(rng.uniform(*settings.pixel_range))) for s in settings.phantom_seeds]
    n = processes or min(len(jobs), os.cpu_count() or 1)
    if n > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: the parent may already hold a CUDA context, which a fork cannot share
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as ex:
            vols = list(ex.map(_phantom, jobs))
    else:
        vols = [_phantom(j) for j in jobs]
    out = [(f"phantom-{j[0]}", v, 0.5) for j, v in zip(jobs, vols)]
    return out + [(f"lung1-slab{j}", v, float(v.spacing[0])) for j, v in enumerate(slabs)]


def _slab_rng(settings: DRSettings) -> np.random.Generator:
    """Where the lung1 slabs are cut (the same here and in :func:`pack_lung1_truths`)."""
    return np.random.default_rng([settings.seed, 778, 1])


def lung1_truths(settings: StreamSettings, rng) -> list[Volume]:
    """The lung1 slabs: from ``settings.lung1_file`` when given (a machine without SimpleITK), else read here."""
    if not settings.lung1_slabs:
        return []
    if settings.lung1_file is None:
        from .dr_data import lung1_slabs

        return lung1_slabs(settings, rng)
    path = Path(settings.lung1_file)
    if not path.is_file():
        raise BadInputError(f"No packed lung1 slabs at {path} (scripts/pack_v3_truths.py makes them).")
    try:
        with np.load(path) as z:
            packed = {k: int(z[f"pack_{k}"]) for k in ("seed", "slab_slices") if f"pack_{k}" in z.files}
            sp = tuple(float(v) for v in z["spacing"])
            keys = sorted((k for k in z.files if k.startswith("slab_")), key=lambda k: int(k.split("_")[1]))
            slabs = [z[k].astype(np.float32) for k in keys]
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path} is not a packed lung1 file ({exc}); scripts/pack_v3_truths.py makes one.") from None
    if packed != {"seed": settings.seed, "slab_slices": settings.lung1_slab_slices}:
        what = (f"seed {packed['seed']} and {packed['slab_slices']}-slice slabs" if len(packed) == 2
                else "an older version that did not record its seed")
        raise BadInputError(f"{path} holds lung1 slabs cut for {what}, not for seed {settings.seed} and "
                            f"{settings.lung1_slab_slices}-slice slabs: pack them again "
                            f"(scripts/pack_v3_truths.py --seed {settings.seed}).")
    if len(slabs) < settings.lung1_slabs:
        raise BadInputError(f"{path} holds {len(slabs)} lung1 slabs; {settings.lung1_slabs} asked for.")
    return [Volume(h, sp, meta={"Modality": "CT", "SliceThickness": f"{sp[0]:g}"})
            for h in slabs[: settings.lung1_slabs]]



def pack_lung1_truths(settings: DRSettings, path) -> Path:
    """Write the lung1 slabs a stream reads (int16 HU, compressed) for a machine without SimpleITK."""
    from ..io.atomic import atomic_output
    from .dr_data import lung1_slabs

    slabs = lung1_slabs(settings, _slab_rng(settings))
    arrays = {f"slab_{i}": np.round(v.hu).astype(np.int16) for i, v in enumerate(slabs)}
    arrays["spacing"] = np.asarray(slabs[0].spacing if slabs else (5.0, 1.0, 1.0), np.float64)
    arrays["pack_seed"], arrays["pack_slab_slices"] = np.int64(settings.seed), np.int64(settings.lung1_slab_slices)
    with atomic_output(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


class DRStream:
    """Cases simulated on ``device`` by worker threads; ``sample`` has :class:`.dr_data.DRBank`'s interface.

    Parameters
    ----------
    settings : StreamSettings
    device : str
        Where scans are simulated and batches are returned (``cuda`` for the GPU recipe).
    truths : list, optional
        ``(name, Volume, native thickness)``; default :func:`stream_truths`.
    """

    def __init__(self, settings: StreamSettings, device: str = "cpu", truths: Optional[list] = None):
        from ..simulate import DEFAULT_SCANNER
        from ..simulate.torch_scanner import project_volume

        self.settings = settings
        self.device = device
        self.truths_list = truths if truths is not None else stream_truths(settings)
        if not self.truths_list:
            raise BadInputError("A training stream needs at least one truth volume.")
        rng = np.random.default_rng([settings.seed, 779])
        # each truth's scanner (its views) and projections: the detector is ``.projections.detector``
        self._projections = [project_volume(truth, draw_views(rng, settings, truth, replace(DEFAULT_SCANNER, views=None)),
                                            device) for _, truth, _ in self.truths_list]
        self.pool: list[Case] = []
        self._next = 0  # the pool slot the next new case replaces (the oldest)
        self._queue: queue.Queue = queue.Queue(maxsize=max(4, settings.pool // 4))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self.cases_made = 0
        self._t0 = time.perf_counter()

    # -- making cases --------------------------------------------------------------------------
    def make_case(self, rng: np.random.Generator) -> Case:
        """Simulate one pair on the device (the input's signature is measured on the CPU)."""
        import torch

        from ..protocols import Protocol
        from ..simulate.torch_scanner import reconstruct_scan

        i = int(rng.integers(len(self.truths_list)))
        name, truth, native = self.truths_list[i]
        dproj = self._projections[i]
        tname, w_t, t_t = draw_target(rng, self.settings, native)
        phys, t_s = draw_source(rng, self.settings, native, t_t)
        with torch.no_grad():
            tgt = reconstruct_scan(truth, dproj, Protocol(kernel="standard", dose=1.0, thickness=t_t),
                                   transfer=w_t, noise=False)
            src = reconstruct_scan(truth, dproj, Protocol(kernel="standard", dose=phys.dose, thickness=t_s),
                                   seed=int(rng.integers(2 ** 31)), transfer=phys.transfer(float(min(truth.spacing[1:]))),
                                   det=phys.detector(dproj.projections.detector))
        spacing = (t_s, float(truth.spacing[1]), float(truth.spacing[2]))
        inp, cond, sig = network_pair(src.cpu().numpy(), spacing, t_s, t_t, w_t, self.settings.frontend_lambda)
        return Case(name, torch.from_numpy(inp).to(self.device), tgt, cond, pair_info(phys, tname, t_s, t_t, sig))

    def _add(self, case: Case) -> None:
        import torch

        for t in (case.input_hu, case.target_hu):
            if isinstance(t, torch.Tensor) and t.is_cuda:
                # made on a worker's stream, read on this one: its memory is not reused before this stream is done
                t.record_stream(torch.cuda.current_stream(t.device))
        if len(self.pool) < self.settings.pool:
            self.pool.append(case)
        else:
            self.pool[self._next] = case
            self._next = (self._next + 1) % self.settings.pool
        self.cases_made += 1

    def fill(self, n: int, rng: Optional[np.random.Generator] = None) -> None:
        """Make ``n`` cases in this thread (tests, and a CPU run without workers)."""
        rng = rng or np.random.default_rng([self.settings.seed, 780, self.cases_made])
        for _ in range(n):
            self._add(self.make_case(rng))

    def _work(self, k: int) -> None:
        import contextlib

        import torch

        rng = np.random.default_rng([self.settings.seed, 781, k])
        # on a GPU each worker simulates on its own stream, so its kernels overlap training instead of
        # queueing in front of it; a case is handed over only once its stream has finished it
        on_cuda = torch.device(self.device).type == "cuda"
        stream = torch.cuda.Stream(device=self.device) if on_cuda else None
        try:
            while not self._stop.is_set():
                with torch.cuda.stream(stream) if on_cuda else contextlib.nullcontext():
                    case = self.make_case(rng)
                if on_cuda:
                    stream.synchronize()
                while not self._stop.is_set():
                    try:
                        self._queue.put(case, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread by _drain
            self._errors.append(exc)

    def start(self) -> "DRStream":
        """Start the worker threads and wait until the pool holds ``min_pool`` cases."""
        for k in range(self.settings.n_workers()):
            t = threading.Thread(target=self._work, args=(k,), daemon=True, name=f"dr-stream-{k}")
            t.start()
            self._threads.append(t)
        try:
            while len(self.pool) < min(self.settings.min_pool, self.settings.pool):
                self._drain(block=True)
        except BaseException:
            self.close()  # no worker keeps simulating for a run that did not start
            raise
        return self

    def _drain(self, block: bool = False) -> None:
        if self._errors:
            raise RuntimeError(f"A training-stream worker failed: {self._errors[0]!r}") from self._errors[0]
        try:
            if block:
                self._add(self._queue.get(timeout=1.0))
            while True:
                self._add(self._queue.get_nowait())
        except queue.Empty:
            pass

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- the bank interface ----------------------------------------------------------------------
    @property
    def truths(self) -> list:  # the training loop only checks that there is data
        return self.pool

    def cases_per_second(self) -> float:
        return self.cases_made / max(time.perf_counter() - self._t0, 1e-9)

    def sample(self, rng: np.random.Generator, batch: int, patch: int, context: int, lo: float, hi: float,
               offset: float, divisor: float, pair_filter=None, frontend=None):
        """A batch ``(x [B, context, P, P], y [B, 1, P, P], cond [B, F])`` of tensors on the device, scaled.

        Patches are drawn as :func:`.dr_data._patch` draws them (random slice, position, rotation and
        flip; 85 % of the patches that are mostly air are skipped), in rounds of ``2 * batch``
        candidates: the air test reads the device once per round, and patches are cut by slicing
        (no index tensor sent to the device per patch).
        """
        import torch

        self._drain()
        if not self.pool:
            raise BadInputError("The training stream has no cases yet (call start() or fill()).")
        xs, ys, cs = [], [], []
        for _ in range(50):
            cand = [c for c in (_draw(self.pool, rng, patch) for _ in range(2 * batch)) if c is not None]
            if not cand:
                continue
            labels = torch.stack([c[0].target_hu[c[1], c[2]:c[2] + patch, c[3]:c[3] + patch] for c in cand])
            body = (labels > -500).float().flatten(1).mean(1).cpu().numpy()
            for c, lab, frac in zip(cand, labels, body):
                if len(xs) == batch:
                    break
                if frac < 0.05 and c[6]:
                    continue  # mostly air outside the body: keep a few, skip most
                case, k, y0, x0, r, flip, _ = c
                x = torch.rot90(_context(case, k, context)[:, y0:y0 + patch, x0:x0 + patch], r, dims=(1, 2))
                y = torch.rot90(lab, r, dims=(0, 1))
                if flip:
                    x, y = torch.flip(x, dims=(2,)), torch.flip(y, dims=(1,))
                xs.append(x)
                ys.append(y[None])
                cs.append(case.cond)
            if len(xs) == batch:
                break
        if len(xs) < batch:
            raise BadInputError("Could not draw training patches (volumes smaller than the patch?).")
        x, y = torch.stack(xs), torch.stack(ys)
        sc = lambda a: (torch.clamp(a, lo, hi) - offset) / divisor  # noqa: E731
        return sc(x), sc(y), torch.as_tensor(np.asarray(cs, np.float32), device=x.device)


def _context(case: Case, k: int, context: int):
    """Slices ``k - context // 2 .. k + context // 2`` of the input, the volume's end slices repeated beyond it."""
    import torch

    n = min(case.input_hu.shape[0], case.target_hu.shape[0])
    lo, hi = k - context // 2, k + context // 2 + 1
    if lo >= 0 and hi <= n:
        return case.input_hu[lo:hi]
    return torch.cat([case.input_hu[j:j + 1] for j in np.clip(np.arange(lo, hi), 0, n - 1)])


def _draw(pool: list, rng, patch: int):
    """One candidate patch ``(case, slice, y0, x0, quarter turns, flip, skip if air)``; None if the case is too small."""
    case = pool[int(rng.integers(len(pool)))]
    n = min(case.input_hu.shape[0], case.target_hu.shape[0])
    ny, nx = case.target_hu.shape[1:]
    if ny < patch or nx < patch or n < 1:
        return None
    return (case, int(rng.integers(n)), int(rng.integers(ny - patch + 1)), int(rng.integers(nx - patch + 1)),
            int(rng.integers(4)), bool(rng.random() < 0.5), bool(rng.random() < 0.85))
