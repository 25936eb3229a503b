"""What the two denoiser-card scripts share: reading a denoiser package and publishing its card.

``choose_nlm_blend.py`` chooses the clean texture's NLM blend, ``choose_residual_by_risk.py``
whether the blend's NLM residual is picked for each scan; both rewrite ``card.json`` here, so
the description always says what the card's chain does.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the description's note on the per-scan residual (added or removed with chain.nlm_residual_choice)
NOTE = "; its blend's NLM residual is picked for each scan where chain.nlm_residual_choice says risk"


def read_denoiser(path: str):
    """The denoiser package at ``path``, or None after saying on stderr why it cannot be used."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.models.registry import read_package

    try:
        pkg = read_package(Path(path))
    except (BadInputError, OSError, ValueError) as exc:
        print(f"Cannot read the package {path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return None
    if pkg.card.get("role") != "denoiser":
        print(f"{path} is not a denoiser package (card role).", file=sys.stderr)
        return None
    return pkg


def describe(card: dict) -> dict:
    """``card`` with its description saying whether any kind picks the residual per scan."""
    choice = (card.get("chain") or {}).get("nlm_residual_choice") or {}
    per_scan = "risk" in (choice.values() if isinstance(choice, dict) else [choice])  # one value = every kind
    base = card.get("description", "").split(NOTE)[0]
    return dict(card, description=base + (NOTE if per_scan else ""))


def publish_card(path: Path, card: dict) -> None:
    """Write ``card`` (with :func:`describe`'s note) to ``path`` atomically, checked against the card contract, and say so."""
    from CTNormalizeLib.models.registry import write_card

    write_card(path, describe(card))
    print(f"-> {path}")
