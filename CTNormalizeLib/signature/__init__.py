"""Measured image-quality signatures: what the pixels show about a scan's protocol.

- :func:`measure_signature` — noise std per region and the noise power spectrum,
  the in-plane transfer (kernel) from the noise texture and the body edge, the z
  resolution, pixel size, field of view and patient size, each with its source and
  confidence; DICOM tags are priors.
- :class:`Signature` — the result (also the nominal signature of a protocol).
- :class:`Transfer` — the one parametric MTF family shared by nominal and measured kernels.
"""

from .kernel_class import class_transfer, classify_transfer  # noqa: F401
from .measure import measure_signature  # noqa: F401
from .signature import KERNEL_CHANGE_RATIO, Signature, pair_kind  # noqa: F401
from .transfer import Transfer, band_noise_factor  # noqa: F401
