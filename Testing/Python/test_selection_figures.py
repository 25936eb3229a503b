"""scripts/selection_figures.py: benchmark JSON -> card figures; later runs of new methods merge by method."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("selection_figures", ROOT / "scripts" / "selection_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quality(methods, gap, cases=("a",)):
    runs = [{"case": c, "source": "kernel=sharp", "target": "kernel=smooth", "values": {m: {"l1": 1.0} for m in methods}}
            for c in cases]
    per = {m: {"l1_body_hu": {"gap_closed": gap}} for m in methods}
    return {"benchmark_version": "3", "size": "default", "cases": list(cases), "source_protocols": ["s"],
            "targets": ["t"], "methods": list(methods), "runs": runs, "summary": {"per_method": per, "radiomics": {}}}


def test_later_runs_merge_method_by_method(tmp_path):
    sf = _script()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_quality(["classical:classical"], 0.7)))
    b.write_text(json.dumps(_quality(["model:new"], 0.9)))
    q = sf.merged_quality([a, b])
    rows = sf.in_distribution_rows(q)
    assert rows["classical:classical"]["l1_body_gap"] == 0.7 and rows["model:new"]["l1_body_gap"] == 0.9
    assert set(q["runs"][0]["values"]) == {"classical:classical", "model:new"}
    assert q["methods"] == ["classical:classical", "model:new"]


def test_a_different_benchmark_is_refused(tmp_path):
    sf = _script()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_quality(["classical:classical"], 0.7)))
    b.write_text(json.dumps(_quality(["model:new"], 0.9, cases=("b",))))
    with pytest.raises(SystemExit, match="not the same benchmark"):
        sf.merged_quality([a, b])


def test_only_writes_the_named_card(tmp_path, monkeypatch):
    """--only NAME: a new method benchmarked next to the others gets its figures; the others' cards (measured on
    more runs) stay as they are; a name the files do not hold is refused."""
    sf = _script()
    monkeypatch.setattr(sf, "ROOT", tmp_path)
    monkeypatch.setattr(sf, "METHODS_DIR", tmp_path / "Methods")
    monkeypatch.setattr(sf, "MODELS_DIR", tmp_path / "Models")
    (tmp_path / "Methods").mkdir()
    (tmp_path / "Models" / "new").mkdir(parents=True)
    old = {"name": "classical", "selection": {"figures": {"l1_gap_closed": {"in_distribution": 0.744}}}}
    (tmp_path / "Methods" / "classical.json").write_text(json.dumps(old))
    shipped = json.loads((Path(__file__).resolve().parents[2] / "Resources" / "Models" / "ctn-denoise-v2c"
                          / "card.json").read_text())
    (tmp_path / "Models" / "new" / "card.json").write_text(json.dumps({"name": "new"}))
    q = tmp_path / "q.json"
    q.write_text(json.dumps(_quality(["classical:classical", "model:new"], 0.9)))
    # a model card the registry would refuse is not published (and says why)
    assert sf.main(["--quality", str(q), "--only", "new"]) == 2
    assert json.loads((tmp_path / "Models" / "new" / "card.json").read_text()) == {"name": "new"}
    (tmp_path / "Models" / "new" / "card.json").write_text(json.dumps(dict(shipped, name="new")))
    assert sf.main(["--quality", str(q), "--only", "new"]) == 0
    assert json.loads((tmp_path / "Methods" / "classical.json").read_text()) == old
    new = json.loads((tmp_path / "Models" / "new" / "card.json").read_text())
    assert new["selection"]["figures"]["l1_gap_closed"]["in_distribution"] == 0.9
    assert sf.main(["--quality", str(q), "--only", "nope"]) == 2
