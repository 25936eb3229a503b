"""The benchmark machinery on a tiny case: method-provider hook, floor, aggregation, outputs, report."""

import json
import re

import numpy as np
import pytest

from CTNormalizeLib.benchmark_methods import classical_methods
from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.evaluate import benchmark, cases


def _identity(volume, source, target, reference=None):
    return volume.with_array(volume.hu.copy())


@pytest.fixture(scope="module")
def tiny_result():
    methods = [benchmark.MethodProvider("identity", _identity), *classical_methods(["classical"])]
    return benchmark.run_benchmark("tiny", methods)


def test_cases_are_held_out_and_versioned():
    assert cases.BENCHMARK_VERSION
    for size in ("default", "full"):
        for c in cases.benchmark_cases(size):
            assert c.kind == "lung2" or c.seed >= 1000
    # lung2 is 5 mm: thickness is raised to native, the source grid collapses to kernel x dose
    protos = cases.source_protocols("full", 5.0)
    assert {p.thickness for p in protos} == {5.0} and len(protos) == 16
    assert len(cases.full_grid()) == 4 * 4 * 3


@pytest.mark.slow
def test_identity_method_closes_no_gap_and_auto_closes_some(tiny_result):
    pm = tiny_result["summary"]["per_method"]
    for name, row in pm["identity"].items():
        assert row["output"] == pytest.approx(row["source"]), name
        if row["gap_closed"] is not None:
            assert row["gap_closed"] == pytest.approx(0.0, abs=1e-9)
    auto = pm["classical:classical"]["l1_body_hu"]  # the classical chain, what auto picks without a model
    assert auto["output"] < auto["source"] and auto["gap_closed"] > 0.3
    assert auto["replicate"] < auto["output"]


@pytest.mark.slow
def test_runs_record_every_role_and_timing(tiny_result):
    r = tiny_result
    assert len(r["runs"]) == 2 and r["benchmark_version"] == cases.BENCHMARK_VERSION
    for run in r["runs"]:
        assert {"source", "replicate", "target", "identity", "classical:classical"} <= set(run["values"])
        assert set(run["timings_s"]) == {"identity", "classical:classical"} and not run["errors"]
    assert "interpolated" in r["grid_note"]
    w = r["summary"]["wilcoxon"]
    assert {x["metric"] for x in w} == set(benchmark.WILCOXON_METRICS)


@pytest.mark.slow
def test_write_outputs_and_report(tiny_result, tmp_path):
    out = benchmark.write_benchmark(tiny_result, tmp_path / "res", tmp_path / "r.html")
    data = json.loads((tmp_path / "res" / "quality.json").read_text())
    assert data["summary"]["per_method"] and len(out["pngs"]) >= 4
    assert all(p.endswith(".png") for p in out["pngs"])
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == len(out["pngs"])
    assert not re.search(r'src="(?!data:)', html)  # self-contained
    assert "gap closed" in html and "replicate" in html
    text = benchmark.format_table(tiny_result)
    assert text.splitlines()[0].split()[-2:] == ["classical", "replicate"]
    # ctnormalize report re-renders from the JSON
    from CTNormalizeLib.cli.main import main

    assert main(["report", str(tmp_path / "res" / "quality.json"), "-o", str(tmp_path / "r2.html")]) == 0
    assert (tmp_path / "r2.html").read_text().count("data:image/png;base64,") >= 4


@pytest.mark.slow
def test_failing_method_is_recorded_not_fatal():
    def boom(volume, source, target, reference=None):
        raise RuntimeError("nope")

    c = [cases.Case("phantom-1000", "phantom", 1000, (16, 64, 64), options={"emphysema": 0.1, "nodules": 1})]
    r = benchmark.run_benchmark("tiny", [benchmark.MethodProvider("boom", boom)], cases=c, keep_example=False)
    assert all("nope" in run["errors"]["boom"] for run in r["runs"])
    assert np.isfinite(r["runs"][0]["values"]["source"]["l1_body_hu"])


@pytest.mark.slow
def test_cli_benchmark_json(tmp_path, capsys):
    from CTNormalizeLib.cli.main import main

    rc = main(["evaluate", "--benchmark", "--size", "tiny", "--methods", "mtf_ratio", "--json",
               "--out-dir", str(tmp_path / "b"), "--report", str(tmp_path / "b.html")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)  # stdout is one JSON document, nothing else
    assert res["methods"] == ["classical:mtf_ratio"] and res["size"] == "tiny"
    assert (tmp_path / "b" / "quality.json").is_file() and (tmp_path / "b.html").is_file()
    assert main(["evaluate", "--benchmark", "--size", "tiny", "--methods", "nope"]) == 2


def test_unknown_method_names_are_an_error():
    with pytest.raises(BadInputError, match="auto"):
        classical_methods(["auto"])
