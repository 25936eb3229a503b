"""Property tests (Hypothesis): spec strings, the gap-closed metric, reader-study answer lines.

Each property holds for every input the strategy draws, not only for the hand-picked
examples of the area's own test file. The atomic writer's property test is in
``test_io_atomic.py``.
"""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.evaluate.agreement import gap_closed
from CTNormalizeLib.protocols import KERNEL_CLASSES, Protocol, kernel_class, known_kernel_names, parse_spec
from CTNormalizeLib.readerstudy import design as D
from CTNormalizeLib.readerstudy.answers import append_line, latest_answers, read_lines

FAST = settings()  # examples and deadline: the profile in conftest.py


# ----------------------------------------------------------------------------- spec strings

def _sig(lo, hi, digits):
    """Floats in [lo, hi] with ``digits`` significant digits (what ``Protocol.spec`` prints)."""
    return st.floats(lo, hi).map(lambda x: float(f"{x:.{digits}g}")).filter(lambda x: lo <= x <= hi)


kernels = st.sampled_from(list(KERNEL_CLASSES) + known_kernel_names())


@st.composite
def protocols(draw):
    """Protocols inside the physical ranges (dose 0.01-4, thickness and spacing 0.1-20 mm)."""
    name = draw(kernels)
    cls = kernel_class(name)
    opt = lambda s: draw(st.one_of(st.none(), s))  # noqa: E731
    return Protocol(kernel=cls, kernel_name=None if name.lower() == cls else name,
                    dose=opt(_sig(0.01, 4.0, 3)), thickness=opt(_sig(0.1, 20.0, 3)), spacing=opt(_sig(0.1, 20.0, 3)),
                    mas=opt(_sig(1.0, 1000.0, 4)), ctdivol=opt(_sig(0.1, 100.0, 4)))


@FAST
@given(protocols())
def test_spec_print_parse_round_trip(p):
    spec = p.spec()
    back = parse_spec(spec)
    assert back == p, spec
    assert back.spec() == spec  # printing is canonical: a second round trip changes nothing
    assert set(back.sources) == {f for f in ("kernel", "dose", "mas", "ctdivol", "thickness", "spacing")
                                 if getattr(p, f) is not None}
    v = back.vector()
    assert v[:4] == [1.0 if k == p.kernel else 0.0 for k in KERNEL_CLASSES]
    if p.dose is not None and p.thickness is not None:
        assert v[4:] == [p.dose, p.thickness]  # no silent default for a given value


@FAST
@given(kernel=kernels, dose=_sig(0.01, 4.0, 3), thickness=_sig(0.1, 20.0, 3), pct=st.booleans(),
       mm=st.booleans(), order=st.permutations([0, 1, 2]), spaces=st.booleans())
def test_spec_spellings_parse_to_the_same_protocol(kernel, dose, thickness, pct, mm, order, spaces):
    parts = [f"kernel={kernel}", f"dose={dose * 100:g}%" if pct else f"dose={dose:g}",
             f"thickness={thickness:g}{'mm' if mm else ''}"]
    sep = " , " if spaces else ","
    p = parse_spec(sep.join(parts[i] for i in order))
    assert p.kernel == kernel_class(kernel) and p.thickness == thickness
    assert p.dose == pytest.approx(dose, rel=1e-12)


@FAST
@given(key=st.sampled_from(["dose", "thickness", "spacing", "mas", "ctdivol"]),
       value=st.one_of(st.just(0.0), st.floats(max_value=0.0, allow_nan=False, allow_infinity=False)))
def test_spec_rejects_zero_and_negative_values(key, value):
    with pytest.raises(BadInputError, match=key):
        parse_spec(f"{key}={value!r}")


# ----------------------------------------------------------------------------- gap closed

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _defined(s, r):
    return abs(s - r) > 0.02 * max(abs(s), abs(r)) + 1e-6


@FAST
@given(s=finite, r=finite, t=st.floats(-2.0, 3.0))
def test_gap_closed_is_one_at_the_replicate_zero_at_the_source_and_linear(s, r, t):
    assume(_defined(s, r))
    assert gap_closed(s, r, r) == pytest.approx(1.0, abs=1e-12)
    assert gap_closed(s, s, r) == 0.0
    o = s + t * (r - s)
    assert gap_closed(s, o, r) == pytest.approx(t, abs=1e-6)


@FAST
@given(s=finite, r=finite, o1=finite, o2=finite)
def test_gap_closed_is_monotone_towards_the_replicate(s, r, o1, o2):
    """The closer an output moves from the source towards the replicate, the larger the gap closed."""
    assume(_defined(s, r) and o1 != o2)
    g1, g2 = gap_closed(s, o1, r), gap_closed(s, o2, r)
    towards = (o2 - o1) * (r - s) > 0  # o2 lies further in the replicate's direction
    assert (g2 >= g1) if towards else (g2 <= g1)  # not strict: o1, o2 may round to one ratio


@FAST
@given(s=finite, rel=st.floats(-0.0099, 0.0099), o=finite)
def test_gap_closed_undefined_without_a_gap(s, rel, o):
    r = s * (1.0 + rel)  # within 1 % of the source: the ratio would only amplify noise
    assert gap_closed(s, o, r) is None
    assert gap_closed(float("nan"), o, r) is None and gap_closed(s, o, float("inf")) is None


# ----------------------------------------------------------------------------- answer lines

@FAST
@given(score=st.one_of(st.integers(-100, 100), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3),
                       st.none()))
def test_single_design_accepts_exactly_the_whole_scores_0_to_5(score):
    valid = isinstance(score, int) and not isinstance(score, bool) and D.SCORE_MIN <= score <= D.SCORE_MAX
    if valid:
        assert D.validate_answer("single", {"score": score}) == {"score": score}
    else:
        with pytest.raises(BadInputError, match="score"):
            D.validate_answer("single", {"score": score})


answer_records = st.fixed_dictionaries({
    "item": st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8),
    "score": st.integers(D.SCORE_MIN, D.SCORE_MAX),
    "reader": st.text(max_size=12),
    "time_spent_s": st.one_of(st.none(), st.floats(0, 1e4)),
})


@settings(max_examples=min(100, settings().max_examples))
@given(records=st.lists(answer_records, min_size=1, max_size=12), cut=st.integers(1, 10_000), more=answer_records)
def test_answer_file_torn_at_any_byte_keeps_every_complete_line(records, cut, more):
    """A writer killed mid-line leaves a torn tail: the complete lines survive, the next append is read."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.jsonl"
        for rec in records:
            append_line(path, rec)
        data = path.read_bytes()
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        keep = last_start + cut % (len(data) - 1 - last_start)  # cut before the last line's closing brace
        path.write_bytes(data[:keep])
        got = read_lines(path)
        assert got[:len(records) - 1] == records[:-1]
        assert len(got) == len(records) - 1  # a torn tail is never read as an answer
        append_line(path, more)
        got = read_lines(path)
        assert got == records[:-1] + [more]
        assert latest_answers(got)[more["item"]] == more


@settings(max_examples=min(100, settings().max_examples))
@given(lines=st.lists(st.one_of(answer_records.map(json.dumps), st.binary(max_size=20).map(repr),
                                st.just("[1, 2]"), st.just('{"no_item": 1}'), st.just("{")), max_size=10))
def test_read_lines_returns_only_dict_lines_with_an_item(lines):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        got = read_lines(path)
        expected = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "item" in rec:
                expected.append(rec)
        assert got == expected
        assert all(isinstance(r, dict) and "item" in r for r in got)
