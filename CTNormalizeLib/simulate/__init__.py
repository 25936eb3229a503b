"""Physics simulator: the only source of paired data (training, benchmarks, classical tuning).

- :func:`make_phantom` — seeded procedural chest phantom: noise-free truth in HU on a fine
  z grid, ground-truth masks (lungs L/R, airways, vessels, nodules, emphysema, tissues),
  nodule labels and ``info`` (ground-truth LAA-950, nodule list).
- :func:`simulate_scan` — any high-quality volume (phantom truth or thin-slice real CT)
  acquired with a :class:`~CTNormalizeLib.protocols.Protocol`: parallel-beam projection of
  every fine slice, Poisson + electronic noise at the protocol's dose (with AEC), log,
  slice-sensitivity profile of the protocol's thickness applied to the log projections,
  FBP with the ramp filter times ``protocols.kernel_mtf``. Output keeps the in-plane grid;
  its first slice is centred on the input's first slice, then every ``protocol.z_spacing``.
  A slice cannot be thinner than the input's (``BadInputError``, or ``on_thin="clamp"``).
- :func:`simulate_pair` — source scan, target scan and a target replicate (same anatomy,
  independent noise) from one shared forward projection; :func:`project_truth` shares it
  between any number of protocols.
- :func:`noise_reference` — full-dose noise std (HU) in water per kernel, thickness and
  pixel size, measured from this simulator (tabulated in ``noise_reference.json``).

Calibration: a full-dose standard-kernel 1 mm scan has about 11 HU noise in water at 0.7 mm
pixels; noise scales as ``1/sqrt(dose)`` and about ``1/sqrt(thickness)``.
"""

from .noise import measure_noise, noise_reference  # noqa: F401
from .phantom import PHANTOM_VERSION, Phantom, make_phantom  # noqa: F401
from .scanner import (  # noqa: F401
    DEFAULT_SCANNER,
    SIMULATOR_VERSION,
    Projections,
    ScannerConfig,
    complete_protocol,
    derive_seeds,
    project_truth,
    simulate_pair,
    simulate_scan,
)
