"""pyradiomics on every segment of a labelmap or Slicer ``.seg.nrrd``, over several images.

Every image of one run (e.g. ``original``, ``normalized``, ``reference``) is extracted with
the *same* pyradiomics settings, so the differences in the comparison table come from the
images only. The CT preset is ``Resources/Radiomics/CT.yaml`` (bin width 25 HU, 1 mm
isotropic resampling, shape + first order + texture classes); ``CT_filters.yaml`` adds
LoG and wavelet images.

Segments:

- a labelmap (NRRD, NIfTI, ...): each nonzero label value is one segment, named
  ``label_<value>``;
- a Slicer segmentation (``.seg.nrrd``): names, label values and layers come from its
  header through ``slicerio``; the voxels are read with SimpleITK (one layer per
  component when segments overlap).

When the segments' grid differs from an image's, the labelmap is resampled onto that
image with nearest neighbour and a ``SEGMENTS_RESAMPLED`` warning says so.

``radiomics`` is imported inside the functions (heavy import).
"""

from __future__ import annotations

import csv
import io as _stdio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ..version import __version__
from ..errors import BadInputError
from ..imaging.progress import Progress
from ..volume import Volume

#: More distinct labels than this in a labelmap: it is an image, not a segmentation.
MAX_LABELS = 500
_SAMPLE = 1_000_000
DEFAULT_PARAMS = ("Radiomics", "CT.yaml")
FILTER_PARAMS = ("Radiomics", "CT_filters.yaml")


def default_params_path(filters: bool = False) -> Path:
    """Path of the CT preset params YAML (with LoG + wavelet when ``filters``)."""
    from ..resources import resource_path

    return resource_path(*(FILTER_PARAMS if filters else DEFAULT_PARAMS))


@dataclass
class Segment:
    """One segment: its name, label value and layer (index into ``SegmentSet.layers``)."""

    name: str
    label: int
    layer: int = 0


@dataclass
class SegmentSet:
    """Label images (one per layer) and the segments they hold."""

    layers: list
    segments: list
    source: str = ""

    @property
    def reference(self):
        return self.layers[0]


def _is_seg_nrrd(path: Path) -> bool:
    if not path.name.lower().endswith(".nrrd"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(65536)
    return b"Segment0_" in head


def check_labelmap(arr: np.ndarray, path) -> None:
    """Refuse an array that looks like an image rather than a labelmap.

    A labelmap holds a few non-negative whole numbers; a CT passed by mistake has
    negative, non-integer or thousands of distinct values (and would run pyradiomics once
    per value). A subsample decides quickly for large images.
    """
    flat = arr.reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    why = None
    if np.issubdtype(arr.dtype, np.floating) and not (np.all(np.isfinite(flat)) and np.all(np.mod(flat, 1) == 0)):
        why = "non-integer values"
    elif np.issubdtype(arr.dtype, np.signedinteger) or np.issubdtype(arr.dtype, np.floating):
        lo = float(arr.min())
        if lo < 0:
            why = f"negative values (down to {lo:g})"
    if why is None:
        values = np.unique(sample)
        if values.size <= MAX_LABELS + 1 and sample.size < flat.size:
            values = np.unique(flat)  # the sample may miss small labels: count them all
        if values.size > MAX_LABELS + 1:
            why = f"at least {values.size} distinct values"
    if why is not None:
        raise BadInputError(f"The segments file {path} has {why}: this looks like an image, not a segmentation "
                            f"(a labelmap holds whole numbers 0..N with at most {MAX_LABELS} labels). "
                            "Pass the CT with --image and its labelmap with --segments.")


def load_segments(path) -> SegmentSet:
    """Read a labelmap or a Slicer ``.seg.nrrd`` into a :class:`SegmentSet`.

    Raises
    ------
    BadInputError
        Missing/unreadable file, no segment, a segment without voxels, or a labelmap that
        looks like an image (:func:`check_labelmap`).
    """
    import SimpleITK as sitk

    from ._io import read_image

    path = Path(path)
    img = read_image(path)
    if img.GetDimension() != 3:
        raise BadInputError(f"Segments {path} must be a 3D labelmap or segmentation, not {img.GetDimension()}D.")
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp == 1 and not _is_seg_nrrd(path):
        check_labelmap(sitk.GetArrayViewFromImage(img), path)
    layers = [img] if ncomp == 1 else [sitk.VectorIndexSelectionCast(img, k) for k in range(ncomp)]
    layers = [sitk.Cast(layer, sitk.sitkUInt16) if layer.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16)
              else layer for layer in layers]
    arrays = [sitk.GetArrayViewFromImage(layer) for layer in layers]
    segments: list = []
    if _is_seg_nrrd(path):
        import slicerio

        info = slicerio.read_segmentation(str(path), skip_voxels=True)
        for s in info.get("segments", []):
            segments.append(Segment(name=str(s.get("name") or s.get("id")), label=int(s.get("labelValue", 1)),
                                    layer=int(s.get("layer", 0))))
        for s in segments:
            if s.layer >= len(layers):
                raise BadInputError(f"Segment '{s.name}' of {path} refers to layer {s.layer}, "
                                    f"but the file has {len(layers)} layer(s).")
    else:
        if len(layers) != 1:
            raise BadInputError(f"Labelmap {path} has {len(layers)} components; expected a scalar labelmap.")
        arr = arrays[0]
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.mod(arr, 1) == 0):
            raise BadInputError(f"Labelmap {path} holds non-integer values: is it an image, not a labelmap?")
        values = np.unique(arr)
        segments = [Segment(name=f"label_{int(v)}", label=int(v)) for v in values if v != 0]
    if not segments:
        raise BadInputError(f"No segment found in {path} (all voxels are 0).")
    for s in segments:
        if not np.any(arrays[s.layer] == s.label):
            raise BadInputError(f"Segment '{s.name}' (label {s.label}) of {path} is empty: it has no voxels.")
    return SegmentSet(layers=layers, segments=segments, source=str(path))


def _layers_on(segset: SegmentSet, image, name: str, warnings: list) -> list:
    """The segment set's labelmaps on ``image``'s grid (resampled with nearest neighbour where the grids
    differ, with a ``SEGMENTS_RESAMPLED`` warning saying how).

    Raises
    ------
    BadInputError
        A segment without voxels on the image's grid (naming how the grids differ).
    """
    import SimpleITK as sitk

    layers, hows = [], []
    for k, layer in enumerate(segset.layers):
        how = ""
        if not _same_geometry(layer, image):
            how = _geometry_difference(layer, image)
            layer = sitk.Resample(layer, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, layer.GetPixelID())
            warnings.append({"code": "SEGMENTS_RESAMPLED",
                             "message": f"The segments' grid differs from image '{name}' ({how}); the labelmap"
                                        f"{'' if len(segset.layers) == 1 else f' (layer {k})'} was resampled "
                                        "onto it with nearest neighbour. Check that the two belong together."})
        layers.append(layer)
        hows.append(how)
    for seg in segset.segments:
        if not np.any(sitk.GetArrayViewFromImage(layers[seg.layer]) == seg.label):
            how = hows[seg.layer]
            raise BadInputError(f"Segment '{seg.name}' is empty on image '{name}'"
                                + (f" after resampling onto its grid ({how}): is it from another scan?" if how
                                   else "."))
    return layers


def check_segments(segments, image, name: str = "original") -> SegmentSet:
    """Load ``segments`` and check every segment has voxels on ``image`` (a path, Volume or SimpleITK
    image), before any work that needs them (a cohort case normalizes first, then extracts features).

    Returns
    -------
    SegmentSet
        For :func:`extract_radiomics`.

    Raises
    ------
    BadInputError
        Missing or unreadable segments, a segment without voxels, or one empty on the image's grid.
    """
    segset = segments if isinstance(segments, SegmentSet) else load_segments(segments)
    img, _, _ = _as_image(image, name)
    _layers_on(segset, img, name, [])
    return segset


def _geometry_difference(layer, image) -> str:
    """How a labelmap's grid differs from an image's, in words (spacing, size, origin offset in mm)."""
    parts = []
    ls, is_ = np.asarray(layer.GetSpacing()), np.asarray(image.GetSpacing())
    if not np.allclose(ls, is_, rtol=1e-4, atol=1e-6):
        parts.append(f"spacing {' x '.join(f'{v:.4g}' for v in ls)} vs {' x '.join(f'{v:.4g}' for v in is_)} mm")
    if tuple(layer.GetSize()) != tuple(image.GetSize()):
        parts.append(f"size {' x '.join(map(str, layer.GetSize()))} vs {' x '.join(map(str, image.GetSize()))}")
    shift = np.asarray(layer.GetOrigin()) - np.asarray(image.GetOrigin())
    if np.linalg.norm(shift) > 1e-3:
        parts.append("origin offset " + ", ".join(f"{v:+.4g}" for v in shift) + " mm")
    if not np.allclose(layer.GetDirection(), image.GetDirection(), atol=1e-6):
        parts.append("another orientation")
    return "; ".join(parts) or "a sub-voxel difference"


def _same_geometry(a, b) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-5)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3 * max(b.GetSpacing()))
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def _as_image(obj, name: str):
    """A SimpleITK float image from a path, a Volume or a SimpleITK image, its label and its ``meta``."""
    import SimpleITK as sitk

    if isinstance(obj, sitk.Image):
        return obj, "<image>", {k: obj.GetMetaData(k) for k in obj.GetMetaDataKeys()}
    if isinstance(obj, Volume):
        from ._io import image_from_array

        return image_from_array(obj.hu, obj), obj.meta.get("source_path", "<volume>"), obj.meta
    from ._io import image_from_array, read_volume

    vol = read_volume(obj)
    return image_from_array(vol.hu, vol), str(obj), vol.meta


def _load_params(params) -> tuple:
    """``(extractor params argument, description)`` from None / path / dict."""
    if params is None:
        p = default_params_path()
        return str(p), str(p)
    if isinstance(params, dict):
        return params, "dict"
    p = Path(params)
    if not p.is_file():
        raise BadInputError(f"Radiomics params file not found: {p}")
    return str(p), str(p.resolve())


#: First-order features of the original image that are a position on the HU scale, whose zero (water) is
#: arbitrary for them: a percent of such a value is meaningless (a mean of -2 HU that becomes +3 HU would
#: be "-250 %"), so only their difference in HU is reported. Spreads (range, variance, MAD ...) and the
#: filtered images' features (LoG, wavelet: not HU) keep their percent.
HU_POSITION_FEATURES = frozenset({"firstorder_Mean", "firstorder_Median", "firstorder_Minimum",
                                  "firstorder_Maximum", "firstorder_10Percentile", "firstorder_90Percentile"})


def is_hu_position(feature: str) -> bool:
    """Whether a pyradiomics feature name is ``original_`` + one of :data:`HU_POSITION_FEATURES`."""
    kind, _, name = feature.partition("_")
    return kind == "original" and name in HU_POSITION_FEATURES


@dataclass
class RadiomicsResult:
    """Features of every segment on every image.

    Attributes
    ----------
    rows : list of dict
        The tidy table: ``segment``, ``label``, ``image``, ``feature``, ``value``.
    image_names : list of str
        In the order given; the first is the comparison's reference.
    provenance : dict
        ``params_path``, ``settings``, ``image_types``, ``pyradiomics_version``,
        ``engine_version``, ``images`` (name -> path), ``segments`` (path).
    warnings : list of dict
    """

    rows: list
    image_names: list
    provenance: dict
    warnings: list = field(default_factory=list)

    def value(self, segment: str, image: str, feature: str) -> float:
        for r in self.rows:
            if r["segment"] == segment and r["image"] == image and r["feature"] == feature:
                return r["value"]
        raise KeyError((segment, image, feature))

    def wide(self) -> list:
        """The comparison: one row per (segment, feature), one column per image, and for each
        image after the first ``<name>_minus_<first>`` and ``<name>_pct_vs_<first>``
        (100 x difference / |first|; None when the first is 0, and for the features that are a
        position on the HU scale, :data:`HU_POSITION_FEATURES`)."""
        first = self.image_names[0]
        table: dict = {}
        for r in self.rows:
            key = (r["segment"], r["feature"])
            table.setdefault(key, {"segment": r["segment"], "label": r["label"], "feature": r["feature"]})
            table[key][r["image"]] = r["value"]
        out = []
        for row in table.values():
            v0 = row.get(first)
            for name in self.image_names[1:]:
                v = row.get(name)
                diff = None if v is None or v0 is None else v - v0
                row[f"{name}_minus_{first}"] = diff
                row[f"{name}_pct_vs_{first}"] = (None if diff is None or v0 == 0 or is_hu_position(row["feature"])
                                                 else 100.0 * diff / abs(v0))
            out.append(row)
        return out

    def wide_columns(self) -> list:
        first = self.image_names[0]
        cols = ["segment", "label", "feature"] + list(self.image_names)
        for name in self.image_names[1:]:
            cols += [f"{name}_minus_{first}", f"{name}_pct_vs_{first}"]
        return cols

    def to_dict(self) -> dict:
        return {"provenance": self.provenance, "images": list(self.image_names), "features": self.rows,
                "comparison": self.wide(), "warnings": list(self.warnings)}

    def tidy_csv(self) -> str:
        buf = _stdio.StringIO()
        w = csv.DictWriter(buf, fieldnames=["segment", "label", "image", "feature", "value"], lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        return buf.getvalue()

    def wide_csv(self) -> str:
        buf = _stdio.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.wide_columns(), lineterminator="\n")
        w.writeheader()
        for row in self.wide():
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return buf.getvalue()

    def write_csv(self, path) -> tuple:
        """Write the tidy table to ``path`` and the comparison to ``<stem>_comparison.csv``,
        each atomically. Returns both paths."""
        from ..io.atomic import atomic_write_text

        path = Path(path)
        wide_path = comparison_path(path)
        atomic_write_text(path, self.tidy_csv())
        atomic_write_text(wide_path, self.wide_csv())
        return path, wide_path


def comparison_path(path) -> Path:
    """Where :meth:`RadiomicsResult.write_csv` puts the comparison next to ``path``."""
    path = Path(path)
    return path.with_name(path.stem + "_comparison" + (path.suffix or ".csv"))


def _number(v):
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.size != 1:
        return None
    return float(arr.reshape(()))


def extract_radiomics(images: dict, segments: Union[str, Path, SegmentSet], params=None,
                      progress: Progress = None) -> RadiomicsResult:
    """Run pyradiomics on every segment of ``segments`` over every image of ``images``.

    Parameters
    ----------
    images : dict name -> path | Volume | SimpleITK.Image
        One or several images (e.g. ``{"original": ..., "normalized": ..., "reference": ...}``);
        the first is the comparison's reference.
    segments : path or SegmentSet
        A labelmap (each nonzero value = one segment) or a Slicer ``.seg.nrrd``.
    params : None, path or dict
        pyradiomics parameters; None = the CT preset ``Resources/Radiomics/CT.yaml``.
    progress : callable(stage, fraction), optional

    Returns
    -------
    RadiomicsResult

    Raises
    ------
    BadInputError
        Missing files, empty segments (also after resampling), or pyradiomics refusing
        a segment (too small); the message names the segment and image.
    """
    import SimpleITK as sitk
    import radiomics
    from radiomics import featureextractor

    from .provenance import clean_texture_warnings

    if not images:
        raise BadInputError("Give at least one image (NAME=PATH).")
    report = progress or (lambda stage, frac: None)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    segset = segments if isinstance(segments, SegmentSet) else load_segments(segments)
    params_arg, params_desc = _load_params(params)
    try:
        extractor = featureextractor.RadiomicsFeatureExtractor(params_arg)
    except Exception as exc:  # pykwalify schema errors and YAML errors
        raise BadInputError(f"Invalid radiomics params ({params_desc}): {exc}") from exc
    warnings: list = []
    rows: list = []
    paths: dict = {}
    names = list(images)
    total = len(names) * len(segset.segments)
    done = 0
    for name in names:
        image, paths[name], meta = _as_image(images[name], name)
        for w in clean_texture_warnings(meta, "its texture features and intensity spread describe a smoother image"):
            warnings.append({**w, "message": f"Image '{name}': {w['message']}"})
        layers = _layers_on(segset, image, name, warnings)
        for seg in segset.segments:
            report(f"radiomics {seg.name} on {name}", done / max(total, 1))
            mask = layers[seg.layer]
            try:
                result = extractor.execute(image, mask, label=seg.label)
            except (ValueError, AssertionError, RuntimeError) as exc:
                raise BadInputError(f"pyradiomics could not process segment '{seg.name}' on image '{name}': "
                                    f"{exc}") from exc
            for key, val in result.items():
                if key.startswith("diagnostics_"):
                    continue
                num = _number(val)
                if num is None:
                    continue
                rows.append({"segment": seg.name, "label": seg.label, "image": name, "feature": key, "value": num})
            done += 1
    report("radiomics", 1.0)
    provenance = {
        "params_path": params_desc,
        "settings": dict(extractor.settings),
        "image_types": dict(extractor.enabledImagetypes),
        "feature_classes": {k: list(v) if v else [] for k, v in extractor.enabledFeatures.items()},
        "pyradiomics_version": radiomics.__version__,
        "engine_version": __version__,
        "images": paths,
        "segments": segset.source,
        "segment_list": [{"name": s.name, "label": s.label, "layer": s.layer} for s in segset.segments],
    }
    # de-duplicate identical warnings (one per image and layer is enough)
    seen, uniq = set(), []
    for w in warnings:
        if w["message"] not in seen:
            seen.add(w["message"])
            uniq.append(w)
    return RadiomicsResult(rows=rows, image_names=names, provenance=provenance, warnings=uniq)
