"""Physics simulator: procedural chest phantom and CT protocol simulation (projection, noise, FBP, slice profile)."""

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
from .phantom import PHANTOM_VERSION, Phantom, make_phantom  # noqa: F401,E402
from .noise import measure_noise, noise_reference  # noqa: F401,E402
