"""What the DICOM tags say about a protocol (priors of the plan)."""

import numpy as np
import pytest

from CTNormalizeLib import Volume
from CTNormalizeLib.io import read_volume
from CTNormalizeLib.protocols.detect import protocol_from_tags, tag_number


def test_ct_small_tags(ct_small_path):
    vol = read_volume(ct_small_path, validate=False)
    p = protocol_from_tags(vol.meta, float(vol.spacing[0]))
    assert (p.kernel, p.kernel_name) == ("standard", "STANDARD")
    assert p.thickness == 5.0 and p.sources["thickness"].source == "tag"
    assert p.mas == 170 and p.sources["mas"].source == "tag" and "Exposure" in p.sources["mas"].detail
    assert p.ctdivol is None and p.sources["ctdivol"].source == "unknown"
    assert p.spacing == 5.0
    # no tag is a dose fraction: the plan measures the noise instead
    assert p.dose is None and p.sources["dose"].source == "unknown"
    for name in ("kernel", "thickness", "spacing", "mas", "ctdivol", "dose"):
        s = p.sources[name]
        assert 0.0 <= s.confidence <= 1.0 and s.detail


def test_no_tags():
    p = protocol_from_tags({}, 2.0)
    assert p.kernel is None and p.sources["kernel"].source == "unknown"
    assert p.thickness is None and p.sources["thickness"].source == "unknown"
    assert p.spacing == 2.0 and p.sources["spacing"].source == "image"


def test_unknown_vendor_kernel_keeps_the_name():
    p = protocol_from_tags({"ConvolutionKernel": "STANDRD", "SliceThickness": "2"}, 2.0)
    assert p.kernel is None and p.kernel_name == "STANDRD"
    assert p.sources["kernel"].confidence <= 0.2 and "STANDARD" in p.sources["kernel"].detail


def test_mas_from_current_and_time_and_ctdivol():
    p = protocol_from_tags({"XRayTubeCurrent": "200", "ExposureTime": "500"}, 1.0)
    assert p.mas == pytest.approx(100.0) and p.sources["mas"].confidence < 0.9
    p = protocol_from_tags({"CTDIvol": "4.5"}, 1.0)
    assert p.ctdivol == 4.5 and p.sources["ctdivol"].source == "tag"


def test_spacing_tag_disagreement_is_noted():
    p = protocol_from_tags({"SpacingBetweenSlices": "3"}, 2.0)
    assert p.spacing == 2.0 and "SpacingBetweenSlices tag says 3" in p.sources["spacing"].detail


@pytest.mark.parametrize("text,expected", [("2.5", 2.5), ("1\\2", 1.0), ("0", None), ("-1", None),
                                           ("nan", None), ("abc", None), (None, None)])
def test_tag_number(text, expected):
    assert tag_number({"X": text} if text is not None else {}, "X") == expected


def test_an_axial_scan_has_rectangular_slices():
    p = protocol_from_tags({"SliceThickness": "3", "AcquisitionType": "SEQUENCED"}, 3.0)
    assert p.profile == "rect" and p.sources["profile"].source == "tag" and p.ssp_fwhm < 2.1
    assert p.spec() == "thickness=3,profile=rect,spacing=3"
    for helical in ({"SliceThickness": "3", "AcquisitionType": "SPIRAL"}, {"SliceThickness": "3"},
                    {"SliceThickness": "3", "AcquisitionType": "SEQUENCED", "SpiralPitchFactor": "1"},
                    {"AcquisitionType": "SEQUENCED"}):
        assert protocol_from_tags(helical, 3.0).profile is None, helical


def test_a_helical_scan_says_where_its_profile_comes_from():
    """info showed no profile row for a helical series (profile None): now the Gaussian profile is shown,
    from the AcquisitionType tag or assumed, with how to say otherwise."""
    spiral = protocol_from_tags({"SliceThickness": "3", "AcquisitionType": "SPIRAL"}, 3.0)
    assert spiral.profile is None and spiral.sources["profile"].source == "tag"
    untagged = protocol_from_tags({"SliceThickness": "3"}, 3.0)
    assert untagged.sources["profile"].source == "default" and "profile=rect" in untagged.sources["profile"].detail
    assert "profile" not in protocol_from_tags({}, 3.0).sources  # no thickness: no profile to speak of


def test_info_shows_the_profile_of_a_helical_series(tmp_path, pyradiomics_data):
    from CTNormalizeLib import testdata
    from CTNormalizeLib.cli.cmd_info import collect, format_text

    testdata.lung1_series(tmp_path / "s", slices=4)
    row = [line for line in format_text(collect(tmp_path / "s")[0]).splitlines()
           if line.strip().startswith("profile")]
    assert row and row[0].split()[1:3] == ["gaussian", "default"], row
