"""The README's demo command, on a small phantom."""

import json
import subprocess
import sys

import numpy as np
import pytest


def test_demo_writes_volumes_picture_and_an_honest_table(tmp_path):
    import matplotlib.image as mpimg

    from CTNormalizeLib.evaluate.grid import to_target_grid
    from CTNormalizeLib.evaluate.metrics import l1_hu
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.simulate import make_phantom

    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "CTNormalizeLib", "demo", "-o", str(out), "--shape", "48,96,96",
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert json.loads((out / "demo.json").read_text()) == res
    assert res["files"] == sorted(p.name for p in out.iterdir() if p.name != "demo.json")
    rows = list(res["l1_hu_in_body_vs_target"].values())
    source, normalized, floor = rows[0], rows[1], rows[-1]
    assert floor < normalized < source  # normalization helps, and does not beat a rescan
    assert res["gap_closed"] == pytest.approx((source - normalized) / (source - floor), rel=1e-12)
    assert res["gap_closed"] > 0.3

    # the table is measured on the written volumes: recompute it from the files
    vols = {n: read_volume(out / f"{n}.nrrd") for n in ("source", "target", "replicate", "normalized")}
    ph = make_phantom(res["seed"], shape=(48, 96, 96))
    masks = ph.volume.with_array(ph.masks["body"].astype(np.float32))
    tgt, (src, norm, rep, body), _ = to_target_grid(vols["target"], vols["source"], vols["normalized"],
                                                    vols["replicate"], masks)
    body = body.hu > 0.5
    # the target's protocol and in-plane grid (the z count follows the source's extent)
    assert vols["normalized"].hu.shape[1:] == vols["target"].hu.shape[1:]
    assert vols["normalized"].spacing == pytest.approx(vols["target"].spacing)
    assert [l1_hu(a.hu, tgt.hu, body) for a in (src, norm, rep)] == pytest.approx([source, normalized, floor],
                                                                                  rel=1e-4)
    img = mpimg.imread(out / "demo.png")
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert img.shape[0] > 200 and img.shape[1] > 400 and float(img[..., :3].std()) > 0.05  # a picture, not blank
    assert not list(out.glob(".*tmp*"))
