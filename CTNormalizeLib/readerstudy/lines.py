"""Answer lines are validated one by one against the study's design before anything counts them.

An answer file is written by :class:`~CTNormalizeLib.readerstudy.answers.ReaderSession`, but
it is plain text on a shared drive: a crash tears the last line, and people edit files by
hand. Every line is checked against :class:`AnswerLine` (the fields every answer has) and
the design's answer rules (:func:`~CTNormalizeLib.readerstudy.design.validate_answer`); a
line that fails is reported as ``file:line: reason`` (:class:`LineProblem`) and skipped,
never a traceback. Only valid lines count as answers (``complete``, analysis).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import BadInputError
from . import design as D


@dataclass(frozen=True)
class LineProblem:
    """A skipped answer line: where it is and why."""

    path: str
    line: int
    reason: str

    def text(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class AnswerLine:
    """The fields every answer line has (the design's own fields are checked by ``validate_answer``).

    Attributes
    ----------
    item : str
        The item id, one of the reader's items.
    reader : str
        The reader's name, the same on every line of a file.
    time : str
        ISO 8601 time the answer was written.
    views : dict
        Side (``A``, ``B``) -> blinded image id, as the item showed them.
    time_spent_s : float or None
        Seconds on the item (finite, >= 0).
    window : dict or None
        ``{"width", "level"}`` of the last window used (finite; width > 0).
    revision : int
        0 for the first answer to an item, then 1, 2, ...
    """

    item: str
    reader: str
    time: str
    views: dict
    time_spent_s: Optional[float] = None
    window: Optional[dict] = None
    revision: int = 0

    @classmethod
    def parse(cls, rec) -> "AnswerLine":
        """Check the common fields of a decoded line; raises ``ValueError`` with the reason."""
        if not isinstance(rec, dict):
            raise ValueError(f"a line must be a JSON object, not {type(rec).__name__}")
        item = rec.get("item")
        if not isinstance(item, str) or not item:
            raise ValueError(f"'item' must be an item id (text), got {item!r}")
        reader = rec.get("reader")
        if not isinstance(reader, str) or not reader.strip():
            raise ValueError(f"'reader' must be the reader's name, got {reader!r}")
        t = rec.get("time")
        if not isinstance(t, str) or not _iso_time(t):
            raise ValueError(f"'time' must be an ISO 8601 time, got {t!r}")
        views = rec.get("views")
        if not isinstance(views, dict) or not views or \
                not all(isinstance(k, str) and isinstance(v, str) and v for k, v in views.items()):
            raise ValueError(f"'views' must map each side (A, B) to an image id, got {views!r}")
        spent = rec.get("time_spent_s")
        if spent is not None and (not _finite(spent) or spent < 0):
            raise ValueError(f"'time_spent_s' must be a number of seconds >= 0 or null, got {spent!r}")
        window = rec.get("window")
        if window is not None and (not isinstance(window, dict) or not _finite(window.get("width"))
                                   or not _finite(window.get("level")) or window["width"] <= 0):
            raise ValueError(f"'window' must be {{\"width\": >0, \"level\": number}} or null, got {window!r}")
        revision = rec.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError(f"'revision' must be a whole number >= 0, got {revision!r}")
        return cls(item, reader, t, dict(views), spent, window, revision)


def _iso_time(text: str) -> bool:
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sides(design: str) -> set:
    return {"A", "B"} if design == "pair" else {"A"}


def check_line(rec, design: str, items: Optional[dict] = None, reader: Optional[str] = None) -> dict:
    """The line as the analysis uses it (design fields normalized), or ``ValueError(reason)``.

    Parameters
    ----------
    rec : object
        The decoded JSON line.
    design : str
        The study's design.
    items : dict, optional
        item id -> item of this reader (from ``study.json``); when given, the item must be
        one of them and the line's views must be the item's.
    reader : str, optional
        The file's reader; the line must name the same.
    """
    line = AnswerLine.parse(rec)
    if reader is not None and line.reader != reader:
        raise ValueError(f"the line names reader {line.reader!r}, but this file is {reader!r}'s")
    if set(line.views) != _sides(design):
        raise ValueError(f"'views' must have side(s) {', '.join(sorted(_sides(design)))} for a {design} study, "
                         f"got {', '.join(sorted(line.views)) or 'none'}")
    if items is not None:
        it = items.get(line.item)
        if it is None:
            raise ValueError(f"item {line.item!r} is not one of this reader's items")
        if dict(it["views"]) != line.views:
            raise ValueError(f"'views' {line.views} differ from what item {line.item!r} shows {dict(it['views'])}")
    try:
        clean = D.validate_answer(design, rec, views=sorted(line.views))
    except BadInputError as exc:
        raise ValueError(exc.message.rstrip(".")) from None
    return {**rec, **clean}


def read_answer_file(path, design: str, items_of=None) -> tuple[Optional[str], list[dict], list[LineProblem]]:
    """Read and validate one ``answers/<reader>.jsonl``.

    Parameters
    ----------
    path : path
    design : str
    items_of : callable(reader) -> dict or None, optional
        The reader's items by id (None when the reader is not one of the study's).

    Returns
    -------
    reader : str or None
        The reader named by the file's first line that names one (None when no line is valid).
    lines : list of dict
        The valid lines, in file order, normalized by :func:`check_line`.
    problems : list of LineProblem
        One per skipped line.
    """
    path = Path(path)
    reader, items, lines, problems = None, None, [], []
    for n, rec in json_lines(path):
        if rec is None:
            problems.append(LineProblem(str(path), n, "not a complete JSON line (torn by a crash, or edited)"))
            continue
        if reader is None and isinstance(rec, dict) and isinstance(rec.get("reader"), str) and rec["reader"]:
            # The first line that names a reader says whose file this is.
            reader = rec["reader"]
            items = items_of(reader) if items_of is not None else None
        try:
            lines.append(check_line(rec, design, items, reader))
        except ValueError as exc:
            problems.append(LineProblem(str(path), n, str(exc)))
    return (reader if lines else None), lines, problems


def json_lines(path):
    """``(line number, parsed JSON or None)`` for every non-blank line of a JSON-lines file.

    ``None`` marks a line that is not complete JSON (torn by a crash, edited, not UTF-8).
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                yield n, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                yield n, None


def problems_warning(problems: list[LineProblem], limit: int = 10) -> Optional[dict]:
    """One ``INVALID_ANSWER_LINES`` warning listing the skipped lines (the first ``limit``)."""
    if not problems:
        return None
    listed = "; ".join(p.text() for p in problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return {"code": "INVALID_ANSWER_LINES",
            "message": f"{len(problems)} answer line(s) were skipped: {listed}{more}."}
