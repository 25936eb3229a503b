"""Radiomic features per labelled segment for the agreement metrics (firstorder + GLCM).

pyradiomics, with the same fixed settings for every image of a comparison: bin width 25 HU, no resampling (the images already share the
target grid), firstorder and GLCM classes. That subset keeps the benchmark fast; shape
features are left out on purpose because they depend only on the mask, which is shared.
"""

from __future__ import annotations

import logging

import numpy as np

SETTINGS = {"binWidth": 25, "force2D": False, "label": 1, "additionalInfo": False}
CLASSES = ("firstorder", "glcm")


def _extractor():
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
    ex.disableAllFeatures()
    for c in CLASSES:
        ex.enableFeatureClassByName(c)
    return ex


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
        ``{label: {feature_name: value}}`` (feature names without the ``original_`` prefix).
    """
    import SimpleITK as sitk

    ex = _extractor()
    img = sitk.GetImageFromArray(np.asarray(hu, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    out = {}
    for lab in np.unique(labels):
        if lab == 0 or (labels == lab).sum() < min_voxels:
            continue
        m = sitk.GetImageFromArray((labels == lab).astype(np.uint8))
        m.CopyInformation(img)
        res = ex.execute(img, m, label=1)
        out[int(lab)] = {k.replace("original_", ""): float(v) for k, v in res.items()
                         if k.startswith("original_")}
    return out
