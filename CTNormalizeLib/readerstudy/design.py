"""Reader-study designs: what each item shows, how it is randomized, what a reader answers.

Three designs (issue 6):

- ``single``: single-image forced choice. Each case shows one variant; the reader gives a
  0-5 confidence that the image is an original (0 = certainly synthetic, 5 = certainly
  original, no undecided middle).
- ``pair``: paired A/B. Two variants side by side, sides randomized; the reader says which
  side is the original and rates each side 1-5 on the Likert items below.
- ``protocol``: one image; the reader picks the protocol it looks like (kernel class, dose,
  slice thickness).

Randomization is seeded. Per study, one draw (which variant, which side, the reading
order) serves every reader; per reader, each named reader gets a draw seeded from
``(seed, reader)``. Draws are made at creation, where the truth is known, so they can be
balanced: every variant is shown equally often (up to one when the cases do not divide
evenly), and in the pair design the original is on side A in half of the cases. The
reading side (:func:`reader_items`) only looks items up in ``study.json``.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from ..errors import BadInputError

DESIGNS = ("single", "pair", "protocol")
RANDOMIZATIONS = ("per-study", "per-reader")

SCORE_MIN, SCORE_MAX = 0, 5
SCORE_LABELS = {
    0: "certainly synthetic",
    1: "probably synthetic",
    2: "possibly synthetic",
    3: "possibly original",
    4: "probably original",
    5: "certainly original",
}
# A score at or above this threshold counts as the reader calling the image an original.
ORIGINAL_THRESHOLD = 3

LIKERT_ITEMS = ("noise", "sharpness", "artifacts", "diagnostic")
LIKERT_LABELS = {
    "noise": "Noise (1 = severe, 5 = none)",
    "sharpness": "Sharpness (1 = blurred, 5 = sharp)",
    "artifacts": "Artifacts (1 = severe, 5 = none)",
    "diagnostic": "Diagnostic acceptability (1 = unacceptable, 5 = excellent)",
}
LIKERT_MIN, LIKERT_MAX = 1, 5
PROTOCOL_FIELDS = ("kernel", "dose", "thickness")

SIDES = ("A", "B")


def check_design(design: str) -> str:
    """Return ``design`` if known, else raise :class:`BadInputError`."""
    if design not in DESIGNS:
        raise BadInputError(f"Unknown study design {design!r}; choose one of {', '.join(DESIGNS)}.")
    return design


def reader_seed(seed: int, reader: Optional[str]) -> list[int]:
    """Seed sequence for a draw: ``[seed]`` for the study, ``[seed, h(reader)]`` per reader.

    ``h`` is a SHA-256 prefix, stable across Python runs (unlike ``hash()``).
    """
    if reader is None:
        return [int(seed)]
    digest = hashlib.sha256(reader.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def balanced_choice(rng: np.random.Generator, n: int, options: Sequence) -> list:
    """``n`` draws from ``options`` in which every option appears ``n // k`` or ``n // k + 1`` times.

    The remainder goes to options chosen at random, then the list is shuffled.
    """
    k = len(options)
    base = [options[i % k] for i in range(n - n % k)]
    extra = [options[int(i)] for i in rng.choice(k, size=n % k, replace=False)] if n % k else []
    out = base + extra
    return [out[int(i)] for i in rng.permutation(len(out))]


def draw_items(design: str, cases: Sequence[tuple[str, dict]], variants: Sequence[str],
               rng: np.random.Generator, reference: str = "original") -> list[dict]:
    """Draw one reader's (or the study's) ordered items. Used at creation, where the truth is known.

    Parameters
    ----------
    design : str
        One of :data:`DESIGNS`.
    cases : sequence of (blinded case id, {variant: blinded image id})
        Every case offers an image for each variant in ``variants``.
    variants : sequence of str
        The variants this study shows. ``pair`` needs exactly two, one of them ``reference``.
    rng : numpy Generator
        Seeded generator (see :func:`reader_seed`).

    Returns
    -------
    list of dict
        ``{"id", "case", "views": {side: image id}, "labels": {side: node name}}`` in reading
        order. ``single``: one variant per case, balanced over variants; ``pair``: the two
        variants with the reference on side A in half of the cases; ``protocol``: every
        variant of every case. The reading order is shuffled.
    """
    check_design(design)
    items = []
    if design == "single":
        shown = balanced_choice(rng, len(cases), list(variants))
        for (cid, images), variant in zip(cases, shown):
            img = images[variant]
            items.append({"id": cid, "case": cid, "views": {"A": img}, "labels": {"A": f"Case {cid}"}})
    elif design == "pair":
        other = [v for v in variants if v != reference][0]
        ref_on_a = balanced_choice(rng, len(cases), [True, False])
        for (cid, images), a_is_ref in zip(cases, ref_on_a):
            a, b = (reference, other) if a_is_ref else (other, reference)
            items.append({"id": cid, "case": cid, "views": {"A": images[a], "B": images[b]},
                          "labels": {"A": f"Case {cid} A", "B": f"Case {cid} B"}})
    else:
        for cid, images in cases:
            for variant in variants:
                img = images[variant]
                letter = img.rsplit("_", 1)[-1]
                items.append({"id": img, "case": cid, "views": {"A": img}, "labels": {"A": f"Case {cid} {letter}"}})
    return [items[int(i)] for i in rng.permutation(len(items))]


def reader_items(study: dict, reader: Optional[str]) -> list[dict]:
    """The ordered items ``reader`` reads, from ``study.json`` alone (never the key).

    Raises
    ------
    BadInputError
        When the study is randomized per reader and ``reader`` is not one of its readers.
    """
    if study.get("randomization") == "per-reader":
        readers = study.get("readers") or {}
        if reader not in readers:
            raise BadInputError(
                f"This study was randomized per reader for {', '.join(sorted(readers)) or 'nobody'}; "
                f"{reader!r} is not one of them (names are case-sensitive).")
        return [dict(it) for it in readers[reader]]
    return [dict(it) for it in study["items"]]


def required_fields(design: str) -> tuple[str, ...]:
    """Answer fields a reader must give before moving on."""
    return {"single": ("score",), "pair": ("original", "likert"), "protocol": ("protocol",)}[design]


def validate_answer(design: str, answer: dict, views: Sequence[str] = ("A",), choices: Optional[dict] = None) -> dict:
    """Check a reader's answer for ``design`` and return its normalized form.

    ``choices``: the protocol design's question (``study.json``'s ``questions["protocol"]``, with its kernel,
    dose and thickness lists); a guess outside them is refused (it could only be scored wrong).

    Raises
    ------
    BadInputError
        With a sentence naming the missing or out-of-range field.
    """
    check_design(design)
    if not isinstance(answer, dict):
        raise BadInputError("An answer must be a dict of fields.")
    if design == "single":
        score = answer.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, np.integer)) or not SCORE_MIN <= score <= SCORE_MAX:
            raise BadInputError(f"The score must be a whole number from {SCORE_MIN} to {SCORE_MAX}, got {score!r}.")
        return {"score": int(score)}
    if design == "pair":
        original = answer.get("original")
        if not isinstance(original, str) or original not in views:
            raise BadInputError(f"'original' must be one of {', '.join(views)}, got {original!r}.")
        likert = answer.get("likert")
        if not isinstance(likert, dict):
            raise BadInputError(f"'likert' must give a 1-5 rating per question and side, got {likert!r}.")
        out = {}
        for key in LIKERT_ITEMS:
            sides = likert.get(key)
            if not isinstance(sides, dict):
                raise BadInputError(f"Likert '{key}' must rate each side ({', '.join(views)}), got {sides!r}.")
            out[key] = {}
            for side in views:
                v = sides.get(side)
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not LIKERT_MIN <= v <= LIKERT_MAX:
                    raise BadInputError(
                        f"Likert '{key}' for side {side} must be {LIKERT_MIN}-{LIKERT_MAX}, got {v!r}.")
                out[key][side] = int(v)
        return {"original": original, "likert": out}
    # protocol
    from ..protocols import parse_spec

    spec = answer.get("protocol")
    if isinstance(spec, dict):
        spec = ",".join(f"{k}={spec[k]}" for k in PROTOCOL_FIELDS if spec.get(k) not in (None, ""))
    proto = parse_spec(spec) if spec else None
    missing = [f for f in PROTOCOL_FIELDS if proto is None or getattr(proto, f) is None]
    if missing:
        raise BadInputError(f"The protocol guess lacks {', '.join(missing)}; give kernel, dose and thickness.")
    guess = {"kernel": proto.kernel, "dose": float(proto.dose), "thickness": float(proto.thickness)}
    for field, value in guess.items():
        allowed = (choices or {}).get(field)
        if allowed and not any(value == a if field == "kernel" else abs(float(a) - value) <= 1e-6 * max(1.0, value)
                               for a in allowed):
            raise BadInputError(f"The protocol guess's {field} {value if field == 'kernel' else f'{value:g}'} is not one "
                                f"of this study's choices ({', '.join(str(a) if field == 'kernel' else f'{float(a):g}' for a in allowed)}).")
    return {"protocol": f"kernel={guess['kernel']},dose={guess['dose']:g},thickness={guess['thickness']:g}",
            "guess": guess}


def questions(design: str, protocol_options: Optional[dict] = None) -> dict:
    """The reader-facing description of what to answer (stored in ``study.json``)."""
    if design == "single":
        return {"score": {"min": SCORE_MIN, "max": SCORE_MAX,
                          "labels": {str(k): v for k, v in SCORE_LABELS.items()},
                          "prompt": "How confident are you that this image is an original acquisition?"}}
    if design == "pair":
        return {"original": {"choices": list(SIDES), "prompt": "Which side is the original acquisition?"},
                "likert": {"items": list(LIKERT_ITEMS), "labels": dict(LIKERT_LABELS),
                           "min": LIKERT_MIN, "max": LIKERT_MAX}}
    from ..protocols import KERNEL_CLASSES

    opts = dict(protocol_options or {})
    return {"protocol": {"prompt": "Which protocol does this image look like?",
                         "kernel": list(opts.get("kernel") or KERNEL_CLASSES),
                         "dose": list(opts.get("dose") or [1.0, 0.5, 0.25, 0.1]),
                         "thickness": list(opts.get("thickness") or [1.0, 2.0, 3.0, 5.0])}}
