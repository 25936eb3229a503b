"""One call from recipe to model package: bank -> train -> validate -> package."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from ..imaging.progress import Progress
from . import recipes
from .data import SimSettings, load_bank, manifest_bank, save_bank, simulated_bank
from .denoiser import RECIPE_OVERRIDES
from .loop import train
from .package import check_package_dir, write_package

log = logging.getLogger(__name__)

RECIPES = {
    "default": (recipes.default_config, recipes.DEFAULT_COVERS, None, 10,
                "Protocol-conditioned 2.5D FiLM network: kernel + dose + thickness in one model."),
    "unet": (recipes.unet_config, recipes.UNET_COVERS, recipes.unet_pair_filter, 5,
             "2D U-Net kernel normalization (any sharper kernel -> smooth), L1, same thickness."),
    "v3": (recipes.v3_config, recipes.V3_COVERS, None, 20,
           "Signature-conditioned 2.5D FiLM network trained on domain-randomized physics: conditioned on the "
           "measured source noise and transfer and the target transfer; outputs the best mean estimate."),
}


#: The learned blind denoisers (``ctn-denoise-v1``, ``-v2``, ``-v2b``): the classical chain's noise step, not whole
#: normalizers.
DENOISE_RECIPES = tuple(RECIPE_OVERRIDES)


def _parent_package(recipe: str):
    """The installed package a continued recipe starts from (an input of the run), or None."""
    from .denoiser import _installed

    name = (RECIPE_OVERRIDES.get(recipe) or {}).get("init_from")
    parent = _installed(name) if name else None
    return parent.path if parent is not None else None


def run_training(recipe: str, out_dir, bank_path=None, manifest=None, steps: Optional[int] = None,
                 max_minutes: Optional[float] = None, seed: Optional[int] = None, resume: bool = True,
                 package_dir=None, validate: bool = True, progress: Progress = None,
                 sim_settings: Optional[SimSettings] = None, device: str = "cpu", truths_file=None) -> Path:
    """Train a recipe (``default``, ``unet``, ``v3`` or one of the denoise recipes) and write its model package;
    returns the package folder. ``seed`` None: the recipe's (0, but a continued denoiser's own seed in
    ``denoiser.RECIPE_OVERRIDES``, so that its batches are not the ones its starting model was trained on).

    The simulated bank is cached as ``out_dir/bank.npz`` (or read from ``bank_path``); a
    ``manifest`` of user pairs replaces it. ``device`` off the CPU runs the GPU recipe of the
    denoise recipes (noise drawn on the device) and of ``v3`` (pairs simulated on the device
    while it trains, :func:`_train_v3_stream`; ``truths_file``: packed lung1 slabs for a machine
    without SimpleITK); ``default`` and ``unet`` train on the CPU.
    """
    if recipe not in RECIPES and recipe not in DENOISE_RECIPES:
        from ..errors import BadInputError

        raise BadInputError(f"Unknown recipe {recipe!r}; known: {', '.join([*RECIPES, *DENOISE_RECIPES])}.")
    out = Path(out_dir)
    check_package_dir(package_dir, [bank_path, manifest, truths_file, _parent_package(recipe)])
    if recipe in ("default", "unet") and str(device).strip().lower() != "cpu":
        from ..errors import BadInputError

        raise BadInputError(f"The {recipe} recipe trains on the CPU only; --device is for the denoise and v3 recipes "
                            "(their GPU recipes).")
    v3_device = _device(device) if recipe == "v3" else None  # an unavailable device is refused before OUT is made
    if truths_file is not None and v3_device in (None, "cpu"):
        from ..errors import BadInputError

        raise BadInputError("--truths is read by v3's GPU recipe only (--recipe v3 --device cuda).")
    if v3_device not in (None, "cpu"):
        _check_v3_stream_inputs(v3_device, manifest, bank_path, truths_file, 0 if seed is None else int(seed))
    if recipe in DENOISE_RECIPES:  # makes OUT only once its inputs are checked
        from ..errors import BadInputError

        if manifest is not None:
            raise BadInputError("The denoise recipe trains on noise it draws itself; it takes no --manifest.")
        if bank_path is not None and not Path(bank_path).is_file():
            raise BadInputError(f"No bank at {bank_path} (the v3 recipe's RUN/bank_dr.npz).")
        return _train_denoiser(out, bank_path, steps, max_minutes, seed, resume, package_dir, progress, sim_settings,
                               device, recipe)
    seed = 0 if seed is None else int(seed)  # every other recipe's own seed is 0
    out.mkdir(parents=True, exist_ok=True)
    make_cfg, covers, pair_filter, priority, description = RECIPES[recipe]
    over = {"seed": seed}
    if steps is not None:
        over["steps"] = int(steps)
    if max_minutes is not None:
        over["max_minutes"] = float(max_minutes)
    cfg = make_cfg(**over)
    io_extra = None
    if manifest is not None:
        bank = manifest_bank(manifest)
        data_info = {"kind": "user manifest", "manifest": str(manifest)}
    elif recipe == "v3" and v3_device != "cpu":
        return _train_v3_stream(out, steps, max_minutes, seed, package_dir, progress, v3_device, truths_file,
                                sim_settings)
    elif recipe == "v3":
        bank, data_info = _dr_bank(out, bank_path, seed, progress, sim_settings)
        io_extra = recipes.V3_IO
    else:
        cache = Path(bank_path) if bank_path else out / "bank.npz"
        if cache.is_file():
            bank = load_bank(cache)
        else:
            bank = simulated_bank(sim_settings or SimSettings(seed=seed), progress=progress)
            save_bank(bank, cache)
        data_info = {"kind": "simulated pairs", "settings": bank.settings,
                     "real_data": "pyradiomics lung1 crops as truth (5 mm; kernel and dose only)"
                     if bank.settings.get("lung1_crops") else "none"}
    summary = train(cfg, bank, out, resume=resume, progress=progress, pair_filter=pair_filter)
    model = summary["model"]
    card = recipes.make_card(cfg, covers, data_info, summary, priority=priority, description=description,
                             io_extra=io_extra)
    pkg_dir = Path(package_dir) if package_dir else out / "package" / cfg.name
    write_package(model, pkg_dir, card)
    if validate and recipe != "v3":  # v3 is judged by the benchmark (in-distribution and held-out physics)
        from ..models.registry import read_package
        from .validate import validate_package

        val = validate_package(read_package(pkg_dir))
        card = json.loads((pkg_dir / "card.json").read_text())
        card["validation"] = {"held_out_seeds": [1500], "note": "phantom seeds >= 1000, never trained on",
                              "median": val["median"]}
        from ..io.atomic import atomic_write_text
        from ..models.registry import write_card

        write_card(pkg_dir / "card.json", card)
        atomic_write_text(out / "validation.json", json.dumps(val, indent=1))
    return pkg_dir


def _device(device: str) -> str:
    from ..inference.device import resolve_device

    return resolve_device(device)


def _dr_bank(out: Path, bank_path, seed: int, progress, settings=None):
    """The domain-randomized bank for v3, cached as ``out/bank_dr.npz``."""
    from .dr_data import DRSettings, bank_summary, build_dr_bank, load_dr_bank, save_dr_bank

    cache = Path(bank_path) if bank_path else out / "bank_dr.npz"
    if cache.is_file():
        bank = load_dr_bank(cache)
    else:
        bank = build_dr_bank(settings if isinstance(settings, DRSettings) else DRSettings(seed=seed),
                             progress=progress)
        save_dr_bank(bank, cache)
    info = {"kind": "domain-randomized simulated pairs (simulator 1.0 projector, randomized physics)",
            "settings": bank.settings, "measured_span": bank_summary(bank), "physics": dr_physics(),
            "real_data": "pyradiomics lung1 slabs (whole field of view, 2x down-sampled, 5 mm) as truth",
            "labels": "noise-free target reconstructions"}
    return bank, info


def dr_physics() -> dict:
    """The domain-randomized physics ranges, for the card (:mod:`CTNormalizeLib.simulate.randomized`)."""
    from ..simulate.randomized import CLASSIC_WINDOWS, DOSE_RANGE, ELECTRONIC_RANGE

    return {"filters": ["parametric family (f50 0.22-1.1 c/mm, steepness 1.5-6, lift 0-0.6)"]
            + [f"{w} window, cut-off 60-100 % of Nyquist" for w in CLASSIC_WINDOWS]
            + ["x linear-interpolation blur in 40 % of scans"],
            "dose": list(DOSE_RANGE), "electronic_noise_counts": list(ELECTRONIC_RANGE),
            "aec_strength": [0.0, 0.5, 1.0], "views": "matched or 50-100 % of matched"}


def _check_v3_stream_inputs(device: str, manifest, bank_path, truths_file, seed: int = 0) -> None:
    """v3's GPU recipe simulates its own pairs on CUDA: refuse what it would otherwise ignore, before anything runs."""
    from ..errors import BadInputError

    if not device.startswith("cuda"):
        raise BadInputError(f"v3's GPU recipe runs on CUDA, not {device!r} (its simulator is untried there); "
                            "use --device cpu for the CPU recipe.")
    if manifest is not None or bank_path is not None:
        raise BadInputError("v3's GPU recipe simulates its pairs while it trains; it takes no --manifest or --bank "
                            "(use --device cpu to train on a bank or your pairs).")
    if truths_file is not None:
        from .dr_stream import StreamSettings, lung1_truths

        lung1_truths(StreamSettings(seed=seed, lung1_file=str(truths_file)), None)  # missing or stale: refused now


#: Seconds a deadline-capped run keeps for closing its workers and writing the package.
PACKAGE_RESERVE_S = 20.0


def minutes_before(deadline: float | None, minutes: float | None) -> float | None:
    """``minutes`` capped at what is left before ``deadline`` (``time.time()`` seconds) less
    :data:`PACKAGE_RESERVE_S`, at least 0.05; ``minutes`` itself without a deadline."""
    import time

    if deadline is None:
        return minutes
    left = max((deadline - time.time() - PACKAGE_RESERVE_S) / 60.0, 0.05)
    return left if minutes is None else min(float(minutes), left)


def _train_v3_stream(out: Path, steps, max_minutes, seed: int, package_dir, progress, device: str,
                     truths_file=None, settings=None, overrides: dict | None = None,
                     deadline: float | None = None) -> Path:
    """v3's GPU recipe: pairs simulated on ``device`` while it trains (:mod:`.dr_stream`), no bank.

    With ``max_minutes`` and no ``steps`` the schedule is sized to the time: a 20-step probe
    times a step (simulation workers running), and the cosine schedule gets the steps that fit
    in 95 % of the minutes. ``deadline`` (``time.time()`` seconds) caps the minutes at what is
    left of a lease once the truths are made and the step is timed (setup's time varies with the
    machine), keeping ``PACKAGE_RESERVE_S`` for the package. ``overrides`` replace entries of the
    GPU recipe's configuration (a CPU try of the script runs a small batch).
    """
    import time

    from .dr_stream import DRStream, StreamSettings

    st = settings if isinstance(settings, StreamSettings) else StreamSettings(seed=seed, lung1_file=truths_file)
    over = {**recipes.V3_GPU_OVERRIDES, "seed": seed, "name": recipes.V3_GPU_NAME, **(overrides or {})}
    t0 = time.perf_counter()
    stream = DRStream(st, device)  # a missing or stale lung1 pack is refused here, before OUT is made
    setup_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with stream:
        probe = None
        if steps is None and max_minutes is not None:
            probe = _probe_step_seconds(recipes.v3_config(**over), stream, out / "probe", device)
        max_minutes = minutes_before(deadline, max_minutes)
        if probe is not None:
            steps = max(20, int(0.95 * 60 * max_minutes / probe))
        cfg = recipes.v3_config(**over, **({"steps": int(steps)} if steps is not None else {}),
                                **({"max_minutes": float(max_minutes)} if max_minutes is not None else {}))
        summary = train(cfg, stream, out, resume=False, progress=progress, device=device)
        made, rate = stream.cases_made, stream.cases_per_second()
    data_info = {"kind": "domain-randomized pairs simulated on the training device while it trained "
                         "(CTNormalizeLib/train/dr_stream.py; torch scanner, signatures measured on the CPU)",
                 "settings": st.to_dict(), "physics": dr_physics(), "cases_made": made,
                 "cases_per_s": round(rate, 2), "setup_s": round(setup_s, 1),
                 "probe_s_per_step": None if probe is None else float(probe),
                 "real_data": "pyradiomics lung1 slabs (whole field of view, 2x down-sampled, 5 mm) as truth"
                 if st.lung1_slabs else "none (procedural phantoms only)",
                 "labels": "noise-free target reconstructions"}
    if not st.lung1_slabs:
        data_info["settings"]["lung1_file"] = None
    on_cuda = device.startswith("cuda")
    what = "ctn-conditioned-v3's GPU recipe" if on_cuda else \
        f"a try of ctn-conditioned-v3's GPU recipe on {device} (not a model to use)"
    card = recipes.make_card(cfg, recipes.V3_COVERS, data_info, summary, priority=0 if on_cuda else -100,
                             description=f"{what}: " + RECIPES["v3"][4], device=device,
                             io_extra=recipes.V3_IO)
    sized = (f"--minutes {max_minutes:g}" if probe is not None else f"--steps {cfg.steps}"
             + (f" --minutes {max_minutes:g}" if max_minutes is not None else ""))
    command = (f"ctnormalize train --recipe v3 --device cuda -o RUN {sized} --seed {seed} --no-resume"
               + (" --truths PACKED.npz" if st.lung1_file and st.lung1_slabs else "") if on_cuda else
               "benchmarks/gpu_train_v3.sh with CTN_CHECK_DEVICE=cpu (a try of the recipe's code, not the recipe)")
    if overrides:
        command += " with the recipe's configuration changed: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    card["recipe"] = {"command": command, "stream_settings": "training_data.settings",
                      "steps_planned": cfg.steps, "stopped_early": summary["stopped_early"],
                      "code": "CTNormalizeLib/train/dr_stream.py, CTNormalizeLib/simulate/torch_scanner.py, "
                              "CTNormalizeLib/train/recipes.py (v3_config, V3_GPU_OVERRIDES)",
                      "steps_done": summary["step"], "batch": cfg.batch, "patch": cfg.patch,
                      "time_s": round(summary["seconds"], 1), "device": device,
                      "resumable": "no (batches depend on the simulation workers' timing)"}
    pkg_dir = Path(package_dir) if package_dir else out / "package" / cfg.name
    write_package(summary["model"], pkg_dir, card)
    return pkg_dir


def _probe_step_seconds(cfg, stream, work: Path, device: str) -> float:
    """Seconds per training step of ``cfg`` on ``stream``: steps 10-20 of a throw-away run, timed here.

    The loop reads the loss back every step (a host sync), so the clock sees the device's time.
    """
    import dataclasses
    import time

    marks = {}

    def clock(stage, fraction):
        step = round(fraction * 20)
        if step in (10, 20):
            marks[step] = time.perf_counter()

    probe = dataclasses.replace(cfg, steps=20, ckpt_every=10 ** 9, name=cfg.name + "-probe")
    train(probe, stream, work, resume=False, device=device, progress=clock)
    return max((marks[20] - marks[10]) / 10.0, 1e-6)


def _train_denoiser(out: Path, bank_path, steps, max_minutes, seed, resume, package_dir, progress, settings,
                    device: str = "cpu", recipe: str = "denoise"):
    """A denoiser recipe: clean images from the v3 bank (built when absent), noise drawn per sample."""
    from ..inference.device import resolve_device
    from .denoiser import GPU_OVERRIDES, DenoiseConfig, train_denoiser

    dev = resolve_device(device)
    cache = Path(bank_path) if bank_path else out / "bank_dr.npz"
    if not cache.is_file():
        out.mkdir(parents=True, exist_ok=True)
        _dr_bank(out, bank_path, 0 if seed is None else seed, progress, settings)
    over = {**RECIPE_OVERRIDES[recipe], **({"seed": int(seed)} if seed is not None else {}),
            **({"steps": int(steps)} if steps is not None else {})}
    if dev != "cpu":
        over.update(GPU_OVERRIDES)
    return train_denoiser(DenoiseConfig(**over), cache, out, resume=resume,
                          max_seconds=None if max_minutes is None else 60 * max_minutes,
                          package_dir=package_dir, progress=progress, device=dev)
