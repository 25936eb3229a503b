"""``ctnormalize models``: installed model packages and the protocol pairs each covers."""

from __future__ import annotations

import sys

from .events import dumps

NAME = "models"
HELP = "list the installed learned models and the protocol pairs they cover"
ORDER = 45
DESCRIPTION = (
    "List the model packages found in Resources/Models and in $CTNORMALIZE_MODELS by card priority, "
    "with the source protocols and targets each covers, its sha256 and its benchmark figures. "
    "'normalize --method auto' does not follow this order: it ranks the covering methods by those "
    "measured figures, per kind of pair (kernel change, dose only) and texture."
)


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--verify", action="store_true", help="also check each package's weights sha256")


def collect(verify: bool = False) -> dict:
    """``{"dirs": [...], "models": [summary, ...]}`` (JSON-ready)."""
    from ..errors import BadInputError
    from ..models.registry import list_models, model_dirs

    models = []
    for pkg in list_models():
        s = pkg.summary()
        if verify:
            try:
                pkg.verify()
                s["verified"] = True
            except BadInputError as exc:
                s["verified"] = False
                s["error"] = exc.message
        models.append(s)
    return {"dirs": [str(d) for d in model_dirs()], "models": models}


def _flips(m: dict, kinds) -> dict:
    """``{kind: count}`` of the card's flip averaging, as the chain reads it; a malformed value is shown as such."""
    from ..errors import BadInputError
    from ..inference.net_denoise import network_flips

    if m.get("flips") is None:
        return {}
    out = {}
    for k in kinds:
        try:
            n = network_flips({"name": m.get("name"), "chain": {"flips": m["flips"]}}, k)
        except BadInputError:
            out[k] = "invalid (the chain refuses it)"
            continue
        out[k] = n
    return out


def format_text(info: dict) -> str:
    from ..signature.signature import KIND_NAMES

    if not info["models"]:
        return "No model packages installed (looked in " + ", ".join(info["dirs"]) + ")."
    lines = []
    for m in info["models"]:
        lines.append(f"{m['name']}  [{m['architecture']}, priority {m['priority']:g}]  sha256 {m['sha256'][:12]}")
        if m.get("description"):
            lines.append(f"  {m['description']}")
        extra = []
        if m.get("context"):
            extra.append(f"sees {m['context']} slice{'s' if m['context'] != 1 else ''}")
        kinds = tuple(KIND_NAMES)
        per_kind = lambda v: v if isinstance(v, dict) else {k: v for k in kinds}  # noqa: E731 - one number = all
        if m.get("nlm_blend"):
            res = per_kind(m.get("nlm_residual") or {})
            per_scan = {k for k, v in per_kind(m.get("nlm_residual_choice") or {}).items() if v == "risk"}

            def leaves(k):
                if k in per_scan:
                    return ", NLM's residual picked for each scan (Stein's unbiased risk estimate)"
                return f", NLM leaving {float(res[k]):.0%} of the noise" if k in res else ""

            extra.append("clean texture: the network averaged with NLM (chosen on validation scans), NLM's share: "
                         + "; ".join(f"{KIND_NAMES.get(k, k)} {float(v):g}{leaves(k)}"
                                     for k, v in sorted(per_kind(m["nlm_blend"]).items())))
        flips = _flips(m, kinds)
        if any(v != 1 for v in flips.values()):
            extra.append("clean texture: the network averaged over n flipped copies of its input, n network passes "
                         "(chosen on validation scans): "
                         + ", ".join(f"{KIND_NAMES.get(k, k)} {v}" for k, v in flips.items()))
        if extra:
            lines.append("  " + "; ".join(extra))
        lines.append(f"  covers: {m['coverage']}")
        l1 = (m.get("metrics") or {}).get("summary")
        if l1:
            lines.append(f"  benchmark: {l1}")
        tgt = ((m.get("selection") or {}).get("figures") or {}).get("l1_gap_closed_target")
        if tgt:
            def f(x):
                return "—" if x is None else f"{x:.3f}"
            lines.append(f"  target texture: L1 gap closed in distribution {f(tgt.get('in_distribution'))}, held-out "
                         f"physics {f(tgt.get('heldout_physics_kernel_change'))} (kernel change) / "
                         f"{f(tgt.get('heldout_physics_noise_only'))} (dose only)")
        if "verified" in m:
            lines.append("  weights: " + ("sha256 ok" if m["verified"] else m.get("error", "BAD")))
        lines.append(f"  {m.get('intended_use') or ''}  ({m['path']})")
    return "\n".join(lines)


def run(args) -> int:
    info = collect(verify=args.verify)
    if args.json:
        sys.stdout.write(dumps(info) + "\n")
    else:
        print(format_text(info))
    return 0 if all(m.get("verified", True) for m in info["models"]) else 1
