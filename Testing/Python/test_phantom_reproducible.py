"""A seed gives the same phantom bit for bit: voxels, masks, nodule labels, info and geometry.

The hashes were computed with the phantom as it was before ``simulate/phantom.py`` was split
into a package (commit 10649fb, numpy 2 / scipy 1.17 of the project's environment). A
different hash means the phantom changed: if that is intended, bump ``PHANTOM_VERSION``
(training banks and benchmark cases depend on it) and record the new hashes here.
"""

import hashlib
import json

import numpy as np
import pytest

from CTNormalizeLib.simulate import make_phantom

CASES = [
    # (seed, shape, spacing, emphysema, nodules) -> sha256
    ((3, (12, 64, 64), (2.0, 1.5, 1.5), 0.15, 2),
     "24c43b81f17a196bb03cb14eeefa3ff9d3f93bc6527b21ac5ab1b4e2fa483043"),
    ((1000, (16, 72, 72), (1.5, 1.2, 1.2), None, None),  # emphysema and nodules drawn from the seed
     "cf0d20f32c5231434e4382a676ebc3bf3bb9a1e14cc76d214629a199a4d6f663"),
]


def phantom_hash(ph) -> str:
    h = hashlib.sha256()
    h.update(ph.volume.hu.tobytes())
    for k in sorted(ph.masks):
        h.update(k.encode())
        h.update(np.packbits(ph.masks[k]).tobytes())
    h.update(ph.nodule_labels.tobytes())
    h.update(json.dumps(ph.info, sort_keys=True).encode())
    h.update(json.dumps(ph.volume.meta, sort_keys=True).encode())
    h.update(repr((ph.volume.spacing, ph.volume.origin)).encode())
    return h.hexdigest()


@pytest.mark.parametrize("args, expected", CASES)
def test_phantom_is_bit_identical_for_its_seed(args, expected):
    assert phantom_hash(make_phantom(*args)) == expected


def test_the_hash_sees_a_one_voxel_change():
    ph = make_phantom(*CASES[0][0])
    ph.volume.hu[5, 30, 30] += 0.001
    assert phantom_hash(ph) != CASES[0][1]
