"""The model card (DESIGN.md section 5) as a checked contract.

:func:`card_problems` lists what is wrong with a ``card.json`` (empty when it is valid);
the registry refuses a package whose card has problems, so a damaged or hand-edited card
is an error with a reason, never a model that loads with guessed settings.
"""

from __future__ import annotations

from numbers import Number

REQUIRED = ("name", "architecture", "io", "covers", "sha256", "license", "intended_use", "training_data")
IO_REQUIRED = ("hu_window", "scale", "context")
FRONTENDS = (None, "mtf_ratio", "mtf_ratio_measured")


def _is_pair(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, Number) for x in v) and v[0] < v[1]


def card_problems(card) -> list[str]:
    """Problems of a model card, in plain words (empty list: the card is valid)."""
    if not isinstance(card, dict):
        return ["the card is not a JSON object"]
    out = [f"missing {k!r}" for k in REQUIRED if k not in card]
    if out:
        return out
    if not isinstance(card["name"], str) or not card["name"]:
        out.append("'name' must be a non-empty string")
    arch = card["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or not isinstance(arch.get("params", {}), dict):
        out.append("'architecture' must be {'name': str, 'params': {...}}")
    sha = card["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        out.append("'sha256' must be 64 lower-case hex digits")
    io = card["io"]
    if not isinstance(io, dict):
        return out + ["'io' must be an object"]
    out += [f"io lacks {k!r}" for k in IO_REQUIRED if k not in io]
    if "hu_window" in io and not _is_pair(io["hu_window"]):
        out.append("io.hu_window must be [low, high] with low < high")
    sc = io.get("scale", {})
    if not (isinstance(sc, dict) and isinstance(sc.get("offset"), Number) and isinstance(sc.get("divisor"), Number)
            and sc.get("divisor") != 0):
        out.append("io.scale must be {'offset': number, 'divisor': non-zero number}")
    if io.get("frontend") not in FRONTENDS:
        out.append(f"io.frontend must be one of {FRONTENDS}")
    cov = card["covers"]
    if not isinstance(cov, dict):
        return out + ["'covers' must be an object"]
    if cov.get("conditioning") == "signature":
        if io.get("conditioning") != "signature" or not isinstance(io.get("frontend_lambda"), Number):
            out.append("a signature-conditioned card needs io.conditioning='signature' and io.frontend_lambda")
        for side in ("source", "targets"):
            ranges = cov.get(side, {})
            if not isinstance(ranges, dict):
                out.append(f"covers.{side} must map measured quantities to [low, high]")
                continue
            for k, v in ranges.items():
                if not _is_pair(v):
                    out.append(f"covers.{side}.{k} must be [low, high]")
    elif not isinstance(cov.get("targets", []), list):
        out.append("covers.targets must be a list of target protocols")
    sel = card.get("selection")
    if sel is not None:
        figs = sel.get("figures", {}) if isinstance(sel, dict) else None
        if not isinstance(figs, dict):
            out.append("selection.figures must be an object")
        else:
            for metric, cols in figs.items():
                if not isinstance(cols, dict) or not all(v is None or isinstance(v, Number) for v in cols.values()):
                    out.append(f"selection.figures.{metric} must map columns to numbers or null")
        dirs = sel.get("heldout_kernel_change_directions") if isinstance(sel, dict) else None
        if dirs is not None and (not isinstance(dirs, list)
                                 or not all(isinstance(d, str) and d in ("smoothing", "sharpening") for d in dirs)):
            out.append("selection.heldout_kernel_change_directions must be a list of 'smoothing' and 'sharpening'")
    return out
