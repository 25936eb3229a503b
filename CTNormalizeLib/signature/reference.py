"""The reference noise level: what "full dose" means when a protocol is written as a dose fraction.

A target such as ``kernel=smooth,dose=1,thickness=1`` names no noise level in HU; the
engine reads ``dose=1`` as the reference full dose below, and scales it with the
kernel's noise band (:func:`~.transfer.band_noise_factor`), the slice thickness
(``1/sqrt(t)``) and the dose (``1/sqrt(d)``). The reference is the soft-tissue noise
of the engine's simulator at its full dose (about a routine chest CT: 120 kVp with
tube-current modulation), measured with :func:`~.measure.measure_signature` by
``CTNormalizeLib.simulate.calibration.calibrate_reference_noise``.

When the user gives both the source and the target dose, only their ratio is used and
this reference does not matter; it matters when the source's dose is unknown (it is
then read from its noise, relative to the target).
"""

from __future__ import annotations

import math

from .transfer import Transfer, band_noise_factor

#: Soft-tissue noise std (HU) of a full-dose, standard-kernel, 1 mm scan on 0.7 mm pixels.
#: Measured by ``simulate.calibration.calibrate_reference_noise`` (2026-11-27): per case and
#: kernel 9.7-12.5 HU (smaller patients noisier), median 10.8.
REFERENCE_NOISE_HU = 10.8
REFERENCE_PIXEL_MM = 0.7
REFERENCE_TRANSFER = Transfer(0.42, 2.0, 0.0)  # the "standard" class
REFERENCE_SOURCE = "the simulator's"


def reference_noise(transfer: Transfer, thickness_mm: float, pixel_mm: float, dose: float = 1.0) -> float:
    """Reference soft-tissue noise std (HU) for a kernel, slice thickness, pixel size and dose fraction."""
    k = band_noise_factor(transfer, pixel_mm) / band_noise_factor(REFERENCE_TRANSFER, REFERENCE_PIXEL_MM)
    return REFERENCE_NOISE_HU * k / math.sqrt(max(thickness_mm, 1e-3)) / math.sqrt(max(dose, 1e-6))


def noise_between(noise_hu: float, from_transfer: Transfer, to_transfer: Transfer, pixel_mm: float,
                  from_thickness: float, to_thickness: float) -> float:
    """The same scan's noise std after a kernel and slice-thickness change at the same dose."""
    k = band_noise_factor(to_transfer, pixel_mm) / band_noise_factor(from_transfer, pixel_mm)
    return noise_hu * k * math.sqrt(max(from_thickness, 1e-3) / max(to_thickness, 1e-3))
