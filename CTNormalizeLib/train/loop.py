"""The training loop: seeded, resumable, logged; L1 + optional PatchGAN hinge, feature matching, HU curriculum."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..imaging.progress import Progress
from ..io.atomic import atomic_write_text
from . import checkpoint as ckpt

log = logging.getLogger(__name__)

DEFAULT_ARCH = {"name": "conditioned2.5d", "params": {"context": 5, "width": 32, "head": 12, "blocks": 4}}


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the card).

    Loss: ``l1 + lung_weight * l1_lung + gan_weight * hinge_G + fm_weight * feature_matching``;
    with ``curriculum`` the L1 uses RadiomicGAN's widening HU window; ``l1_lung`` is the L1
    in ``lung_window`` (the HU band around the -950 HU emphysema threshold); ``ei_weight``
    adds :func:`soft_ei_loss` (per-patch fraction of voxels below -950 HU, output vs target).
    """

    name: str = "ctn-conditioned"
    arch: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_ARCH)))
    steps: int = 2000
    batch: int = 12
    patch: int = 64
    lr: float = 2e-3
    lr_min: float = 5e-5
    warmup: int = 50
    weight_decay: float = 0.0
    seed: int = 0
    hu_window: tuple = (-1100.0, 900.0)
    offset: float = 0.0
    divisor: float = 1000.0
    curriculum: bool = True
    frontend: Optional[str] = None
    curriculum_patience: int = 150
    gan_weight: float = 0.0
    fm_weight: float = 0.0
    lung_weight: float = 0.0
    lung_window: tuple = (-1000.0, -850.0)
    ei_weight: float = 0.0
    ckpt_every: int = 100
    log_every: int = 10
    max_minutes: Optional[float] = None

    @property
    def context(self) -> int:
        return int(self.arch.get("params", {}).get("context", 1 if self.arch["name"] == "unet2d" else 5))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hu_window"] = list(self.hu_window)
        d["lung_window"] = list(self.lung_window)
        return d


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to ``lr_min`` (a pure function of the step: resumable)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def soft_ei_loss(pred, target, threshold: float, tau: float):
    """|soft EI(pred) - soft EI(target)| per patch, mean over the batch (scaled units).

    A sigmoid stands in for the step at ``threshold`` so the fraction below it is
    differentiable; it keeps the lung-density tail that a plain L1 smooths away.
    """
    import torch

    def frac(v):
        return torch.sigmoid((threshold - v) / tau).flatten(1).mean(1)

    return (frac(pred) - frac(target)).abs().mean()


def _build(cfg: TrainConfig):
    import torch

    from ..models import build_model
    from ..models.s0_reference import build_patch_discriminator_2d

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    disc = opt_d = None
    if cfg.gan_weight > 0 or cfg.fm_weight > 0:
        disc = build_patch_discriminator_2d()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr * 0.5, betas=(0.5, 0.99))
    return model, opt, disc, opt_d


def train(cfg: TrainConfig, bank, out_dir, resume: bool = True, stop_after: Optional[int] = None,
          progress: Progress = None, pair_filter: Optional[Callable] = None, device: str = "cpu") -> dict:
    """Train ``cfg.arch`` on ``bank`` (:class:`~.data.PairBank`) into ``out_dir``.

    Parameters
    ----------
    cfg : TrainConfig
    bank : PairBank
    out_dir : path
        Gets ``checkpoint/``, ``log.csv`` and ``train.json``.
    resume : bool
        Continue from ``out_dir/checkpoint`` when present.
    stop_after : int, optional
        Stop (with a checkpoint) after this many steps in this call (tests, time slicing).
    progress : callable, optional
    pair_filter : callable(source, target) -> bool, optional
        Restricts the (source, target) scan pairs drawn from the bank.
    device : str
        Where the networks train; off the CPU the forward passes run in bf16 autocast. The
        bank's batches (arrays or tensors) are moved there.

    Returns
    -------
    dict
        ``{"step", "model", "losses", "curriculum", "stopped_early"}``; ``model`` is the
        trained torch module.
    """
    import torch

    from ..models.losses import WindowCurriculum, feature_matching_loss, hinge_d_loss, hinge_g_loss, windowed_l1

    if not bank.truths:
        raise BadInputError("The training bank is empty.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_type = torch.device(device).type
    if dev_type == "cpu":  # exact resumes on the CPU; a GPU run pays for determinism and is not step-exact anyway
        torch.use_deterministic_algorithms(True, warn_only=True)
    model, opt, disc, opt_d = _build(cfg)
    model.to(device)
    if disc is not None:
        disc.to(device)
    amp = lambda: torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=dev_type != "cpu")  # noqa: E731
    lo_w, hi_w = cfg.hu_window
    sc = lambda hu: (hu - cfg.offset) / cfg.divisor  # noqa: E731
    cur = WindowCurriculum(windows=[(-1000.0, 200.0), (-1050.0, 500.0), (lo_w, hi_w)],
                           patience=cfg.curriculum_patience) if cfg.curriculum else None
    step = 0
    ck_dir = out / "checkpoint"
    if resume and ckpt.has_checkpoint(ck_dir):
        st = ckpt.load_checkpoint(ck_dir, model, opt, disc, opt_d)
        step = int(st["step"])
        if cur is not None and st.get("curriculum"):
            cur.load_state(st["curriculum"])
        log.info("resumed from step %d", step)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or step == 0
    fh = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(fh)
    if new_log:
        writer.writerow(["step", "loss", "l1", "g_adv", "fm", "d_loss", "lr", "win_lo", "win_hi", "seconds"])
    t0 = time.perf_counter()
    done_here = 0
    losses = []
    model.train()
    try:
        while step < cfg.steps:
            rng = np.random.default_rng([cfg.seed, step, 31337])
            x, y, c = bank.sample(rng, cfg.batch, cfg.patch, cfg.context, lo_w, hi_w, cfg.offset, cfg.divisor,
                                  pair_filter, cfg.frontend)
            x, y, c = (torch.as_tensor(a).to(device) for a in (x, y, c))
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            with amp():
                pred = model(x, c)
            pred = pred.float()
            wlo, whi = cur.window() if cur is not None else (lo_w, hi_w)
            l1 = windowed_l1(pred, y, sc(wlo), sc(whi))
            loss = l1
            if cfg.lung_weight > 0:
                loss = loss + cfg.lung_weight * windowed_l1(pred, y, sc(cfg.lung_window[0]), sc(cfg.lung_window[1]))
            if cfg.ei_weight > 0:
                loss = loss + cfg.ei_weight * soft_ei_loss(pred, y, sc(-950.0), 10.0 / cfg.divisor)
            g_adv = fm = d_loss = torch.zeros(())
            if disc is not None:
                with amp():
                    fake_s, fake_f = disc(pred)
                    real_s, real_f = disc(y)
                g_adv = hinge_g_loss(fake_s)
                fm = feature_matching_loss(real_f, fake_f)
                loss = loss + cfg.gan_weight * g_adv + cfg.fm_weight * fm
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if disc is not None:
                for g in opt_d.param_groups:
                    g["lr"] = lr * 0.5
                with amp():
                    rs, _ = disc(y)
                    fs, _ = disc(pred.detach())
                d_loss = hinge_d_loss(rs, fs)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            lv = float(l1.detach())
            losses.append(lv)
            if cur is not None and cur.update(lv):
                log.info("step %d: HU window widened to %s", step, cur.window())
            step += 1
            done_here += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                writer.writerow([step, f"{float(loss.detach()):.6f}", f"{lv:.6f}", f"{float(g_adv.detach()):.5f}", f"{float(fm.detach()):.5f}",
                                 f"{float(d_loss.detach()):.5f}", f"{lr:.3e}", wlo, whi,
                                 f"{time.perf_counter() - t0:.1f}"])
                fh.flush()
            if progress:
                progress("train", step / cfg.steps)
            timed_out = cfg.max_minutes is not None and (time.perf_counter() - t0) > cfg.max_minutes * 60
            stop = stop_after is not None and done_here >= stop_after
            if step % cfg.ckpt_every == 0 or step == cfg.steps or stop or timed_out:
                ckpt.save_checkpoint(ck_dir, model, opt,
                                     {"step": step, "curriculum": cur.state() if cur else None,
                                      "config": cfg.to_dict()}, disc, opt_d)
            if stop or timed_out:
                break
    finally:
        fh.close()
    model.eval()
    summary = {"step": step, "steps": cfg.steps, "stopped_early": step < cfg.steps,
               "final_l1": float(np.mean(losses[-50:])) if losses else None,
               "curriculum": cur.state() if cur else None, "seconds": time.perf_counter() - t0}
    atomic_write_text(out / "train.json", json.dumps({"config": cfg.to_dict(), "summary": summary}, indent=1))
    summary["model"] = model
    return summary
