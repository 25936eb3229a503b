"""Readers' answers: one append-only JSON-lines file per reader, fsynced line by line.

``answers/<reader>.jsonl`` holds one line per answer::

    {"item": "007", "score": 4, "reader": "Dr. A", "time": "2026-11-21T11:40:02+00:00",
     "time_spent_s": 12.4, "window": {"width": 1500, "level": -600}, "views": {"A": "007_B"},
     "revision": 0}

A revision is a new line for the same item with ``revision`` one higher; the newest line
wins and old lines stay. Every line is written with one ``os.write`` on a file opened with
``O_APPEND`` and then fsynced, so a killed process loses at most the answer being written,
and a torn last line is skipped on reading. Each reader name maps to its own file (see
:func:`reader_file_stem`), so concurrent readers never share one.

:class:`ReaderSession` is the reading side's model (used by the Slicer Logic): it reads
``study.json`` and the reader's answers, never the key.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Optional

from ..errors import BadInputError
from . import design as D
from . import storage as S
from .lines import json_lines, read_answer_file

log = logging.getLogger(__name__)


def reader_file_stem(reader: str) -> str:
    """A file-name stem for ``reader`` that no other name maps to.

    The stem is the name folded to lower-case ASCII letters, digits, ``-`` and ``_``. When
    folding changed the name, a short hash of the exact name is appended, so "Alice",
    "alice" and "ALICE" get three files even on case-insensitive file systems.
    """
    if not isinstance(reader, str) or not reader.strip():
        raise BadInputError("The reader name is empty; enter a name or initials.")
    if len(reader) > 200:
        raise BadInputError("The reader name is longer than 200 characters.")
    folded = unicodedata.normalize("NFKD", reader).encode("ascii", "ignore").decode("ascii")
    folded = re.sub(r"[^a-z0-9_-]+", "_", folded.lower()).strip("_-")[:60] or "reader"
    if folded != reader:
        folded += "-" + hashlib.sha256(reader.encode("utf-8")).hexdigest()[:8]
    return folded


def answers_path(study_dir, reader: str) -> Path:
    """``<study_dir>/answers/<stem>.jsonl`` for ``reader``."""
    return Path(study_dir) / S.ANSWERS_DIR / f"{reader_file_stem(reader)}.jsonl"


def read_lines(path) -> list[dict]:
    """All complete answer lines of one file, in order; a torn or garbled line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for n, rec in json_lines(path):
        if rec is None:
            log.warning("%s line %d is incomplete or garbled; skipped.", path, n)
        elif isinstance(rec, dict) and "item" in rec:
            out.append(rec)
    return out


def latest_answers(lines: list[dict]) -> dict:
    """item id -> its newest line (the last one written wins)."""
    out = {}
    for rec in lines:
        out[rec["item"]] = rec
    return out


def append_line(path, record: dict) -> None:
    """Append one JSON line durably: one ``write`` with ``O_APPEND``, then ``fsync``."""
    path = Path(path)
    new = not path.exists()
    data = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A previous process killed mid-write may have left a line without its newline.
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new and hasattr(os, "O_DIRECTORY"):
        # Make the new file's directory entry durable too.
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class ReaderSession:
    """One reader working through a study.

    Parameters
    ----------
    study_dir : path
        The study folder (only ``study.json``, ``items/`` and ``answers/`` are touched).
    reader : str
        The reader's name, as entered.

    Attributes
    ----------
    study : dict
        ``study.json``.
    items : list of dict
        The reader's items in reading order.
    index : int
        Current position; starts at the first unanswered item.
    """

    def __init__(self, study_dir, reader: str):
        self.study_dir = Path(study_dir)
        self.study = S.load_study(self.study_dir)
        self.design = self.study["design"]
        reader_file_stem(reader)  # validates the name
        self.reader = reader
        self.items = D.reader_items(self.study, reader)
        if not self.items:
            raise BadInputError(f"The study in {study_dir} has no items.")
        self.path = answers_path(self.study_dir, reader)
        self.path.parent.mkdir(exist_ok=True)
        owner, lines, self.problems = (None, [], [])
        if self.path.exists():
            by_id = {it["id"]: it for it in self.items}
            owner, lines, self.problems = read_answer_file(self.path, self.design, lambda _reader: by_id)
        if owner not in (None, reader):
            # Stems are unique by construction; this guards a name typed to look like a stem.
            raise BadInputError(f"{self.path} belongs to reader {owner!r}; choose a different reader name.")
        # Only valid lines count as answers; invalid ones (self.problems) are skipped.
        self.answers = latest_answers(lines)
        self.index = self.first_unanswered()
        if self.index is None:
            self.index = len(self.items) - 1

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def n_answered(self) -> int:
        ids = {it["id"] for it in self.items}
        return len(ids & set(self.answers))

    @property
    def complete(self) -> bool:
        return self.first_unanswered() is None

    def first_unanswered(self) -> Optional[int]:
        """Index of the first item without an answer, or None when all are answered."""
        for k, it in enumerate(self.items):
            if it["id"] not in self.answers:
                return k
        return None

    def item(self, k: Optional[int] = None) -> dict:
        """Item ``k`` (default: current) with ``paths`` (side -> blinded file) added."""
        k = self.index if k is None else k
        if not 0 <= k < self.n:
            raise BadInputError(f"Item {k + 1} is outside 1..{self.n}.")
        it = dict(self.items[k])
        it["paths"] = {side: str(S.image_path(self.study_dir, img)) for side, img in it["views"].items()}
        return it

    def answer(self, k: Optional[int] = None) -> Optional[dict]:
        """The newest answer line for item ``k`` (default: current), or None."""
        return self.answers.get(self.items[self.index if k is None else k]["id"])

    def go(self, k: int) -> dict:
        """Move to item ``k`` and return it."""
        self.item(k)
        self.index = k
        return self.item()

    def record(self, answer: dict, time_spent_s: Optional[float] = None,
               window: Optional[dict] = None, k: Optional[int] = None) -> dict:
        """Validate and durably append the answer for item ``k`` (default: current).

        Returns the line written. Raises :class:`BadInputError` on an invalid answer.
        """
        k = self.index if k is None else k
        it = self.item(k)
        clean = D.validate_answer(self.design, answer, views=list(it["views"]),
                                  choices=(self.study.get("questions") or {}).get("protocol"))
        previous = self.answers.get(it["id"])
        rec = {"item": it["id"], **clean, "reader": self.reader,
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
               "time_spent_s": None if time_spent_s is None else round(float(time_spent_s), 3),
               "window": None if window is None else {"width": float(window["width"]), "level": float(window["level"])},
               "views": dict(it["views"]),
               "revision": 0 if previous is None else int(previous.get("revision", 0)) + 1}
        append_line(self.path, rec)
        self.answers[it["id"]] = rec
        return rec


class ItemTimer:
    """Time spent on the current item (monotonic clock), restarted on each item shown."""

    def __init__(self):
        self.t0 = time.monotonic()

    def restart(self):
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
