"""The phantom's anatomy outside the lung parenchyma, painted slice by slice.

Each axial slice is painted in order (later structures cover earlier ones): chest wall
(skin, fat, muscle, ribs), thoracic cavity (lungs above the diaphragm domes, liver below),
mediastinum (fat, heart, great vessels, oesophagus), spine and sternum.
"""

from __future__ import annotations

import numpy as np

from .geometry import capsule_sdf, ellipse_sdf, soft

HU = {
    "air": -1000.0, "skin": 30.0, "fat": -100.0, "muscle": 45.0, "cortex": 850.0, "marrow": 260.0,
    "vertebra": 230.0, "disc": 80.0, "csf": 10.0, "blood": 40.0, "myocardium": 48.0,
    "mediastinal_fat": -95.0, "liver": 58.0, "cartilage": 110.0, "wall": 20.0, "oesophagus": 35.0,
    "emphysema": -990.0,
}

TISSUE_LABELS = {"soft": 1, "fat": 2, "muscle": 3, "bone": 4, "heart": 5, "abdomen": 6}


class Painter:
    """Paints one axial slice: HU, lung fraction, tissue labels."""

    def __init__(self, shape):
        self.hu = np.full(shape, HU["air"], np.float32)
        self.lung = np.zeros(shape, np.float32)
        self.label = np.zeros(shape, np.uint8)

    def paint(self, f, value, label=0, lung=False):
        if np.isscalar(f) and f == 0:
            return
        self.hu = self.hu * (1 - f) + (0.0 if lung else value) * f
        self.lung = self.lung * (1 - f) + (f if lung else 0.0)
        if label or lung:
            self.label[f > 0.5] = label


class Anatomy:
    """Seeded parameters of one patient, in adult mm."""

    def __init__(self, rng, height_adult):
        r = rng.uniform
        self.a = r(146, 168)  # body half-width
        self.b = r(98, 122)  # body half-depth
        self.p_body = r(2.1, 2.6)
        self.fat = r(6, 24)
        self.muscle = r(7, 13)
        self.rib_layer = r(9, 12)
        self.heart_scale = r(0.9, 1.1)
        # Healthy parenchyma between the vessels at full inspiration: about -900..-875 HU (the
        # whole-lung mean, vessels included, lands near -860). Its position against -950 matters:
        # lesions at about -993 HU cross -950 near the middle of their edge, so blur neither
        # shrinks nor grows large lesions much (midway crossing conserves volume to first order).
        self.parenchyma = r(-900, -875)
        self.gradient = r(12, 28)  # HU denser posteriorly (dependent lung)
        self.rib_phase = r(0, 24)
        self.rib_slope = r(55, 85)
        self.vert_phase = r(0, 27)
        span = max(0.0, 300.0 - height_adult)
        centre = -30.0 + r(-0.5, 0.5) * min(span, 120.0)
        self.zeta_lo = centre - height_adult / 2
        self.dome_r = r(-120, -100)
        self.dome_l = self.dome_r - r(5, 20)

    @property
    def trachea_v(self) -> float:
        """Antero-posterior position (adult mm) of the trachea and carina."""
        return self.b + 8.0 - 2.0 - self.fat - self.muscle - 22.0 - 45.0


def paint_slice(P: Painter, U, V, zeta, A: Anatomy, pix, pix_z, cache: dict):
    """Paint the extruded anatomy of one axial slice at height ``zeta`` (adult mm); returns the body's signed distance."""
    sdf_body, d_cav, b = _paint_chest_wall(P, U, V, zeta, A, pix, cache)
    f_cav = _paint_cavity(P, U, V, zeta, A, d_cav, pix, pix_z)
    front = -b + 8.0 + 2.0 + A.fat + A.muscle + A.rib_layer
    v_vb = b + 8.0 - 2.0 - A.fat - A.muscle - 22.0
    _paint_mediastinum(P, U, V, zeta, A, f_cav, front, v_vb, pix)
    _paint_spine(P, U, V, zeta, A, v_vb, pix)
    # Sternum.
    if -110 < zeta < 60:
        P.paint(soft(ellipse_sdf(U, V, 0.0, front - 6.0, 16.0, 6.0), pix), HU["cortex"] - 300,
                TISSUE_LABELS["bone"])
        P.paint(soft(ellipse_sdf(U, V, 0.0, front - 6.0, 13.0, 3.5), pix), HU["marrow"], TISSUE_LABELS["bone"])
    return sdf_body


def _paint_chest_wall(P, U, V, zeta, A, pix, cache):
    """Skin, fat, muscle and ribs; returns (body signed distance, depth inside the rib layer, half-depth b)."""
    # Body tapers to the neck above the apex.
    neck = float(np.clip((zeta - 110.0) / 60.0, 0, 1))
    # The chest widens towards its base (quantised so that slices can share the body arrays).
    widen = 1.0 + 0.005 * round(10.0 * float(np.clip(-zeta / 150.0, -0.5, 1.0)))
    a = A.a * (1 - 0.45 * neck) * widen
    b = A.b * (1 - 0.25 * neck) * (1 + 0.4 * (widen - 1))
    key = (round(neck, 3), widen)
    if key not in cache:
        phi = np.arctan2(U, V)  # 0 = posterior midline, +-pi anterior
        sdf_body = ellipse_sdf(U, V, 0.0, 8.0, a, b, p=A.p_body)
        fat = A.fat * (1 + 0.35 * np.cos(phi) ** 2)
        muscle = A.muscle + 28.0 * np.clip(np.cos(phi), 0, 1) ** 6 + 8.0 * np.clip(-np.cos(phi), 0, 1) ** 2
        cache.clear()
        cache[key] = (phi, sdf_body, fat, muscle)
    phi, sdf_body, fat, muscle = cache[key]
    P.paint(soft(sdf_body, pix), HU["skin"], TISSUE_LABELS["soft"])
    P.paint(soft(sdf_body - 2.0, pix), HU["fat"], TISSUE_LABELS["fat"])
    d_muscle = sdf_body - 2.0 - fat
    P.paint(soft(d_muscle, pix), HU["muscle"], TISSUE_LABELS["muscle"])
    d_ribs = d_muscle - muscle
    _paint_ribs(P, phi, d_ribs, zeta, A, pix)
    return sdf_body, d_ribs - A.rib_layer, b


def _paint_ribs(P, phi, d_ribs, zeta, A, pix):
    """Ribs: bands around the chest wall that fall from posterior to anterior (cartilage in front)."""
    rib_centre = d_ribs - A.rib_layer / 2
    frac = np.abs(phi) / np.pi
    for k in range(-8, 16):
        z_post = A.rib_phase + 24.0 * k - 80.0
        zc = z_post - A.rib_slope * frac ** 1.3
        dz = (zeta - zc) / 5.5
        if np.min(np.abs(dz)) > 1.6:
            continue
        dr = rib_centre / (A.rib_layer * 0.42)
        e = np.sqrt(dr**2 + dz**2)
        anterior = frac > 0.82
        f = soft((1.0 - e) * 4.0, pix) * (frac > 0.06)
        P.paint(f * anterior, HU["cartilage"], TISSUE_LABELS["bone"])
        P.paint(f * ~anterior, HU["cortex"], TISSUE_LABELS["bone"])
        P.paint(soft((0.62 - e) * 4.0, pix) * ~anterior * (frac > 0.06), HU["marrow"], TISSUE_LABELS["bone"])


def _paint_cavity(P, U, V, zeta, A, d_cav, pix, pix_z):
    """Thoracic cavity: lungs where nothing else is, above the diaphragm domes, liver below; returns its fraction."""
    apex = np.clip((zeta - 40.0) / 80.0, 0, 1)
    shrink = np.sqrt(np.clip(1 - apex**2, 0, 1))
    cav_in = d_cav - (1 - shrink) * 90.0
    f_cav = soft(cav_in, pix)
    dome = np.where(U < 0, A.dome_r - 60 * ((U + 55) / 75) ** 2 - 45 * ((V + 20) / 110) ** 2,
                    A.dome_l - 60 * ((U - 55) / 75) ** 2 - 45 * ((V + 20) / 110) ** 2)
    f_chest = soft(zeta - dome, pix_z)
    f_lung = f_cav * f_chest
    P.paint(f_lung, 0.0, lung=True)
    P.paint(f_cav * (1 - f_chest), HU["liver"], TISSUE_LABELS["abdomen"])
    return f_cav


def _paint_mediastinum(P, U, V, zeta, A, f_cav, front, v_vb, pix):
    """Mediastinal fat, heart, aorta, pulmonary trunk, SVC and oesophagus."""
    # Narrow anteriorly (junction line), widest mid-way (great vessels), then the spine.
    t = np.clip((V - front) / max(v_vb + 10.0 - front, 1.0), 0, 1)
    width = 13.0 + 17.0 * np.sin(np.pi * t) ** 0.7
    band = np.minimum(width - np.abs(U - 4.0), np.minimum(V - front + 4.0, v_vb + 40 - V))
    P.paint(soft(band, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
    hz = (zeta + 75.0) / 58.0
    if abs(hz) < 1:
        s = np.sqrt(1 - hz**2) * A.heart_scale
        heart = ellipse_sdf(U, V, 22.0, -18.0 + 0.15 * (zeta + 75), 62.0 * s + 1e-3, 47.0 * s + 1e-3, rot=0.55)
        P.paint(soft(heart + 4.0, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
        P.paint(soft(heart, pix), HU["myocardium"], TISSUE_LABELS["heart"])
        P.paint(soft(heart - 9.0, pix), HU["blood"], TISSUE_LABELS["heart"])
    vessels2d = []
    if -45 < zeta < 32:
        vessels2d.append(ellipse_sdf(U, V, -12.0, -22.0, 15.0, 15.0))  # ascending aorta
    if 30 <= zeta < 46:
        vessels2d.append(capsule_sdf(U, V, (-12.0, -22.0), (20.0, v_vb - 15.0), 13.0))  # arch
    if zeta < 40:
        vessels2d.append(ellipse_sdf(U, V, 24.0, v_vb - 14.0, 12.0, 12.0))  # descending aorta
    if -48 < zeta < -8:
        vessels2d.append(ellipse_sdf(U, V, 14.0, -28.0, 14.0, 13.0))  # pulmonary trunk
    if -30 < zeta < 45:
        vessels2d.append(ellipse_sdf(U, V, -30.0, -12.0, 10.0, 9.0))  # SVC
    for sdf in vessels2d:
        P.paint(soft(sdf + 2.5, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
        P.paint(soft(sdf, pix), HU["blood"], TISSUE_LABELS["heart"])
    P.paint(soft(ellipse_sdf(U, V, 8.0, v_vb - 26.0, 8.0, 6.0), pix), HU["oesophagus"], TISSUE_LABELS["soft"])


def _paint_spine(P, U, V, zeta, A, v_vb, pix):
    """Vertebral body (or disc), canal and posterior elements."""
    in_disc = ((zeta - A.vert_phase) % 27.0) < 5.0
    vb = ellipse_sdf(U, V, 0.0, v_vb, 19.0, 16.0)
    P.paint(soft(vb + 3.0, pix), HU["muscle"], TISSUE_LABELS["muscle"])
    if in_disc:
        P.paint(soft(vb, pix), HU["disc"], TISSUE_LABELS["soft"])
    else:
        P.paint(soft(vb, pix), HU["cortex"] - 150, TISSUE_LABELS["bone"])
        P.paint(soft(vb - 2.0, pix), HU["vertebra"], TISSUE_LABELS["bone"])
    arch = ellipse_sdf(U, V, 0.0, v_vb + 24.0, 13.0, 12.0)
    P.paint(soft(arch, pix), HU["cortex"] - 100, TISSUE_LABELS["bone"])
    for side in (-1, 1):
        P.paint(soft(ellipse_sdf(U, V, side * 24.0, v_vb + 18.0, 12.0, 5.0, rot=side * 0.5), pix),
                HU["cortex"] - 100, TISSUE_LABELS["bone"])
    P.paint(soft(ellipse_sdf(U, V, 0.0, v_vb + 40.0, 4.5, 12.0), pix), HU["cortex"] - 100, TISSUE_LABELS["bone"])
    P.paint(soft(ellipse_sdf(U, V, 0.0, v_vb + 24.0, 7.5, 7.0), pix), HU["csf"], TISSUE_LABELS["soft"])
