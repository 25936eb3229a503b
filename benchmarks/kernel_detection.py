"""Kernel class from the pixels: accuracy on simulated scans the detector has never seen.

Usage::

    python benchmarks/kernel_detection.py [--out benchmarks/results/kernel_detection.json] [--quick]

Held-out phantoms (seeds >= 1000) at three patient sizes and pixel sizes, every kernel class,
doses 10-100 %, simulated with the engine's simulator, tags removed; each scan's kernel is
read by ``measure_signature`` from the noise texture alone. The JSON has the accuracy, the
confusion matrix, the measured vs nominal MTF50, and the time per scan.

A second section does the same on the *independent* (evaluation-only) simulator's
classification set (other filters: ramp, Shepp-Logan, cosine, Hamming, Hann; another noise
model; two patients), where each scan's true class is the one whose MTF50 interval holds
the filter's analytic MTF50 (``--no-independent`` skips it). The pixels' noise shows the transfer
that shaped the noise, which lacks that simulator's forward-projection blur (the signal's); each
row also has that transfer's MTF50 and class, and the section the accuracy against it.

A third section reads lung1 (a real CT, training data) simulated at every class and dose: a real
truth keeps its own scanner's smooth-kernel noise under the simulated noise, a sum no single FBP
noise spectrum fits (``--no-real-anatomy`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

CASES = [(1100, (8, 192, 192), (0.5, 0.8, 0.8)),   # small patient, 154 mm field of view
         (1101, (8, 384, 384), (0.5, 0.7, 0.7)),   # adult, 269 mm
         (1102, (8, 320, 320), (0.5, 1.1, 1.1))]   # large adult, 352 mm, coarse pixels
DOSES = (0.1, 0.25, 0.5, 1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kernel_detection.json"))
    ap.add_argument("--quick", action="store_true", help="one patient, two doses")
    ap.add_argument("--no-independent", action="store_true", help="skip the independent simulator's scans")
    ap.add_argument("--no-real-anatomy", action="store_true", help="skip the lung1 scans (real anatomy)")
    args = ap.parse_args(argv)

    from CTNormalizeLib import Volume
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.protocols import KERNEL_CLASSES, Protocol
    from CTNormalizeLib.signature import class_transfer, measure_signature
    from CTNormalizeLib.simulate import make_phantom, project_truth, simulate_scan

    cases = CASES[:1] if args.quick else CASES
    doses = (0.1, 1.0) if args.quick else DOSES
    rows = []
    t_measure = []
    for seed, shape, spacing in cases:
        truth = make_phantom(seed, shape=shape, spacing=spacing).volume
        proj = project_truth(truth)
        for k in KERNEL_CLASSES:
            for d in doses:
                scan = simulate_scan(truth, Protocol(kernel=k, dose=d, thickness=1.0), seed=seed + 3,
                                     projections=proj)
                vol = Volume(scan.hu, scan.spacing, meta={"Modality": "CT"})
                t = time.perf_counter()
                sig = measure_signature(vol)
                t_measure.append(time.perf_counter() - t)
                nominal = class_transfer(k).mtf50
                rows.append({"seed": seed, "pixel_mm": spacing[1], "wed_mm": round(sig.wed_mm or 0, 1),
                             "kernel": k, "dose": d, "detected": sig.kernel,
                             "confidence": sig.sources["kernel"].confidence,
                             "mtf50_measured": None if not np.isfinite(sig.transfer.mtf50) else round(sig.transfer.mtf50, 4),
                             "mtf50_nominal": round(nominal, 4), "noise_hu": round(sig.noise_hu or 0, 2)})
                print(f"{seed} {spacing[1]} {k:10s} {d:4} -> {sig.kernel}", file=sys.stderr, flush=True)
    hits = [r["detected"] == r["kernel"] for r in rows]
    confusion = confusion_matrix(rows, "kernel")
    report = {
        "benchmark": "kernel_detection", "simulator": "engine simulator (finufft parallel beam)",
        "scans": len(rows), "accuracy": round(float(np.mean(hits)), 4), "confusion": confusion,
        "seconds_per_scan_median": round(float(np.median(t_measure)), 3), "rows": rows,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    if not args.no_independent:
        report["independent_simulator"] = independent_section(doses)
    if not args.no_real_anatomy:
        report["real_anatomy"] = real_anatomy_section(doses)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1))
    print(f"accuracy {report['accuracy']:.3f} over {len(rows)} scans -> {out}", file=sys.stderr)
    if "independent_simulator" in report:
        ind = report["independent_simulator"]
        print(f"independent simulator: accuracy {ind['accuracy']:.3f} over {ind['scans']} scans "
              f"({ind['accuracy_clear']:.3f} over the {ind['scans_clear']} not within 10 % of a class boundary)",
              file=sys.stderr)
    if "real_anatomy" in report:
        ra = report["real_anatomy"]
        ratio = ra["mtf50_full_over_lowest_dose_median"]
        print(f"real anatomy (lung1): accuracy {ra['accuracy']:.3f} over {ra['scans']} scans; MTF50 at full dose / at "
              f"the lowest dose {'—' if ratio is None else f'{ratio:.3f}'} in the median", file=sys.stderr)
    return 0


def confusion_matrix(rows, true_key: str) -> dict:
    """``{true class: {detected class: count}}`` over ``rows`` (the true class under ``true_key``)."""
    from CTNormalizeLib.protocols import KERNEL_CLASSES

    return {k: {j: sum(1 for r in rows if r[true_key] == k and r["detected"] == j) for j in KERNEL_CLASSES}
            for k in KERNEL_CLASSES}


#: lung1 slabs (6 slices of 5 mm each) for the real-anatomy section
LUNG1_SLABS = (10, 30)


def real_anatomy_section(doses) -> dict:
    """Kernel class from the pixels of lung1 (training data, a real CT) simulated at every class and dose.

    A real CT used as the truth keeps its own scanner's noise (a smooth kernel's texture), which the
    simulated noise adds to: at full dose it is a large part of the air's low-frequency power, as
    power off the FBP model is in real scans (iterative reconstruction, streaks). The kernel read should
    not depend on the dose: the MTF50 at full dose over the one at the lowest dose is reported (median
    of the ratios, and median of their absolute logs). One noise seed per slab.
    """
    from CTNormalizeLib import Volume, read_volume, testdata
    from CTNormalizeLib.protocols import KERNEL_CLASSES, Protocol
    from CTNormalizeLib.signature import class_transfer, measure_signature
    from CTNormalizeLib.simulate import project_truth, simulate_scan

    lung1 = read_volume(testdata.pyradiomics_case("lung1")[0])
    spacing = lung1.spacing
    rows = []
    for z0 in LUNG1_SLABS:
        truth = Volume(lung1.hu[z0:z0 + 6], spacing, meta={"Modality": "CT"})
        proj = project_truth(truth)
        for k in KERNEL_CLASSES:
            for d in doses:
                scan = simulate_scan(truth, Protocol(kernel=k, dose=d, thickness=spacing[0], spacing=spacing[0]),
                                     seed=7 + z0, projections=proj)
                sig = measure_signature(Volume(scan.hu, scan.spacing, meta={"Modality": "CT"}))
                m = sig.transfer.mtf50
                rows.append({"slab": z0, "kernel": k, "dose": d, "detected": sig.kernel,
                             "confidence": sig.sources["kernel"].confidence,
                             "mtf50_measured": None if not np.isfinite(m) else round(m, 4),
                             "mtf50_nominal": round(class_transfer(k).mtf50, 4), "p": round(sig.transfer.p, 3)})
                print(f"lung1 z{z0} {k:10s} {d:4} -> {sig.kernel}", file=sys.stderr, flush=True)
    lo, hi = min(doses), max(doses)
    read = {(r["slab"], r["kernel"], r["dose"]): r["mtf50_measured"] for r in rows}
    ratios = [read[s, k, hi] / read[s, k, lo] for s in LUNG1_SLABS for k in KERNEL_CLASSES
              if read[s, k, hi] and read[s, k, lo]]
    return {"truth": f"pyradiomics lung1 (real CT, training data), slabs z{LUNG1_SLABS[0]}:+6 and z{LUNG1_SLABS[1]}:+6",
            "scans": len(rows), "accuracy": round(float(np.mean([r["detected"] == r["kernel"] for r in rows])), 4),
            "mtf50_full_over_lowest_dose_median": round(float(np.median(ratios)), 4) if ratios else None,
            "mtf50_full_over_lowest_dose_abs_log_median": round(float(np.median(np.abs(np.log(ratios)))), 4)
            if ratios else None,
            "confusion": confusion_matrix(rows, "kernel"),
            "rows": rows}


def independent_section(doses) -> dict:
    """Kernel class from the pixels on the independent simulator's classification set."""
    from CTNormalizeLib import Volume
    from CTNormalizeLib.evaluate.independent_sim.cases import classification_cases
    from CTNormalizeLib.evaluate.independent_sim.physics import filter_mtf50, kernel_class_for_mtf50, noise_transfer
    from CTNormalizeLib.signature import measure_signature

    rows = []
    for sc in classification_cases(doses=doses):
        sig = measure_signature(Volume(sc.volume.hu, sc.volume.spacing, meta={"Modality": "CT"}))
        m = sig.transfer.mtf50
        m_noise = filter_mtf50(sc.physics.filter, sc.volume.spacing[1], transfer=noise_transfer)
        rows.append({"scan": sc.name, "filter": sc.physics.filter, "dose": sc.physics.dose, "patient": sc.patient,
                     "pixel_mm": round(sc.volume.spacing[1], 3), "true_class": sc.kernel_class,
                     "class_margin": round(sc.class_margin, 3), "detected": sig.kernel,
                     "confidence": sig.sources["kernel"].confidence,
                     "mtf50_true": round(sc.mtf50, 4), "mtf50_noise_transfer": round(m_noise, 4),
                     "noise_class": kernel_class_for_mtf50(m_noise)[0],
                     "mtf50_measured": None if not np.isfinite(m) else round(m, 4)})
        print(f"{sc.name:28s} true {sc.kernel_class:9s} -> {sig.kernel}", file=sys.stderr, flush=True)
    hits = [r["detected"] == r["true_class"] for r in rows]
    clear = [r["detected"] == r["true_class"] for r in rows if r["class_margin"] > np.log(1.1)]
    errs = [abs(np.log(r["mtf50_measured"] / r["mtf50_true"])) for r in rows if r["mtf50_measured"]]
    errs_noise = [abs(np.log(r["mtf50_measured"] / r["mtf50_noise_transfer"])) for r in rows if r["mtf50_measured"]]
    return {"simulator": "independent evaluation-only simulator (evaluate/independent_sim)",
            "scans": len(rows), "accuracy": round(float(np.mean(hits)), 4),
            "scans_clear": len(clear), "accuracy_clear": round(float(np.mean(clear)), 4) if clear else None,
            "mtf50_abs_log_error_median": round(float(np.median(errs)), 4) if errs else None,
            # what the pixels' noise can show: the transfer that shaped the noise (no forward-projection blur)
            "mtf50_abs_log_error_vs_noise_transfer_median": round(float(np.median(errs_noise)), 4) if errs_noise else None,
            "accuracy_vs_noise_transfer_class": round(float(np.mean([r["detected"] == r["noise_class"] for r in rows])), 4),
            "confusion": confusion_matrix(rows, "true_class"),
            "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
