"""Procedural, seeded 3D chest phantom: noise-free "truth" in HU plus ground-truth masks.

The anatomy is laid out in an *adult-chest* coordinate frame (mm: ``u`` to the patient's
left, ``v`` posterior, ``zeta`` superior with 0 at the carina) and scaled so that the body
fills the requested field of view; the z extent of the volume is a slab of the chest
(position drawn from the seed). Structures are painted with partial-volume (soft) edges:

- body: skin, subcutaneous fat, muscle (thicker paraspinal), ribs with cortex and marrow
  that run obliquely around the chest, sternum, vertebrae with discs, spinal canal;
- mediastinum: fat, heart, aorta (ascending, arch, descending), pulmonary trunk, SVC,
  oesophagus; below the diaphragm domes, liver and upper abdomen;
- lungs: parenchyma between the vessels at -900..-875 HU with correlated texture and a
  posterior (dependent) gradient, fissures, two space-filling vessel trees per lung (tapered
  tubes, radius exponent 2.4), airways (trachea, main bronchi, a few generations) with walls;
- nodules (solid, part-solid, ground-glass), lobulated;
- emphysema: discrete near-air lesions (about -993 HU) with sharp (one-voxel) borders, of three
  kinds: centrilobular (3-10 mm, upper zones, vessels kept), confluent / panlobular regions
  (10-30 mm, lobulated, avascular) and subpleural bullae (10-30 mm, avascular); diameters follow
  truncated power laws in physical mm; milder disease is mostly centrilobular.

Healthy parenchyma stays above -935 HU, so the ground-truth LAA-950 is exactly the
fraction of lung voxels below -950 HU in the truth, which ``info["laa950"]`` reports.
No library generates anatomical CT phantoms procedurally (XCAT-like phantoms are fixed
meshes with licences), hence this package:

- :mod:`.make` -- :func:`make_phantom` and :class:`Phantom`: the steps in order, masks, ``info``;
- :mod:`.geometry` -- the adult-chest frame, partial-volume edges, shapes, random fields;
- :mod:`.anatomy` -- chest wall, cavity, mediastinum, spine and sternum, slice by slice;
- :mod:`.lungs` -- parenchyma and fissures, vessel and airway trees, nodules;
- :mod:`.emphysema` -- emphysema lesions up to a target LAA-950.
"""

from .anatomy import HU, TISSUE_LABELS  # noqa: F401
from .make import ADULT_FOV, PHANTOM_VERSION, Phantom, make_phantom  # noqa: F401
