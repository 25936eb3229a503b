"""Protocols: spec strings, presets, vendor kernel table, unknown-kernel messages, kernel MTFs."""

import numpy as np
import pytest

from CTNormalizeLib import BadInputError
from CTNormalizeLib.protocols.kernels import KERNEL_MTF
from CTNormalizeLib.protocols import (KERNEL_CLASSES, FieldSource, Protocol, kernel_class, kernel_mtf,
                                      known_kernel_names, load_presets, mtf50, parse_spec, resolve_protocol)


# ----------------------------------------------------------------------------- specs

def test_parse_spec_full():
    p = parse_spec("kernel=sharp,dose=0.25,thickness=2")
    assert (p.kernel, p.dose, p.thickness, p.kernel_name, p.spacing) == ("sharp", 0.25, 2.0, None, None)
    assert p.z_spacing == 2.0
    assert set(p.sources) == {"kernel", "dose", "thickness"}
    assert all(s.source == "user" and s.confidence == 1.0 for s in p.sources.values())


def test_vector_defaults_unknown_dose_and_thickness_to_one():
    assert Protocol(kernel="sharp").vector() == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert Protocol(kernel="smooth", dose=0.5, thickness=3.0).vector() == [1.0, 0.0, 0.0, 0.0, 0.5, 3.0]


def test_to_dict_has_every_field_and_its_source():
    import json

    d = parse_spec("kernel=B70f,dose=25%").to_dict()
    assert d == {"kernel": "very-sharp", "kernel_name": "B70f", "dose": 0.25, "mas": None, "ctdivol": None,
                 "thickness": None, "spacing": None, "profile": None,
                 "sources": {"kernel": {"source": "user", "confidence": 1.0, "detail": "kernel=B70f"},
                             "dose": {"source": "user", "confidence": 1.0, "detail": "dose=25%"}}}
    assert json.loads(json.dumps(d)) == d


def test_parse_spec_units_only_where_they_belong():
    assert parse_spec("spacing=1.5mm").spacing == 1.5 and parse_spec("thickness=0.6 mm").thickness == 0.6
    assert parse_spec("dose=4").dose == 4.0  # the top of the range is accepted
    for bad in ("dose=0.25mm", "mas=100mm", "dose=4.5"):
        with pytest.raises(BadInputError):
            parse_spec(bad)


@pytest.mark.parametrize("name, cls", [("B29f", "smooth"), ("B30f", "standard"), ("B44f", "standard"),
                                       ("B45f", "sharp"), ("Br64", "sharp"), ("B65f", "very-sharp")])
def test_siemens_numbers_at_the_class_boundaries(name, cls):
    assert kernel_class(name) == cls


def test_parse_spec_vendor_units_and_spaces():
    p = parse_spec(" kernel = B70f , dose=25% , thickness=2mm, spacing=1.5, mas=100, ctdivol=3.2 ")
    assert (p.kernel, p.kernel_name) == ("very-sharp", "B70f")
    assert p.dose == pytest.approx(0.25) and p.thickness == 2.0 and p.spacing == 1.5
    assert p.mas == 100 and p.ctdivol == 3.2 and p.z_spacing == 1.5


def test_spec_round_trip():
    for spec in ("kernel=smooth,dose=1,thickness=1", "kernel=B30f,dose=0.5,thickness=3,spacing=2",
                 "kernel=sharp,dose=0.25,thickness=2"):
        p = parse_spec(spec)
        assert parse_spec(p.spec()) == p and p.spec() == spec  # printed exactly as written
    p = parse_spec("kernel=sharp,dose=25%,thickness=2mm")
    assert p.dose == 0.25 and p.spec() == "kernel=sharp,dose=0.25,thickness=2"
    assert p.vector()[-2:] == [0.25, 2.0]


@pytest.mark.parametrize("spec, words", [
    ("", "Empty"),
    ("kernel", "key=value"),
    ("colour=red", "Unknown protocol key"),
    ("dose=-1", "dose"),
    ("dose=0", "dose"),
    ("dose=0%", "dose"),
    ("thickness=0", "thickness"),
    ("thickness=0mm", "thickness"),
    ("spacing=0", "spacing"),
    ("thickness=-2", "thickness"),
    ("dose=0.001", "physical range 0.01 to 4"),
    ("thickness=inf", "physical range 0.1 to 20 mm"),
    ("dose=10", "fraction"),
    ("thickness=abc", "not a number"),
    ("kernel=XYZ", "Unknown kernel"),
])
def test_parse_spec_errors(spec, words):
    with pytest.raises(BadInputError, match=words):
        parse_spec(spec)


def test_merged_and_vector():
    a = parse_spec("kernel=sharp,dose=0.25,thickness=2")
    b = Protocol(dose=1.0, sources={"dose": FieldSource("preset", 1.0, "x")})
    m = a.merged(b)
    assert (m.kernel, m.dose, m.thickness) == ("sharp", 1.0, 2.0)
    assert m.sources["dose"].source == "preset" and m.sources["kernel"].source == "user"
    v = m.vector()
    assert len(v) == len(KERNEL_CLASSES) + 2 and v[KERNEL_CLASSES.index("sharp")] == 1.0 and sum(v[:4]) == 1.0


# ----------------------------------------------------------------------------- presets

def test_presets_load_and_resolve():
    presets = load_presets()
    assert "emphysema-reference" in presets
    for name, preset in presets.items():
        p = preset.protocol
        assert p.kernel in KERNEL_CLASSES and p.dose and p.thickness
        assert all(s.source == "preset" and s.detail == name for s in p.sources.values())
        assert resolve_protocol(name) == p
    e = resolve_protocol("emphysema-reference")
    assert (e.kernel, e.dose, e.thickness) == ("smooth", 1.0, 1.0)
    assert resolve_protocol("kernel=standard,thickness=2").thickness == 2.0


def test_unknown_preset_lists_presets():
    with pytest.raises(BadInputError) as info:
        resolve_protocol("emphysema")
    assert "emphysema-reference" in info.value.message
    for typo in ("emphysema-refrence", "emphysema-refrence,thickness=5"):
        with pytest.raises(BadInputError, match="Did you mean 'emphysema-reference'"):
            resolve_protocol(typo)


def test_preset_names_are_read_whatever_their_case():
    assert resolve_protocol("Emphysema-Reference") == resolve_protocol("emphysema-reference")
    assert resolve_protocol("EMPHYSEMA-REFERENCE,thickness=5").thickness == 5
    assert resolve_protocol(",kernel=smooth,dose=1").kernel == "smooth"  # an empty first part, as before


# ----------------------------------------------------------------------------- vendor names

@pytest.mark.parametrize("name, cls", [
    ("B10f", "smooth"), ("B30f", "standard"), ("B31f", "standard"), ("B45f", "sharp"), ("B70f", "very-sharp"),
    ("Br40 d 3", "standard"), ("Br64", "sharp"), ("Bl57", "sharp"), ("I26f", "smooth"), ("I70f", "very-sharp"),
    ("B30f\\XYZ", "standard"),
    ("STANDARD", "standard"), ("standard", "standard"), ("SOFT", "smooth"), ("LUNG", "sharp"), ("BONE", "very-sharp"),
    ("A", "smooth"), ("YA", "standard"), ("YC", "sharp"), ("L", "sharp"),
    ("FC01", "smooth"), ("FC13", "standard"), ("FC52", "sharp"), ("FC86", "very-sharp"),
    ("very_sharp", "very-sharp"), ("Smooth", "smooth"),
])
def test_vendor_kernels(name, cls):
    assert kernel_class(name) == cls


def test_every_known_name_maps_to_a_class():
    for name in known_kernel_names():
        assert kernel_class(name) in KERNEL_CLASSES


@pytest.mark.parametrize("name, suggestion", [("STANDRD", "'STANDARD'"), ("shrp", "'sharp'"), ("FC5", "'FC5")])
def test_unknown_kernel_lists_known_and_suggests_closest(name, suggestion):
    with pytest.raises(BadInputError) as info:
        kernel_class(name)
    msg = info.value.message
    hint, known = msg.split("Known classes")
    assert "Did you mean" in hint and suggestion in hint
    for cls in KERNEL_CLASSES:
        assert cls in known
    assert "STANDARD" in known and "FC52" in known and "Siemens" in known


def test_empty_kernel_name():
    with pytest.raises(BadInputError, match="Empty"):
        kernel_class("  ")


# ----------------------------------------------------------------------------- MTF

F = np.linspace(0.0, 2.5, 2501)


@pytest.mark.parametrize("k", KERNEL_CLASSES)
def test_mtf_shape(k):
    w = kernel_mtf(k, F)
    assert w[0] == pytest.approx(1.0)
    assert np.all(w >= 0) and w[-1] < 1e-2
    assert w[np.searchsorted(F, mtf50(k))] <= 0.5 + 1e-3
    p = KERNEL_MTF[k]
    gauss = np.exp(-np.log(2) * (F / p.f50) ** 2)
    if p.boost == 0:  # no edge enhancement: a monotone Gaussian roll-off
        assert np.all(np.diff(w) <= 1e-12)
        np.testing.assert_allclose(w, gauss)
    else:  # edge enhancement lifts mid frequencies above the plain roll-off
        assert np.all(w >= gauss - 1e-12) and np.max(w - gauss) > 0.1


@pytest.mark.parametrize("k", KERNEL_CLASSES)
def test_mtf_follows_the_documented_formula(k):
    """``W = exp(-ln2 r^2) (1 + boost r^2 exp(1 - r^2))``, r = f/f50: known values at r = 1 and r = sqrt(2)."""
    p = KERNEL_MTF[k]
    assert kernel_mtf(k, [p.f50])[0] == pytest.approx((1 + p.boost) / 2, rel=1e-12)
    assert kernel_mtf(k, [np.sqrt(2) * p.f50])[0] == pytest.approx((1 + 2 * p.boost / np.e) / 4, rel=1e-12)
    assert kernel_mtf(k, [-p.f50])[0] == kernel_mtf(k, [p.f50])[0]  # depends on |f|


def test_very_sharp_overshoots():
    assert kernel_mtf("very-sharp", F).max() > 1.02  # edge enhancement overshoot


def test_mtf_ordered_by_sharpness():
    m = [mtf50(k) for k in KERNEL_CLASSES]
    assert m == sorted(m) and len(set(m)) == 4
    curves = [kernel_mtf(k, F) for k in KERNEL_CLASSES]
    for softer, sharper in zip(curves, curves[1:]):
        assert np.all(sharper >= softer - 1e-12)  # a sharper class passes at least as much at every f


def test_mtf_accepts_vendor_names():
    np.testing.assert_array_equal(kernel_mtf("B70f", F), kernel_mtf("very-sharp", F))
    assert mtf50("STANDARD") == mtf50("standard")


@pytest.mark.parametrize("kernel", KERNEL_CLASSES)
def test_mtf50_is_where_the_mtf_crosses_one_half(kernel):
    """To 1e-3 c/mm: a coarse frequency grid (or a wrong end of it) moves the crossing the kernel table prints."""
    from scipy.optimize import brentq

    from CTNormalizeLib.protocols.kernels import mtf50

    f = np.linspace(0.0, 3.0, 3001)
    first_below = f[np.argmax(kernel_mtf(kernel, f) < 0.5)]
    exact = brentq(lambda x: float(kernel_mtf(kernel, np.array([x]))[0]) - 0.5, first_below - 1e-3, first_below)
    assert mtf50(kernel) == pytest.approx(exact, abs=1e-3)


def test_a_kernel_name_the_pixels_contradict_is_not_printed_as_the_kernel():
    """A tag B70f (very sharp) on a scan whose pixels read smooth: the plan uses smooth, and its spec (the
    derivation, the report, the DICOM description) said kernel=B70f."""
    from CTNormalizeLib.protocols.protocol import Protocol

    assert Protocol(kernel="smooth", kernel_name="B70f").spec() == "kernel=smooth"
    assert Protocol(kernel="very-sharp", kernel_name="B70f").spec() == "kernel=B70f"
    assert Protocol(kernel="standard", kernel_name="NOTAKERNEL").spec() == "kernel=standard"


@pytest.mark.parametrize("spec", ["kernel=smooth,kernel=sharp", "dose=1,thickness=2,dose=0.25", "kernel=smooth,KERNEL=smooth"])
def test_a_key_given_twice_is_refused(spec):
    from CTNormalizeLib.protocols.protocol import parse_spec

    with pytest.raises(BadInputError, match="given twice"):
        parse_spec(spec)


@pytest.mark.parametrize("name, cls", [("B30f", "standard"), ("b30f", "standard"), ("Br40d", "standard"),
                                       ("Br40 d 3", "standard"), ("I70h", "very-sharp"), ("Qr36d", "standard"),
                                       ("B45", "sharp"), ("B10s", "smooth"), ("B90u", "very-sharp"),
                                       ("Br98", "very-sharp")])
def test_siemens_names_map_by_their_number(name, cls):
    from CTNormalizeLib.protocols import kernel_class

    assert kernel_class(name) == cls


@pytest.mark.parametrize("name", ["B99x", "B05f", "B30x", "B30fx", "Br100"])
def test_made_up_siemens_names_are_refused(name):
    """A number outside Siemens' 10-99 or a suffix Siemens does not use is not read as a kernel (B99x was
    accepted as very-sharp, silently)."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.protocols import kernel_class

    with pytest.raises(BadInputError, match="Unknown kernel"):
        kernel_class(name)


def test_a_preset_takes_overrides():
    """``emphysema-reference,thickness=5``: the preset's kernel and dose, the user's thickness (a 5 mm scan
    harmonized in kernel and dose without being made 1 mm thick); a bad override is refused."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.protocols import resolve_protocol

    base = resolve_protocol("emphysema-reference")
    p = resolve_protocol("emphysema-reference, thickness=5")
    assert (p.kernel, p.dose, p.thickness) == (base.kernel, base.dose, 5.0)
    assert p.sources["thickness"].source == "user" and p.sources["kernel"].source == "preset"
    with pytest.raises(BadInputError, match="Unknown protocol key"):
        resolve_protocol("emphysema-reference,foo=1")
    with pytest.raises(BadInputError, match="not first"):
        resolve_protocol("thickness=5,emphysema-reference")
