"""The README's demo command, on a small phantom."""

import json
import subprocess
import sys


def test_demo_writes_volumes_picture_and_an_honest_table(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "CTNormalizeLib", "demo", "-o", str(out), "--shape", "48,96,96",
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for name in ("source.nrrd", "target.nrrd", "replicate.nrrd", "normalized.nrrd", "demo.png", "demo.json"):
        assert (out / name).is_file(), name
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(res["l1_hu_in_body_vs_target"].values())
    source, normalized, floor = rows[0], rows[1], rows[-1]
    assert floor < normalized < source  # normalization helps, and does not beat a rescan
    assert res["gap_closed"] > 0.3
    assert json.loads((out / "demo.json").read_text())["method"] == res["method"]
    assert not list(out.glob(".*tmp*"))
