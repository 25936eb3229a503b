"""Warnings about measuring a scan that CTNormalize made: an output normalized with the clean texture."""

from __future__ import annotations

from typing import Mapping

#: Warning code of a quantification run on a clean-texture output.
CLEAN_TEXTURE_INPUT = "CLEAN_TEXTURE_INPUT"


def clean_texture_warnings(meta: Mapping, biased: str) -> list[dict]:
    """``[warning]`` when ``meta`` (a volume's, or a header's keys) marks a clean-texture CTNormalize output, else [].

    Parameters
    ----------
    meta : mapping
        ``Volume.meta``: ``ctnormalize_texture`` is written into the headers of ``normalize``'s outputs.
    biased : str
        What reads differently on such a scan, e.g. ``"its emphysema index reads low and Perc15 high"``.
    """
    if str(meta.get("ctnormalize_texture", "")).strip() != "clean":
        return []
    return [{"code": CLEAN_TEXTURE_INPUT,
             "message": f"This scan was normalized by CTNormalize with the clean texture (most of the noise removed): "
                        f"{biased} against scans of the target protocol. To quantify, normalize with --texture target "
                        "(noise of the target protocol put back)."}]
