"""The shipped models' recipes: architecture, training settings, protocol space and card."""

from __future__ import annotations

import json
import platform
from typing import Optional

from ..protocols import KERNEL_CLASSES
from .loop import TrainConfig

IO_DEFAULT = {"hu_window": [-1100.0, 900.0], "scale": {"offset": 0.0, "divisor": 1000.0},
              "passthrough": "HU outside the window (bone, metal) and air outside the body are never changed by the network: "
                             "they keep the input, passed through the fixed front-end (if any)"}

DEFAULT_COVERS = {
    "source": {"kernel": list(KERNEL_CLASSES), "dose": [0.1, 1.0], "thickness": [1.0, 5.0]},
    "targets": [{"kernel": k, "dose": 1.0, "thickness": [1.0, 5.0]} for k in ("smooth", "standard", "sharp")],
}

UNET_COVERS = {
    "source": {"kernel": ["standard", "sharp", "very-sharp"], "dose": [0.1, 1.0], "thickness": [1.0, 5.0]},
    "targets": [{"kernel": "smooth", "dose": 1.0, "thickness": [1.0, 5.0]}],
    "same_thickness": True,
}


def default_config(**over) -> TrainConfig:
    """The default protocol-conditioned 2.5D model, trained from scratch.

    This is the first stage of the shipped ``ctn-conditioned-v2``, which then was fine-tuned
    from it (plain windowed L1, and L1 + ``ei_weight`` soft-EI loss) and the two fine-tunes'
    weights averaged; its card records every stage.
    """
    cfg = TrainConfig(name="ctn-conditioned-custom",
                      arch={"name": "conditioned2.5d", "params": {"context": 5, "width": 32, "head": 12, "blocks": 4}},
                      steps=4000, batch=8, patch=64, lr=2e-3, curriculum=True, frontend="mtf_ratio")
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def unet_config(**over) -> TrainConfig:
    """The small 2D kernel-normalization U-Net (L1)."""
    cfg = TrainConfig(name="ctn-unet2d-kernel-v1",
                      arch={"name": "unet2d", "params": {"features": [8, 16, 32, 64, 128, 8], "context": 1, "norm": None}},
                      steps=2500, batch=8, patch=64, lr=1e-3, curriculum=False)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


V3_FRONTEND_LAMBDA = 0.04
#: What a v3 card's ``io`` adds (both recipes: the bank on the CPU, the stream on a GPU).
V3_IO = {"conditioning": "signature", "frontend_lambda": V3_FRONTEND_LAMBDA,
         "label": "noise-free target (clean texture); target texture by noise insertion"}

#: What ctn-conditioned-v3 covers, in measured terms (the ranges its domain-randomized bank spans).
V3_COVERS = {
    "conditioning": "signature",
    "source": {"noise_hu": [1.0, 400.0], "mtf50": [0.12, 3.0], "thickness": [0.5, 5.5], "pixel_mm": [0.45, 1.4]},
    "targets": {"mtf50": [0.2, 1.3], "thickness": [0.5, 5.5]},
}


def v3_config(**over) -> TrainConfig:
    """ctn-conditioned-v3: the 2.5D FiLM network conditioned on measured signatures (clean labels).

    The input is the source through the fixed MTF-ratio front-end from its *measured*
    transfer to the target's, on the target's z grid; the label the noise-free target.
    """
    cfg = TrainConfig(name="ctn-conditioned-v3",
                      arch={"name": "conditioned2.5d",
                            "params": {"context": 5, "width": 48, "head": 16, "blocks": 6, "cond_dim": 16}},
                      steps=20000, batch=12, patch=64, lr=2e-3, lr_min=2e-5, warmup=200, curriculum=False,
                      frontend="mtf_ratio_measured", lung_weight=1.0, ei_weight=2.0, ckpt_every=200)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


#: What v3's GPU recipe changes (``ctnormalize train --recipe v3 --device cuda``): pairs simulated on the device
#: while it trains (:mod:`.dr_stream`), 21x the CPU batch, bf16 autocast.
V3_GPU_OVERRIDES = {"batch": 256, "ckpt_every": 500, "log_every": 50}
V3_GPU_NAME = "ctn-conditioned-v3-gpu"


def unet_pair_filter(src, tgt) -> bool:
    """U-Net pairs: any non-smooth source kernel -> smooth target at the same thickness."""
    return tgt.kernel == "smooth" and src.kernel != "smooth" and abs(src.thickness - tgt.thickness) < 1e-3


def make_card(cfg: TrainConfig, covers: dict, training_data: dict, summary: dict, z_up_factor=None,
              priority: int = 0, description: str = "", io_extra: Optional[dict] = None, device: str = "cpu") -> dict:
    """A card (DESIGN.md section 5) for a trained model; ``sha256`` is added by ``write_package``."""
    import torch

    from ..simulate import SIMULATOR_VERSION

    return {
        "name": cfg.name,
        "description": description,
        "architecture": json.loads(json.dumps(cfg.arch)),
        "hyperparameters": {k: v for k, v in cfg.to_dict().items() if k not in ("arch", "name")},
        "io": dict(IO_DEFAULT, context=cfg.context, z_up_factor=z_up_factor, frontend=cfg.frontend,
                   z_handling="source resampled to the target z grid through the slice profile "
                              "(any factor), then refined by the network", **(io_extra or {})),
        "covers": covers,
        "priority": priority,
        "training_data": dict(training_data, simulator_version=SIMULATOR_VERSION,
                              held_out="phantom seeds >= 1000 and lung2 never used"),
        "training": {k: v for k, v in summary.items() if k != "model"} | {
            "torch": torch.__version__, "python": platform.python_version(), "device": device},
        "metrics": {},
    }
