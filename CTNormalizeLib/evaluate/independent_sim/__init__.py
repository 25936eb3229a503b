"""An independent CT simulator, for evaluation only: held-out physics.

Our normalization methods are trained and tuned on the physics of ``CTNormalizeLib.simulate``
(finufft Fourier-slice projector, parametric kernel MTFs, Poisson + electronic noise with
AEC, Gaussian slice profile). This package is a second opinion that shares none of that
code: scikit-image ``radon``/``iradon`` with its five FBP filters, a fixed tube current
with a bowtie-shaped flux, compound-Poisson detector noise with its own read noise and
photon scale, its own number of views and rect/triangle slice profiles.

Never import it from training or from our simulator (a test walks the imports).

- :mod:`.physics` — :class:`HeldOutPhysics` (frozen parameters) and the analytic MTF /
  MTF50 of each filter at a pixel size, mapped onto the engine's kernel classes.
- :mod:`.scanner` — :func:`project`, :func:`scan`, :func:`simulate`, :func:`simulate_set`
  (source, target, replicate, noise-free target; one projection, or one per slice profile when
  source and target differ in thickness).
- :mod:`.anatomy` — truths: lung2 slabs, phantoms with seeds >= 1000, patient size,
  emphysema insertion.
- :mod:`.cases` — the held-out cases (issue 11's three, benchmark sizes, the
  kernel-classification set), cached in ``~/.cache/ctnormalize/heldout/``.
"""

from .physics import (  # noqa: F401
    FILTERS,
    NOMINAL_KERNEL,
    HeldOutPhysics,
    class_boundaries,
    filter_mtf,
    filter_mtf50,
    kernel_class_for_mtf50,
)
from .scanner import project, scan, simulate, simulate_set  # noqa: F401
