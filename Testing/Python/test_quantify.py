"""Lung mask and emphysema: known answers on synthetic volumes, a synthetic chest, lung1."""

import json

import numpy as np
import pytest

from CTNormalizeLib import BadInputError, Volume, __version__
from CTNormalizeLib.quantify import emphysema_dice, emphysema_index, load_lung_mask, lung_mask
from CTNormalizeLib.quantify.emphysema import zone_slices
from CTNormalizeLib.quantify.lung import LungMask


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (a.sum() + b.sum())


def synthetic_chest(shape=(40, 96, 96), spacing=(2.5, 3.0, 3.0), noise=0.0, seed=0, lung_hu=-860.0,
                    touching=False):
    """A synthetic chest: elliptic body, two ellipsoid lungs with vessels, trachea + main bronchi.

    Identity direction: the last slice is superior, larger x index is patient left.
    Returns ``(Volume, truth)`` with truth masks ``lungs``, ``left``, ``right``, ``airways``.
    """
    nz, ny, nx = shape
    z = (np.arange(nz) - (nz - 1) / 2) * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[2]
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    height = nz * spacing[0]
    hu = np.full(shape, -1000.0, np.float32)
    body = (X / 130.0) ** 2 + (Y / 95.0) ** 2 <= 1.0
    hu[body] = 40.0
    hu[body & ((X / 122.0) ** 2 + (Y / 87.0) ** 2 > 1.0)] = -100.0  # subcutaneous fat
    zc, zr = -0.1 * height, 0.42 * height
    truth = {}
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        cx = sgn * 58.0
        m = ((X - cx) / 44.0) ** 2 + (Y / 62.0) ** 2 + ((Z - zc) / zr) ** 2 <= 1.0
        if touching:  # an anterior junction: the lungs meet in front of the mediastinum
            m |= ((X / 24.0) ** 2 + ((Y + 52.0) / 8.0) ** 2 + ((Z - zc) / (0.6 * zr)) ** 2 <= 1.0) & (sgn * X > 0)
        truth[side] = m
        hu[m] = lung_hu
        # vessels: small dense cylinders inside the lung (must stay lung)
        for dx, dy in ((-15, -20), (10, 15), (0, 30)):
            v = ((X - cx - dx) ** 2 + (Y - dy) ** 2 <= 3.5 ** 2) & m
            hu[v] = 40.0
    lungs = truth["left"] | truth["right"]
    # trachea from the top down to the carina, then main bronchi towards each lung
    carina_z = zc + 0.35 * zr
    airways = np.zeros(shape, bool)
    tr_wall = (X ** 2 + (Y + 10) ** 2 <= 11.0 ** 2) & (Z >= carina_z)
    tr_lumen = (X ** 2 + (Y + 10) ** 2 <= 8.0 ** 2) & (Z >= carina_z)
    for sgn in (1.0, -1.0):
        t = np.clip((carina_z - Z) / 30.0, 0, 1)
        bx, by = sgn * 45.0 * t, -10.0
        d2 = (X - bx) ** 2 + (Y - by) ** 2
        seg = (Z <= carina_z) & (Z >= carina_z - 30.0)
        tr_wall |= seg & (d2 <= 8.5 ** 2)
        tr_lumen |= seg & (d2 <= 6.0 ** 2)
    hu[tr_wall & ~lungs] = 40.0
    hu[tr_lumen] = -1000.0
    airways = tr_lumen & ~lungs
    truth["airways"] = airways
    truth["lungs"] = lungs
    if noise:
        rng = np.random.default_rng(seed)
        hu = hu + rng.normal(0, noise, shape).astype(np.float32)
    return Volume(hu=hu, spacing=spacing), truth


# ---------------------------------------------------------------- emphysema: known answers

def _block_lung(shape=(10, 20, 30)):
    lung = np.zeros(shape, bool)
    lung[1:9, 2:18, 3:27] = True
    return lung


def test_laa_exact_fraction():
    lung = _block_lung()
    hu = np.full(lung.shape, -850.0, np.float32)
    idx = np.argwhere(lung)
    rng = np.random.default_rng(0)
    k = 517
    pick = idx[rng.choice(len(idx), k, replace=False)]
    hu[tuple(pick.T)] = -960.0
    hu[~lung] = -1000.0  # outside the lung: must not count
    # exactly at the threshold does not count (HU < threshold)
    exact = idx[rng.choice(len(idx), 50, replace=False)]
    exact = np.array([p for p in exact if hu[tuple(p)] != -960.0])
    hu[tuple(exact.T)] = -950.0
    r = emphysema_index(hu, (2.0, 1.0, 0.5), lung=lung)
    assert r.laa_percent == pytest.approx(100.0 * k / lung.sum(), abs=1e-12)
    assert r.lung_volume_ml == pytest.approx(lung.sum() * 1.0 / 1000.0)
    assert r.emphysema_mask.sum() == k
    assert r.threshold == -950.0 and r.engine_version == __version__
    r2 = emphysema_index(hu, (2.0, 1.0, 0.5), lung=lung, threshold=-949.0)
    assert r2.emphysema_mask.sum() == k + len(exact)


def test_perc15_known_distribution():
    lung = np.ones((4, 201, 25), bool)  # 20100 voxels
    # each HU value -1000..-800 appears exactly 100 times
    values = np.repeat(np.arange(-1000, -799, dtype=np.float32), 100)
    rng = np.random.default_rng(1)
    hu = rng.permutation(values).reshape(lung.shape)
    r = emphysema_index(hu, (1.0, 1.0, 1.0), lung=lung)
    assert r.perc15_hu == pytest.approx(-970.0)
    assert r.laa_percent == pytest.approx(100.0 * 50 * 100 / values.size)  # -1000..-951


def test_zones_and_lungs_sum_to_total():
    vol, truth = synthetic_chest(noise=0.0)
    hu = vol.hu.copy()
    rng = np.random.default_rng(2)
    hu[truth["lungs"] & (rng.random(hu.shape) < 0.2)] = -980.0
    lab = np.zeros(hu.shape, np.uint8)
    lab[truth["right"]] = 1
    lab[truth["left"]] = 2
    r = emphysema_index(hu, vol.spacing, lung=lab)
    emph_total = r.emphysema_volume_ml
    for group in (r.per_lung, r.per_zone):
        assert sum(g["lung_volume_ml"] for g in group.values()) == pytest.approx(r.lung_volume_ml)
        assert sum(g["emphysema_volume_ml"] for g in group.values()) == pytest.approx(emph_total)
        weighted = sum(g["laa_percent"] * g["voxels"] for g in group.values()) / r.lung.lungs.sum()
        assert weighted == pytest.approx(r.laa_percent)
    # zones: contiguous, cover the lung extent, upper is at the superior (last) end
    zs = zone_slices(r.lung.lungs)
    assert zs["lower"].stop == zs["middle"].start and zs["middle"].stop == zs["upper"].start
    assert zs["upper"].stop == np.nonzero(r.lung.lungs.any(axis=(1, 2)))[0][-1] + 1
    flipped = zone_slices(r.lung.lungs, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert flipped["upper"] == zs["lower"]
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    for key in ("laa_percent", "perc15_hu", "lung_volume_ml", "per_lung", "per_zone", "provenance"):
        assert key in d
    assert d["provenance"]["threshold_hu"] == -950.0
    assert d["provenance"]["engine_version"] == __version__


def test_emphysema_on_a_clean_texture_output_warns():
    from CTNormalizeLib.quantify import emphysema_index

    vol, _ = synthetic_chest(noise=20.0, seed=3)
    assert not [w for w in emphysema_index(vol).warnings if w["code"] == "CLEAN_TEXTURE_INPUT"]
    vol.meta["ctnormalize_texture"] = "clean"
    (w,) = [w for w in emphysema_index(vol).warnings if w["code"] == "CLEAN_TEXTURE_INPUT"]
    assert "reads low" in w["message"] and "--texture target" in w["message"]
    vol.meta["ctnormalize_texture"] = "target"
    assert not [w for w in emphysema_index(vol).warnings if w["code"] == "CLEAN_TEXTURE_INPUT"]


def test_emphysema_dice():
    rng = np.random.default_rng(3)
    a = rng.random((8, 16, 16)) < 0.3
    assert emphysema_dice(a, a) == 1.0
    b = ~a
    assert emphysema_dice(a, b) == 0.0
    c = a.copy()
    c[:4] = False
    expected = 2 * (a & c).sum() / (a.sum() + c.sum())
    assert emphysema_dice(a, c) == pytest.approx(expected)
    assert emphysema_dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)) == 1.0
    with pytest.raises(BadInputError):
        emphysema_dice(a, a[:4])


def test_emphysema_bad_inputs():
    hu = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(BadInputError):
        emphysema_index(hu, (1, 1, 1), lung=np.zeros((4, 8, 8), bool))
    with pytest.raises(BadInputError):
        emphysema_index(hu, (1, 1, 1), lung=np.ones((4, 8, 9), bool))
    with pytest.raises(BadInputError):
        emphysema_index(hu[0], (1, 1))


# ---------------------------------------------------------------- lung mask: synthetic chest

@pytest.mark.parametrize("spacing,noise", [((2.5, 3.0, 3.0), 0.0), ((5.0, 3.0, 3.0), 0.0), ((2.5, 1.5, 1.5), 250.0),
                                           ((5.0, 3.0, 3.0), 100.0)])
def test_lung_mask_synthetic_chest(spacing, noise):
    """Thin and 5 mm slices, and white noise as strong as a sharp low-dose kernel's."""
    nz = int(round(100 / spacing[0]))
    n = int(round(288 / spacing[1]))
    vol, truth = synthetic_chest(shape=(nz, n, n), spacing=spacing, noise=noise, seed=4)
    m = lung_mask(vol)
    assert dice(m.lungs, truth["lungs"]) >= 0.95
    assert dice(m.left, truth["left"]) >= 0.95
    assert dice(m.right, truth["right"]) >= 0.95
    assert not (m.left & m.right).any()
    # the trachea outside the lungs is removed
    assert np.count_nonzero(m.lungs & truth["airways"]) <= 0.1 * truth["airways"].sum()
    assert m.airways.any() and not any(w["code"] == "NO_TRACHEA" for w in m.warnings)
    # vessels inside the lungs stay lung: no holes
    assert np.count_nonzero(truth["lungs"] & ~m.lungs) <= 0.03 * truth["lungs"].sum()


def test_lung_mask_touching_lungs_split():
    vol, truth = synthetic_chest(shape=(40, 96, 96), spacing=(2.5, 3.0, 3.0), touching=True)
    m = lung_mask(vol)
    assert "erosion" in m.method or "components" in m.method
    assert dice(m.left, truth["left"]) >= 0.9
    assert dice(m.right, truth["right"]) >= 0.9


def test_lung_mask_emphysematous():
    vol, truth = synthetic_chest(shape=(40, 96, 96), spacing=(2.5, 3.0, 3.0), lung_hu=-960.0, noise=30.0, seed=5)
    m = lung_mask(vol)
    assert dice(m.lungs, truth["lungs"]) >= 0.95
    r = emphysema_index(vol, lung=m)
    assert r.laa_percent > 50.0


def test_lung_mask_flipped_z_uses_direction():
    vol, truth = synthetic_chest(shape=(40, 96, 96), spacing=(2.5, 3.0, 3.0))
    flipped = Volume(hu=vol.hu[::-1].copy(), spacing=vol.spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    m = lung_mask(flipped)
    assert dice(m.lungs, truth["lungs"][::-1]) >= 0.95
    assert m.airways.any()


def test_lung_mask_input_not_modified():
    vol, _ = synthetic_chest(shape=(20, 64, 64), spacing=(5.0, 4.5, 4.5))
    before = vol.hu.copy()
    lung_mask(vol)
    np.testing.assert_array_equal(vol.hu, before)


def test_lung_mask_bad_input():
    with pytest.raises(BadInputError):
        lung_mask(np.full((8, 32, 32), -1000.0, np.float32), (1, 1, 1))
    with pytest.raises(BadInputError):
        lung_mask(np.zeros((32, 32), np.float32), (1, 1))


# ---------------------------------------------------------------- user masks

def _write(arr, vol, path, **geometry):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(geometry.get("spacing", tuple(reversed(vol.spacing))))
    img.SetOrigin(geometry.get("origin", vol.origin))
    img.SetDirection(vol.direction)
    sitk.WriteImage(img, str(path))
    return path


def test_load_lung_mask(tmp_path):
    vol, truth = synthetic_chest(shape=(20, 64, 64), spacing=(5.0, 4.5, 4.5))
    lab = np.zeros(vol.shape, np.uint8)
    lab[truth["right"]] = 7
    lab[truth["left"]] = 3
    m = load_lung_mask(_write(lab, vol, tmp_path / "m.nrrd"), vol)
    assert isinstance(m, LungMask) and m.method.startswith("user:")
    np.testing.assert_array_equal(m.left, truth["left"])
    np.testing.assert_array_equal(m.right, truth["right"])
    single = load_lung_mask(_write(truth["lungs"].astype(np.uint8), vol, tmp_path / "s.nii.gz"), vol)
    assert dice(single.left, truth["left"]) > 0.99
    r = emphysema_index(vol, lung=m)
    assert r.mask_source == f"user:{tmp_path / 'm.nrrd'}"


def test_load_lung_mask_geometry_mismatch(tmp_path):
    vol, truth = synthetic_chest(shape=(20, 64, 64), spacing=(5.0, 4.5, 4.5))
    lab = truth["lungs"].astype(np.uint8)
    with pytest.raises(BadInputError, match="geometry"):
        load_lung_mask(_write(lab, vol, tmp_path / "a.nrrd", spacing=(4.0, 4.5, 5.0)), vol)
    with pytest.raises(BadInputError, match="origin"):
        load_lung_mask(_write(lab, vol, tmp_path / "b.nrrd", origin=(10.0, 0.0, 0.0)), vol)
    with pytest.raises(BadInputError, match="size"):
        load_lung_mask(_write(lab[:10], vol, tmp_path / "c.nrrd"), vol)
    with pytest.raises(BadInputError, match="not found"):
        load_lung_mask(tmp_path / "missing.nrrd", vol)
    with pytest.raises(BadInputError, match="empty"):
        load_lung_mask(_write(np.zeros_like(lab), vol, tmp_path / "e.nrrd"), vol)


# ---------------------------------------------------------------- real data

@pytest.mark.slow
def test_lung1_lung_mask_and_overlay(lung1_path, tmp_path):
    from CTNormalizeLib.quantify._io import read_volume
    from CTNormalizeLib.quantify.overlay import save_lung_overlay

    vol = read_volume(lung1_path)
    m = lung_mask(vol)
    # an adult chest slab: two lungs of plausible size, right larger than left here
    assert 1500 < m.volume_ml() < 6000
    assert m.left.sum() > 0.25 * m.lungs.sum() and m.right.sum() > 0.25 * m.lungs.sum()
    assert m.airways.any()
    png = save_lung_overlay(tmp_path / "overlay.png", vol.hu, m, vol.spacing, vol.direction)
    assert png.stat().st_size > 10_000
