"""Parameters of the independent scanner and the analytic in-plane MTF of its FBP filters.

The scanner reconstructs with scikit-image's ``iradon`` and one of its five filters. The
filters are windows ``W(nu)`` on the ramp, in normalized frequency ``nu = f * d``
(cycles per detector sample, the detector sample being the pixel size ``d``):

- ramp ``1``; shepp-logan ``sinc(nu)``; cosine ``cos(pi nu)``;
- hamming ``0.54 + 0.46 cos(2 pi nu)``; hann ``0.5 + 0.5 cos(2 pi nu)``

(what ``skimage.transform.radon_transform._get_fourier_filter`` builds). The system MTF
of a noise-free scan relative to its truth image is the window times the two linear
interpolations of the chain: the detector interpolation of the backprojection
(``sinc^2(nu)``) and the bilinear rotation inside ``radon`` (``sinc^2(nu cos t)
sinc^2(nu sin t)`` along direction ``t``, averaged over directions). Nothing above the
Nyquist frequency passes.

A scan's *kernel class* is defined by its MTF50 against the engine's classes: the class
boundaries are the geometric means of neighbouring classes' MTF50s
(``protocols.kernels.mtf50``, imported for those labels only).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ...errors import BadInputError

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
PROFILES = ("rect", "triangle")

#: The kernel class a user would type for each filter, reading it like a vendor's kernel name
#: (apodization strength). The class its MTF50 shows depends on the pixel size: see
#: :func:`kernel_class_for_mtf50`.
NOMINAL_KERNEL = {"ramp": "sharp", "shepp-logan": "sharp", "cosine": "standard", "hamming": "standard",
                  "hann": "smooth"}


@dataclass(frozen=True)
class HeldOutPhysics:
    """One acquisition and reconstruction of the independent scanner.

    Attributes
    ----------
    filter : str
        FBP filter, one of :data:`FILTERS`.
    dose : float
        Fraction of this scanner's full tube current-time product (fixed tube current, no
        automatic exposure control: larger patients get noisier scans).
    thickness_mm : float
        Nominal slice width (FWHM of the slice profile); slices are contiguous.
    slice_profile : str
        ``"rect"`` (ideal collimation) or ``"triangle"`` (helical linear interpolation),
        both with FWHM ``thickness_mm``.
    n_views : int
        Views over 180 degrees. The photons per rotation do not depend on it.
    photons_full : float
        Unattenuated photons per mm^2 of detector per view at full dose, at the centre of
        the bowtie, for a 400-view rotation.
    bowtie_edge : float
        Relative flux at and beyond ``bowtie_radius_mm`` from the isocentre.
    bowtie_radius_mm : float
    swank_k : float
        Energy-integrating detector: each detected photon adds a Gamma(k, 1/k) signal
        (mean 1, variance 1/k), so the quantum noise is compound Poisson.
    electronic_std : float
        Additive Gaussian read noise per detector sample, in photon units.
    count_floor : float
        Signals are floored here before the log.
    mu_water : float
        Attenuation of water (1/mm) at this scanner's effective energy.
    """

    filter: str = "hann"
    dose: float = 1.0
    thickness_mm: float = 2.0
    slice_profile: str = "rect"
    n_views: int = 400
    photons_full: float = 2.5e5
    bowtie_edge: float = 0.08
    bowtie_radius_mm: float = 240.0
    swank_k: float = 4.0
    electronic_std: float = 2.5
    count_floor: float = 1.0
    mu_water: float = 0.0184

    def __post_init__(self):
        if self.filter not in FILTERS:
            raise BadInputError(f"Unknown FBP filter {self.filter!r}; choose one of {', '.join(FILTERS)}.")
        if self.slice_profile not in PROFILES:
            raise BadInputError(f"Unknown slice profile {self.slice_profile!r}; choose one of {', '.join(PROFILES)}.")
        if not 0 < self.dose <= 10:
            raise BadInputError(f"dose must be in (0, 10], got {self.dose}.")
        if not self.thickness_mm > 0 or self.n_views < 8:
            raise BadInputError("thickness_mm must be positive and n_views at least 8.")

    def spec(self) -> str:
        """Short readable description, e.g. ``filter=hann,dose=1,thickness=5,profile=triangle``."""
        return (f"filter={self.filter},dose={self.dose:g},thickness={self.thickness_mm:g},"
                f"profile={self.slice_profile},views={self.n_views}")

    def nominal_spec(self, name_profile: bool = False) -> str:
        """The protocol string a user would type for this scan (``kernel=...,dose=...,thickness=...``).

        ``name_profile``: a user who knows the scan's slices are rectangular (an axial scan) also
        types ``profile=rect``; a triangle (helical) is the engine's default and is not named.
        """
        spec = f"kernel={NOMINAL_KERNEL[self.filter]},dose={self.dose:g},thickness={self.thickness_mm:g}"
        return spec + (",profile=rect" if name_profile and self.slice_profile == "rect" else "")

    def key(self) -> str:
        """A stable hash of every parameter (for caches)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def filter_window(name: str, nu) -> np.ndarray:
    """The filter's window on the ramp at normalized frequencies ``nu`` (cycles/sample, 0..0.5)."""
    nu = np.abs(np.asarray(nu, dtype=np.float64))
    if name == "ramp":
        w = np.ones_like(nu)
    elif name == "shepp-logan":
        w = np.sinc(nu)
    elif name == "cosine":
        w = np.cos(np.pi * nu)
    elif name == "hamming":
        w = 0.54 + 0.46 * np.cos(2 * np.pi * nu)
    elif name == "hann":
        w = 0.5 + 0.5 * np.cos(2 * np.pi * nu)
    else:
        raise BadInputError(f"Unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}.")
    return np.where(nu <= 0.5, w, 0.0)


@lru_cache(maxsize=4)
def _rotation_table(n: int = 2001):
    nu = np.linspace(0.0, 0.5, n)
    t = np.linspace(0.0, np.pi / 2, 91)
    fp = np.mean(np.sinc(nu[:, None] * np.cos(t)) ** 2 * np.sinc(nu[:, None] * np.sin(t)) ** 2, axis=1)
    return nu, fp


def interpolation_mtf(nu) -> np.ndarray:
    """Transfer of the two linear interpolations (backprojection x direction-averaged radon rotation)."""
    nu = np.abs(np.asarray(nu, dtype=np.float64))
    grid, fp = _rotation_table()
    return np.where(nu <= 0.5, np.sinc(nu) ** 2 * np.interp(nu, grid, fp), 0.0)


def filter_mtf(name: str, f, pixel_mm: float) -> np.ndarray:
    """Analytic in-plane MTF of a noise-free scan relative to its truth image.

    Parameters
    ----------
    name : str
        FBP filter (:data:`FILTERS`).
    f : array_like
        Frequencies, cycles/mm.
    pixel_mm : float
        Pixel size (= detector sample) in mm.
    """
    nu = np.abs(np.asarray(f, dtype=np.float64)) * float(pixel_mm)
    return filter_window(name, nu) * interpolation_mtf(nu)


def noise_transfer(name: str, f, pixel_mm: float) -> np.ndarray:
    """The in-plane transfer that shapes this scanner's *noise*: the window times the backprojection's
    detector interpolation only.

    Noise enters after the forward projection, so the bilinear rotation inside ``radon``, which
    blurs the signal (:func:`filter_mtf`), never touches it (as a real scanner's detector aperture
    and focal spot blur the signal and not the quantum noise). A transfer read from the noise
    texture reads this one.
    """
    nu = np.abs(np.asarray(f, dtype=np.float64)) * float(pixel_mm)
    return filter_window(name, nu) * np.where(nu <= 0.5, np.sinc(nu) ** 2, 0.0)


def filter_mtf50(name: str, pixel_mm: float, transfer=None) -> float:
    """Frequency (cycles/mm) where :func:`filter_mtf` (or ``transfer``, e.g. :func:`noise_transfer`) first falls below 0.5."""
    f = np.linspace(0.0, 0.5 / pixel_mm, 20001)
    m = (transfer or filter_mtf)(name, f, pixel_mm)
    i = int(np.argmax(m < 0.5))
    if i == 0:
        return float(f[-1])
    # linear interpolation between the bracketing samples
    return float(f[i - 1] + (m[i - 1] - 0.5) / (m[i - 1] - m[i]) * (f[i] - f[i - 1]))


def class_boundaries() -> dict:
    """``{class: (lower, upper)}`` MTF50 bounds (cycles/mm) of the engine's kernel classes."""
    from ...protocols.kernels import KERNEL_CLASSES, mtf50

    m = [mtf50(k) for k in KERNEL_CLASSES]
    edges = [0.0] + [float(np.sqrt(a * b)) for a, b in zip(m[:-1], m[1:])] + [float("inf")]
    return {k: (edges[i], edges[i + 1]) for i, k in enumerate(KERNEL_CLASSES)}


def kernel_class_for_mtf50(mtf50: float) -> tuple[str, float]:
    """The engine kernel class whose MTF50 interval holds ``mtf50``, and the relative margin.

    Returns
    -------
    (class, margin)
        ``margin`` = distance in log-frequency to the nearest class boundary (0.05 = 5 %
        away); cases with a small margin are ambiguous by nature.
    """
    for k, (lo, hi) in class_boundaries().items():
        if lo <= mtf50 < hi:
            margins = [abs(np.log(mtf50 / b)) for b in (lo, hi) if 0 < b < np.inf]
            return k, float(min(margins)) if margins else float("inf")
    raise BadInputError(f"MTF50 {mtf50} is not a positive frequency.")
