"""An independent CT simulator, for evaluation only (never for training)."""
from .physics import FILTERS, NOMINAL_KERNEL, HeldOutPhysics, filter_mtf, filter_mtf50, kernel_class_for_mtf50  # noqa: F401
from .scanner import project, scan, simulate, simulate_set  # noqa: F401
