"""Full-dose noise of the simulator in water, per kernel class and slice thickness.

:func:`noise_reference` answers "what noise std (HU) does a full-dose scan with this
kernel and thickness have in uniform water?", measured from the simulator itself on a
water cylinder (AEC makes the centre noise independent of the cylinder's size). Protocol
detection turns a measured noise ``s`` into a relative dose ``(noise_reference / s)^2``.

Common values are tabulated in ``noise_reference.json`` next to this module (regenerate
with ``python -m CTNormalizeLib.simulate.noise --write``); others are simulated on demand
(a few seconds) and cached in memory.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np

from ..errors import BadInputError
from ..protocols import KERNEL_CLASSES, Protocol, kernel_class
from ..volume import Volume
from .scanner import DEFAULT_SCANNER, SIMULATOR_VERSION, ScannerConfig, project_truth, simulate_scan

TABLE_PATH = os.path.join(os.path.dirname(__file__), "noise_reference.json")
TABLE_THICKNESSES = (0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
REFERENCE_PIXEL = 0.7
FINE_Z = 0.5


def measure_noise(kernel: str, thickness: float, pixel_size: float = REFERENCE_PIXEL, dose: float = 1.0,
                  seed: int = 12345, detector: ScannerConfig | None = None) -> float:
    """Simulate a 160 mm water cylinder and return the noise std (HU) in a central 30 mm ROI.

    Parameters
    ----------
    kernel : str
        Kernel class or vendor name.
    thickness : float
        Slice thickness (mm), >= 0.5.
    pixel_size : float
        In-plane pixel size (mm).
    dose : float
        Dose fraction.
    """
    if thickness < FINE_Z:
        raise BadInputError(f"Noise reference needs thickness >= {FINE_Z} mm, got {thickness}.")
    n = int(np.ceil(190.0 / pixel_size))
    n += n % 2
    yy, xx = (np.mgrid[:n, :n] - n // 2) * pixel_size
    r = np.hypot(yy, xx)
    water = np.where(r < 80.0, 0.0, -1000.0).astype(np.float32)
    spacing_out = thickness
    n_out = 3
    margin = 2.0 * thickness
    rows = int(np.ceil((2 * margin + (n_out - 1) * spacing_out) / FINE_Z)) + 1
    truth = Volume(np.repeat(water[None], rows, 0), spacing=(FINE_Z, pixel_size, pixel_size))
    det = detector or DEFAULT_SCANNER
    proj = project_truth(truth, det)
    scan = simulate_scan(truth, Protocol(kernel=kernel_class(kernel), dose=dose, thickness=thickness,
                                         spacing=spacing_out), seed, detector=det, projections=proj)
    z = np.arange(scan.hu.shape[0]) * spacing_out
    keep = (z >= margin - 1e-6) & (z <= (rows - 1) * FINE_Z - margin + 1e-6)
    roi = r < 30.0
    vals = scan.hu[keep][:, roi]
    return float(np.sqrt(np.mean(np.var(vals, axis=1))))


@lru_cache(maxsize=1)
def _table() -> dict:
    try:
        with open(TABLE_PATH, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if data.get("simulator_version") != SIMULATOR_VERSION or data.get("scanner") != _scanner_key(DEFAULT_SCANNER):
        return {}
    return data


def _scanner_key(det: ScannerConfig) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(det).items()}


@lru_cache(maxsize=256)
def _measured(kernel: str, thickness: float, pixel_size: float) -> float:
    return measure_noise(kernel, thickness, pixel_size)


def noise_reference(kernel: str, thickness: float, pixel_size: float | None = None) -> float:
    """Full-dose noise std (HU) in uniform water for a kernel and slice thickness.

    Parameters
    ----------
    kernel : str
        Kernel class or vendor name.
    thickness : float
        Slice thickness (mm), >= 0.5.
    pixel_size : float, optional
        In-plane pixel size (mm); default 0.7 (tabulated). Sharp kernels pass
        frequencies up to the pixel Nyquist, so their noise depends on it.

    Returns
    -------
    float
        Noise std in HU. Noise at dose ``d`` is about ``noise_reference / sqrt(d)``.
    """
    k = kernel_class(kernel)
    t = float(thickness)
    if not t >= FINE_Z:
        raise BadInputError(f"Noise reference is defined for thickness >= {FINE_Z} mm, got {thickness}.")
    px = REFERENCE_PIXEL if pixel_size is None else round(float(pixel_size), 3)
    table = _table()
    if abs(px - REFERENCE_PIXEL) < 1e-6 and k in table.get("noise", {}):
        entries = table["noise"][k]
        ts = np.array([float(x) for x in entries])
        vs = np.array([entries[x] for x in entries])
        order = np.argsort(ts)
        ts, vs = ts[order], vs[order]
        if ts[0] - 1e-6 <= t <= ts[-1] + 1e-6:
            # Noise ~ thickness^(-1/2): interpolate in log-log.
            return float(np.exp(np.interp(np.log(t), np.log(ts), np.log(vs))))
    return _measured(k, round(t, 4), px)


def build_table(thicknesses=TABLE_THICKNESSES) -> dict:
    """Measure the table written to ``noise_reference.json``."""
    noise = {k: {f"{t:g}": round(measure_noise(k, t), 3) for t in thicknesses} for k in KERNEL_CLASSES}
    return {"simulator_version": SIMULATOR_VERSION, "scanner": _scanner_key(DEFAULT_SCANNER),
            "pixel_size_mm": REFERENCE_PIXEL, "dose": 1.0, "roi": "central 30 mm of a 160 mm water cylinder",
            "noise": noise}


if __name__ == "__main__":  # pragma: no cover - maintenance script
    import sys

    table = build_table()
    text = json.dumps(table, indent=1)
    if "--write" in sys.argv:
        with open(TABLE_PATH, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
