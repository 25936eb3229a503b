"""The reconstruction kernel from the noise texture: fit the transfer family to a measured NPS.

Filtered back-projection of white projection noise gives a noise power spectrum
``NPS(f) = A |f| W(f)^2``, with ``W`` the reconstruction filter's apodization times
the back-projection's own interpolation blur: the same factors that blur the anatomy.
Dividing the measured radial NPS by ``|f|`` and fitting ``A`` and the parameters of
:class:`~.transfer.Transfer` therefore recovers the kernel from the pixels, at any dose
(noise texture does not depend on the noise level). The fit is done on ``sqrt(NPS/f)``,
linear in ``W``, so the near-zero tail of smooth kernels neither dominates nor vanishes.

This reads the *filter* (and interpolation) only: blur that acts on the anatomy but not
on the noise (detector aperture, focal spot, iterative reconstruction) is not seen
here; :mod:`.edge` measures the system MTF at the body edge for that cross-check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from .nps import NPS
from .transfer import Transfer

#: Bins with fewer FFT samples, and the first MIN_FREQ_BINS bins, are not fitted:
#: too few samples there, and the ROI detrend and window blur the lowest frequencies.
MIN_BIN_COUNT = 4
MIN_FREQ_BINS = 3
#: ``(f50, p, boost)`` lower and upper bounds. ``p >= 2``: the transfer of a blur whose point-spread
#: function has a finite variance is ``1 - c f^2`` near 0, and clinical apodization windows are flat
#: there; ``p < 2`` is a cusp at 0. The fit chose one where the air's NPS was not one ``|f| W^2`` curve
#: (a real CT used as a truth keeps its own scanner's smooth-kernel noise under the simulated one;
#: iterative reconstruction and structured air do the like), and p traded off against the lift even on
#: plain FBP noise. Such a fit (lung2 at full dose read as p = 1.0, lung1 as 1.15-1.8) made a conversion
#: to a smoother kernel amplify the anatomy below 0.15 c/mm and left it further from the target than the
#: source was (lung1 standard -> smooth: L1 10.4 vs 7.3 HU; 3.9 with p >= 2).
P_MIN = 2.0
BOUNDS = ([0.05, P_MIN, 0.0], [3.0, 12.0, 2.0])


@dataclass
class KernelFit:
    """A transfer fitted to a measured NPS, with its quality.

    Attributes
    ----------
    transfer : Transfer
    amplitude : float
        ``A`` in ``NPS = A |f| W^2`` (HU^2 mm^3).
    rms_error : float
        RMS relative misfit of ``sqrt(NPS/f)`` over the fitted band.
    band : tuple of float
        Fitted frequency band, cycles/mm.
    confidence : float
    """

    transfer: Transfer
    amplitude: float
    rms_error: float
    band: tuple
    confidence: float
    notes: list = field(default_factory=list)


def _initial_guesses(nyq: float):
    for f50 in (0.3 * nyq / 0.714, 0.6 * nyq / 0.714, 1.2 * nyq / 0.714):
        for p in (2.0, 4.0):
            yield [max(0.06, min(2.9, f50)), p, 0.1]


def fit_kernel(nps: NPS) -> KernelFit:
    """Fit :class:`~.transfer.Transfer` and the amplitude to a measured NPS.

    Parameters
    ----------
    nps : NPS
        From :func:`~.nps.measure_nps`.

    Returns
    -------
    KernelFit
        Confidence falls with the misfit and with few ROIs.
    """
    f, v, c = nps.freq, nps.radial, nps.counts
    sel = (np.arange(f.size) >= MIN_FREQ_BINS) & (c >= MIN_BIN_COUNT) & (f <= nps.nyquist * 1.0001)
    f, v, c = f[sel], np.maximum(v[sel], 0.0), c[sel]
    y = np.sqrt(v / f)
    wts = np.sqrt(c) / max(float(np.max(y)), 1e-12)

    def residual(theta):
        a, f50, p, b = theta
        return (a * Transfer(f50, p, b)(f) - y) * wts

    best = None
    for g in _initial_guesses(nps.nyquist):
        # amplitude start: the low-frequency plateau of sqrt(NPS/f)
        x0 = [float(np.median(y[: max(3, y.size // 6)]))] + g
        lo = [0.0] + BOUNDS[0]
        hi = [np.inf] + BOUNDS[1]
        r = least_squares(residual, x0, bounds=(lo, hi), x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    a, f50, p, b = (float(t) for t in best.x)
    tr = Transfer(f50, p, b)
    model = a * tr(f)
    rel = (model - y) / max(float(np.max(y)), 1e-12)
    rms = float(np.sqrt(np.average(rel ** 2, weights=c)))
    notes = []
    conf = math.exp(-rms / 0.05) * min(1.0, math.sqrt(nps.n_rois / 50.0))
    if nps.region == "tissue":
        conf *= 0.8
        notes.append("from soft-tissue ROIs (anatomy may add low-frequency power)")
    return KernelFit(tr, a * a, rms, (float(f[0]), float(f[-1])), float(round(conf, 3)), notes)
