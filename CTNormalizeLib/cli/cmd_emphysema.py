"""``ctnormalize emphysema CT [CT2 ...]``: LAA%, Perc15 and lung volume, per lung and per zone."""

from __future__ import annotations

import sys
from pathlib import Path

from .events import dumps

NAME = "emphysema"
HELP = "emphysema index (LAA below -950 HU, Perc15, lung volume) per lung and per zone"
ORDER = 55
DESCRIPTION = (
    "Segment the lungs (or use --lung-mask) and measure the emphysema index of each CT: LAA% "
    "(percentage of lung voxels with HU strictly below --threshold), Perc15 (15th percentile of lung "
    "HU) and lung volume, for both lungs, each lung and the upper/middle/lower thirds of the lungs' "
    "z extent. With several CTs on the same grid, the emphysema-mask Dice against the first is given; a CT "
    "on another grid gets a NO_DICE_OTHER_GRID warning naming the difference instead."
)


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="CT", help="CT file(s) or DICOM series folder(s)")
    p.add_argument("--lung-mask", action="append", default=None, metavar="MASK",
                   help="lung mask on the CT's grid (nonzero = lung); once for all CTs or once per CT")
    p.add_argument("--threshold", type=float, default=-950.0, help="LAA threshold in HU (default -950)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--mask-out", metavar="DIR", default=None,
                   help="write <name>_lung.nrrd (1 = right, 2 = left) and <name>_emphysema.nrrd here")
    p.add_argument("--dicom-seg", metavar="OUT.dcm", default=None,
                   help="write the lungs and the emphysema mask as a DICOM SEG referencing the CT series (DICOM "
                        "input only); with several CTs give a folder, which gets <name>.seg.dcm per CT")
    p.add_argument("--allow-missing-slices", action="store_true",
                   help="DICOM: interpolate over unreadable or missing slices (named in a warning) instead of refusing")


def _stem(path: Path) -> str:
    name = path.name.rstrip("/") or "volume"
    for suffix in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def _table(report) -> str:
    lines = []
    for r in (m.to_dict() for m in report.results):
        lines.append(f"{r['input']}  (threshold {r['provenance']['threshold_hu']:g} HU, "
                     f"mask {r['provenance']['mask_source']})")
        lines.append(f"  {'region':<8} {'LAA%':>7} {'Perc15':>8} {'volume ml':>10}")
        regions = [("lungs", r)] + list(r["per_lung"].items()) + list(r["per_zone"].items())
        for name, g in regions:
            lines.append(f"  {name:<8} {_fmt(g['laa_percent'], '.2f'):>7} {_fmt(g['perc15_hu']):>8} "
                         f"{_fmt(g['lung_volume_ml']):>10}")
        if r.get("dice_vs_first") is not None:
            lines.append(f"  emphysema Dice vs first input: {r['dice_vs_first']:.3f}")
        for w in r["warnings"]:
            lines.append(f"  warning [{w['code']}]: {w['message']}")
    return "\n".join(lines)


def _no_dice_warning(differences: list) -> dict:
    """The warning of a CT whose emphysema Dice against the first CT cannot be computed (other grid)."""
    return {"code": "NO_DICE_OTHER_GRID",
            "message": "emphysema Dice vs the first CT not computed: its grid differs ("
                       + "; ".join(differences).replace(" vs CT ", " vs first CT ")
                       + "); resample it onto the first CT's grid to compare the masks voxel by voxel."}


def _seg_folder(target: str, n_inputs: int):
    """The folder for one SEG per CT when several CTs are given, else None (one file)."""
    from ..errors import BadInputError

    if n_inputs == 1 and not Path(target).is_dir():
        return None
    if n_inputs > 1 and not (Path(target).is_dir() or target.endswith("/")):
        raise BadInputError("With several CTs, --dicom-seg takes a folder (one <name>.seg.dcm per CT).")
    return Path(target)  # created (with the masks) when the outputs are published


def _mask_paths(inputs: list, out: Path) -> list:
    """(lung, emphysema) mask paths per input, unique even when inputs share a name."""
    stems: set = set()
    paths = []
    for i, path in enumerate(inputs):
        stem = _stem(path)
        if stem in stems:
            stem = f"{stem}_{i}"
        stems.add(stem)
        paths.append((out / f"{stem}_lung.nrrd", out / f"{stem}_emphysema.nrrd"))
    return paths


def run(args) -> int:
    from ..contracts.results import EmphysemaMeasurement, EmphysemaReport
    from ..errors import BadInputError
    from ..io.outputs import OutputGuard, volume_nbytes
    from ..quantify import emphysema_dice, emphysema_index, load_lung_mask
    from ..quantify._io import read_volume, write_mask
    from ..quantify.coverage import z_extent_warning
    from ..volume import volume_grid_differences

    inputs = [Path(p) for p in args.inputs]
    masks = args.lung_mask or []
    if masks and len(masks) not in (1, len(inputs)):
        raise BadInputError(f"Give --lung-mask once (for all CTs) or once per CT ({len(inputs)}), "
                            f"not {len(masks)} times.")
    for p in inputs + [Path(m) for m in masks]:
        if not p.exists():
            raise BadInputError(f"Input file not found: {p}")
    guard = OutputGuard(inputs=inputs + [Path(m) for m in masks])
    mask_paths = _mask_paths(inputs, Path(args.mask_out)) if args.mask_out else []
    for pair in mask_paths:
        for m in pair:
            guard.add(m, what="--mask-out")
    seg_paths = []
    if args.dicom_seg:
        seg_dir = _seg_folder(args.dicom_seg, len(inputs))
        seg_paths = [Path(args.dicom_seg) if seg_dir is None else seg_dir / f"{_stem(p)}_{i}.seg.dcm"
                     for i, p in enumerate(inputs)]
        for p in seg_paths:
            guard.add(p, what="--dicom-seg")
    guard.check()
    rows, first, first_vol = [], None, None
    with guard:
        for i, path in enumerate(inputs):
            vol = read_volume(path, allow_missing_slices=args.allow_missing_slices)
            lung = None
            if masks:
                lung = load_lung_mask(masks[0] if len(masks) == 1 else masks[i], vol)
            res = emphysema_index(vol, lung=lung, threshold=args.threshold)
            row = EmphysemaMeasurement.from_dict({"input": str(path), **res.to_dict()})
            if first is None:
                first, first_vol = res, vol
            else:
                differences = volume_grid_differences(vol, first_vol)
                row.warnings += z_extent_warning(first_vol, vol, "This CT", "the first")
                if differences:
                    row.warnings.append(_no_dice_warning(differences))
                else:
                    row.dice_vs_first = emphysema_dice(first, res)
            if mask_paths:
                lung_path, emph_path = mask_paths[i]
                for m in (lung_path, emph_path):
                    guard.expect(m, volume_nbytes(vol.hu.size, m, bytes_per_voxel=1))
                write_mask(guard.stage(lung_path), res.lung.labelmap(), vol)
                write_mask(guard.stage(emph_path), res.emphysema_mask, vol)
                row.masks = {"lung": str(lung_path.resolve()), "emphysema": str(emph_path.resolve())}
            if seg_paths:
                from ..io.dicom_seg import write_lung_seg

                write_lung_seg(guard.stage(seg_paths[i]), vol, res.lung.labelmap(), res.emphysema_mask,
                               args.threshold)
                row.dicom_seg = str(seg_paths[i].resolve())
            rows.append(row)
            # The table lists the warnings too: on a terminal that shows both streams, once is enough.
            if not args.json and not (sys.stdout.isatty() and sys.stderr.isatty()):
                for w in row.warnings:
                    print(f"warning [{w['code']}] {path}: {w['message']}", file=sys.stderr)
        guard.commit()
    report = EmphysemaReport(rows)
    if args.json:
        sys.stdout.write(dumps(report.to_dict()) + "\n")
    else:
        print(_table(report))
    return 0
