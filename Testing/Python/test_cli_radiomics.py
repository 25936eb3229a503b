"""``ctnormalize radiomics`` through a subprocess: exit codes, JSON keys, CSV outputs."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from test_quantify_radiomics import _image, _phantom


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", "radiomics", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _case(tmp_path):
    hu, lab = _phantom(2)
    a, b, s = tmp_path / "a.nrrd", tmp_path / "b.nrrd", tmp_path / "s.nrrd"
    sitk.WriteImage(_image(hu), str(a))
    sitk.WriteImage(_image(hu + 20.0), str(b))
    sitk.WriteImage(_image(lab), str(s))
    return a, b, s, lab


def test_json_and_csv(tmp_path):
    a, b, s, _ = _case(tmp_path)
    out = tmp_path / "res" / "features.csv"
    p = _cli("--image", f"original={a}", "--image", f"normalized={b}", "--segments", s, "--json", "-o", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert {"features", "comparison", "provenance", "images", "warnings"} <= set(d)
    assert d["images"] == ["original", "normalized"]
    assert d["provenance"]["pyradiomics_version"] and d["provenance"]["params_path"].endswith("CT.yaml")
    row = next(r for r in d["comparison"] if r["feature"] == "original_firstorder_Mean" and r["segment"] == "label_1")
    assert abs(row["normalized_minus_original"] - 20.0) < 1e-3
    tidy = list(csv.DictReader(open(out)))
    assert len(tidy) == len(d["features"])
    wide = list(csv.DictReader(open(tmp_path / "res" / "features_comparison.csv")))
    assert list(wide[0]) == ["segment", "label", "feature", "original", "normalized",
                             "normalized_minus_original", "normalized_pct_vs_original"]
    assert len(wide) == len(d["comparison"]) == len(d["features"]) // 2
    by_key = {(r["segment"], r["feature"]): r for r in wide}
    assert float(by_key[("label_1", "original_firstorder_Mean")]["normalized_minus_original"]) == \
        pytest.approx(20.0, abs=1e-3)
    for r, c in zip(wide, d["comparison"]):
        assert (r["segment"], r["feature"]) == (c["segment"], c["feature"])
        assert float(r["normalized_minus_original"]) == pytest.approx(float(r["normalized"]) - float(r["original"]),
                                                                      rel=1e-9, abs=1e-9)


def test_table(tmp_path):
    a, b, s, _ = _case(tmp_path)
    p = _cli("--image", f"ct={a}", "--image", f"other={b}", "--segments", s)
    assert p.returncode == 0, p.stderr
    assert "original_firstorder_Mean" in p.stdout and "%other" in p.stdout and "pyradiomics" in p.stdout


def test_bad_inputs(tmp_path):
    a, b, s, lab = _case(tmp_path)
    p = _cli("--image", f"ct={a}", "--segments", tmp_path / "nope.nrrd")
    assert p.returncode == 2 and "not found" in p.stderr
    p = _cli("--image", str(a), "--segments", s)
    assert p.returncode == 2 and "NAME=PATH" in p.stderr
    empty = tmp_path / "empty.nrrd"
    sitk.WriteImage(_image(np.zeros_like(lab)), str(empty))
    p = _cli("--image", f"ct={a}", "--segments", empty, "--json")
    assert p.returncode == 2 and "No segment" in p.stderr
    assert json.loads(p.stdout)["error"]["code"] == "BAD_INPUT"  # --json: the refusal is the one object


def test_help():
    p = _cli("--help")
    assert p.returncode == 0 and "--segments" in p.stdout


def test_no_percent_for_a_position_on_the_hu_scale():
    """A mean of -2 HU that becomes +3 HU is not "-250 %": features that are a position on the HU scale get
    their difference only; a spread keeps its percent."""
    from CTNormalizeLib.quantify.radiomics import RadiomicsResult

    rows = [{"segment": "s", "label": 1, "image": im, "feature": f, "value": v}
            for im, vals in (("a", (-2.0, 10.0)), ("b", (3.0, 12.0)))
            for f, v in zip(("original_firstorder_Mean", "original_firstorder_Range"), vals)]
    wide = {r["feature"]: r for r in RadiomicsResult(rows, ["a", "b"], {}).wide()}
    assert wide["original_firstorder_Mean"]["b_minus_a"] == 5.0 and wide["original_firstorder_Mean"]["b_pct_vs_a"] is None
    assert wide["original_firstorder_Range"]["b_pct_vs_a"] == pytest.approx(20.0)
