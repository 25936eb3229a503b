"""Volume IO: reading (NRRD/NIfTI/MHA/DICOM), validation, atomic writing, geometry round trips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTNormalizeLib import BadInputError, InternalError, NotCTError, Volume
from CTNormalizeLib.io import (atomic_output, atomic_output_dir, atomic_write_text, list_series, read_volume,
                               validate_ct, write_volume)

def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def chest_slice(n: int = 64, seed: int = 0, noise: float = 15.0) -> np.ndarray:
    """A small CT-like slice in HU: air, an elliptic body (fat rim, muscle), two lungs, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] / (n / 2.0) - 1.0
    hu = np.full((n, n), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    hu[body] = -100.0
    hu[(x / 0.75) ** 2 + (y / 0.55) ** 2 < 1] = 40.0
    for cx in (-0.35, 0.35):
        hu[((x - cx) / 0.25) ** 2 + (y / 0.35) ** 2 < 1] = -850.0
    return hu + rng.normal(0, noise, hu.shape)


def write_dicom_series(folder: Path, n_slices: int = 6, positions=None, modality: str = "CT",
                       series_uid: str | None = None, intercepts=None, slope: float = 1.0,
                       pixel: float = 0.8, iop=(1, 0, 0, 0, 1, 0), tags: dict | None = None,
                       seed: int = 0, shuffle_names: bool = True, size: int = 64) -> tuple[str, np.ndarray]:
    """Write a DICOM series with pydicom; returns (SeriesInstanceUID, true HU [z,y,x] in position order)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    positions = list(positions) if positions is not None else [2.5 * k for k in range(n_slices)]
    intercepts = intercepts or [-1024.0] * len(positions)
    iop = np.asarray(iop, float)
    normal = np.cross(iop[:3], iop[3:])
    truth = []
    order = np.random.default_rng(seed).permutation(len(positions)) if shuffle_names else range(len(positions))
    for k, z in enumerate(positions):
        hu = np.round(chest_slice(size, seed=seed * 100 + k))
        stored = np.round((hu - intercepts[k]) / slope).astype(np.int16)
        truth.append(stored.astype(np.float64) * slope + intercepts[k])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.PatientName = "Phantom"
        ds.PatientID = "0"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in (np.array([-25.0, -25.0, 0.0]) + z * normal)]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [pixel, pixel]
        ds.SliceThickness = 2.5
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = intercepts[k]
        ds.RescaleSlope = slope
        for key, v in (tags or {}).items():
            setattr(ds, key, v)
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"{series_uid[-6:]}_{order[k]:03d}.dcm", enforce_file_format=True)
    return series_uid, np.stack(truth).astype(np.float32)


def ct_volume(nz: int = 12, n: int = 64, seed: int = 0) -> Volume:
    hu = np.stack([chest_slice(n, seed=seed * 100 + k) for k in range(nz)]).astype(np.float32)
    return Volume(hu, (2.5, 0.7, 0.7), (-20.0, -30.0, 40.0), meta={"Modality": "CT"})


# ----------------------------------------------------------------------------- real data

def test_ct_small_hu_matches_pydicom(ct_small_path):
    import pydicom

    ds = pydicom.dcmread(str(ct_small_path))
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    vol = read_volume(ct_small_path, validate=False)
    assert vol.hu.dtype == np.float32 and vol.shape == (1,) + expected.shape
    np.testing.assert_array_equal(vol.hu[0], expected)
    assert float(ds.RescaleIntercept) != 0  # the rescale was really applied
    assert vol.spacing[1:] == tuple(float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(vol.origin, [float(v) for v in ds.ImagePositionPatient])
    for key in ("Modality", "Manufacturer", "ConvolutionKernel"):
        assert vol.meta[key] == str(ds.get(key)).strip()
    for key in ("SliceThickness", "KVP", "Exposure", "XRayTubeCurrent"):
        assert float(vol.meta[key]) == float(ds.get(key))
    assert vol.meta["Manufacturer"].startswith("GE")
    assert vol.meta["ConvolutionKernel"] == "STANDARD"
    assert float(vol.meta["SliceThickness"]) == 5.0
    assert float(vol.meta["Exposure"]) == 170
    assert "CTDIvol" not in vol.meta  # absent tags are absent keys


def test_ct_small_is_refused_as_2d(ct_small_path, tmp_path):
    with pytest.raises(BadInputError, match="3D volume, got 1 slice.*folder that holds all its slices"):
        read_volume(ct_small_path)
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(ct_small_path, folder / "CT_small.dcm")
    with pytest.raises(BadInputError, match="holds one slice of this series: the other slices are missing"):
        read_volume(folder)  # the folder was given: the message does not ask for it


def test_lung1_reads_as_hu(lung1_path):
    vol = read_volume(lung1_path)
    assert vol.hu.dtype == np.float32 and vol.shape == (48, 512, 512)
    assert vol.spacing[0] == pytest.approx(5.0) and vol.spacing[1] == pytest.approx(0.5703125)
    air = vol.hu[:, :20, :20]  # a corner: air outside the body
    assert -1030 < float(np.median(air)) < -970
    assert float(np.percentile(vol.hu, 99.5)) < 2000
    assert vol.meta["source_path"] == str(Path(lung1_path).resolve())


def test_brain1_is_not_ct(brain1_path):
    with pytest.raises(NotCTError) as info:
        read_volume(brain1_path)
    assert info.value.code == "NOT_CT"
    assert "-1000" in info.value.message and "minimum value 0" in info.value.message.lower()
    vol = read_volume(brain1_path, validate=False)  # still readable for inspection
    assert vol.shape == (25, 256, 256)


# ----------------------------------------------------------------------------- validation

def test_validate_accepts_synthetic_ct():
    validate_ct(ct_volume())


@pytest.mark.parametrize("bad, count", [(np.nan, 3), (np.inf, 2)])
def test_validate_nonfinite(bad, count):
    vol = ct_volume()
    vol.hu.reshape(-1)[:count] = bad
    with pytest.raises(BadInputError, match=f"{count} non-finite"):
        validate_ct(vol)


def test_validate_modality():
    vol = ct_volume()
    vol.meta["Modality"] = "MR"
    with pytest.raises(NotCTError, match="'MR'"):
        validate_ct(vol)


@pytest.mark.parametrize("transform, words", [
    (lambda hu: hu + 1024, "no air"),  # intercept not applied
    (lambda hu: (hu + 1000) / 4000, "no air"),  # [0, 1]-like scaling
    (lambda hu: hu * 10, "far below air"),
    (lambda hu: np.where(hu > 0, 30000.0, hu), "above any tissue"),
])
def test_validate_values_not_hu(transform, words):
    vol = ct_volume()
    with pytest.raises(NotCTError, match=words):
        validate_ct(vol.with_array(transform(vol.hu)))


def test_validate_ignores_padding_outside_fov():
    vol = ct_volume()
    hu = vol.hu.copy()
    hu[:, :6, :] = -3024  # padding value outside the reconstruction circle
    validate_ct(vol.with_array(hu))


def test_validate_oblique_accepted():
    vol = ct_volume()
    vol.direction = tuple(_rotation(0.3, -0.2, 0.5).ravel())
    validate_ct(vol)


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize("suffix, exact", [(".nrrd", True), (".mha", True), (".nii.gz", False), (".nii", False)])
def test_round_trip_oblique_anisotropic(tmp_path, suffix, exact):
    vol = ct_volume(nz=9, n=40)
    vol.hu[:] = vol.hu + 0.25  # not integers: stays float32
    vol.spacing = (3.1, 0.61, 0.83)  # z, y, x all different
    vol.origin = (-12.5, 33.25, 101.75)
    vol.direction = tuple(_rotation(0.3, -0.2, 0.5).ravel())
    out = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(out, validate=False)
    np.testing.assert_array_equal(back.hu, vol.hu)
    assert back.shape == vol.shape
    tol = 1e-12 if exact else 2e-6  # NRRD: double precision; NIfTI: float32
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(back.origin, vol.origin, rtol=tol, atol=tol * 200)
    np.testing.assert_allclose(back.direction, vol.direction, atol=max(tol, 1e-12))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_write_int16_when_integral(tmp_path):
    vol = ct_volume(nz=4, n=32)
    vol.hu[:] = np.round(vol.hu)
    out = write_volume(vol, tmp_path / "v.nrrd")
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkInt16
    out2 = write_volume(vol, tmp_path / "f.nrrd", dtype="float32")
    assert sitk.ReadImage(str(out2)).GetPixelID() == sitk.sitkFloat32
    vol.hu[0, 0, 0] += 0.5
    out3 = write_volume(vol, tmp_path / "g.nrrd")
    assert sitk.ReadImage(str(out3)).GetPixelID() == sitk.sitkFloat32
    vol.hu[0, 0, 0] = 40000
    with pytest.raises(BadInputError, match="int16"):
        write_volume(vol, tmp_path / "h.nrrd", dtype="int16")


def test_write_keeps_modality_and_optional_tags(tmp_path):
    vol = ct_volume(nz=3, n=32)
    vol.meta.update({"ConvolutionKernel": "B70f", "SliceThickness": "2.5"})
    back = read_volume(write_volume(vol, tmp_path / "a.nrrd"), validate=False)
    assert back.meta["Modality"] == "CT" and "ConvolutionKernel" not in back.meta
    back = read_volume(write_volume(vol, tmp_path / "b.mha", write_tags=True), validate=False)
    assert back.meta["ConvolutionKernel"] == "B70f" and back.meta["SliceThickness"] == "2.5"


def test_write_never_overwrites_input(tmp_path, lung1_path):
    src = tmp_path / "in.nrrd"
    write_volume(ct_volume(nz=3, n=32), src)
    before = src.read_bytes()
    vol = read_volume(src, validate=False)
    with pytest.raises(BadInputError, match="overwrite the input"):
        write_volume(vol, src)
    with pytest.raises(BadInputError, match="overwrite the input"):
        write_volume(vol, tmp_path / "." / "in.nrrd")
    assert src.read_bytes() == before


@pytest.mark.parametrize("name", ["v.png", "v.mhd", "v"])
def test_write_bad_extension(tmp_path, name):
    with pytest.raises(BadInputError, match="nrrd"):
        write_volume(ct_volume(nz=2, n=16), tmp_path / name)


# ----------------------------------------------------------------------------- atomic outputs

def test_atomic_output_keeps_suffix_and_replaces(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"x")
        assert not target.exists()
    assert target.read_bytes() == b"x"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_output_removes_temp_on_any_exception(tmp_path, exc):
    from CTNormalizeLib.errors import CancelledError

    target = tmp_path / "out.nrrd"
    target.write_bytes(b"old")
    for e in (exc, CancelledError):
        with pytest.raises(e):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"partial")
                raise e("stop") if e is not SystemExit else e(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]
    assert target.read_bytes() == b"old"


def test_atomic_write_text_and_failed_volume_write(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "a.json", '{"a": 1}')
    assert (tmp_path / "a.json").read_text() == '{"a": 1}'

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(InternalError, match="disk full"):
        write_volume(ct_volume(nz=2, n=16), tmp_path / "v.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_output_dir(tmp_path):
    target = tmp_path / "series"
    with atomic_output_dir(target) as d:
        (d / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_output_dir(target) as d:
            (d / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


# ----------------------------------------------------------------------------- DICOM series

def test_dicom_series_reads_sorted_with_per_slice_rescale(tmp_path):
    intercepts = [-1024.0, -1000.0, -1024.0, -1010.0, -1024.0, -1024.0]
    uid, truth = write_dicom_series(tmp_path / "s", intercepts=intercepts, slope=1.0,
                                    tags={"ConvolutionKernel": "B70f", "Manufacturer": "SIEMENS",
                                          "KVP": 120, "Exposure": 50, "CTDIvol": 3.2})
    vol = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, truth)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert vol.origin == pytest.approx((-25.0, -25.0, 0.0))
    assert vol.meta["SeriesInstanceUID"] == uid
    assert vol.meta["ConvolutionKernel"] == "B70f" and vol.meta["CTDIvol"] == "3.2"
    assert "warnings" not in vol.meta


def test_dicom_series_non_integer_slope(tmp_path):
    _, truth = write_dicom_series(tmp_path / "s", n_slices=4, slope=0.5, intercepts=[-1024.0] * 4)
    vol = read_volume(tmp_path / "s")
    np.testing.assert_allclose(vol.hu, truth)


def test_dicom_series_oblique_preserved(tmp_path):
    r = _rotation(0.0, 0.0, 0.4) @ _rotation(0.25, 0.0, 0.0)
    iop = list(r[:, 0]) + list(r[:, 1])
    write_dicom_series(tmp_path / "s", n_slices=5, iop=iop)
    vol = read_volume(tmp_path / "s")
    np.testing.assert_allclose(np.array(vol.direction).reshape(3, 3), r, atol=1e-5)
    assert vol.spacing[0] == pytest.approx(2.5)
    # and through a write/read round trip
    back = read_volume(write_volume(vol, tmp_path / "o.nrrd"))
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)


def test_dicom_mr_series_refused(tmp_path):
    write_dicom_series(tmp_path / "mr", n_slices=4, modality="MR")
    with pytest.raises(NotCTError, match="'MR'"):
        read_volume(tmp_path / "mr")


def test_dicom_nonuniform_spacing_resampled_with_warning(tmp_path, caplog):
    positions = [0.0, 2.0, 4.0, 7.0, 9.0, 11.0, 13.0]
    _, truth = write_dicom_series(tmp_path / "s", positions=positions)
    vol = read_volume(tmp_path / "s")
    codes = [w["code"] for w in vol.meta["warnings"]]
    assert codes == ["NONUNIFORM_SPACING"]
    assert not [r for r in caplog.records if "spacing" in r.getMessage()], "said twice (a log line too)"
    assert vol.spacing[0] == pytest.approx(2.0)
    assert vol.shape[0] == 7  # 0..12 mm at 2 mm
    np.testing.assert_allclose(vol.hu[:3], truth[:3])  # on-grid slices unchanged
    np.testing.assert_allclose(vol.hu[3], truth[2] / 3 + 2 * truth[3] / 3, atol=1e-3)  # z = 6 mm
    np.testing.assert_allclose(vol.hu[4], truth[3] * 0.5 + truth[4] * 0.5, atol=1e-3)  # z = 8 mm
    np.testing.assert_allclose(vol.hu[6], 0.5 * truth[5] + 0.5 * truth[6], atol=1e-3)  # z = 12 mm


def test_dicom_missing_slices_refused_or_flagged(tmp_path):
    write_dicom_series(tmp_path / "s", positions=[0, 2, 4, 6, 14, 16, 18])
    with pytest.raises(BadInputError, match="3 slice.*missing.*--allow-missing-slices"):
        read_volume(tmp_path / "s")
    codes = [w["code"] for w in read_volume(tmp_path / "s", allow_missing_slices=True).meta["warnings"]]
    assert codes == ["MISSING_SLICES"]  # whole missing slices are not also a varying spacing
    write_dicom_series(tmp_path / "t", positions=[0, 2, 4, 6, 14, 16, 18.7])
    codes = [w["code"] for w in read_volume(tmp_path / "t", allow_missing_slices=True).meta["warnings"]]
    assert codes == ["MISSING_SLICES", "NONUNIFORM_SPACING"]


def test_dicom_two_series_of_equal_length_say_how_one_was_chosen(tmp_path):
    a, _ = write_dicom_series(tmp_path / "d", n_slices=4, seed=1)
    b, _ = write_dicom_series(tmp_path / "d", n_slices=4, seed=2)
    vol = read_volume(tmp_path / "d")
    assert vol.meta["SeriesInstanceUID"] == min(a, b)
    message = vol.meta["warnings"][0]["message"]
    assert "first by SeriesInstanceUID of the 2 series with the most slices (4)" in message, message


def test_dicom_duplicate_positions_error(tmp_path):
    write_dicom_series(tmp_path / "s", positions=[0, 2, 2, 4])
    with pytest.raises(BadInputError, match="duplicate slice position"):
        read_volume(tmp_path / "s")


def test_dicom_folder_with_two_series(tmp_path):
    big, truth_big = write_dicom_series(tmp_path / "d", n_slices=6, seed=1)
    small, truth_small = write_dicom_series(tmp_path / "d", n_slices=3, seed=2)
    assert [s.uid for s in list_series(tmp_path / "d")] == [big, small]
    vol = read_volume(tmp_path / "d")
    assert vol.meta["SeriesInstanceUID"] == big and vol.shape[0] == 6
    assert [w["code"] for w in vol.meta["warnings"]] == ["SERIES_CHOSEN"]
    assert "the one with most slices" in vol.meta["warnings"][0]["message"]
    vol = read_volume(tmp_path / "d", series_uid=small)
    np.testing.assert_array_equal(vol.hu, truth_small)
    with pytest.raises(BadInputError) as info:
        read_volume(tmp_path / "d", series_uid="1.2.3.4")
    assert big in info.value.message and small in info.value.message
    assert "6 slices" in info.value.message and "3 slices" in info.value.message


def test_dicom_single_file_of_series(tmp_path):
    write_dicom_series(tmp_path / "s", n_slices=3)
    f = sorted((tmp_path / "s").iterdir())[0]
    vol = read_volume(f, validate=False)
    assert vol.shape == (1, 64, 64)
    with pytest.raises(BadInputError, match="pass the folder"):
        validate_ct(vol)


# ----------------------------------------------------------------------------- bad paths

def test_missing_file():
    with pytest.raises(BadInputError, match="not found: .*nope.nrrd"):
        read_volume("/definitely/nope.nrrd")


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.nrrd"
    p.write_text("this is not an image")
    with pytest.raises(BadInputError, match=r"Cannot read .*junk.nrrd"):
        read_volume(p)


def test_empty_folder(tmp_path):
    with pytest.raises(BadInputError, match="No DICOM series"):
        read_volume(tmp_path)


def test_2d_image_file(tmp_path):
    img = sitk.GetImageFromArray(chest_slice(32).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "s.nrrd"))
    with pytest.raises(BadInputError, match="got 1 slice.*A 2D image cannot be normalized"):
        read_volume(tmp_path / "s.nrrd")


def test_rgb_image_refused(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "c.mha"))
    with pytest.raises(BadInputError, match="components per voxel"):
        read_volume(tmp_path / "c.mha")


def test_dicom_without_preamble(tmp_path):
    import pydicom

    _, truth = write_dicom_series(tmp_path / "src", n_slices=4, tags={"ConvolutionKernel": "FC13"})
    (tmp_path / "raw").mkdir()
    for f in sorted((tmp_path / "src").iterdir()):
        ds = pydicom.dcmread(f)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(tmp_path / "raw" / f.stem, implicit_vr=True, little_endian=True, enforce_file_format=False)
    vol = read_volume(tmp_path / "raw")
    np.testing.assert_array_equal(vol.hu, truth)
    one = read_volume(sorted((tmp_path / "raw").iterdir())[0], validate=False)
    assert one.meta["ConvolutionKernel"] == "FC13" and one.meta["source_format"] == "DICOM"


def test_pydicom_fallback_matches(tmp_path, monkeypatch):
    from CTNormalizeLib.io import dicom

    _, truth = write_dicom_series(tmp_path / "s", n_slices=4, slope=0.5, intercepts=[-1024.0, -1000.0, -1024.0, -1024.0],
                                  tags={"Exposure": 80})
    ref = read_volume(tmp_path / "s")

    def fail(*a, **k):
        raise RuntimeError("GDCM cannot")

    monkeypatch.setattr(dicom, "_header_sitk", fail)
    monkeypatch.setattr(dicom, "_pixels_sitk", fail)
    vol = read_volume(tmp_path / "s")
    np.testing.assert_allclose(vol.hu, truth)
    assert vol.spacing == pytest.approx(ref.spacing) and vol.origin == pytest.approx(ref.origin)
    assert vol.direction == pytest.approx(ref.direction) and vol.meta["Exposure"] == "80"
    monkeypatch.setattr(dicom.sitk, "ReadImage", fail)
    one = read_volume(sorted((tmp_path / "s").iterdir())[0], validate=False)
    assert one.shape == (1, 64, 64) and one.meta["Exposure"] == "80"


def test_dicom_gantry_tilt_warned(tmp_path):
    import pydicom

    write_dicom_series(tmp_path / "s", n_slices=5)
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.4 * z, z]  # slices shift in y as z grows: sheared grid
        ds.save_as(f, enforce_file_format=True)
    vol = read_volume(tmp_path / "s")
    warning = next(w for w in vol.meta["warnings"] if w["code"] == "GANTRY_TILT")
    assert "21.8 deg" in warning["message"]  # atan(0.4)


def test_series_uid_for_a_non_dicom_file(lung1_path):
    with pytest.raises(BadInputError, match="not DICOM"):
        read_volume(lung1_path, series_uid="1.2.3")


def test_hu_summary_known_percentiles():
    from CTNormalizeLib.io import hu_summary

    hu = (np.arange(1001, dtype=np.float32) - 500.0).reshape(7, 11, 13)
    hu_nan = np.concatenate([hu.ravel(), [np.nan, np.inf]]).reshape(1, 1, -1)
    for arr in (hu, hu_nan):  # non-finite voxels are left out
        assert hu_summary(arr) == {"min": -500.0, "p0.5": -495.0, "p1": -490.0, "p50": 0.0, "p99": 490.0,
                                   "p99.5": 495.0, "max": 500.0}
    assert hu_summary(np.full((2, 2, 2), np.nan, np.float32)) == {}


def test_hu_summary_min_and_max_are_of_every_voxel():
    """info's min/max came from a subsample: a lone metal voxel (or a padding value) could be missed."""
    from CTNormalizeLib.io import hu_summary

    hu = np.zeros((40, 256, 256), np.float32)  # 2.6 M voxels: percentiles from a subsample
    hu[17, 101, 33], hu[3, 5, 7] = 3071.0, -3024.0
    summary = hu_summary(hu)
    assert (summary["min"], summary["max"]) == (-3024.0, 3071.0)
    hu[0, 0, 1] = np.inf
    assert hu_summary(hu)["max"] == 3071.0


def test_an_unreadable_mask_is_not_told_that_a_dicom_folder_would_do(tmp_path):
    """read_image (masks, labelmaps) reads one image file; its refusal listed 'DICOM (file or series folder)',
    which it does not take."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.io.read import read_image, read_volume

    junk = tmp_path / "mask.dat"
    junk.write_bytes(b"\x00\x01 not an image " * 50)
    with pytest.raises(BadInputError) as mask_err:
        read_image(junk)
    assert "series folder" not in str(mask_err.value) and "MetaImage" in str(mask_err.value)
    assert "sitk::ERROR" not in str(mask_err.value)
    with pytest.raises(BadInputError) as ct_err:
        read_volume(junk)
    assert "series folder" in str(ct_err.value)  # a CT may be one
