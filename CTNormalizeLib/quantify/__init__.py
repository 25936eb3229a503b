"""Quantification on CT volumes: lung mask, emphysema index, radiomics per segment.

- :mod:`.lung` -- the engine's lung segmentation (``lung_mask``, from :mod:`CTNormalizeLib.imaging`)
  or a user-provided mask (``load_lung_mask``).
- :mod:`.emphysema` -- LAA%, Perc15, lung volume, per lung and per zone (``emphysema_index``),
  and Dice between emphysema masks (``emphysema_dice``).
- :mod:`.radiomics` -- pyradiomics on every segment of a labelmap or Slicer ``.seg.nrrd``,
  over one or several images with the same settings (``extract_radiomics``).
- :mod:`.overlay` -- a lung-mask overlay PNG (matplotlib Agg).

Radiomics and matplotlib are imported inside the functions that need them.
"""

from .lung import LungMask, lung_mask, load_lung_mask  # noqa: F401
from .emphysema import EmphysemaResult, emphysema_dice, emphysema_index  # noqa: F401
from .radiomics import RadiomicsResult, extract_radiomics, load_segments  # noqa: F401
from .overlay import lung_overlay_figure, save_lung_overlay  # noqa: F401
