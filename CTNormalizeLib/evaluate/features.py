"""Radiomic features per labelled segment for the agreement metrics (firstorder + GLCM).

Through ``CTNormalizeLib.quantify.radiomics.extract_radiomics`` (pyradiomics), with the
same fixed settings for every image of a comparison: bin width 25 HU, HU shift 1000,
no resampling (the images already share the target grid), firstorder and GLCM classes.
That subset keeps the benchmark fast; shape features are left out on purpose because
they depend only on the mask, which all images share.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import BadInputError

PARAMS = {
    "imageType": {"Original": {}},
    "featureClass": {"firstorder": [], "glcm": []},
    "setting": {"binWidth": 25, "voxelArrayShift": 1000, "normalize": False, "force2D": False,
                "minimumROIDimensions": 2, "minimumROISize": 5, "additionalInfo": False},
}

log = logging.getLogger(__name__)


def segment_features(hu: np.ndarray, spacing, labels: np.ndarray, min_voxels: int = 20) -> dict:
    """Features of each label of ``labels`` in ``hu``.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : (z, y, x) mm.
    labels : np.ndarray
        Integer labelmap on the same grid; 0 is background.
    min_voxels : int
        Smaller segments are skipped (their texture is meaningless).

    Returns
    -------
    dict
        ``{label: {feature_name: value}}`` (names without the ``original_`` prefix).
    """
    import SimpleITK as sitk

    from ..quantify.radiomics import Segment, SegmentSet, extract_radiomics

    labels = np.asarray(labels)
    keep = [int(v) for v in np.unique(labels) if v != 0 and (labels == v).sum() >= min_voxels]
    if not keep:
        return {}
    sp = tuple(float(s) for s in reversed(spacing))
    img = sitk.GetImageFromArray(np.asarray(hu, dtype=np.float32))
    img.SetSpacing(sp)
    lab = sitk.GetImageFromArray(np.where(np.isin(labels, keep), labels, 0).astype(np.int16))
    lab.CopyInformation(img)
    out: dict = {}
    for v in keep:
        segs = SegmentSet(layers=[lab], segments=[Segment(f"label{v}", v)], source="array")
        try:
            res = extract_radiomics({"image": img}, segs, params=PARAMS)
        except BadInputError as exc:  # pyradiomics refused this segment (too small / flat)
            log.warning("radiomics skipped label %s: %s", v, exc)
            continue
        out[v] = {r["feature"].replace("original_", ""): float(r["value"]) for r in res.rows
                  if r["feature"].startswith("original_")}
    return out
