"""DICOM out: a derived CT series from ``normalize``, read back with pydicom and SimpleITK; DICOM SEG."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CTNormalizeLib import __version__

TARGET = "kernel=smooth,dose=1"


def _run(args):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", *args], capture_output=True, text=True,
                          timeout=300)


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _series(folder: Path) -> list:
    """The slices of a folder, sorted by position along z (pydicom)."""
    ds = [pydicom.dcmread(str(f)) for f in folder.iterdir()]
    return sorted(ds, key=lambda d: float(d.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def lung1_dicom(tmp_path_factory, pyradiomics_data) -> Path:
    from CTNormalizeLib import testdata

    folder = tmp_path_factory.mktemp("lung1") / "series"
    testdata.lung1_series(folder, slices=8)
    return folder


@pytest.fixture(scope="module")
def normalized(lung1_dicom, tmp_path_factory):
    """One run to DICOM and the same run to NRRD, with the JSON events of the DICOM run."""
    out = tmp_path_factory.mktemp("norm")
    before = _tree_hash(lung1_dicom)
    r = _run(["normalize", str(lung1_dicom), "-o", str(out / "dcm"), "--output-format", "dicom",
              "--target", TARGET, "--method", "auto", "--progress", "json"])
    assert r.returncode == 0, r.stderr
    r2 = _run(["normalize", str(lung1_dicom), "-o", str(out / "out.nrrd"), "--target", TARGET, "--method", "auto",
               "--progress", "none"])
    assert r2.returncode == 0, r2.stderr
    assert _tree_hash(lung1_dicom) == before, "the input series was modified"
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return out, events


def test_values_equal_nrrd_within_1hu_and_sitk_reads_it(normalized):
    out, events = normalized
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(out / "dcm"))
    reader.SetFileNames(files)
    dicom_img = reader.Execute()
    nrrd_img = sitk.ReadImage(str(out / "out.nrrd"))
    a = sitk.GetArrayFromImage(dicom_img).astype(np.float64)
    b = sitk.GetArrayFromImage(nrrd_img).astype(np.float64)
    assert a.shape == b.shape == (8, 128, 128)
    assert np.max(np.abs(a - b)) <= 1.0
    assert np.std(b) > 100  # a real image, not a constant
    assert np.allclose(dicom_img.GetSpacing(), nrrd_img.GetSpacing(), atol=1e-4)
    assert np.allclose(dicom_img.GetOrigin(), nrrd_img.GetOrigin(), atol=1e-3)
    assert np.allclose(dicom_img.GetDirection(), nrrd_img.GetDirection(), atol=1e-6)
    assert events[-1]["event"] == "done" and Path(events[-1]["output"]) == (out / "dcm").resolve()
    assert not list(out.glob(".*tmp*"))


def test_engine_reads_the_series_back_and_detects_the_target(normalized):
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.protocols.detect import protocol_from_tags

    out, _ = normalized
    vol = read_volume(out / "dcm")
    ref = read_volume(out / "out.nrrd")
    assert np.max(np.abs(vol.hu - ref.hu)) <= 1.0
    proto = protocol_from_tags(vol.meta, vol.spacing[0])
    assert proto.kernel == "smooth" and proto.thickness == pytest.approx(5.0)
    # the same provenance as the NRRD header's: what info shows and quantification warns on
    assert vol.meta["ctnormalize_texture"] == ref.meta["ctnormalize_texture"] == "clean"
    assert TARGET in vol.meta["ctnormalize"]
    # the target the output reached, in both; the NRRD's tags follow the series' rules (kernel, thickness)
    assert vol.meta["ctnormalize_target"] == ref.meta["ctnormalize_target"] != ""
    assert vol.meta["ctnormalize"] == ref.meta["ctnormalize"]  # the same label, the MTF50s included
    for tag in ("ConvolutionKernel", "SliceThickness"):
        assert ref.meta[tag] == vol.meta[tag], tag
    assert proto.profile in (None, "gaussian") and "AcquisitionType" not in vol.meta


def test_every_tag(normalized, lung1_dicom):
    out, events = normalized
    src = _series(lung1_dicom)
    der = _series(out / "dcm")
    report = events[-1]["report"]
    assert report["output_type"] == "int16"  # a derived series stores int16
    assert len(der) == len(src) == 8
    src_uids = {d.SOPInstanceUID for d in src}
    sops = [d.SOPInstanceUID for d in der]
    assert len(set(sops)) == 8 and not set(sops) & src_uids
    assert len({d.SeriesInstanceUID for d in der}) == 1
    for k, (d, s) in enumerate(zip(der, src)):
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and d.Modality == "CT"
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        # int16 with rescale
        assert d.BitsAllocated == 16 and d.PixelRepresentation == 1 and d.pixel_array.dtype == np.int16
        assert "RescaleSlope" in d and "RescaleIntercept" in d
        # the input's study, patient, frame of reference and geometry
        for tag in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "AccessionNumber", "FrameOfReferenceUID", "BodyPartExamined", "KVP"):
            assert d.get(tag) == s.get(tag), tag
        assert np.allclose([float(v) for v in d.ImagePositionPatient], [float(v) for v in s.ImagePositionPatient])
        assert np.allclose([float(v) for v in d.ImageOrientationPatient], [float(v) for v in s.ImageOrientationPatient])
        assert np.allclose([float(v) for v in d.PixelSpacing], [float(v) for v in s.PixelSpacing])
        assert (d.Rows, d.Columns) == (s.Rows, s.Columns)
        # new series, derived
        assert d.SeriesInstanceUID != s.SeriesInstanceUID
        assert list(d.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert d.SeriesDescription == f"{s.SeriesDescription} [CTNormalize → {report['plan']['target_spec']}]"
        desc = d.DerivationDescription
        for part in (report["method"], report["plan"]["source_spec"], report["plan"]["target_spec"], __version__):
            assert part in desc
        codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in d.DerivationCodeSequence]
        assert ("113087", "DCM") in codes  # the clean texture: a denoised (smoothed) image
        refs = [r.ReferencedSOPInstanceUID for r in d.SourceImageSequence]
        assert refs == [s.SOPInstanceUID]  # same z grid: each slice comes from its input slice
        assert d.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        # the target
        assert d.ConvolutionKernel == "smooth"
        assert float(d.SliceThickness) == pytest.approx(report["plan"]["target"]["thickness"])
        assert "not for diagnosis" in d.ImageComments
        assert d.InstanceNumber == k + 1


def test_model_sha256_in_the_description():
    from CTNormalizeLib.io.dicom_write import derivation_from_report

    report = {"method": "ctn-x", "model_sha256": "ab" * 32, "engine_version": "9.9", "texture": "target",
              "plan": {"source_spec": "kernel=sharp,dose=0.25", "target_spec": "kernel=smooth,dose=1",
                       "source": {"kernel": "sharp"}, "target": {"kernel": "smooth", "thickness": 1.0}}}
    der = derivation_from_report(report)
    text = der.description("series 1.2.3")
    for part in ("ctn-x", "ab" * 32, "9.9", "series 1.2.3", "kernel=sharp,dose=0.25", "kernel=smooth,dose=1"):
        assert part in text
    assert der.target_kernel == "smooth" and der.target_thickness == 1.0 and ", target texture" in text
    report.update(method="mtf_ratio", model_sha256=None, texture="source", changes=["kernel"])
    text = derivation_from_report(report).description()  # a kernel-only method: not called any texture
    assert "noise not removed or replaced" in text and "source texture" not in text


def test_from_nrrd_a_new_study_without_patient_data(normalized, tmp_path):
    out, _ = normalized
    r = _run(["normalize", str(out / "out.nrrd"), "-o", str(tmp_path / "series") + "/", "--target",
              "kernel=smooth,thickness=10", "--source", "kernel=B31f", "--method", "auto",
              "--progress", "json"])
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert any(e["event"] == "warning" and e["code"] == "NO_PATIENT_DATA" for e in events)
    der = _series(tmp_path / "series")
    assert len(der) == 4  # 8 x 5 mm -> 10 mm slices
    assert len({d.StudyInstanceUID for d in der}) == 1 and len({d.FrameOfReferenceUID for d in der}) == 1
    d = der[0]
    assert str(d.PatientName) == "" and d.PatientID == ""
    assert "without patient data" in d.ImageComments and "not for diagnosis" in d.ImageComments
    assert "SourceImageSequence" not in d
    assert float(d.SliceThickness) == pytest.approx(10.0) and float(d.SpacingBetweenSlices) == pytest.approx(10.0)
    assert ("113085", "DCM") in [(c.CodeValue, c.CodingSchemeDesignator) for c in d.DerivationCodeSequence]


def test_provenance_survives_an_implicit_vr_copy(normalized, tmp_path):
    """A PACS or storescp copy in implicit VR turns the private elements into UN bytes: still read as text."""
    from pydicom.uid import ImplicitVRLittleEndian

    from CTNormalizeLib.io import read_volume

    out, _ = normalized
    copy = tmp_path / "implicit"
    copy.mkdir()
    for f in sorted((out / "dcm").iterdir()):
        ds = pydicom.dcmread(str(f))
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(str(copy / f.name), enforce_file_format=True, implicit_vr=True, little_endian=True)
    again = pydicom.dcmread(str(next(copy.iterdir())), force=True)
    assert any(e.VR == "UN" for e in again if e.tag.group == 0x0071 and e.tag.element > 0xFF)
    vol = read_volume(copy)
    assert vol.meta["ctnormalize_texture"] == "clean" and vol.meta["ctnormalize"].startswith("ctn-")


def test_thick_to_thin_keeps_the_true_thickness_in_the_tags(normalized, tmp_path):
    """5 mm slices interpolated to 1 mm spacing are still 5 mm thick: SliceThickness says 5, the spacing 1."""
    out, _ = normalized
    r = _run(["normalize", str(out / "out.nrrd"), "-o", str(tmp_path / "thin"), "--output-format", "dicom",
              "--target", "kernel=smooth,thickness=1", "--source", "kernel=B31f,thickness=5", "--method",
              "classical", "--progress", "none", "--report", str(tmp_path / "run.json")])
    assert r.returncode == 0, r.stderr
    d = _series(tmp_path / "thin")[0]
    assert float(d.SliceThickness) == pytest.approx(5.0) and float(d.SpacingBetweenSlices) == pytest.approx(1.0)
    # info compares it with the run's target and the noise the run set for it, read as that of the 1 mm
    # slices the run set it for, not of the 5 mm its tag names
    from CTNormalizeLib.cli.cmd_info import Comparison, _measure
    from CTNormalizeLib.io import read_volume

    run_noise = json.loads((tmp_path / "run.json").read_text())["plan"]["target_signature"]["noise_hu"]
    info = json.loads(_run(["info", str(tmp_path / "thin"), "--json"]).stdout)
    assert info["normalized_target"] == "kernel=smooth,thickness=1"
    noise = info["noise"]
    assert noise["target"] == "the target of the run that made it" and noise["noise_thickness_mm"] == 1.0
    assert noise["target_spec"] == "kernel=smooth,thickness=1" and info["signature"]["thickness_mm"] == 5.0
    assert noise["target_noise_from"] == "run" and noise["target_noise_hu"] == pytest.approx(run_noise, rel=1e-3)
    vol = read_volume(tmp_path / "thin")
    at = {mm: _measure(vol, Comparison("kernel=smooth,thickness=1", "x", run_noise, mm))[2]["noise_equivalent_dose"]
          for mm in (1.0, None)}
    assert at[1.0] == pytest.approx(noise["noise_equivalent_dose"]) and at[1.0] > 3 * at[None]  # 5 mm: a fifth


def test_an_output_whose_noise_the_run_left_is_read_as_it_is(normalized, tmp_path):
    """z_profile leaves the noise: its output carries no target noise, and info reads its noise at its own
    slices (it claimed the run had set 16 HU and read the scan at 308 % of the dose)."""
    out, _ = normalized
    r = _run(["normalize", str(out / "out.nrrd"), "-o", str(tmp_path / "z.nrrd"), "--target", "thickness=1",
              "--method", "z_profile", "--progress", "none"])
    assert r.returncode == 0, r.stderr
    info = json.loads(_run(["info", str(tmp_path / "z.nrrd"), "--json"]).stdout)
    assert info["normalized_texture"] == "source" and info["noise"]["target_noise_from"] == "nominal"
    assert info["noise"]["noise_thickness_mm"] == info["signature"]["thickness_mm"]
    assert info["noise"]["noise_equivalent_dose"] == pytest.approx(1.0, abs=0.05)  # "the same dose": itself


def test_a_rectangular_target_is_written_as_an_axial_series(normalized, tmp_path):
    """profile=rect: AcquisitionType SEQUENCED, so the series reads back with the profile it was made for."""
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.protocols.detect import protocol_from_tags

    out, _ = normalized
    r = _run(["normalize", str(out / "out.nrrd"), "-o", str(tmp_path / "series"), "--output-format", "dicom",
              "--target", "kernel=smooth,thickness=10,profile=rect", "--source", "kernel=B31f", "--method",
              "classical", "--texture", "target", "--progress", "none"])
    assert r.returncode == 0, r.stderr
    assert _series(tmp_path / "series")[0].AcquisitionType == "SEQUENCED"
    vol = read_volume(tmp_path / "series")
    assert protocol_from_tags(vol.meta, vol.spacing[0]).profile == "rect"
    assert vol.meta["ctnormalize_texture"] == "target" and "profile=rect" in vol.meta["ctnormalize"]


def test_a_method_that_leaves_the_kernel_keeps_the_source_kernel_tag(normalized, tmp_path):
    """z_profile changes only the slices: the series keeps the source's ConvolutionKernel (it was
    labelled with the target's kernel it never converted to) and claims no edge enhancement; and a
    series normalized again replaces the earlier ``[CTNormalize ...]`` suffix instead of stacking it."""
    out, _ = normalized
    first = _series(out / "dcm")[0]
    r = _run(["normalize", str(out / "dcm"), "-o", str(tmp_path / "z"), "--output-format", "dicom",
              "--target", "kernel=very-sharp,thickness=10", "--method", "z_profile", "--progress", "none"])
    assert r.returncode == 0, r.stderr
    d = _series(tmp_path / "z")[0]
    assert d.ConvolutionKernel == first.ConvolutionKernel == "smooth"
    assert float(d.SliceThickness) == pytest.approx(10.0)
    meanings = [c.CodeMeaning for c in d.get("DerivationCodeSequence", [])]
    assert "Edge enhancement" not in meanings and "Spatial resampling" in meanings
    assert d.SeriesDescription.count("[CTN") == 1 and d.SeriesDescription.endswith(
        "→ thickness=10]"), d.SeriesDescription  # what z_profile did, not the kernel it left


@pytest.mark.parametrize("original", ["Thorax 1.0 B70f routine lung window axial reconstruction s4",
                                      "lung1 [CTNormalize → kernel=sharp,thickness=5] [CTNor"])
@pytest.mark.parametrize("target", ["kernel=smooth,dose=1", "kernel=smooth,dose=0.25,thickness=1.25,profile=rect"])
def test_the_series_description_fits_without_cutting_the_target(original, target):
    from pydicom.dataset import Dataset

    from CTNormalizeLib.io.dicom_write import Derivation, _series_description
    from CTNormalizeLib.volume import Volume

    src = Dataset()
    src.SeriesDescription = original
    text = _series_description(src, Volume(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0)),
                               Derivation("classical", None, "kernel=sharp", target, __version__))
    assert len(text) <= 64 and text.count("[CTN") == 1, text
    # the target is always named (two normalizations to different targets must not read the same), and what
    # is left of the source's description is its start
    assert text.endswith((f"[CTNormalize → {target}]", f"[CTN → {target}]")), text
    head = text.split(" [CTN")[0].rstrip("…")
    assert head and original.startswith(head)


def test_folder_rules(lung1_dicom, tmp_path):
    before = _tree_hash(lung1_dicom)
    # the input folder itself, and a folder holding it, are refused
    for target in (lung1_dicom, lung1_dicom.parent):
        r = _run(["normalize", str(lung1_dicom), "-o", str(target), "--target", TARGET, "--progress", "none"])
        assert r.returncode == 2 and "never overwrites" in r.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = _run(["normalize", str(lung1_dicom), "-o", str(foreign), "--target", TARGET, "--progress", "none"])
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
    assert _tree_hash(lung1_dicom) == before


def test_atomic_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from CTNormalizeLib.io import dicom_write
    from CTNormalizeLib.volume import Volume

    vol = Volume(np.zeros((4, 16, 16), np.float32) - 1000, (2.0, 1.0, 1.0), meta={"source_format": "NRRD"})
    calls = []
    real = pydicom.dataset.Dataset.save_as

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing)
    der = dicom_write.derivation_from_report({"method": "x", "plan": {"source_spec": "a", "target_spec": "b"}})
    with pytest.raises(OSError):
        dicom_write.write_derived_series(vol, tmp_path / "series", vol, der)
    assert list(tmp_path.iterdir()) == []


def test_encode_hu_beyond_int16():
    from CTNormalizeLib.io.dicom_write import encode_hu

    hu = np.array([-1024.0, 0.0, 50000.0, -40000.0], np.float32)
    stored, slope, intercept = encode_hu(hu)
    assert stored.dtype == np.int16 and slope > 1
    assert np.max(np.abs(stored * slope + intercept - hu)) <= slope / 2 + 1e-6
    stored, slope, intercept = encode_hu(np.array([-1000.4, 12.6], np.float32))
    assert (slope, intercept) == (1.0, 0.0) and stored.tolist() == [-1000, 13]


def test_dicom_seg_of_lungs_and_emphysema(lung1_dicom, tmp_path):
    import highdicom as hd

    r = _run(["emphysema", str(lung1_dicom), "--dicom-seg", str(tmp_path / "lungs.seg.dcm"),
              "--mask-out", str(tmp_path), "--json"])
    assert r.returncode == 0, r.stderr
    seg = hd.seg.segread(str(tmp_path / "lungs.seg.dcm"))
    src = _series(lung1_dicom)
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    types = {d.segment_number: (d.segmented_property_type.value, d.segmented_property_type.scheme_designator)
             for d in seg.SegmentSequence}
    assert types == {1: ("3341006", "SCT"), 2: ("44029006", "SCT"), 3: ("87433001", "SCT")}
    cats = {d.segment_number: d.segmented_property_category.value for d in seg.SegmentSequence}
    assert cats == {1: "91723000", 2: "91723000", 3: "49755003"}
    lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "series_lung.nrrd")))
    emph = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "series_emphysema.nrrd")))
    assert emph.any() and (lungs == 1).any() and (lungs == 2).any()
    uids = [s.SOPInstanceUID for s in src]
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    assert px.shape == (8, 128, 128, 3)
    assert np.array_equal(px[..., 0] > 0, lungs == 1)
    assert np.array_equal(px[..., 1] > 0, lungs == 2)
    assert np.array_equal(px[..., 2] > 0, emph > 0)


def test_dicom_seg_needs_dicom_input(normalized, tmp_path):
    out, _ = normalized
    r = _run(["emphysema", str(out / "out.nrrd"), "--dicom-seg", str(tmp_path / "x.dcm")])
    assert r.returncode == 2 and "DICOM series" in r.stderr
    assert not (tmp_path / "x.dcm").exists()


def test_slices_interpolated_over_missing_input_slices_cite_both_neighbours(tmp_path):
    """A series missing its 8-12 mm slices, read with --allow-missing-slices: the output slices in the gap
    were cited as made from the nearest input slice only; they are interpolated from the slices on both
    sides, and say so."""
    from test_io import write_dicom_series

    write_dicom_series(tmp_path / "in", positions=[0, 2, 4, 6, 14, 16, 18], size=96)
    by_uid = {pydicom.dcmread(str(f)).SOPInstanceUID: float(pydicom.dcmread(str(f)).ImagePositionPatient[2])
              for f in (tmp_path / "in").iterdir()}
    r = _run(["normalize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--output-format", "dicom",
              "--allow-missing-slices", "--source", "kernel=standard", "--target", "kernel=smooth",
              "--method", "mtf_ratio", "--progress", "none"])
    assert r.returncode == 0, r.stderr
    for d in _series(tmp_path / "out"):
        z = float(d.ImagePositionPatient[2]) - float(_series(tmp_path / "out")[0].ImagePositionPatient[2])
        cited = sorted(by_uid[i.ReferencedSOPInstanceUID] for i in d.SourceImageSequence)
        if 6 < z < 14:
            assert cited == [6.0, 14.0] and "misses slices" in d.ImageComments, (z, cited)
        else:
            assert z in cited and "misses slices" not in d.ImageComments, (z, cited)


def test_a_multivalued_kernel_reads_as_dicom_writes_it():
    """DerivationDescription named a Siemens two-valued kernel as a Python list (['Br64d', '3'])."""
    from pydicom.dataset import Dataset

    from CTNormalizeLib.io.dicom_write import _text

    ds = Dataset()
    ds.ConvolutionKernel = ["Br64d", "3"]
    assert _text(ds.get("ConvolutionKernel")) == "Br64d\\3" and _text("B31f ") == "B31f" and _text(None) == ""


def test_a_dicom_output_named_like_a_volume_file_is_refused(lung1_dicom, tmp_path):
    """--output-format dicom -o out.nrrd made a folder named out.nrrd; -o without a suffix did not say
    how to ask for a DICOM series."""
    r = _run(["normalize", str(lung1_dicom), "-o", str(tmp_path / "out.nrrd"), "--output-format", "dicom",
              "--target", TARGET, "--progress", "none"])
    assert r.returncode == 2 and "names a NRRD file" in r.stderr and not (tmp_path / "out.nrrd").exists()
    r = _run(["normalize", str(lung1_dicom), "-o", str(tmp_path / "out"), "--target", TARGET, "--progress", "none"])
    assert r.returncode == 2 and "--output-format dicom" in r.stderr and not (tmp_path / "out").exists()


def test_slices_interpolated_onto_a_finer_grid_cite_the_splines_support(tmp_path):
    """5 mm -> 1 mm: the z step's cubic spline reads two input slices on each side of an output slice; the
    references named only the nearest one on each side."""
    from test_io import write_dicom_series

    write_dicom_series(tmp_path / "in", positions=[0, 5, 10, 15, 20, 25], size=64)
    by_uid = {pydicom.dcmread(str(f)).SOPInstanceUID: float(pydicom.dcmread(str(f)).ImagePositionPatient[2])
              for f in (tmp_path / "in").iterdir()}
    r = _run(["normalize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--output-format", "dicom",
              "--source", "kernel=standard,thickness=5", "--target", "thickness=1", "--method", "z_profile",
              "--progress", "none"])
    assert r.returncode == 0, r.stderr
    series = _series(tmp_path / "out")
    z0 = float(series[0].ImagePositionPatient[2])
    mid = next(d for d in series if abs(float(d.ImagePositionPatient[2]) - z0 - 12.0) < 1e-3)
    assert sorted(by_uid[i.ReferencedSOPInstanceUID] for i in mid.SourceImageSequence) == [5.0, 10.0, 15.0, 20.0]
