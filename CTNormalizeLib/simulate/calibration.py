"""Calibrate the engine's reference noise (:mod:`CTNormalizeLib.signature.reference`) on this simulator.

"Full dose" in a protocol spec is this simulator's full dose: the training data and the
models' dose labels are defined by it. The reference is the soft-tissue noise that
:func:`~CTNormalizeLib.signature.measure_signature` reads on full-dose scans of training
phantoms (seeds < 1000), expressed for the standard kernel at 1 mm and 0.7 mm pixels
through the transfer's noise band. Run ``python -m CTNormalizeLib.simulate.calibration``
after changing the simulator's noise model and paste the value into ``reference.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ..protocols import KERNEL_CLASSES, Protocol
from ..signature import measure_signature
from ..signature.reference import REFERENCE_PIXEL_MM, REFERENCE_TRANSFER
from ..signature.transfer import band_noise_factor
from .phantom import make_phantom
from .scanner import project_truth, simulate_scan

CASES = ((7, (8, 384, 384), (0.5, 0.8, 0.8)), (8, (8, 320, 320), (0.5, 1.0, 1.0)), (9, (8, 256, 256), (0.5, 0.7, 0.7)))


def calibrate_reference_noise(thickness: float = 1.0, noise_seed: int = 3) -> dict:
    """Measured reference noise per case and kernel, and their median (HU, standard kernel, 1 mm, 0.7 mm px)."""
    rows = []
    for seed, shape, spacing in CASES:
        truth = make_phantom(seed, shape=shape, spacing=spacing).volume
        proj = project_truth(truth)
        for k in KERNEL_CLASSES:
            scan = simulate_scan(truth, Protocol(kernel=k, dose=1.0, thickness=thickness), seed=noise_seed,
                                 projections=proj)
            sig = measure_signature(scan, with_edge=False)
            scale = band_noise_factor(REFERENCE_TRANSFER, REFERENCE_PIXEL_MM) / band_noise_factor(sig.transfer,
                                                                                                  sig.pixel_mm)
            rows.append({"seed": seed, "pixel_mm": spacing[1], "wed_mm": sig.wed_mm, "kernel": k,
                         "noise_hu": sig.noise_hu, "reference_hu": sig.noise_hu * scale * math.sqrt(thickness)})
    return {"rows": rows, "median_reference_hu": float(np.median([r["reference_hu"] for r in rows]))}


if __name__ == "__main__":  # pragma: no cover - a maintenance script
    import json

    print(json.dumps(calibrate_reference_noise(), indent=1))
