"""Write a model package: ``<dir>/model.safetensors`` + ``card.json`` (DESIGN.md section 5)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import atomic_output
from ..models.registry import CARD, WEIGHTS, sha256_file

LICENSE = "Apache-2.0 (weights and code); research use, not for diagnosis"
INTENDED_USE = "research use, not for diagnosis"


def save_weights(module, path: Path) -> str:
    """Save a module's state dict with safetensors (atomically); returns the file's sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp))
    return sha256_file(Path(path))


def write_package(module, out_dir, card: dict) -> Path:
    """Write weights and card into ``out_dir`` (created); the card's ``sha256`` is filled in.

    ``card`` must hold at least ``name``, ``architecture``, ``io`` and ``covers``; ``license``
    and ``intended_use`` default to research use, not for diagnosis.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = save_weights(module, out / WEIGHTS)
    card = dict(card)
    card["sha256"] = digest
    card.setdefault("license", LICENSE)
    card.setdefault("intended_use", INTENDED_USE)
    card.setdefault("format", 1)
    with atomic_output(out / CARD) as tmp:
        tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out
