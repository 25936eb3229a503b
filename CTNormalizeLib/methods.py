"""The one table of normalization methods, classical and learned.

Every method is a :class:`Method` row: its name, a one-line summary, what it changes,
whether it needs a reference volume or torch, which plans it covers, its benchmark
figures, and its run function. The CLI (``--method`` choices, help and errors), the
``protocols``/``models`` listings, ``auto``'s choice and the Slicer panel all read this
table. Classical rows are registered by the modules that hold their maths
(:mod:`CTNormalizeLib.classical`); learned rows come from the installed model packages.

Adding a method: write its module with a ``run(volume, plan, progress, reference)``
function returning a :class:`MethodResult`, and :func:`register` one row (see
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Optional

from .errors import BadInputError

from .method_rows import ASPECTS, Method, MethodResult, registered_rows, register, unregister  # noqa: F401


def _load_classical():
    from . import classical  # noqa: F401  (its modules register their rows)


def method_table(with_models: bool = True) -> dict[str, Method]:
    """Every method by name: classical rows first (registration order), then installed models."""
    _load_classical()
    table = {}
    for name, m in registered_rows().items():
        if m.kind == "classical" and not m.figures:
            card = method_card(name)
            if card:
                m = replace(m, figures=dict(card.get("selection", {}).get("figures", {})), card=card)
        table[name] = m
    if with_models:
        from .inference.methods import model_rows

        for m in model_rows():
            table.setdefault(m.name, m)
    return table


def method_names(with_models: bool = True) -> list[str]:
    return list(method_table(with_models))


def get_method(name: str) -> Method:
    """The row called ``name``; an unknown name is a :class:`BadInputError` listing the choices."""
    table = method_table()
    if name in table:
        return table[name]
    choices = ["auto"] + list(table)
    raise BadInputError(f"Unknown method {name!r}. Choose one of: {', '.join(choices)}.")


def method_card(name: str) -> dict:
    """The method card shipped in ``Resources/Methods/<name>.json`` (empty if none)."""
    from .resources import resources_dir

    path = resources_dir() / "Methods" / f"{name}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


SELECTION_METRIC = "l1_gap_closed"
#: The same figures for the ``target`` texture (a card without them is ranked by its clean figures).
SELECTION_METRIC_TARGET = "l1_gap_closed_target"
#: The held-out column for each kind of pair (falls back to ``heldout_physics``, all cases).
HELDOUT_COLUMN = {"kernel_change": "heldout_physics_kernel_change", "noise_only": "heldout_physics_noise_only"}


def pair_kind(plan) -> str:
    """``kernel_change`` when the plan changes the in-plane transfer, else ``noise_only``
    (:func:`CTNormalizeLib.signature.signature.pair_kind` on the plan's signatures)."""
    from .signature.signature import pair_kind as _kind

    return _kind(getattr(plan, "source_signature", None), getattr(plan, "target_signature", None))


def kernel_direction(plan) -> Optional[str]:
    """``sharpening`` or ``smoothing`` for a kernel change (by the signatures' MTF50,
    :func:`~CTNormalizeLib.signature.signature.kernel_direction`), else None."""
    from .signature.signature import kernel_direction as by_mtf50

    if pair_kind(plan) != "kernel_change":
        return None
    try:
        return by_mtf50(plan.source_signature.transfer.mtf50, plan.target_signature.transfer.mtf50)
    except AttributeError:
        return None


def heldout_applies(m: Method, direction: Optional[str]) -> bool:
    """Whether ``m``'s held-out kernel-change figures were measured on pairs of ``direction`` (the card's
    ``selection.heldout_kernel_change_directions``; a card that does not say is taken at its word)."""
    covered = ((m.card or {}).get("selection") or {}).get("heldout_kernel_change_directions")
    return direction is None or covered is None or direction in covered


def _score(m: Method, kind: Optional[str] = None, texture: str = "clean", direction: Optional[str] = None) -> tuple:
    f = (m.figures.get(SELECTION_METRIC_TARGET) if texture == "target" else None) or m.figures.get(SELECTION_METRIC, {})
    held = None
    if heldout_applies(m, direction):
        held = f.get(HELDOUT_COLUMN.get(kind, ""))
        if held is None:
            held = f.get("heldout_physics")
    ind = f.get("in_distribution")
    return (held if held is not None else -1e9, ind if ind is not None else -1e9)


def choose_auto(plan, table: Optional[dict] = None) -> tuple[str, str, list]:
    """``auto``'s choice for a plan: the covering complete method with the best measured figures.

    Ranked by the held-out-physics gap closed in L1 for the plan's kind of pair
    (:func:`pair_kind`: a kernel change or a noise-only change; the all-cases figure when
    a card has no figure for that kind), then the in-distribution one, both measured in the
    plan's texture (``l1_gap_closed_target`` for ``target``; a card without them is ranked
    by its clean figures); methods never benchmarked rank last; ties go to the method
    without torch. For a kernel change in a direction a card's held-out cases do not cover
    (:func:`heldout_applies`: e.g. sharpening, where they all smooth) that card's held-out
    figure does not count: it ranks below the methods whose held-out figures apply, and among
    such methods by the in-distribution figure (a method that smooths well need not sharpen well).

    Returns
    -------
    (name, reason, warnings)
    """
    from .signature.signature import KIND_NAMES

    table = method_table() if table is None else table
    cands, skipped = [], []
    for m in table.values():
        if not m.complete or m.needs_reference:
            continue
        why = m.why_not(plan)
        if why is None:
            cands.append(m)
        else:
            skipped.append(f"{m.name}: {why}")
    if not cands:
        raise BadInputError("No method can normalize this protocol pair: " + "; ".join(skipped))
    kind = pair_kind(plan)
    direction = kernel_direction(plan)
    texture = getattr(plan, "texture", "clean")
    cands.sort(key=lambda m: (_score(m, kind, texture, direction), not m.needs_torch), reverse=True)
    best = cands[0]

    def fmt(m):
        h, i = _score(m, kind, texture, direction)
        parts = []
        if h > -1e9:
            parts.append(f"held-out physics {h:.3f}")
        if i > -1e9:
            parts.append(f"in-distribution {i:.3f}")
        return f"{m.name} ({', '.join(parts) or 'not benchmarked'})"

    # "dose only" (the cards' name for the held-out column) would misname a same-kernel pair that changes thickness
    pairs = "same-kernel (dose or thickness)" if kind == "noise_only" else KIND_NAMES[kind]
    reason = (f"best measured L1 gap closed ({pairs} pairs, {texture} texture) among the methods "
              "that cover "
              "this pair: " + "; ".join(fmt(m) for m in cands))
    uncovered = [m.name for m in cands if not heldout_applies(m, direction)]
    if uncovered:
        whose = "any method's" if len(uncovered) == len(cands) else f"those of {', '.join(uncovered)}"
        reason = (f"this kernel change is {direction} and none of {whose} held-out kernel changes is, so those "
                  "held-out figures do not count; " + reason)
    asked = (getattr(getattr(plan, "source", None), "kernel", None), getattr(getattr(plan, "target", None), "kernel", None))
    if kind == "noise_only" and all(asked) and asked[0] != asked[1]:
        try:
            s50 = plan.source_signature.transfer.mtf50
            t50 = plan.target_signature.transfer.mtf50
            how = f" (MTF50 {s50:.2f} vs {t50:.2f} c/mm)"
        except AttributeError:
            how = ""
        reason = (f"a {asked[0]} -> {asked[1]} kernel change was asked for, but the source's measured transfer "
                  f"already matches the target's{how}, so the pair counts as same-kernel; " + reason)
    warnings = []
    if skipped:
        warnings.append({"code": "METHODS_NOT_COVERING", "message": "Not considered: " + "; ".join(skipped)})
    return best.name, reason, warnings
