"""Reliability suite, reader studies: damaged or hand-written answer lines never crash a command.

Each bad line is reported as ``file:line: reason`` and skipped; ``status`` counts only valid
answers (``complete`` included) and ``analyze`` counts the skipped lines in its result and
report. The study's files are byte-identical afterwards. New answer-line cases go here (see
docs/DEVELOPING.md).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from reliability import check_case, cli, snapshot


def _valid_single(item):
    return {"item": item["id"], "score": 4, "reader": "ann", "time": "2026-01-02T10:00:00.000+00:00",
            "time_spent_s": 3.0, "window": {"width": 1500.0, "level": -600.0}, "views": dict(item["views"]),
            "revision": 0}


def _valid_pair(item):
    likert = {q: {"A": 3, "B": 4} for q in ("noise", "sharpness", "artifacts", "diagnostic")}
    return {**_valid_single(item), "score": None, "original": "A", "likert": likert}


def _drop(key):
    return lambda r: {k: v for k, v in r.items() if k != key}


def _set(key, value):
    return lambda r: {**r, key: value}


def _likert_without(what):
    def f(r):
        likert = json.loads(json.dumps(r["likert"]))
        if what == "side B":
            del likert["noise"]["B"]
        else:
            del likert["sharpness"]
        return {**r, "likert": likert}
    return f


# (design, how the line is damaged, words of the reason)
BAD_LINES = {
    "no views": ("single", _drop("views"), "'views'"),
    "no score": ("single", _drop("score"), "score"),
    "score as text": ("single", _set("score", "4"), "score"),
    "score null": ("single", _set("score", None), "score"),
    "score 7": ("single", _set("score", 7), "score"),
    "score -1": ("single", _set("score", -1), "score"),
    "score NaN": ("single", _set("score", math.nan), "score"),
    "views as text": ("single", _set("views", "A"), "'views'"),
    "views without A": ("single", lambda r: {**r, "views": {"B": r["views"]["A"]}}, "side(s) A"),
    "item as a list": ("single", lambda r: {**r, "item": [r["item"]]}, "'item'"),
    "time_spent_s as text": ("single", _set("time_spent_s", "3 s"), "time_spent_s"),
    "no time": ("single", _drop("time"), "'time'"),
    "no likert": ("pair", _drop("likert"), "likert"),
    "no original": ("pair", _drop("original"), "'original'"),
    "original C": ("pair", _set("original", "C"), "'original'"),
    "likert without side B": ("pair", _likert_without("side B"), "side B"),
    "likert without a question": ("pair", _likert_without("question"), "sharpness"),
}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from test_readerstudy import make_manifest

    from CTNormalizeLib.readerstudy import create_study

    root = tmp_path_factory.mktemp("studies")
    manifest = make_manifest(root / "data", n_cases=2)
    for design in ("single", "pair"):
        create_study(manifest, root / design, design, 3)
    return root


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_answer_line_is_reported_and_skipped(capsys, tmp_path, studies, case):
    from CTNormalizeLib.readerstudy import load_study

    design, damage, words = BAD_LINES[case]
    study = tmp_path / "study"
    shutil.copytree(studies / design, study)
    items = load_study(study)["items"]
    valid = _valid_pair if design == "pair" else _valid_single
    lines = [valid(items[0]), damage(valid(items[1]))]
    answers = study / "answers" / "ann.jsonl"
    answers.write_text("".join(json.dumps(rec) + "\n" for rec in lines) + '{"item": "torn li')
    before = snapshot(study)

    code, out, err = cli(capsys, "study", "status", study, "--json")
    check_case(code, err, 0, [], before, [tmp_path])
    status = json.loads(out)
    assert status["readers"]["ann"]["answered"] == 1 and not status["readers"]["ann"]["complete"]
    assert status["readers"]["ann"]["invalid_lines"] == 2
    assert status["problems"][0].startswith(f"{answers}:2: ") and words.lower() in status["problems"][0].lower()
    assert status["problems"][1].startswith(f"{answers}:3: ")
    code, out, err = cli(capsys, "study", "status", study)
    check_case(code, err, 0, [f"{answers}:2", f"{answers}:3"], before, [tmp_path])  # the skipped lines, named
    assert "1/2 answered" in out and "(complete)" not in out and "2 answer lines skipped" in out

    code, out, err = cli(capsys, "study", "analyze", study, "--json")
    check_case(code, err, 0, ["INVALID_ANSWER_LINES", f"{answers}:2"], before, [tmp_path])
    result = json.loads(out)
    assert len(result["invalid_lines"]) == 2 and result["readers"]["ann"]["n"] == 1
    assert result["readers"]["ann"]["complete"] is False


def test_only_bad_lines_is_a_clear_error(capsys, tmp_path, studies):
    study = tmp_path / "study"
    shutil.copytree(studies / "single", study)
    (study / "answers" / "ann.jsonl").write_text('{"item": 3}\n[1, 2]\n')
    before = snapshot(study)
    code, _, err = cli(capsys, "study", "analyze", study, "--json")
    check_case(code, err, 2, ["No valid answers", "ann.jsonl:1", "ann.jsonl:2"], before, [tmp_path])


def test_reader_session_resumes_past_bad_lines(tmp_path, studies):
    from CTNormalizeLib.readerstudy import ReaderSession, load_study

    study = tmp_path / "study"
    shutil.copytree(studies / "single", study)
    items = load_study(study)["items"]
    (study / "answers" / "ann.jsonl").write_text(json.dumps({**_valid_single(items[0]), "score": 9}) + "\n")
    s = ReaderSession(study, "ann")
    assert s.n_answered == 0 and s.index == 0 and len(s.problems) == 1  # the bad answer does not count
    s.record({"score": 2})
    assert ReaderSession(study, "ann").n_answered == 1
