"""``ctnormalize protocols``: kernel classes (with MTF50), presets and vendor kernel names."""

from __future__ import annotations

import sys

from .events import dumps

NAME = "protocols"
HELP = "list kernel classes, target presets and vendor kernel names"
ORDER = 40
DESCRIPTION = (
    "List the kernel classes with their MTF50, the named target presets (usable as --target) "
    "and the vendor kernel names each class covers. Protocol specs look like "
    "kernel=<class|vendor name>,dose=<fraction>,thickness=<mm>."
)


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def collect() -> dict:
    """Kernel classes, presets and vendor names as a JSON-ready dict."""
    from ..protocols import KERNEL_CLASSES, load_presets, mtf50
    from ..protocols.kernels import KERNEL_MTF, SIEMENS_EXAMPLES, VENDOR_KERNELS, kernel_class

    vendors = {k: [] for k in KERNEL_CLASSES}
    for name in sorted(VENDOR_KERNELS):
        vendors[VENDOR_KERNELS[name]].append(name)
    siemens = {k: [] for k in KERNEL_CLASSES}
    for name in SIEMENS_EXAMPLES:
        siemens[kernel_class(name)].append(name)
    return {
        "kernel_classes": [
            {"name": k, "mtf50_cycles_per_mm": round(mtf50(k), 4), "edge_boost": KERNEL_MTF[k].boost,
             "vendor_names": vendors[k], "siemens_examples": siemens[k]}
            for k in KERNEL_CLASSES
        ],
        "siemens_rule": "B/Br/Bl/Bf/Bv/I/Hr/Qr + 2 digits: <30 smooth, 30-44 standard, 45-64 sharp, >=65 very-sharp",
        "presets": [
            {"name": p.name, "description": p.description, "spec": p.protocol.spec()}
            for p in load_presets().values()
        ],
        "spec_format": "kernel=<class|vendor name>,dose=<fraction or NN%>,thickness=<mm>[,profile=gaussian|rect]"
                       "[,spacing=<mm>]",
        "profile_note": "profile: the slice-sensitivity profile's shape; gaussian (default) stands for helical scans, "
                        "rect for axial (sequential) scans, modelled as the Gaussian of the same second moment "
                        "(FWHM 0.68 x the thickness)",
    }


def format_text(info: dict) -> str:
    lines = ["Kernel classes (MTF50 in cycles/mm; vendor names map to them):"]
    for k in info["kernel_classes"]:
        lines.append(f"  {k['name']:<11} MTF50 {k['mtf50_cycles_per_mm']:.3f}"
                     + (f"  edge boost {k['edge_boost']:g}" if k["edge_boost"] else ""))
        names = k["vendor_names"] + k["siemens_examples"]
        lines.append(f"    {', '.join(names)}")
    lines.append(f"  Siemens: {info['siemens_rule']}")
    lines.append("Presets (use as --target):")
    width = max((len(p["name"]) for p in info["presets"]), default=0)
    for p in info["presets"]:
        lines.append(f"  {p['name']:<{width}}  {p['spec']:<36} {p['description']}")
    lines.append(f"Spec format: {info['spec_format']}")
    lines.append(f"  {info['profile_note']}")
    return "\n".join(lines)


def run(args) -> int:
    info = collect()
    sys.stdout.write((dumps(info) if args.json else format_text(info)) + "\n")
    return 0
