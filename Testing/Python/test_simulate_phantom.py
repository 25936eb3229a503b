"""The procedural chest phantom: anatomy in realistic HU, consistent masks, ground-truth LAA-950."""

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.simulate import make_phantom

SHAPE = (32, 112, 112)
SPACING = (1.0, 1.4, 1.4)


@pytest.fixture(scope="module")
def emph():
    return make_phantom(3, shape=SHAPE, spacing=SPACING, emphysema=0.15, nodules=2)


@pytest.fixture(scope="module")
def healthy():
    return make_phantom(4, shape=SHAPE, spacing=SPACING, emphysema=0.0, nodules=0)


def test_masks_are_consistent(emph):
    m = emph.masks
    for key in ("body", "lungs", "lung_left", "lung_right", "airways", "vessels", "nodules", "emphysema"):
        assert m[key].dtype == bool and m[key].shape == SHAPE
    assert m["lungs"].any() and m["lung_left"].any() and m["lung_right"].any()
    assert not (m["lungs"] & ~m["body"]).any()
    assert not (m["lung_left"] & m["lung_right"]).any()
    assert np.array_equal(m["lung_left"] | m["lung_right"], m["lungs"])
    assert not (m["emphysema"] & ~m["lungs"]).any()
    assert not (m["airways"] & m["lungs"]).any()
    # Left lung is on the patient's left: +x in LPS, the right half of the array.
    xs = np.argwhere(m["lung_left"])[:, 2].mean()
    assert xs > SHAPE[2] / 2 > np.argwhere(m["lung_right"])[:, 2].mean()


def test_ground_truth_laa_is_the_truth_fraction_below_950(emph):
    hu, lungs = emph.volume.hu, emph.masks["lungs"]
    frac = float(np.mean(hu[lungs] < -950))
    assert emph.info["laa950"] == pytest.approx(frac, abs=1e-9)
    assert np.array_equal(emph.masks["emphysema"], lungs & (hu < -950))
    assert emph.info["laa950"] == pytest.approx(0.15, abs=0.002)  # lesions are added until the target is met
    assert emph.info["laa950_percent"] == pytest.approx(100 * frac, abs=1e-3)


def test_healthy_parenchyma_never_below_950(healthy):
    hu, lungs = healthy.volume.hu, healthy.masks["lungs"]
    assert healthy.info["laa950"] < 0.001
    par = hu[lungs & ~healthy.masks["vessels"]]
    # parenchyma between the vessels at full inspiration: about -900..-875 HU
    assert -910 < np.median(par) < -860
    assert par.std() > 5  # textured, not flat
    # whole-lung mean density, vessels and fissures included: healthy adults at full inspiration
    # are near -850; a slab through the hila is denser
    assert -880 < hu[lungs].mean() < -780


def test_tissue_values_are_chest_ct_like(healthy):
    hu, m = healthy.volume.hu, healthy.masks
    assert np.median(hu[m["fat"]]) == pytest.approx(-95, abs=25)
    assert np.median(hu[m["muscle"]]) == pytest.approx(45, abs=20)
    assert 400 < np.percentile(hu[m["bone"]], 95) < 1100
    # air outside: the partial-volume ring of the skin (and rib edges, whose bone label reaches one
    # voxel past the body mask) stays within 3 voxels of the body; everything beyond is exactly air
    from scipy import ndimage

    near = ndimage.binary_dilation(m["body"], iterations=3)
    assert np.all(hu[~near] == -1000.0) and np.median(hu[~m["body"]]) == -1000.0
    assert np.median(hu[m["airways"]]) < 0  # lumen air inside walls
    assert m["vessels"].sum() > 0.01 * m["lungs"].sum()


def test_emphysema_is_discrete_near_air_lesions_with_heavy_tailed_sizes():
    ph = make_phantom(8, shape=(48, 128, 128), spacing=(0.8, 1.2, 1.2), emphysema=0.2, nodules=0)
    from scipy import ndimage

    hu, emph = ph.volume.hu, ph.masks["emphysema"]
    lab, n = ndimage.label(emph)
    sizes = np.bincount(lab.ravel())[1:]
    assert n > 30
    # Heavy tail: the largest clusters are far bigger than the typical one.
    assert sizes.max() > 50 * np.median(sizes)
    assert np.mean(sizes > 10 * np.median(sizes)) > 0.02
    # Lesion interiors are near air, well below the -950 threshold (not a field grazing it).
    core = ndimage.binary_erosion(emph)
    assert np.median(hu[core]) < -980
    # Discrete blobs: most of the emphysema volume is in lesions at least 3 mm across.
    d_mm = (6 * sizes * np.prod(ph.volume.spacing) / np.pi) ** (1 / 3)
    assert sizes[d_mm >= 3].sum() > 0.9 * sizes.sum()
    kinds = ph.info["emphysema_lesions"]
    assert set(kinds) == {"centrilobular", "confluent", "bulla"} and kinds["centrilobular"] > 0


def test_centrilobular_emphysema_is_upper_zone_predominant():
    ph = make_phantom(9, shape=(64, 96, 96), spacing=(2.5, 2.0, 2.0), emphysema=0.05, nodules=0)
    lungs, emph = ph.masks["lungs"], ph.masks["emphysema"]
    per_slice = emph.sum(axis=(1, 2)) / np.maximum(lungs.sum(axis=(1, 2)), 1)
    z = np.nonzero(lungs.any(axis=(1, 2)))[0]
    third = len(z) // 3
    # index 0 is the most inferior slice (z grows towards the head)
    assert per_slice[z[-third:]].mean() > 1.5 * per_slice[z[:third]].mean()


def test_nodules_labels_and_info(emph):
    info = emph.info["nodules"]
    assert len(info) == 2
    labels = emph.nodule_labels
    assert set(np.unique(labels)) == {0, 1, 2}
    for n in info:
        assert n["type"] in ("solid", "part-solid", "ground-glass")
        assert n["diameter_mm"] > 0
        z, y, x = n["center_zyx"]
        assert labels[z, y, x] == n["label"]
        vals = emph.volume.hu[labels == n["label"]]
        if n["type"] == "solid":
            assert np.median(vals) > -150
        elif n["type"] == "ground-glass":
            assert -750 < np.median(vals) < -250
    assert np.array_equal(emph.masks["nodules"], labels > 0)


def test_seeded_and_deterministic():
    a = make_phantom(21, shape=(8, 64, 64), spacing=(1.0, 2.5, 2.5), emphysema=None, nodules=None)
    b = make_phantom(21, shape=(8, 64, 64), spacing=(1.0, 2.5, 2.5), emphysema=None, nodules=None)
    c = make_phantom(22, shape=(8, 64, 64), spacing=(1.0, 2.5, 2.5), emphysema=None, nodules=None)
    assert np.array_equal(a.volume.hu, b.volume.hu)
    assert a.info == b.info
    assert not np.array_equal(a.volume.hu, c.volume.hu)
    assert a.volume.spacing == (1.0, 2.5, 2.5)
    assert a.volume.meta["Modality"] == "CT"


def test_bad_arguments():
    with pytest.raises(BadInputError):
        make_phantom(1, shape=(8, 8, 8))
    with pytest.raises(BadInputError):
        make_phantom(1, shape=(8, 64, 64), emphysema=0.9)
