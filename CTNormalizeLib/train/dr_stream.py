"""Domain-randomized training pairs simulated on the training device while it trains (v3's GPU recipe).

The CPU recipe (:mod:`.dr_data`) simulates 220 pairs once and draws every patch from them.
Here each *case* (one truth, one randomized source scanner, one target) is simulated on the
training device with :mod:`CTNormalizeLib.simulate.torch_scanner` (the reference's z grid,
slice profile, row counts and AEC; torch's projector, noise and FBP), and turned into the
network's input exactly as the CPU bank and the inference engine do
(:func:`.dr_data.network_pair`: signature measured from the pixels on the CPU, MTF-ratio
front-end, target z grid). Worker *processes* keep making cases while the device trains, each
from its own share of the truths; each new case replaces the oldest in a :class:`PatchPool`
the batches are drawn from, so the model sees fresh physics and fresh noise throughout
instead of a fixed set of pairs.

Why processes and whole-batch gathers: the first GPU run (worker threads, one patch cut at a
time) trained at 766 samples/s on an H200, 0.36 s a step for a network that needs a few tens
of milliseconds: the workers' signature measurement held the interpreter lock that the training
thread needs for every one of its ~2000 small device calls a step. The pool now keeps its
cases stacked on the device and cuts a batch in two indexing calls.

Batches therefore depend on timing, not only on ``(seed, step)``: a stream run is not
resumable step for step (the CPU recipe is). The draws of physics, targets and thicknesses
are :mod:`.dr_data`'s own.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import traceback
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
    workers: int = 0  # simulation processes; 0: one per 3 CPU cores, 1 to 6
    lung1_file: Optional[str] = None  # packed lung1 slabs (scripts/pack_v3_truths.py); None: read lung1 here

    def to_dict(self) -> dict:
        d = super().to_dict()
        for k in ("sources_per_truth", "targets_per_truth"):  # the bank's counts; a stream draws case by case
            d.pop(k)
        return d

    def n_workers(self) -> int:
        return self.workers or max(1, min(6, (os.cpu_count() or 3) // 3))


@dataclass
class Case:
    """One simulated pair on the device: the network's input and its noise-free target, both on the target z grid."""

    truth: str
    input_hu: object  # [n, ny, nx]: arrays from a worker; in a PatchPool, views of its stacks on the device
    target_hu: object  # [n, ny, nx]
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


class PatchPool:
    """Cases stacked on one device, and batches of patches cut from them with whole-batch gathers.

    Each slot holds one case's input and label (their common slices, zero-padded to the
    largest case) and its conditioning; once ``capacity`` cases are held, a new one replaces
    the oldest.
    """

    def __init__(self, capacity: int, device: str = "cpu"):
        self.capacity = int(capacity)
        self.device = device
        self.cases: list[Case] = []
        self.added = 0
        self._next = 0
        self._shape = np.zeros((self.capacity, 3), np.int64)  # slices, rows, columns of each slot
        self._inp = self._tgt = self._cond = None

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    def __getitem__(self, i):
        return self.cases[i]

    def add(self, case: Case) -> None:
        """Hold ``case``, in a new slot or in the oldest one's."""
        import torch

        if len(self.cases) < self.capacity:
            slot = len(self.cases)
            self.cases.append(case)
        else:
            slot = self._next
            self.cases[slot] = case
            self._next = (self._next + 1) % self.capacity
        inp = torch.as_tensor(case.input_hu, dtype=torch.float32).to(self.device)
        tgt = torch.as_tensor(case.target_hu, dtype=torch.float32).to(self.device)
        cond = torch.as_tensor(np.asarray(case.cond, np.float32), device=self.device)
        n = min(inp.shape[0], tgt.shape[0])
        h, w = tgt.shape[1:]
        self._fit(n, h, w, cond.numel())
        for store, vol in ((self._inp, inp), (self._tgt, tgt)):
            store[slot].zero_()
            store[slot, :n, :h, :w] = vol[:n, :h, :w]
        self._cond[slot] = cond
        self._shape[slot] = (n, h, w)
        self._view(slot)
        self.added += 1

    def _view(self, slot: int) -> None:
        """The slot's case holds views of the stacks (its common slices), not a second copy of its pixels."""
        n, h, w = (int(v) for v in self._shape[slot])
        self.cases[slot].input_hu = self._inp[slot, :n, :h, :w]
        self.cases[slot].target_hu = self._tgt[slot, :n, :h, :w]

    def _fit(self, n: int, h: int, w: int, features: int) -> None:
        """Grow the stacks (zero-padded) when a case is larger than every case before it."""
        import torch

        have = (0, 0, 0) if self._inp is None else tuple(self._inp.shape[1:])
        need = tuple(max(a, b) for a, b in zip(have, (n, h, w)))
        if need != have:
            grown = []
            for old in (self._inp, self._tgt):
                new = torch.zeros((self.capacity, *need), dtype=torch.float32, device=self.device)
                if old is not None:
                    new[:, :have[0], :have[1], :have[2]] = old
                grown.append(new)
            self._inp, self._tgt = grown
            for slot in range(len(self.cases)):  # views of the old stacks would keep them alive
                if self._shape[slot, 0]:
                    self._view(slot)
        if self._cond is None:
            self._cond = torch.zeros((self.capacity, features), dtype=torch.float32, device=self.device)

    def sample(self, rng: np.random.Generator, batch: int, patch: int, context: int, lo: float, hi: float,
               offset: float, divisor: float):
        """A batch ``(x [B, context, P, P], y [B, 1, P, P], cond [B, F])`` of tensors on the device, scaled.

        Patches are drawn as :func:`.dr_data._patch` draws them (random case, slice, position,
        quarter turns and flip; 85 % of the patches that are mostly air are skipped; the
        context's end slices repeated beyond a volume), in rounds of ``2 * batch`` candidates:
        one gather cuts a round's labels, one more the kept patches' inputs.
        """
        import torch

        if not self.cases:
            raise BadInputError("The training stream has no cases yet (call start() or fill()).")
        shape = self._shape[:len(self.cases)]
        usable = (shape[:, 0] >= 1) & (shape[:, 1] >= patch) & (shape[:, 2] >= patch)
        if not usable.any():
            raise BadInputError("Could not draw training patches (volumes smaller than the patch?).")
        rows, cols = _orientation_maps(patch, self.device)
        picks, labels, need = [], [], batch
        for _ in range(50):
            m = 2 * batch
            ci = rng.integers(len(self.cases), size=m)
            n, h, w = shape[ci].T
            k = (rng.random(m) * n).astype(np.int64)
            y0 = (rng.random(m) * np.maximum(h - patch + 1, 1)).astype(np.int64)
            x0 = (rng.random(m) * np.maximum(w - patch + 1, 1)).astype(np.int64)
            orient = rng.integers(8, size=m)  # quarter turns * 2 + flip
            skip_air = rng.random(m) < 0.85
            ok = usable[ci]
            draw = [a[ok] for a in (ci, k, y0, x0, orient, skip_air)]
            if not len(draw[0]):
                continue
            lab = self._cut(self._tgt, draw[0], draw[1][:, None], draw[2], draw[3], draw[4], rows, cols)
            body = (lab > -500).float().mean(dim=(1, 2, 3)).cpu().numpy()
            keep = np.flatnonzero(~((body < 0.05) & draw[5]))[:need]  # mostly air outside the body: keep a few
            picks.append([a[keep] for a in draw[:5]])
            labels.append(lab[torch.as_tensor(keep, device=lab.device)])
            need -= len(keep)
            if need == 0:
                break
        if need:
            raise BadInputError("Could not draw training patches (volumes smaller than the patch?).")
        ci, k, y0, x0, orient = (np.concatenate(a) for a in zip(*picks))
        half = context // 2
        kk = np.clip(k[:, None] + np.arange(-half, half + 1)[None], 0, shape[ci, 0][:, None] - 1)
        x = self._cut(self._inp, ci, kk, y0, x0, orient, rows, cols)
        y = torch.cat(labels)
        sc = lambda a: (torch.clamp(a, lo, hi) - offset) / divisor  # noqa: E731
        return sc(x), sc(y), self._cond[torch.as_tensor(ci, device=self._cond.device)]

    def _cut(self, store, ci, kk, y0, x0, orient, rows, cols):
        """``store[ci, kk]`` patches at ``(y0, x0)`` in orientation ``orient``: ``[B, len(kk[0]), P, P]``."""
        import torch

        dev = store.device
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long, device=dev)  # noqa: E731
        o = t(orient)
        r = rows[o] + t(y0)[:, None, None]
        c = cols[o] + t(x0)[:, None, None]
        return store[t(ci)[:, None, None, None], t(kk)[:, :, None, None], r[:, None], c[:, None]]


_MAPS: dict = {}


def _orientation_maps(patch: int, device):
    """Row and column maps ``[8, P, P]``: orientation ``2 r + f`` is ``rot90(., r)`` then, if ``f``, a flip of the columns."""
    import torch

    key = (patch, str(device))
    if key not in _MAPS:
        idx = torch.arange(patch * patch).reshape(patch, patch)
        maps = []
        for r in range(4):
            m = torch.rot90(idx, r, dims=(0, 1))
            maps += [m, torch.flip(m, dims=(1,))]
        m = torch.stack(maps).to(device)
        _MAPS[key] = (m // patch, m % patch)
    return _MAPS[key]


def _noise_free_target(truth, dproj, settings, native: float, rng):
    """A target drawn as :mod:`.dr_data` draws it and its noise-free scan from ``dproj`` (on their device):
    ``(target name, transfer, thickness, scan)``."""
    import torch

    from ..protocols import Protocol
    from ..simulate.torch_scanner import reconstruct_scan

    tname, w_t, t_t = draw_target(rng, settings, native)
    with torch.no_grad():
        tgt = reconstruct_scan(truth, dproj, Protocol(kernel="standard", dose=1.0, thickness=t_t),
                               transfer=w_t, noise=False)
    return tname, w_t, t_t, tgt


def write_clean_bank(settings: StreamSettings, device: str, path, per_truth: int = 2) -> Path:
    """Noise-free target scans of the stream's truths, simulated on ``device``, as a bank the denoise recipe reads.

    The denoise recipe reads only a bank's ``target_*`` volumes (:func:`.denoiser.clean_slices`);
    on a GPU machine these are made here in seconds (each truth projected once, ``per_truth``
    targets drawn as :mod:`.dr_data` draws them, reconstructed without noise) instead of
    building and carrying the CPU bank. ``index_json`` says what the volumes are (``clean_source``,
    which the denoiser's card quotes).
    """
    import json

    from ..io.atomic import atomic_output
    from ..simulate import DEFAULT_SCANNER
    from ..simulate.torch_scanner import project_volume

    truths = stream_truths(settings)
    rng = np.random.default_rng([settings.seed, 782])
    arrays = {}
    for name, truth, native in truths:
        dproj = project_volume(truth, draw_views(rng, settings, truth, replace(DEFAULT_SCANNER, views=None)), device)
        for _ in range(per_truth):
            tgt = _noise_free_target(truth, dproj, settings, native, rng)[3]
            arrays[f"target_{len(arrays)}"] = tgt.cpu().numpy().astype(np.float32)
        del dproj  # one truth's projections on the device at a time
    seeds = list(settings.phantom_seeds)
    phantoms = (f"{len(seeds)} procedural phantoms (seeds {min(seeds)}-{max(seeds)}, {settings.phantom_slices} x "
                f"{settings.phantom_size}^2, pixel {settings.pixel_range[0]:g}-{settings.pixel_range[1]:g} mm)"
                if seeds else "no procedural phantoms")
    what = (f"{len(arrays)} noise-free target scans simulated on {device} by the torch scanner "
            f"(CTNormalizeLib/train/dr_stream.py write_clean_bank): {phantoms} and {len(truths) - len(seeds)} lung1 "
            f"slabs, {per_truth} random target kernels and thicknesses each")
    index = {"targets": len(arrays), "clean_source": what, "settings": settings.to_dict()}
    arrays["index_json"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    with atomic_output(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


#: Seconds :meth:`DRStream.start` waits for the workers' first ``min_pool`` cases.
START_TIMEOUT_S = 600.0


class DRStream:
    """Cases simulated on ``device`` by worker processes; ``sample`` has :class:`.dr_data.DRBank`'s interface.

    Parameters
    ----------
    settings : StreamSettings
    device : str
        Where scans are simulated and batches are returned (``cuda`` for the GPU recipe).
    truths : list, optional
        ``(name, Volume, native thickness)``; default :func:`stream_truths`. Worker ``k`` of ``W``
        simulates truths ``k, k + W, ...`` (so the pool's mix of truths follows the workers'
        speeds; round-robin shares mix phantoms and lung1 slabs alike); each truth's views are
        drawn here, its projections made where it is first simulated.
    """

    def __init__(self, settings: StreamSettings, device: str = "cpu", truths: Optional[list] = None,
                 views: Optional[list] = None):
        from ..simulate import DEFAULT_SCANNER

        self.settings = settings
        self.device = device
        self.truths_list = truths if truths is not None else stream_truths(settings)
        if not self.truths_list:
            raise BadInputError("A training stream needs at least one truth volume.")
        if views is None:
            rng = np.random.default_rng([settings.seed, 779])
            views = [draw_views(rng, settings, truth, replace(DEFAULT_SCANNER, views=None))
                     for _, truth, _ in self.truths_list]
        self._views = list(views)
        self._projections: dict = {}
        self.pool = PatchPool(settings.pool, device)
        self._procs: list = []
        self._queue = None
        self._stop = None
        self._t0 = time.perf_counter()

    @property
    def cases_made(self) -> int:
        return self.pool.added

    # -- making cases --------------------------------------------------------------------------
    def _projection(self, i: int):
        if i not in self._projections:
            from ..simulate.torch_scanner import project_volume

            self._projections[i] = project_volume(self.truths_list[i][1], self._views[i], self.device)
        return self._projections[i]

    def make_case(self, rng: np.random.Generator) -> Case:
        """Simulate one pair on the device (the input's signature is measured on the CPU, where the input
        stays: a worker sends it on as it is, a :class:`PatchPool` moves it to its device)."""
        import torch

        from ..protocols import Protocol
        from ..simulate.torch_scanner import reconstruct_scan

        i = int(rng.integers(len(self.truths_list)))
        name, truth, native = self.truths_list[i]
        dproj = self._projection(i)
        tname, w_t, t_t, tgt = _noise_free_target(truth, dproj, self.settings, native, rng)
        phys, t_s = draw_source(rng, self.settings, native, t_t)
        with torch.no_grad():
            src = reconstruct_scan(truth, dproj, Protocol(kernel="standard", dose=phys.dose, thickness=t_s),
                                   seed=int(rng.integers(2 ** 31)), transfer=phys.transfer(float(min(truth.spacing[1:]))),
                                   det=phys.detector(dproj.projections.detector))
        spacing = (t_s, float(truth.spacing[1]), float(truth.spacing[2]))
        inp, cond, sig = network_pair(src.cpu().numpy(), spacing, t_s, t_t, w_t, self.settings.frontend_lambda)
        return Case(name, inp, tgt, cond, pair_info(phys, tname, t_s, t_t, sig))

    def fill(self, n: int, rng: Optional[np.random.Generator] = None) -> None:
        """Make ``n`` cases in this process (tests, and a run without workers)."""
        rng = rng or np.random.default_rng([self.settings.seed, 780, self.cases_made])
        for _ in range(n):
            self.pool.add(self.make_case(rng))

    def start(self) -> "DRStream":
        """Start the worker processes and wait until the pool holds ``min_pool`` cases."""
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # the parent may hold a CUDA context, which a fork cannot share
        n = min(self.settings.n_workers(), len(self.truths_list))
        self._queue = ctx.Queue(maxsize=max(4, self.settings.pool // 4))
        self._stop = ctx.Event()
        threads = max(1, (os.cpu_count() or 2) // (n + 1))
        for k in range(n):
            share = list(range(k, len(self.truths_list), n))
            p = ctx.Process(target=_worker_main, name=f"dr-stream-{k}", daemon=True,
                            args=(self.settings, self.device, [self.truths_list[i] for i in share],
                                  [self._views[i] for i in share], k, threads, self._queue, self._stop))
            p.start()
            self._procs.append(p)
        give_up = time.monotonic() + START_TIMEOUT_S
        try:
            while len(self.pool) < min(self.settings.min_pool, self.settings.pool):
                if time.monotonic() > give_up:
                    raise RuntimeError(f"The training stream's workers made {len(self.pool)} cases in "
                                       f"{START_TIMEOUT_S:g} s; {self.settings.min_pool} are needed to start.")
                self._drain(block=True)
        except BaseException:
            self.close()  # no worker keeps simulating for a run that did not start
            raise
        return self

    def _drain(self, block: bool = False) -> None:
        if self._queue is None:
            return
        dead = [p for p in self._procs if p.exitcode not in (None, 0)]
        if dead:  # killed (out of memory, a signal) before it could report: the pool would go stale
            raise RuntimeError(f"A training-stream worker ({dead[0].name}) ended with exit code {dead[0].exitcode} "
                               "without reporting an error.")
        while True:
            try:
                msg = self._queue.get(timeout=1.0) if block else self._queue.get_nowait()
            except queue.Empty:
                if block and not any(p.is_alive() for p in self._procs):
                    raise RuntimeError("Every training-stream worker stopped without a case or an error.") from None
                if block:
                    continue
                return
            if msg[0] == "error":
                raise RuntimeError(f"A training-stream worker failed: {msg[1]}\n{msg[2]}")
            _, name, inp, tgt, cond, info = msg
            self.pool.add(Case(name, inp, tgt, cond, info))
            block = False

    def close(self) -> None:
        if self._stop is None:
            return
        self._stop.set()
        deadline = time.monotonic() + 30
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            try:  # a worker blocked on a full queue ends once there is room
                self._queue.get(timeout=0.2)
            except queue.Empty:
                pass
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
            p.join()
        self._queue.cancel_join_thread()
        self._procs, self._queue, self._stop = [], None, None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- the bank interface ----------------------------------------------------------------------
    @property
    def truths(self) -> list:  # the training loop only checks that there is data
        return self.pool.cases

    def cases_per_second(self) -> float:
        return self.cases_made / max(time.perf_counter() - self._t0, 1e-9)

    def sample(self, rng: np.random.Generator, batch: int, patch: int, context: int, lo: float, hi: float,
               offset: float, divisor: float, pair_filter=None, frontend=None):
        """:meth:`PatchPool.sample` after taking in the cases the workers have finished."""
        self._drain()
        return self.pool.sample(rng, batch, patch, context, lo, hi, offset, divisor)


def _worker_main(settings, device, truths, views, k, threads, out, stop) -> None:
    """A worker process: simulate cases from ``truths`` until ``stop``; send them (as arrays) or the error."""
    import multiprocessing

    import torch

    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    running = lambda: not stop.is_set() and (parent is None or parent.is_alive())  # noqa: E731
    try:
        sim = DRStream(settings, device, truths=truths, views=views)
        rng = np.random.default_rng([settings.seed, 781, k])
        while running():
            case = sim.make_case(rng)
            msg = ("case", case.truth, case.input_hu, case.target_hu.cpu().numpy(), list(case.cond), case.info)
            while running():
                try:
                    out.put(msg, timeout=0.5)
                    break
                except queue.Full:
                    continue
    except BaseException as exc:  # noqa: BLE001 - reported to the training process, which raises it
        out.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
