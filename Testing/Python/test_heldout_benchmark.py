"""The held-out-physics benchmark on the tiny independent-simulator case, and its column in the quality benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from CTNormalizeLib.benchmark_methods import classical_methods
from CTNormalizeLib.evaluate import benchmark, heldout_benchmark as hb


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import os

    old = os.environ.get("CTNORMALIZE_CACHE")
    os.environ["CTNORMALIZE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    methods = classical_methods(["mtf_ratio", "histogram_match"]) + [
        benchmark.MethodProvider("identity", lambda v, s, t, reference=None: v),
        benchmark.MethodProvider("boom", lambda v, s, t, reference=None: 1 / 0)]
    try:
        yield hb.run_heldout("tiny", methods)
    finally:
        if old is None:
            os.environ.pop("CTNORMALIZE_CACHE", None)
        else:
            os.environ["CTNORMALIZE_CACHE"] = old


def test_rows_hold_both_floors(tiny):
    (case,) = tiny["cases"]
    rows = case["rows"]
    assert set(rows) == {"source", "classical:mtf_ratio", "classical:histogram_match", "identity",
                         hb.NOISE_FREE, "replicate"}
    assert case["source_spec"] == "kernel=sharp,dose=0.25,thickness=2"
    assert rows["identity"]["gap_closed_body"] == pytest.approx(0.0, abs=1e-9)  # the source itself closes nothing
    assert rows["replicate"]["gap_closed_body"] == pytest.approx(1.0)
    assert rows[hb.NOISE_FREE]["gap_closed_body_noise_free"] == pytest.approx(1.0)
    # a noise-free estimate beats a replicate: it closes more than the whole gap
    assert rows[hb.NOISE_FREE]["gap_closed_body"] > 1.0
    assert rows["classical:mtf_ratio"]["gap_closed_body"] > 0.2  # sharp -> smooth smoothing helps
    for r in rows.values():
        assert r["l1_lung_hu"] is not None and r["ei_error_pt"] is not None
    assert rows["source"]["ei_error_pt"] > 0 and case["target_laa_percent"] > 0
    assert "ZeroDivisionError" in case["errors"]["boom"]  # a failing method is reported, not fatal


def test_summary_and_written_files(tiny, tmp_path):
    s = tiny["summary"]
    assert s["replicate"]["gap_closed_body"] == pytest.approx(1.0) and s["identity"]["n_cases"] == 1
    w = hb.write_heldout(tiny, tmp_path)
    data = json.loads(open(w["json"]).read())
    assert data["cases"][0]["rows"]["replicate"]["gap_closed_body"] == pytest.approx(1.0)
    assert "_examples" not in data and len(w["pngs"]) >= 2
    html = open(w["report"]).read()
    assert "phantom1000-tiny" in html and "noise-free target" in html
    text = hb.format_table(tiny)
    assert "gap rep" in text and "classical:mtf_ratio" in text


def test_quality_benchmark_gets_the_heldout_column(tiny, monkeypatch):
    monkeypatch.setattr(hb, "run_heldout", lambda size, methods, progress=None, keep_examples=False: tiny)
    sec = benchmark.heldout_section("tiny", [])
    assert sec["per_method"]["classical:mtf_ratio"]["gap_closed_body"] is not None
    assert "replicate" in sec["floors"] and sec["cases"][0].startswith("phantom1000-tiny")
    fake = {"summary": {"per_method": {"classical:mtf_ratio": {"l1_body_hu": {
        "source": 10.0, "output": 6.0, "replicate": 2.0, "gap_closed": 0.5}}}}, "heldout_physics": sec}
    table = benchmark.format_table(fake)
    assert "heldout gap L1 body" in table and "heldout EI error" in table
    assert np.isfinite(sec["per_method"]["replicate"]["gap_closed_body"])


def test_quality_report_shows_the_heldout_section(tiny, monkeypatch):
    from CTNormalizeLib.evaluate.report import benchmark_report_html

    monkeypatch.setattr(hb, "run_heldout", lambda size, methods, progress=None, keep_examples=False: tiny)
    page = benchmark_report_html({"summary": {}, "heldout_physics": benchmark.heldout_section("tiny", [])}, {})
    assert "Held-out physics (independent simulator)" in page and "classical:mtf_ratio" in page
    assert "Held-out physics" not in benchmark_report_html({"summary": {}}, {})


def test_source_auto_mode_gives_the_methods_auto(monkeypatch, tmp_path):
    """``--source-auto``: every method gets ``source="auto"`` instead of the nominal protocol."""
    monkeypatch.setenv("CTNORMALIZE_CACHE", str(tmp_path))
    seen = []

    def spy(v, s, t, reference=None):
        seen.append(s)
        return v

    res = hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], source_mode="auto", keep_examples=False)
    assert seen == ["auto"] and res["source_mode"] == "auto"
    res = hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], keep_examples=False)
    assert seen[-1] != "auto" and seen[-1].kernel == "sharp" and res["source_mode"] == "explicit"
    with pytest.raises(Exception, match="source_mode"):
        hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], source_mode="guess", keep_examples=False)


def test_target_like_mode_gives_the_methods_a_reference_scan_of_the_target(monkeypatch, tmp_path):
    """``--target-like``: every method gets a scan made with the target's physics (another anatomy),
    not the protocol string; a real provider plans its target from that scan's measured signature."""
    from CTNormalizeLib.evaluate.independent_sim import cases as hcases
    from CTNormalizeLib.volume import Volume

    monkeypatch.setenv("CTNORMALIZE_CACHE", str(tmp_path))
    seen, plans = [], []

    def spy(v, s, t, reference=None):
        seen.append(t)
        return v

    import CTNormalizeLib.normalization as normalization

    real = normalization.make_plan

    def recording(*a, **kw):
        plans.append(real(*a, **kw))
        return plans[-1]

    monkeypatch.setattr(normalization, "make_plan", recording)
    methods = [benchmark.MethodProvider("spy", spy)] + classical_methods(["mtf_ratio"])
    res = hb.run_heldout("tiny", methods, target_mode="like", keep_examples=False)
    spec = hcases.benchmark_cases("tiny")[0]
    assert isinstance(seen[0], Volume) and res["target_mode"] == "like"
    case = hcases.generate_case(spec)
    ref = hcases.reference_scan(spec.target, case.target.shape[1], case.target.spacing[1])
    np.testing.assert_array_equal(seen[0].hu, ref.hu)
    assert plans and plans[-1].target_signature.origin == "reference", plans[-1].target_signature
    assert "reference scan" in res["notes"]["protocol"] and "reference scan" in hb.format_table(res)
    assert res["cases"][0]["rows"]["classical:mtf_ratio"]["gap_closed_body"] is not None
    res = hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], keep_examples=False)
    assert seen[-1].kernel == "smooth" and res["target_mode"] == "explicit"
    assert "nominal target protocol" in res["notes"]["protocol"]
    with pytest.raises(Exception, match="target_mode"):
        hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], target_mode="guess", keep_examples=False)
    with pytest.raises(Exception, match="target_mode"):  # refused before any case is made, also with no cases
        hb.run_heldout("tiny", [benchmark.MethodProvider("spy", spy)], target_mode="guess", specs=[])
