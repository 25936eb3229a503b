"""Write a model package: ``<dir>/model.safetensors`` + ``card.json`` (DESIGN.md section 5)."""

from __future__ import annotations

from pathlib import Path

from ..io.atomic import atomic_output, atomic_output_dir
from ..models.registry import CARD, WEIGHTS, sha256_file, write_card

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

    ``card`` must pass the card contract (:func:`~CTNormalizeLib.contracts.card.card_problems`: ``name``,
    ``architecture``, ``io`` with its window, scale and context, ``covers``, ``training_data``), else
    :class:`~CTNormalizeLib.errors.BadInputError` and the folder stays as it was; ``license`` and ``intended_use`` default to
    research use, not for diagnosis.
    """
    out = Path(out_dir)
    card = dict(card)
    card.setdefault("license", LICENSE)
    card.setdefault("intended_use", INTENDED_USE)
    card.setdefault("format", 1)
    # the whole folder at once: an earlier package there stays whole until the new one is (weights and card)
    with atomic_output_dir(out) as tmp:
        card["sha256"] = save_weights(module, tmp / WEIGHTS)
        write_card(tmp / CARD, card)  # a card the registry would refuse is an error here, not a package
    return out


def check_package_dir(package_dir, inputs) -> None:
    """Refuse a package folder that is, holds or lies in one of the run's inputs (its bank, manifest,
    the package it continues from): training never writes over what it reads."""
    from ..io.outputs import OutputGuard

    if package_dir is None:
        return
    guard = OutputGuard(inputs=inputs)
    guard.add(package_dir, kind="dir", what="--package-dir")
    guard.check()
