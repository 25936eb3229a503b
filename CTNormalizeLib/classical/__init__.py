"""Classical normalization (no trained weights): MTF ratio, frequency decomposition,
histogram matching, denoising for dose, slice-profile resampling along z, noise
insertion, and the ``classical`` chain. Importing the package registers their rows in
the method table (:mod:`CTNormalizeLib.method_rows`)."""

from . import chain  # noqa: F401  (registers "classical" first)
from . import rows  # noqa: F401
from .denoise import denoise_volume  # noqa: F401
from .frequency import BandEnergies, band_energies, normalize_bands  # noqa: F401
from .histogram import match_histogram, region_mask  # noqa: F401
from .masks import lung_mask  # noqa: F401
from .mtf_ratio import convert_kernel, mtf_ratio_transfer, wiener_lambda  # noqa: F401
from .noise_estimate import estimate_noise_std  # noqa: F401
from .noise_insertion import insert_noise  # noqa: F401
from .thickness import ZProfileResult, change_thickness, target_slice_count  # noqa: F401
