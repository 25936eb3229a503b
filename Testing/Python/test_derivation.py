"""The tags and provenance of a normalized output (contracts.derivation), written alike to volume files,
derived DICOM series and batch cases."""

import pytest

from CTNormalizeLib.contracts.derivation import Derivation

INPUT = {"ConvolutionKernel": "B70f", "SliceThickness": "1", "SpacingBetweenSlices": "1", "Exposure": "50",
         "CTDIvol": "2.1", "AcquisitionType": "SPIRAL", "KVP": "120", "source_path": "/in.nrrd", "warnings": []}


def _derivation(changes, source_thickness=1.0, target_thickness=3.0, **kw):
    return Derivation(method="m", model_sha256=None, source_spec="kernel=sharp,dose=0.25,thickness=1",
                      target_spec="kernel=smooth,dose=1,thickness=3", engine_version="x", source_kernel="sharp",
                      target_kernel="smooth", source_thickness=source_thickness, target_thickness=target_thickness,
                      texture="clean", changes=tuple(changes), **kw)


@pytest.mark.parametrize("source, target, changed, expected", [
    (1.0, 3.0, True, 3.0),    # thicker slices: the target's
    (5.0, 1.0, True, 5.0),    # thick -> thin interpolates: still 5 mm thick
    (1.0, 3.0, False, 1.0),   # a method that leaves the slices
    (None, None, True, 0.7),  # neither protocol says: the grid
])
def test_slice_thickness(source, target, changed, expected):
    d = _derivation(("kernel", "noise", "thickness") if changed else ("kernel",), source, target)
    assert d.slice_thickness(0.7) == pytest.approx(expected)


@pytest.mark.parametrize("changes, source, target, expected", [
    ((), 6.4, None, None),                   # slices left as they were: the estimate is not written
    (("thickness",), 6.4, 2.0, None),        # thick -> thin keeps the (estimated) source thickness: not written
    (("thickness",), 1.3, 3.0, 3.0),         # thicker slices: the target's, written
])
def test_a_thickness_read_from_the_pixels_is_no_tag(changes, source, target, expected):
    """An untagged scan's thickness estimated from its pixels (6.4 mm for a 5 mm scan with correlated noise)
    became the output's SliceThickness tag, which `info` then read back at full confidence as the scanner's."""
    d = Derivation(**{**_derivation(changes or ("kernel",), source, target).__dict__,
                      "source_thickness_measured": True})
    if not changes:
        d = Derivation(**{**d.__dict__, "changes": ("kernel",)})
    assert d.slice_thickness(1.0) == (None if expected is None else pytest.approx(expected))
    meta = d.output_meta({**INPUT, "SliceThickness": "6.4"}, 1.0)
    assert meta.get("SliceThickness") == (None if expected is None else f"{expected:g}")
    told = Derivation(**{**d.__dict__, "source_thickness_measured": False})  # a tag or the user's value
    assert told.slice_thickness(1.0) is not None


def test_the_report_says_where_the_source_thickness_came_from():
    from CTNormalizeLib.contracts.derivation import derivation_from_report

    def report(source):
        return {"plan": {"source": {"thickness": 6.4, "sources": {"thickness": {"source": source}}}, "target": {}}}

    assert derivation_from_report(report("image")).source_thickness_measured
    assert not derivation_from_report(report("tag")).source_thickness_measured
    assert not derivation_from_report(report("user")).source_thickness_measured


def test_output_meta_of_a_full_conversion():
    d = _derivation(("kernel", "noise", "thickness"))
    meta = d.output_meta(INPUT, 3.0)
    assert meta["ConvolutionKernel"] == "smooth" and meta["SliceThickness"] == "3"
    for gone in ("Exposure", "CTDIvol", "AcquisitionType", "SpacingBetweenSlices", "source_path", "warnings"):
        assert gone not in meta, gone
    assert meta["KVP"] == "120"
    assert meta["ctnormalize"] == "m kernel=sharp,dose=0.25,thickness=1 -> kernel=smooth,dose=1,thickness=3"
    assert meta["ctnormalize_texture"] == "clean"
    summary = Derivation(**{**d.__dict__, "summary": "a -> b [kernel MTF50 0.7 -> 0.3 c/mm]"})
    assert summary.output_meta(INPUT, 3.0)["ctnormalize"] == "m a -> b [kernel MTF50 0.7 -> 0.3 c/mm]"
    assert meta["ctnormalize_target"] == "kernel=smooth,dose=1,thickness=3"
    assert "ctnormalize_target_noise_hu" not in meta  # a report without the target's noise
    noisy = Derivation(**{**d.__dict__, "target_noise_hu": 6.4321}).output_meta(INPUT, 3.0)
    assert noisy["ctnormalize_target_noise_hu"] == "6.432"


def test_output_meta_of_a_method_that_only_sharpens_keeps_the_acquisition():
    d = _derivation(("kernel",))
    meta = d.output_meta(INPUT, 1.0)
    assert meta["ConvolutionKernel"] == "smooth" and meta["SliceThickness"] == "1"
    assert meta["Exposure"] == "50" and meta["AcquisitionType"] == "SPIRAL"
    assert meta["ctnormalize_target"] == "kernel=smooth,dose=1,thickness=3"  # the run's target, as asked
    kept = _derivation(("noise",)).output_meta(INPUT, 1.0)
    assert kept["ConvolutionKernel"] == "B70f" and "Exposure" not in kept


def test_a_rectangular_target_reads_back_as_an_axial_scan():
    meta = _derivation(("kernel", "noise", "thickness"), target_profile="rect").output_meta(INPUT, 3.0)
    assert meta["AcquisitionType"] == "SEQUENCED"


def test_a_derived_volume_is_another_series_and_keeps_only_tags_that_still_hold():
    """The NRRD of an mtf_ratio run kept the input's SeriesInstanceUID; a method that leaves the kernel wrote
    the measured class as if it were a tag; one that leaves the slices used the target's thickness."""
    meta = _derivation(("kernel",)).output_meta({**INPUT, "SeriesInstanceUID": "1.2.3", "SeriesDescription": "x"},
                                                1.0)
    assert "SeriesInstanceUID" not in meta and "SeriesDescription" not in meta
    untagged = {k: v for k, v in INPUT.items() if k != "ConvolutionKernel"}
    assert "ConvolutionKernel" not in _derivation(("thickness",)).output_meta(untagged, 3.0)
    no_source = _derivation(("kernel",), source_thickness=None, target_thickness=3.0)
    assert no_source.slice_thickness(0.7) == pytest.approx(0.7)


def test_the_dicom_series_and_the_volume_file_carry_the_same_tags(tmp_path):
    """One rule for both writers: dose and acquisition tags kept while the method leaves noise and slices."""
    import numpy as np

    from CTNormalizeLib import Volume
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.io.dicom_write import write_derived_series

    vol = Volume(np.full((4, 32, 32), -1000.0, np.float32), (1.0, 0.7, 0.7),
                 meta={**{k: v for k, v in INPUT.items() if k not in ("source_path", "warnings")}, "Modality": "CT"})
    d = _derivation(("kernel",))
    out = vol.with_array(vol.hu.copy())
    out.meta = d.output_meta(vol.meta, 1.0)
    write_derived_series(out, tmp_path / "dcm", vol, d)
    back = read_volume(tmp_path / "dcm")
    for tag in ("ConvolutionKernel", "SliceThickness", "Exposure", "CTDIvol", "AcquisitionType"):
        assert float(back.meta[tag]) == float(out.meta[tag]) if tag in ("SliceThickness", "Exposure", "CTDIvol") \
            else back.meta[tag] == out.meta[tag], tag
    assert back.meta["ctnormalize_target"] == out.meta["ctnormalize_target"]


def test_the_library_output_carries_the_same_tags_as_the_files(tmp_path):
    """normalize() in Python tagged a thick -> thin output 1 mm thick under a 'CTNormalize' key of its own."""
    import numpy as np

    from CTNormalizeLib import Volume, normalize

    rng = np.random.default_rng(0)
    vol = Volume((rng.normal(0, 20, (6, 48, 48)) - 500).astype(np.float32), (5.0, 0.8, 0.8),
                 meta={"Modality": "CT", "SliceThickness": "5"})
    out = normalize(vol, "kernel=standard,thickness=5", "thickness=1", method="z_profile").volume
    assert out.meta["SliceThickness"] == "5" and "CTNormalize" not in out.meta
    assert out.meta["ctnormalize"].startswith("z_profile") and out.meta["ctnormalize_texture"] == "source"
