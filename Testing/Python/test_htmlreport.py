"""The shared HTML report page: one style for every report, escaped values, number formats."""

import re

import numpy as np

from CTNormalizeLib.evaluate.paired import floor_table
from CTNormalizeLib.evaluate.report import benchmark_report_html, pair_report_html
from CTNormalizeLib.htmlreport import data_uri, fmt_fixed, fmt_sig
from CTNormalizeLib.readerstudy.report import render_html

PNG = b"\x89PNG\r\n\x1a\nfake"
EVIL = "<script>alert(1)</script> & co"


def _table():
    return floor_table({"source": {"l1_body_hu": 50.0}, "output": {"l1_body_hu": 20.0},
                        "replicate": {"l1_body_hu": 10.0}})


def _pair_page():
    result = {"table": _table(), "values": {"source": {"mtf50": 0.3}, "target": {"mtf50": float("nan")}},
              "grid": {"n_slices": 4, "z_range_mm": [0.0, 3.0], "note": "target grid"},
              "masks": {"lung": "given"}, "settings": {"window_hu": [-1350, 150], "data_range": 1500.0,
                                                       "threshold_hu": -950.0}, "lpips_note": "absent"}
    return pair_report_html(result, {"views " + EVIL: PNG}, {"method": EVIL})


def _bench_page():
    bench = {"summary": {"per_method": {"classical:auto": _table()}, "per_protocol": {
        "a -> b": {"source": {"l1_body_hu": 50.0}, "classical:auto": {"l1_body_hu": 20.0}}}},
        "methods": ["classical:auto"], "runs": [], "cases": [{"name": EVIL}], "provenance": {"versions": {"x": "1"}}}
    return benchmark_report_html(bench, {"NPS": PNG})


def _study_page():
    readers = {"r1": {"n": 2, "accuracy": 0.5, "auc_ci": [0.1, 0.9], "binomial_test": {"p": 0.5},
                      "likert": {i: {"original": {"mean": 4.0, "sd": 1.0}, "paired_difference": {"mean": -1.0, "sd": 0.5},
                                     "wilcoxon": {"p": 0.2}} for i in ("noise", "sharpness", "artifacts", "diagnostic")}}}
    result = {"study": {"design": "pair", "title": EVIL, "n_cases": 2, "variants": ["original", "normalized"]},
              "readers": readers, "pooled": readers["r1"], "agreement": {"note": "one reader"},
              "cases": [{"case": EVIL, "item": "001", "reader": "r1", "shown": "A", "answer": "A", "correct": True}]}
    return render_html(result)


def _style(page):
    return re.search(r"<style>(.*?)</style>", page, re.S).group(1)


def test_every_report_shares_one_style_and_footer():
    pages = [_pair_page(), _bench_page(), _study_page()]
    assert len({_style(p) for p in pages}) == 1 and "td.good" in _style(pages[0])
    assert all("research use, not for diagnosis" in p for p in pages)


def test_values_are_escaped_everywhere():
    for page in (_pair_page(), _bench_page(), _study_page()):
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_tables_figures_and_gap_cells():
    page = _pair_page()
    assert page.count('src="data:image/png;base64,') == 1 and '<td class="good">0.75</td>' in page
    assert "<b>20</b>" in page and ">nan<" not in page  # NaN shows as a dash
    bench = _bench_page()
    assert 'rowspan="2">a -&gt; b</td>' in bench and "<h3>classical:auto</h3>" in bench
    study = _study_page()
    assert "0.100 – 0.900" in study and "<h3>r1</h3>" in study and "one reader" in study


def test_number_formats():
    assert fmt_sig(None) == "—" and fmt_sig(0.000123456) == "0.000123" and fmt_sig(123456.0) == "1.235e+05"
    assert fmt_sig(float("inf")) == "∞" and fmt_sig(float("nan")) == "—" and fmt_sig(np.int64(3)) == "3"
    assert fmt_fixed(True) == "yes" and fmt_fixed(0.5) == "0.500" and fmt_fixed(0.123, 1) == "0.1"
    assert data_uri(b"ab") == "data:image/png;base64,YWI="
