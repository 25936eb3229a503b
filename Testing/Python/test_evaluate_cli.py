"""``ctnormalize evaluate`` in files mode: table, JSON, HTML report, errors."""

import base64
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from CTNormalizeLib.classical import synthetic
from CTNormalizeLib.cli.main import main
from CTNormalizeLib.io import write_volume
from CTNormalizeLib.volume import Volume

SP = (0.5, 0.7, 0.7)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    truth = synthetic.disk_phantom((32, 112, 112), SP, seed=1001)
    out = {}
    for name, (k, dose, t, seed) in {"target": ("smooth", 1.0, 1.0, 1), "replicate": ("smooth", 1.0, 1.0, 2),
                                     "source": ("sharp", 0.25, 2.0, 3), "output": ("smooth", 0.8, 1.0, 4)}.items():
        hu, sp = synthetic.scan(truth, SP, k, dose, t, seed=seed)
        out[name] = write_volume(Volume(hu, sp), d / f"{name}.nrrd")
    tgt = sitk.ReadImage(str(out["target"]))
    lab = np.zeros(sitk.GetArrayFromImage(tgt).shape, np.uint8)
    lab[4:10, 40:50, 30:40] = 1
    lab[4:10, 60:70, 70:80] = 2
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(tgt)
    sitk.WriteImage(img, str(d / "seg.nrrd"))
    out["segments"] = d / "seg.nrrd"
    out["dir"] = d
    return out


def test_json_mode_prints_only_json_with_floor(files, capsys):
    rc = main(["evaluate", "--source", str(files["source"]), "--output", str(files["output"]),
               "--target", str(files["target"]), "--replicate", str(files["replicate"]), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    row = res["table"]["l1_body_hu"]
    assert row["source"] > row["output"] > row["replicate"]
    assert row["gap_closed"] == pytest.approx((row["source"] - row["output"]) / (row["source"] - row["replicate"]),
                                              rel=1e-12)
    assert 0 < row["gap_closed"] < 1
    assert res["lpips"] is None and res["lpips_note"].startswith("absent")
    assert res["settings"]["window_hu"] == [-1350.0, 150.0] and res["settings"]["data_range"] == 1500.0
    assert len(res["provenance"]["sha256"]["target"]) == 64


def test_report_is_self_contained_with_pictures(files, capsys):
    html_path = files["dir"] / "report.html"
    rc = main(["evaluate", "--source", str(files["source"]), "--output", str(files["output"]),
               "--target", str(files["target"]), "--replicate", str(files["replicate"]),
               "--segments", str(files["segments"]), "--report", str(html_path),
               "--method", "classical:auto", "--target-protocol", "emphysema-reference"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "gap closed" in text and "l1_body_hu" in text
    html = html_path.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) >= 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert not re.search(r'src="(?!data:)', html)
    for needle in ("source vs target", "replicate vs target", "gap closed", "classical:auto",
                   "emphysema-reference", "sha256", "ctnormalize", "LPIPS"):
        assert needle in html, needle


def test_bad_inputs_exit_2(files, tmp_path, capsys):
    assert main(["evaluate", "--target", str(files["target"])]) == 2
    assert main(["evaluate", "--target", str(files["target"]), "--source", str(files["source"]),
                 "--window=150,-1350"]) == 2
    small = write_volume(Volume(np.zeros((8, 20, 20), np.float32) - 1000, (1, 1, 1)), tmp_path / "s.nrrd")
    assert main(["evaluate", "--target", str(files["target"]), "--source", str(small)]) == 2
    assert "error" in capsys.readouterr().err
