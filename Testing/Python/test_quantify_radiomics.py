"""Radiomics wrapper: pyradiomics baseline on lung1, labelmaps, .seg.nrrd, comparison table."""

import ast
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from CTNormalizeLib import BadInputError
from CTNormalizeLib.quantify.radiomics import (
    default_params_path,
    extract_radiomics,
    load_segments,
)

FEATURE_CLASSES = ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]


def _image(arr, spacing=(2.0, 1.5, 1.5), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(reversed(spacing)))
    img.SetOrigin(origin)
    return img


def _phantom(seed=0, shape=(16, 40, 40)):
    """A CT-like image with two blobs (labels 1 and 2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    hu = np.full(shape, -800.0, np.float32) + rng.normal(0, 30, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    a = ((z - 8) / 5.0) ** 2 + ((y - 12) / 7.0) ** 2 + ((x - 12) / 7.0) ** 2 <= 1
    b = ((z - 8) / 4.0) ** 2 + ((y - 27) / 6.0) ** 2 + ((x - 28) / 8.0) ** 2 <= 1
    hu[a] = 40.0 + rng.normal(0, 40, a.sum())
    hu[b] = -300.0 + rng.normal(0, 80, b.sum())
    lab[a] = 1
    lab[b] = 2
    return hu, lab


@pytest.fixture
def small_case(tmp_path):
    hu, lab = _phantom()
    img_path = tmp_path / "ct.nrrd"
    lab_path = tmp_path / "seg.nii.gz"
    sitk.WriteImage(_image(hu), str(img_path))
    sitk.WriteImage(_image(lab), str(lab_path))
    other = tmp_path / "ct2.nrrd"
    sitk.WriteImage(_image(hu * 0.9 + 5.0), str(other))
    return img_path, other, lab_path, hu, lab


def test_params_preset():
    import yaml

    p = default_params_path()
    cfg = yaml.safe_load(p.read_text())
    assert cfg["setting"]["binWidth"] == 25
    sp = cfg["setting"]["resampledPixelSpacing"]
    assert len(set(sp)) == 1
    assert {"shape", "firstorder", "glcm"} <= set(cfg["featureClass"])
    filt = yaml.safe_load(default_params_path(filters=True).read_text())
    assert {"LoG", "Wavelet"} <= set(filt["imageType"])
    assert filt["setting"] == cfg["setting"]


def test_labelmap_two_images_wide(small_case):
    img, other, lab_path, _, _ = small_case
    r = extract_radiomics({"original": img, "normalized": other}, lab_path)
    segs = {row["segment"] for row in r.rows}
    assert segs == {"label_1", "label_2"}
    assert {row["image"] for row in r.rows} == {"original", "normalized"}
    feats = {row["feature"] for row in r.rows}
    assert "original_shape_VoxelVolume" in feats and "original_firstorder_Mean" in feats
    assert any("glcm" in f for f in feats) and any("ngtdm" in f for f in feats)
    # the mean of a linearly changed image changes linearly: the comparison columns are right
    m0 = r.value("label_1", "original", "original_firstorder_Mean")
    m1 = r.value("label_1", "normalized", "original_firstorder_Mean")
    assert m1 == pytest.approx(0.9 * m0 + 5.0, rel=1e-4)
    wide = {(w["segment"], w["feature"]): w for w in r.wide()}
    w = wide[("label_1", "original_firstorder_Mean")]
    assert w["normalized_minus_original"] == pytest.approx(m1 - m0)
    assert w["normalized_pct_vs_original"] is None  # a position on the HU scale: its percent means nothing
    r0 = r.value("label_1", "original", "original_firstorder_Range")
    r1 = r.value("label_1", "normalized", "original_firstorder_Range")
    spread = wide[("label_1", "original_firstorder_Range")]
    assert spread["normalized_pct_vs_original"] == pytest.approx(100 * (r1 - r0) / abs(r0))
    # shape features do not depend on the image
    v = wide[("label_2", "original_shape_VoxelVolume")]
    assert v["normalized_minus_original"] == 0.0
    prov = r.provenance
    assert prov["params_path"].endswith("CT.yaml") and prov["pyradiomics_version"]
    assert prov["settings"]["binWidth"] == 25
    json.dumps(r.to_dict(), allow_nan=True)
    assert not r.warnings


def test_csv_outputs(small_case, tmp_path):
    img, _, lab_path, _, _ = small_case
    r = extract_radiomics({"a": img}, lab_path)
    tidy, wide = r.write_csv(tmp_path / "out" / "feat.csv")
    rows = list(csv.DictReader(open(tidy)))
    assert set(rows[0]) == {"segment", "label", "image", "feature", "value"}
    assert len(rows) == len(r.rows)
    assert wide.name == "feat_comparison.csv"
    comp = list(csv.DictReader(open(wide)))
    assert list(comp[0]) == ["segment", "label", "feature", "a"]
    tidy_values = {(x["segment"], x["feature"]): x["value"] for x in rows}
    assert len(comp) == len(tidy_values) == len(rows)  # one image: one comparison row per feature
    assert all(c["a"] == tidy_values[(c["segment"], c["feature"])] for c in comp)
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_seg_nrrd_names_and_layers(tmp_path):
    import slicerio

    hu, lab = _phantom(1)
    img = _image(hu, spacing=(2.0, 1.5, 1.5), origin=(-30.0, -30.0, -16.0))
    img_path = tmp_path / "ct.nrrd"
    sitk.WriteImage(img, str(img_path))
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.diag(img.GetSpacing())
    ijk_to_lps[:3, 3] = img.GetOrigin()
    seg = slicerio.create_segmentation(tuple(reversed(lab.shape)), ijk_to_lps)
    # slicerio's voxel axes are (i, j, k) = (x, y, z): transpose the [z, y, x] masks
    slicerio.add_segment(seg, (lab == 1).transpose(2, 1, 0), {"id": "tumour", "name": "tumour"})
    slicerio.add_segment(seg, (lab == 2).transpose(2, 1, 0), {"id": "ggo", "name": "ground glass"})
    # an overlapping segment goes to a second layer
    slicerio.add_segment(seg, (lab == 1).transpose(2, 1, 0), {"id": "copy", "name": "tumour copy"})
    seg_path = tmp_path / "nodules.seg.nrrd"
    slicerio.write_segmentation(str(seg_path), seg)

    s = load_segments(seg_path)
    names = [x.name for x in s.segments]
    assert names == ["tumour", "ground glass", "tumour copy"]
    assert len(s.layers) == 2 and s.segments[2].layer == 1
    r = extract_radiomics({"ct": img_path}, seg_path)
    assert not r.warnings
    v1 = r.value("tumour", "ct", "original_shape_VoxelVolume")
    v3 = r.value("tumour copy", "ct", "original_firstorder_Mean")
    assert v3 == pytest.approx(r.value("tumour", "ct", "original_firstorder_Mean"))
    # voxel volume at the 1 mm preset grid is about the mask volume
    assert v1 == pytest.approx((lab == 1).sum() * 2.0 * 1.5 * 1.5, rel=0.15)


def test_resampled_segments_warn(small_case, tmp_path):
    img, _, _, _, lab = small_case
    coarse = sitk.GetImageFromArray(lab[:, ::2, ::2].copy())
    coarse.SetSpacing((3.0, 3.0, 2.0))
    coarse.SetOrigin((0.75, 0.75, 0.0))
    p = tmp_path / "coarse.nrrd"
    sitk.WriteImage(coarse, str(p))
    r = extract_radiomics({"ct": img}, p)
    assert [w["code"] for w in r.warnings] == ["SEGMENTS_RESAMPLED"]
    assert "nearest neighbour" in r.warnings[0]["message"]
    assert "spacing 3 x 3 x 2 vs 1.5 x 1.5 x 2 mm" in r.warnings[0]["message"]


def test_a_shifted_mask_says_how_far(small_case, tmp_path):
    """A label of the right size and spacing but another origin (from another scan, or a moved export) was
    resampled with only a generic warning, and its features silently described the wrong tissue."""
    img, _, _, _, lab = small_case
    p = tmp_path / "shifted.nrrd"
    sitk.WriteImage(_image(lab, origin=(0.0, 6.0, 0.0)), str(p))
    r = extract_radiomics({"ct": img}, p)
    message = r.warnings[0]["message"]
    assert "origin offset +0, +6, +0 mm" in message and "spacing" not in message and "belong together" in message


def test_clean_texture_output_warns(small_case, tmp_path):
    """A CTNormalize output in the clean texture (header ctnormalize_texture) is flagged: its texture is smoother
    than the target protocol's scans; a target-texture output and a plain scan are not."""
    img, _, lab_path, hu, _ = small_case
    for texture in ("clean", "target"):
        marked = sitk.ReadImage(str(img))
        marked.SetMetaData("ctnormalize_texture", texture)
        path = tmp_path / f"{texture}.nrrd"
        sitk.WriteImage(marked, str(path))
        r = extract_radiomics({"plain": img, "out": path}, lab_path)
        codes = [w["code"] for w in r.warnings]
        assert codes == (["CLEAN_TEXTURE_INPUT"] if texture == "clean" else []), texture
        if texture == "clean":
            assert r.warnings[0]["message"].startswith("Image 'out':") and "--texture target" in r.warnings[0]["message"]


def test_bad_inputs(small_case, tmp_path):
    img, _, lab_path, _, lab = small_case
    with pytest.raises(BadInputError, match="not found"):
        extract_radiomics({"ct": tmp_path / "nope.nrrd"}, lab_path)
    with pytest.raises(BadInputError, match="not found"):
        extract_radiomics({"ct": img}, tmp_path / "nope.nrrd")
    empty = tmp_path / "empty.nrrd"
    sitk.WriteImage(_image(np.zeros_like(lab)), str(empty))
    with pytest.raises(BadInputError, match="No segment"):
        extract_radiomics({"ct": img}, empty)
    # a segment that falls outside the image after resampling is empty there
    far = _image(lab, origin=(500.0, 500.0, 500.0))
    p = tmp_path / "far.nrrd"
    sitk.WriteImage(far, str(p))
    with pytest.raises(BadInputError, match="empty.*origin offset \\+500, \\+500, \\+500 mm.*another scan"):
        extract_radiomics({"ct": img}, p)
    with pytest.raises(BadInputError, match="params"):
        extract_radiomics({"ct": img}, lab_path, params=tmp_path / "missing.yaml")


def _lung1_baseline(data_dir):
    """pyradiomics' published baseline for lung1 and the settings its own tests use for it."""
    values, settings = {}, None
    for f in sorted((data_dir / "baseline").glob("baseline_*.csv")):
        with open(f, newline="") as fh:
            rows = list(csv.reader(fh))
        if "lung1" not in rows[0]:
            continue  # shape2D: a 2D variant with its own columns
        i = rows[0].index("lung1")
        col = {r[0]: r[i] for r in rows[1:]}
        cls_settings = ast.literal_eval(col["diagnostics_Configuration_Settings"])
        assert settings is None or cls_settings == settings
        settings = cls_settings
        values.update({k: float(v) for k, v in col.items() if not k.startswith("diagnostics_")})
    return values, settings


@pytest.mark.slow
def test_lung1_matches_pyradiomics_baseline(pyradiomics_data, lung1_path, lung1_label_path):
    baseline, settings = _lung1_baseline(pyradiomics_data)
    params = {"setting": settings, "imageType": {"Original": {}},
              "featureClass": {c: [] for c in FEATURE_CLASSES}}
    r = extract_radiomics({"lung1": lung1_path}, lung1_label_path, params=params)
    got = {row["feature"]: row["value"] for row in r.rows if row["segment"] == "label_1"}
    compared = 0
    for name, expected in baseline.items():
        assert name in got, f"{name} missing from the wrapper's output"
        assert got[name] == pytest.approx(expected, rel=1e-3, abs=1e-9), name
        compared += 1
    assert compared >= 100
