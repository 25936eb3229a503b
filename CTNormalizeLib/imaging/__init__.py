"""The ground floor: imaging helpers that every layer uses, importing nothing above ``errors``/``volume``.

- :mod:`.progress` -- the ``progress(stage, fraction)`` callback type.
- :mod:`.body` -- the body mask; :mod:`.morphology` -- the mask operations behind it.
- :mod:`.lungs` -- the lung segmentation (``lung_mask``) and a fast threshold lung mask;
  :mod:`.airways` and :mod:`.lung_split` are its steps.
- :mod:`.noise` -- robust noise sigma (normal-consistent MAD).
- :mod:`.zgrid` -- the z grid rule, slice positions and resampling along z.
- :mod:`.orientation`, :mod:`.inputs` -- superior/left from the direction cosines; a Volume
  or an array with its spacing.

Any layer may import from here; nothing here imports another engine layer.
"""

from .body import BODY_HU, body_mask  # noqa: F401
from .lungs import LungMask, lung_mask, threshold_lung_mask  # noqa: F401
from .noise import robust_sigma  # noqa: F401
from .progress import Progress, ProgressFn, no_progress  # noqa: F401
from .zgrid import resample_z, slice_positions, target_slice_count  # noqa: F401
