"""Train the learned blind denoiser (``ctn-denoise-v1``): noise-free anatomy plus domain-randomized noise.

The clean images are the noise-free target scans of the domain-randomized bank
(:mod:`.dr_data`: procedural phantoms and lung1 slabs through random kernels, 0.6-1.3 mm
pixels); the noise is drawn afresh for every sample (:mod:`.noise_fields`), so the
network never sees the same noise physics twice. It learns ``E[clean | noisy, noise
std, transfer]`` with an L1 loss. ``context = 1`` (v1) denoises slice by slice; ``context = 3``
(v2) also sees the two neighbouring slices, at a random z stride (so at random distances
in mm), with noise independent between slices or partly shared (overlapping
reconstructions), and sometimes no neighbours at all (a single-slice scan); v2 starts
from v1's weights.

Every batch is a pure function of ``(seed, step)`` and checkpoints hold the optimizer, so a
run stopped at any step resumes exactly (the CPU recipe runs in pieces).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..imaging.zgrid import reflect_index
from .loop import lr_at  # the same warm-up + cosine schedule (DenoiseConfig has its fields)
from .noise_fields import NoiseRanges, conditioning, draw_physics, noise_field

log = logging.getLogger(__name__)

NAME = "ctn-denoise-v1"
HU_DIVISOR = 1000.0
#: Wide enough that noisy air (-1000 HU, std up to 150 HU) is never clipped: training never clips.
HU_WINDOW = (-3000.0, 4000.0)


#: What the GPU recipe changes (``ctnormalize train --recipe denoise --device cuda``): noise drawn on the
#: device, 21x the CPU batch. Not yet run: no GPU was available when ctn-denoise-v1 was trained.
GPU_OVERRIDES = {"batch": 256, "noise": "torch"}


#: The denoiser recipes (``ctnormalize train --recipe NAME``): overrides of :class:`DenoiseConfig`.
#: ``denoise-v2`` starts from the installed ctn-denoise-v1 and learns to use the neighbouring slices;
#: ``denoise-v2b`` trains ctn-denoise-v2 on 5000 more batches of fresh noise (seed 1, so its batches are
#: not the ones v2 saw) at a lower peak learning rate; ``denoise-v2c`` does the same once more from
#: ctn-denoise-v2b (seed 2), and ``denoise-v2d`` from ctn-denoise-v2c on 6000 batches (seed 3).
RECIPE_OVERRIDES = {
    "denoise": {},
    "denoise-v2": {"name": "ctn-denoise-v2", "recipe": "denoise-v2", "context": 3, "init_from": NAME,
                   "steps": 5000, "lr": 3e-4, "warmup": 50},
    "denoise-v2b": {"name": "ctn-denoise-v2b", "recipe": "denoise-v2b", "context": 3, "init_from": "ctn-denoise-v2",
                    "steps": 5000, "lr": 2e-4, "warmup": 50, "seed": 1},
    "denoise-v2c": {"name": "ctn-denoise-v2c", "recipe": "denoise-v2c", "context": 3, "init_from": "ctn-denoise-v2b",
                    "steps": 5000, "lr": 2e-4, "warmup": 50, "seed": 2},
    "denoise-v2d": {"name": "ctn-denoise-v2d", "recipe": "denoise-v2d", "context": 3, "init_from": "ctn-denoise-v2c",
                    "steps": 6000, "lr": 2e-4, "warmup": 50, "seed": 3},
}


@dataclass
class DenoiseConfig:
    """Hyper-parameters of the denoiser recipe (recorded in the card)."""

    steps: int = 12000
    batch: int = 12
    patch: int = 128
    lr: float = 1e-3
    lr_min: float = 3e-5
    warmup: int = 100
    width: int = 48
    blocks: int = 6
    head: int = 16
    seed: int = 0
    checkpoint_every: int = 250
    noise: str = "numpy"  # "torch": drawn on the training device (the GPU recipe)
    ranges: NoiseRanges = field(default_factory=NoiseRanges)
    name: str = NAME
    recipe: str = "denoise"
    context: int = 1                 # slices the network sees (odd); the centre one is denoised
    z_stride_max: int = 3            # neighbours are 1..z_stride_max slices away (bank slices: 1-3 mm)
    z_corr_max: float = 0.6          # half the samples share up to this noise correlation between slices
    copy_prob: float = 0.05          # samples whose neighbours are copies of the centre (a one-slice scan)
    init_from: Optional[str] = None  # a package name whose weights start the run (head widened to context)

    @property
    def arch(self) -> dict:
        from ..models.conditioning import DENOISE_FEATURES

        return {"name": "conditioned2.5d", "params": {"context": self.context, "width": self.width, "blocks": self.blocks,
                                                      "head": self.head, "cond_dim": DENOISE_FEATURES}}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ranges"] = self.ranges.to_dict()
        return d


def clean_slices(bank_path) -> list[np.ndarray]:
    """The noise-free target scans of a domain-randomized bank (``bank_dr.npz``), as float32 HU volumes."""
    path = Path(bank_path)
    if not path.is_file():
        raise BadInputError(f"No domain-randomized bank at {path}; build one with `ctnormalize train --recipe v3`.")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["index_json"]).decode())
            return [np.asarray(z[f"target_{i}"], np.float32) for i in range(int(meta["targets"]))]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise BadInputError(f"{path} is not a domain-randomized bank (it needs index_json with 'targets' and "
                            f"target_0..target_N-1 volumes): {exc}") from exc


def _patch(cfg: DenoiseConfig, volumes: list, rng) -> np.ndarray:
    """``[context, P, P]`` clean slices around a random centre (neighbours at a random stride)."""
    v = volumes[int(rng.integers(len(volumes)))]
    p = cfg.patch
    z = int(rng.integers(v.shape[0]))
    y0 = int(rng.integers(0, v.shape[1] - p + 1))
    x0 = int(rng.integers(0, v.shape[2] - p + 1))
    k = cfg.context // 2
    zs = [z]
    if k:  # context 1 draws nothing more: v1's batches stay what they were
        s = int(rng.integers(1, cfg.z_stride_max + 1))
        zs = [reflect_index(z + s * j, v.shape[0]) for j in range(-k, k + 1)]
    c = np.rot90(v[zs, y0:y0 + p, x0:x0 + p], int(rng.integers(4)), axes=(1, 2))
    return c[:, :, ::-1] if rng.random() < 0.5 else c


def _slice_mix(cfg: DenoiseConfig, rng):
    """How the slices' noise relates: ``("copy", 0)``, or ``("mix", rho)`` with rho the shared fraction."""
    u = float(rng.random())
    if u < cfg.copy_prob:
        return "copy", 0.0
    return "mix", 0.0 if u < 0.5 else float(rng.uniform(0.0, cfg.z_corr_max))


def _mixed(fields, rho, axis: int = 0):
    """``context`` slices' noise from ``context + 1`` independent fields along ``axis``: correlation ``rho`` between
    slices (a number, or per sample an array that broadcasts against the fields, as in a batch)."""
    c = fields.shape[axis] - 1
    lead = (slice(None),) * axis
    return (1.0 - rho) ** 0.5 * fields[lead + (slice(None, c),)] + rho ** 0.5 * fields[lead + (slice(c, None),)]


def make_batch(cfg: DenoiseConfig, volumes: list, step: int):
    """``(noisy, clean, cond)`` for ``step``: scaled HU ``[B, 1, P, P]`` twice and ``[B, F]`` features (numpy).

    The CPU recipe's batches (noise drawn with numpy, :func:`~.noise_fields.noise_field`).
    """
    rng = np.random.default_rng([cfg.seed, step])
    noisy, clean, cond = [], [], []
    k = cfg.context // 2
    for _ in range(cfg.batch):
        c = _patch(cfg, volumes, rng)
        phys = draw_physics(rng, cfg.ranges)
        if k:
            mode, rho = _slice_mix(cfg, rng)
            n = _mixed(np.stack([noise_field(phys, cfg.patch, rng) for _ in range(cfg.context + 1)]), rho)
            if mode == "copy":
                c, n = np.repeat(c[k:k + 1], cfg.context, 0), np.repeat(n[k:k + 1], cfg.context, 0)
        else:
            n = noise_field(phys, cfg.patch, rng)[None]
        clean.append(c[k])
        noisy.append(c + n)
        cond.append(conditioning(phys, rng, cfg.ranges))
    s = np.float32(1.0 / HU_DIVISOR)
    return (np.stack(noisy).astype(np.float32) * s, np.ascontiguousarray(np.stack(clean)[:, None]) * s,
            np.asarray(cond, np.float32))


def make_batch_torch(cfg: DenoiseConfig, volumes: list, step: int, device):
    """:func:`make_batch` with the noise drawn by torch on ``device`` (the GPU recipe): torch tensors there.

    Patches, physics and conditioning come from the same ``(seed, step)`` numpy stream;
    the noise from a torch generator seeded by ``(seed, step)``, so runs resume exactly.
    """
    import torch

    from .noise_fields import noise_fields_torch

    rng = np.random.default_rng([cfg.seed, step])
    clean, phys, cond, mixes = [], [], [], []
    k = cfg.context // 2
    for _ in range(cfg.batch):
        clean.append(_patch(cfg, volumes, rng))
        phys.append(draw_physics(rng, cfg.ranges))
        if k:
            mixes.append(_slice_mix(cfg, rng))
        cond.append(conditioning(phys[-1], rng, cfg.ranges))
    gen = torch.Generator(device=device).manual_seed(int(cfg.seed) * 1_000_003 + int(step))
    s = 1.0 / HU_DIVISOR
    c = torch.from_numpy(np.ascontiguousarray(np.stack(clean))).to(device) * s
    if not k:
        n = noise_fields_torch(phys, cfg.patch, gen, device)[:, None] * s
    else:
        per = cfg.context + 1
        f = noise_fields_torch([p for p in phys for _ in range(per)], cfg.patch, gen, device)
        f = f.view(cfg.batch, per, cfg.patch, cfg.patch) * s
        # the whole batch at once (a loop of per-sample device calls was ~770 small kernels a batch)
        rho = torch.tensor([r for _, r in mixes], dtype=f.dtype, device=f.device)[:, None, None, None]
        n = _mixed(f, rho, axis=1)
        copy = torch.tensor([m == "copy" for m, _ in mixes], device=f.device)[:, None, None, None]
        c = torch.where(copy, c[:, k:k + 1].expand_as(c), c)
        n = torch.where(copy, n[:, k:k + 1].expand_as(n), n)
    return c + n, c[:, k:k + 1].contiguous(), torch.from_numpy(np.asarray(cond, np.float32)).to(device)


def train_step(model, opt, batch, device: str = "cpu") -> float:
    """One optimizer step on ``(noisy, clean, cond)`` (L1, gradients clipped at 1; bf16 autocast off the CPU).

    Returns the loss in HU.
    """
    import torch

    x, y, c = batch
    dev_type = torch.device(device).type
    with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=dev_type != "cpu"):
        loss = (model(x, c).float() - y).abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach()) * HU_DIVISOR


def train_denoiser(cfg: DenoiseConfig, bank_path, out_dir, resume: bool = True, stop_after: Optional[int] = None,
                   max_seconds: Optional[float] = None, package_dir=None,
                   progress: Optional[Callable[[str, float], None]] = None, device: str = "cpu") -> Path:
    """Train (or resume) into ``out_dir`` and write the package; returns the package folder.

    ``out_dir/checkpoint`` holds the resumable state, ``out_dir/log.csv`` the loss per 50
    steps. The package (``package_dir``, default ``out_dir/package/<cfg.name>``) is
    written whenever the call ends, also after ``stop_after`` steps or ``max_seconds``;
    its card's ``recipe.steps_done`` says how far the run got (run again to resume).
    The GPU recipe: ``cfg.noise="torch"`` draws the noise on ``device`` (:func:`make_batch_torch`);
    off the CPU the network runs in bf16 autocast.
    """
    import torch

    from ..models import build_model
    from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint

    out = Path(out_dir)
    volumes = clean_slices(bank_path)
    bad = [i for i, v in enumerate(volumes) if v.ndim != 3 or v.shape[0] < 1 or min(v.shape[1:]) < cfg.patch]
    if bad or not volumes:
        raise BadInputError(f"The bank's volumes must be [z, y, x] with at least {cfg.patch} x {cfg.patch} pixels "
                            f"per slice (the training patch); target_{bad[0] if bad else 0} is not.")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    step, state = 0, {}
    ck = out / "checkpoint"
    if resume and has_checkpoint(ck):
        # compare before loading: another recipe's weights may not even fit this network
        saved = json.loads((ck / "state.json").read_text(encoding="utf-8")).get("state", {}).get("config", {})
        differ = sorted(k for k, v in cfg.to_dict().items() if k != "steps" and saved.get(k, v) != v)
        if differ:
            raise BadInputError(f"{out} holds a run with another configuration ({', '.join(differ)}); "
                                "resume it with the same settings or start over (--no-resume).")
        state = load_checkpoint(ck, model, opt)
        step = int(state["step"])
        log.info("resumed at step %d", step)
    elif cfg.init_from:
        state = {"starts_from_sha256": init_from_package(model, cfg.init_from)}
    start_sha = state.get("starts_from_sha256")
    elapsed = float(state.get("elapsed_s", 0.0))
    logf = out / "log.csv"
    if step == 0:
        logf.write_text("step,loss,lr,elapsed_s\n", encoding="utf-8")
    model.train()
    t0, acc, n_acc = time.perf_counter(), 0.0, 0
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    while step < end and not (max_seconds is not None and time.perf_counter() - t0 > max_seconds):
        if cfg.noise == "torch":
            x, y, c = make_batch_torch(cfg, volumes, step, device)
        else:
            x, y, c = (torch.from_numpy(a).to(device) for a in make_batch(cfg, volumes, step))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        acc += train_step(model, opt, (x, y, c), device)
        step += 1
        n_acc += 1
        if step % 50 == 0 or step == end:
            now = elapsed + time.perf_counter() - t0
            with logf.open("a", encoding="utf-8") as fh:
                fh.write(f"{step},{acc / n_acc:.4f},{lr_at(cfg, step - 1):.3g},{now:.1f}\n")
            acc, n_acc = 0.0, 0
            if progress:
                progress("train", step / cfg.steps)
        if step % cfg.checkpoint_every == 0 and step < end:
            save_checkpoint(ck, model, opt, {"step": step, "elapsed_s": elapsed + time.perf_counter() - t0,
                                             "config": cfg.to_dict(), "starts_from_sha256": start_sha})
    total = elapsed + time.perf_counter() - t0  # the last checkpoint: at the end, whatever stopped the loop
    save_checkpoint(ck, model, opt, {"step": step, "elapsed_s": total, "config": cfg.to_dict(),
                                     "starts_from_sha256": start_sha})
    return write_denoiser_package(model, Path(package_dir) if package_dir else out / "package" / cfg.name, cfg,
                                  bank_path, total, steps_done=step, device=str(device), starts_from_sha256=start_sha)


def init_from_package(model, name: str) -> str:
    """Start ``model`` from the installed package ``name``'s weights; returns that package's sha256.

    A head that sees more slices than the package's gets the package's weights on its
    centre slice and zeros on the others, so the run starts exactly where the package is.
    """
    import torch

    package = _installed(name)
    if package is None:
        raise BadInputError(f"No installed model package {name!r} to start from (see `ctnormalize models`).")
    if package.card.get("role") != "denoiser":
        raise BadInputError(f"{name} is not a denoiser package; a denoiser run cannot start from it.")
    src = package.load().state_dict()
    own = model.state_dict()
    missing = sorted(set(own) - set(src))
    if missing:
        raise BadInputError(f"{name} lacks weights this architecture has ({', '.join(missing[:3])}); "
                            "it cannot start this run.")
    for key, w in src.items():
        if key not in own:
            raise BadInputError(f"{name} has weights ({key}) this architecture lacks; it cannot start this run.")
        if own[key].shape == w.shape:
            own[key] = w.clone()
        elif key == "head.weight" and own[key].shape[1] > w.shape[1] == 1:
            k = own[key].shape[1] // 2
            own[key] = torch.zeros_like(own[key])
            own[key][:, k:k + 1] = w
        else:
            raise BadInputError(f"{name}'s {key} has shape {tuple(w.shape)}, this run's {tuple(own[key].shape)}.")
    model.load_state_dict(own)
    return package.sha256


def _installed(name: str):
    """The installed model package called ``name`` (the first in the registry's order), or None."""
    from ..models.registry import list_models

    return next((p for p in list_models() if p.name == name), None)


#: the chain settings that make a denoiser's blend: a continued run starts from its parent's until
#: scripts/choose_nlm_blend.py rechooses them, and a per-scan residual decision holds only with the blend it was measured with
CHAIN_SETTINGS = ("nlm_blend", "nlm_residual", "flips")


def inherited_chain(name: Optional[str], arch: dict) -> Optional[dict]:
    """The chain settings of the installed package ``name`` when a run continues it with the same network.

    A continued model starts from its parent's weights, and so from its parent's NLM blend and
    flips: ``scripts/choose_nlm_blend.py`` then keeps them unless another setting beats them by
    more than one standard error, as on a rerun (a first choice would take the top setting on
    differences far inside the noise). None without a parent, with another network, or when the
    parent has no chain.
    """
    parent = _installed(name) if name else None
    if parent is None or parent.card.get("architecture") != arch:
        return None
    return chain_from_card(parent.card)


def chain_from_card(card: dict) -> Optional[dict]:
    """A package's chain settings (:data:`CHAIN_SETTINGS`) as a new package starts from them, marked as
    inherited from it until ``scripts/choose_nlm_blend.py`` rechooses them; None when it has none."""
    chain = card.get("chain") or {}
    kept = {k: chain[k] for k in CHAIN_SETTINGS if k in chain}
    if not kept:
        return None
    name = card.get("name")
    return {**kept, "inherited_from": name,
            "note": f"{name}'s settings, until scripts/choose_nlm_blend.py rechooses them (it keeps them unless "
                    "another setting beats them by more than one standard error on its validation scans)"}


def _bank_index(bank_path) -> dict:
    with np.load(bank_path, allow_pickle=False) as z:
        return json.loads(bytes(z["index_json"]).decode())


def _clean_text(bank_path, index: dict) -> str:
    """What the bank's clean volumes are: its own ``clean_source`` (a bank made on a GPU), else the v3 bank's."""
    if index.get("clean_source"):
        return f"{index['clean_source']} ({Path(bank_path).name})"
    return (f"noise-free target scans of the domain-randomized bank ({Path(bank_path).name}, {int(index['targets'])} "
            "volumes; the v3 bank: 40 procedural phantoms, seeds 0-39, and 4 lung1 slabs through random kernels, "
            "0.6-1.3 mm pixels)")


def _bank_record(bank_path) -> dict:
    """The bank a run read, so a rebuild can check it has the same one."""
    from ..models.registry import sha256_file

    path = Path(bank_path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def denoiser_card(cfg: DenoiseConfig, bank_path, train_s: float, steps_done: Optional[int] = None,
                  device: str = "cpu", starts_from_sha256: Optional[str] = None) -> dict:
    """The package card: architecture, io, the recipe (so the model can be rebuilt) and its role."""
    import torch

    ctx = int(cfg.context)
    chain = inherited_chain(cfg.init_from, cfg.arch)
    index = _bank_index(bank_path)
    z_text = ("slice by slice; the chain's z_profile step changes thickness" if ctx == 1 else
              f"sees each slice with its {ctx - 1} nearest neighbours (mirrored at the ends; a one-slice scan "
              "is its own neighbour); "
              "the chain's z_profile step changes thickness")
    return {
        "name": cfg.name,
        "role": "denoiser",
        "description": "the classical chain (denoise -> MTF-ratio kernel conversion -> slice profile) with a learned "
                       "blind denoiser, trained on domain-randomized noise, in place of non-local means"
                       + ("" if ctx == 1 else f"; the network sees {ctx} slices")
                       + (f"; starts from {cfg.init_from}'s weights" if cfg.init_from else ""),
        "architecture": cfg.arch,
        "hyperparameters": {k: v for k, v in cfg.to_dict().items() if k != "ranges"},
        "io": {"hu_window": list(HU_WINDOW), "scale": {"offset": 0.0, "divisor": HU_DIVISOR}, "context": ctx,
               "conditioning": "denoise_features(noise_hu, transfer, pixel_mm)", "slice_by_slice": ctx == 1,
               "z_up_factor": None, "z_handling": z_text},
        "covers": {"conditioning": "measured noise", "noise_hu": [cfg.ranges.sigma_hu[0], cfg.ranges.sigma_hu[1]]},
        "priority": 0,
        "training_data": {
            "clean": _clean_text(bank_path, index),
            **({"clean_settings": index["settings"]} if "settings" in index else {}),
            "noise": "CTNormalizeLib/train/noise_fields.py, drawn afresh per sample",
            "noise_ranges": cfg.ranges.to_dict(),
            "held_out": "phantom seeds >= 1000 and lung2 never used; the sinogram simulators are not used for noise",
        },
        "recipe": {
            "command": (f"ctnormalize train --recipe {cfg.recipe} -o RUN --bank RUN_V3/bank_dr.npz --steps {cfg.steps} "
                        f"--seed {cfg.seed}" + ("" if device == "cpu" else f" --device {device}"))
            if not index.get("clean_source") else
            f"CTN_BANK=stream CTN_RECIPE={cfg.recipe} benchmarks/gpu_train_denoise.sh (the clean scans simulated on "
            f"the device first; {cfg.steps} steps, seed {cfg.seed})",
            "starts_from": cfg.init_from,
            "starts_from_sha256": starts_from_sha256 if cfg.init_from else None,
            "bank": _bank_record(bank_path),
            "code": "CTNormalizeLib/train/denoiser.py, CTNormalizeLib/train/noise_fields.py",
            "steps": cfg.steps, "steps_done": cfg.steps if steps_done is None else int(steps_done),
            "batch": cfg.batch, "patch": cfg.patch, "loss": "L1 on HU/1000",
            "device": device, "time_s": round(train_s, 1),
            "gpu_recipe": {"command": f"ctnormalize train --recipe {cfg.recipe} -o RUN --bank RUN_V3/bank_dr.npz "
                                      f"--seed {cfg.seed} --device cuda",
                           "overrides": GPU_OVERRIDES,
                           "status": (f"this package was trained by it on {device}" if device not in ("cpu", "mps")
                                      else "prepared and tested on torch's CPU device (noise fields within 10 % of "
                                           "the numpy reference's NPS); never run on a GPU")},
        },
        "training": {"torch": torch.__version__, "python": platform.python_version(), "device": device},
        "metrics": {},
        **({"chain": chain} if chain else {}),
    }


def write_denoiser_package(model, out_dir, cfg: DenoiseConfig, bank_path, train_s: float,
                           steps_done: Optional[int] = None, device: str = "cpu",
                           starts_from_sha256: Optional[str] = None) -> Path:
    """Weights + card into ``out_dir`` (see :func:`~.package.write_package`)."""
    from .package import write_package

    return write_package(model, out_dir, denoiser_card(cfg, bank_path, train_s, steps_done, device,
                                                       starts_from_sha256))


def package_from_checkpoint(run_dir, bank_path, out_dir=None) -> Path:
    """Package the checkpoint of an unfinished (or finished) run, e.g. to benchmark it part-way."""
    import torch

    from ..models import build_model
    from .checkpoint import load_checkpoint

    run = Path(run_dir)
    state = json.loads((run / "checkpoint" / "state.json").read_text(encoding="utf-8"))["state"]
    c = dict(state["config"])
    cfg = DenoiseConfig(**{k: v for k, v in c.items() if k != "ranges"},
                        ranges=NoiseRanges(**{k: tuple(v) if isinstance(v, list) else v for k, v in c["ranges"].items()}))
    model = build_model(cfg.arch)
    opt = torch.optim.AdamW(model.parameters())
    load_checkpoint(run / "checkpoint", model, opt)
    return write_denoiser_package(model, Path(out_dir) if out_dir else run / "package" / cfg.name, cfg, bank_path,
                                  float(state["elapsed_s"]), steps_done=int(state["step"]),
                                  starts_from_sha256=state.get("starts_from_sha256"))
