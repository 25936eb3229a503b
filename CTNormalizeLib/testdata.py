"""Real CT data for tests, demos and benchmarks, fetched into a local cache (never committed).

- pyradiomics' ``data/`` folder (lung1, lung2, brain1, ... and the feature baseline) from the
  ``pyradiomics-bhklab==3.1.4`` sdist, via ``pip download`` (PyPI is reachable here).
- pydicom's ``CT_small.dcm`` (a real GE CT slice), shipped inside pydicom.

lung2 is for evaluation only: never train or tune on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PYRADIOMICS_SDIST = "pyradiomics-bhklab==3.1.4"


def cache_dir() -> Path:
    """``$CTNORMALIZE_CACHE`` or ``~/.cache/ctnormalize``."""
    d = Path(os.environ.get("CTNORMALIZE_CACHE", Path.home() / ".cache" / "ctnormalize"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def pyradiomics_data_dir() -> Path:
    """The pyradiomics sdist's ``data/`` folder, downloaded and unpacked on first use."""
    target = cache_dir() / "pyradiomics-data"
    if (target / "lung1_image.nrrd").is_file() and (target / "baseline").is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", PYRADIOMICS_SDIST, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            # Newer pip may want to build metadata; a plain download still saves the sdist.
            proc = subprocess.run(cmd[:4] + [PYRADIOMICS_SDIST, "-d", tmp], capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"Could not download {PYRADIOMICS_SDIST}:\n{proc.stderr[-2000:]}")
        unpack = Path(tmp) / "unpacked"
        with tarfile.open(sdists[0]) as tf:
            members = [m for m in tf.getmembers() if "/data/" in m.name and m.isfile()]
            tf.extractall(unpack, members=members, filter="data")
        src = next(unpack.glob("*/data"))
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    return target


def pyradiomics_case(name: str) -> tuple[Path, Path]:
    """``(image, label)`` paths of a pyradiomics case, e.g. ``"lung1"``."""
    d = pyradiomics_data_dir()
    return d / f"{name}_image.nrrd", d / f"{name}_label.nrrd"


def ct_small() -> Path:
    """pydicom's ``CT_small.dcm``: one GE CT slice, STANDARD kernel, 5 mm, 170 mAs."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))


# Plausible tags of a chest CT series built from lung1 voxels (made up, no real person).
LUNG1_SERIES_TAGS = {
    "PatientName": "Test^Lung1", "PatientID": "CTN-TEST-0001", "PatientBirthDate": "19500101",
    "PatientSex": "F", "StudyDate": "20200102", "StudyTime": "101500", "StudyID": "1",
    "AccessionNumber": "ACC0001", "ReferringPhysicianName": "", "StudyDescription": "CT CHEST",
    "SeriesDescription": "Thorax 5.0 B31f", "SeriesNumber": 3, "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "SOMATOM Definition AS", "ConvolutionKernel": "B31f", "KVP": "120",
    "Exposure": "100", "XRayTubeCurrent": "200", "PatientPosition": "HFS", "BodyPartExamined": "CHEST",
}


def write_ct_series(hu, spacing, out_dir, origin=(0.0, 0.0, 0.0), tags: dict | None = None) -> list:
    """Write ``hu`` ``[z,y,x]`` as an axial ORIGINAL/PRIMARY CT series, one file per slice.

    For tests and benchmarks: int16 pixels with intercept -1024, identity orientation,
    ``spacing`` in array order ``(z, y, x)``; ``tags`` (keyword -> value) fill the header.
    Returns the written paths, in slice order.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tags = dict(LUNG1_SERIES_TAGS if tags is None else tags)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    stored = np.clip(np.round(np.asarray(hu, dtype=np.float64) + 1024.0), -32768, 32767).astype(np.int16)
    paths = []
    for k in range(stored.shape[0]):
        ds = Dataset()
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType, ds.InstanceNumber = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], k + 1
        ds.SliceThickness = f"{spacing[0]:g}"
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[2]:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        pos = (origin[0], origin[1], origin[2] + k * spacing[0])
        ds.ImagePositionPatient = [f"{v:.6g}" for v in pos]
        ds.SliceLocation = f"{pos[2]:.6g}"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out / f"slice{k:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def lung1_series(out_dir, slices: int = 8, first: int = 20, bin_xy: int = 4) -> list:
    """A small real CT series: ``slices`` slices of lung1 from ``first``, binned ``bin_xy`` in-plane.

    The chest keeps its body outline and lungs (512 -> 128 pixels of 2.28 mm with the
    default binning); tags from :data:`LUNG1_SERIES_TAGS`. Returns the written paths.
    """
    import numpy as np
    import SimpleITK as sitk

    image, _ = pyradiomics_case("lung1")
    img = sitk.ReadImage(str(image))
    arr = sitk.GetArrayFromImage(img)[first:first + slices].astype(np.float32)
    nz, ny, nx = arr.shape
    arr = arr[:, : ny // bin_xy * bin_xy, : nx // bin_xy * bin_xy]
    arr = arr.reshape(nz, ny // bin_xy, bin_xy, nx // bin_xy, bin_xy).mean(axis=(2, 4))
    sx, sy, sz = img.GetSpacing()
    ox, oy, oz = img.GetOrigin()
    return write_ct_series(arr, (sz, sy * bin_xy, sx * bin_xy), out_dir, origin=(ox, oy, oz + first * sz))
