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
