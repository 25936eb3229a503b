"""Analyze a reader study: per-reader detection figures, ROC AUC, agreement, Likert, confusion.

Conventions (single design): the reader scores 0 (certainly synthetic) to 5 (certainly
original). The *positive* class is a normalized (non-reference) image, so sensitivity is
the fraction of normalized images called synthetic (score <= 2) and specificity the
fraction of originals called original (score >= 3). The AUC is that of detecting
normalized images from the score: 1.0 = always told apart, 0.5 = cannot tell (what a
perfect normalization aims for), 0.0 = consistently fooled the other way.

For the pair design the proportion of correct "which is the original" choices is also
reported as ``auc``: in a two-alternative forced choice it equals the AUC.

SciPy gives the tests (Mann-Whitney, Wilcoxon, binomial) and the bootstrap. Cohen's and
Fleiss' kappa are written here because neither SciPy nor the project's dependencies have
them (scikit-learn / statsmodels would be new dependencies for two short formulas).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import BadInputError
from . import design as D
from . import storage as S
from .answers import latest_answers
from .lines import problems_warning, read_answer_file

N_BOOTSTRAP = 2000


# ----------------------------------------------------------------------------- agreement
def cohen_kappa(r1: Sequence, r2: Sequence, categories: Optional[Sequence] = None,
                weights: Optional[str] = None) -> Optional[float]:
    """Cohen's kappa of two raters, optionally weighted (Cohen 1968).

    Parameters
    ----------
    r1, r2 : sequences of equal length
        The two raters' ratings of the same subjects.
    categories : sequence, optional
        Ordered categories (needed for weights; default: sorted union of the ratings).
    weights : {None, "linear", "quadratic"}
        Disagreement weights ``|i-j|/(k-1)`` or ``((i-j)/(k-1))**2``; None = unweighted.

    Returns
    -------
    float or None
        None when undefined (no subjects, or a single category used by both raters).
    """
    r1, r2 = list(r1), list(r2)
    if len(r1) != len(r2):
        raise ValueError("Both raters must rate the same subjects.")
    if not r1:
        return None
    cats = list(categories) if categories is not None else sorted(set(r1) | set(r2))
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    obs = np.zeros((k, k))
    for a, b in zip(r1, r2):
        obs[index[a], index[b]] += 1
    obs /= obs.sum()
    exp = np.outer(obs.sum(1), obs.sum(0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / max(k - 1, 1)
    elif weights == "quadratic":
        w = ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    denom = (w * exp).sum()
    if denom == 0:
        return None
    return _clean(1.0 - (w * obs).sum() / denom)


def _clean(x: float) -> float:
    """``x`` without float dust: exact agreement-by-chance gave -2.2e-16, printed as "-0.000"."""
    return float(round(float(x), 12)) + 0.0


def fleiss_kappa(counts) -> Optional[float]:
    """Fleiss' kappa (Fleiss 1971) from a subjects x categories table of rating counts.

    Every row must sum to the same number of raters (>= 2). None when undefined.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    n = counts.sum(1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("Every subject needs the same number (>= 2) of ratings.")
    n = n[0]
    p_j = counts.sum(0) / counts.sum()
    p_i = ((counts ** 2).sum(1) - n) / (n * (n - 1))
    p_e = (p_j ** 2).sum()
    if p_e >= 1.0:
        return None
    return _clean((p_i.mean() - p_e) / (1.0 - p_e))


def agreement(ratings: dict, categories: Sequence) -> dict:
    """Inter-reader agreement on subjects every compared reader rated.

    ``ratings``: reader -> {subject: rating}. Two readers: Cohen's kappa unweighted,
    linear and quadratic weighted; three or more: Fleiss' kappa on the subjects all rated,
    plus the mean pairwise linear-weighted Cohen's kappa over the reader pairs that share subjects
    (with how many pairs, and the mean number of subjects a pair shares).
    """
    readers = sorted(r for r in ratings if ratings[r])
    out = {"readers": readers}
    if len(readers) < 2:
        out["note"] = "Agreement needs at least two readers."
        return out
    common = sorted(set.intersection(*(set(ratings[r]) for r in readers)))
    out["n_subjects"] = len(common)
    if len(readers) == 2:
        a = [ratings[readers[0]][s] for s in common]
        b = [ratings[readers[1]][s] for s in common]
        out["cohen_kappa"] = cohen_kappa(a, b, categories)
        out["cohen_kappa_linear"] = cohen_kappa(a, b, categories, "linear")
        out["cohen_kappa_quadratic"] = cohen_kappa(a, b, categories, "quadratic")
        return out
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(common), len(categories)))
    for row, s in enumerate(common):
        for r in readers:
            table[row, index[ratings[r][s]]] += 1
    out["fleiss_kappa"] = fleiss_kappa(table) if common else None
    pairs, n_shared = [], []
    for x in range(len(readers)):
        for y in range(x + 1, len(readers)):
            shared = sorted(set(ratings[readers[x]]) & set(ratings[readers[y]]))
            kap = cohen_kappa([ratings[readers[x]][s] for s in shared],
                              [ratings[readers[y]][s] for s in shared], categories, "linear")
            if kap is not None:
                pairs.append(kap)
                n_shared.append(len(shared))
    out["mean_pairwise_cohen_kappa_linear"] = float(np.mean(pairs)) if pairs else None
    # n_subjects counts subjects every reader rated (Fleiss); the pairwise kappas rest on these
    out["pairwise_kappa_reader_pairs"] = len(pairs)
    out["pairwise_kappa_subjects_per_pair"] = float(np.mean(n_shared)) if n_shared else None
    return out


# ----------------------------------------------------------------------------- scores
def _auc_stat(orig, synth, axis=-1):
    """P(score of an original > score of a synthetic) + 0.5 P(tie), vectorized for bootstrap."""
    o = np.moveaxis(np.asarray(orig, float), axis, -1)[..., :, None]
    s = np.moveaxis(np.asarray(synth, float), axis, -1)[..., None, :]
    return (o > s).mean(axis=(-2, -1)) + 0.5 * (o == s).mean(axis=(-2, -1))


def roc_curve(orig_scores, synth_scores) -> list[tuple[float, float]]:
    """ROC points (FPR, TPR) for detecting synthetic images, thresholding the 0-5 score.

    An image is called synthetic when its score is <= t, for t = -1 .. 5. Written here
    because it is six thresholds on an ordinal scale.
    """
    o, s = np.asarray(orig_scores, float), np.asarray(synth_scores, float)
    pts = []
    for t in range(D.SCORE_MIN - 1, D.SCORE_MAX + 1):
        pts.append((float((o <= t).mean()), float((s <= t).mean())))
    return pts


def score_detection(orig_scores, synth_scores, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """Detection figures from 0-5 scores of originals and synthetic (normalized) images."""
    from scipy import stats

    o = np.asarray(orig_scores, float)
    s = np.asarray(synth_scores, float)
    out = {"n": int(o.size + s.size), "n_original": int(o.size), "n_normalized": int(s.size)}
    called_synth_s = s < D.ORIGINAL_THRESHOLD
    called_orig_o = o >= D.ORIGINAL_THRESHOLD
    correct = int(called_synth_s.sum() + called_orig_o.sum())
    out["accuracy"] = correct / out["n"] if out["n"] else None
    out["sensitivity"] = float(called_synth_s.mean()) if s.size else None
    out["specificity"] = float(called_orig_o.mean()) if o.size else None
    out["auc"] = out["auc_ci"] = out["mann_whitney"] = None
    if o.size and s.size:
        mw = stats.mannwhitneyu(o, s, alternative="two-sided")
        # U of the first sample counts (original > synthetic) pairs + half the ties: the AUC.
        out["auc"] = float(mw.statistic) / (o.size * s.size)
        out["mann_whitney"] = {"U": float(mw.statistic), "p": float(mw.pvalue)}
        if o.size > 1 and s.size > 1:
            res = stats.bootstrap((o, s), _auc_stat, vectorized=True, paired=False, n_resamples=n_boot,
                                  method="percentile", rng=np.random.default_rng(seed), batch=200)
            lo, hi = res.confidence_interval
            out["auc_ci"] = [float(lo), float(hi)]
        out["roc"] = roc_curve(o, s)
    return out


def _summary(values) -> dict:
    v = np.asarray(values, float)
    if not v.size:
        return {"n": 0, "mean": None, "sd": None, "median": None}
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "median": float(np.median(v))}


# ----------------------------------------------------------------------------- loading
def _items_of(study: dict):
    """reader -> {item id: item} of that reader, or None when the study does not know the reader."""
    def items_of(reader):
        try:
            return {it["id"]: it for it in D.reader_items(study, reader)}
        except BadInputError:
            return None
    return items_of


def collect_answers(study_dir, study: Optional[dict] = None, problems: Optional[list] = None) -> dict:
    """reader -> {item id: newest valid answer line}, from every ``answers/*.jsonl``.

    Every line is validated (:mod:`.lines`); invalid lines are skipped and, when
    ``problems`` is a list, appended to it as :class:`~.lines.LineProblem`.
    """
    study = study if study is not None else S.load_study(study_dir)
    out = {}
    for path in sorted((Path(study_dir) / S.ANSWERS_DIR).glob("*.jsonl")):
        reader, lines, bad = read_answer_file(path, study["design"], _items_of(study))
        if problems is not None:
            problems.extend(bad)
        if lines:
            out[reader or path.stem] = latest_answers(lines)
    return out


def _truth_of(view_images: dict, key: dict) -> dict:
    return {side: key["images"][img] for side, img in view_images.items()}


def _rows(study: dict, key: dict, answers: dict) -> list[dict]:
    """One row per (reader, answered item) with its truth, from the line's own ``views``."""
    rows = []
    for reader, by_item in answers.items():
        for item_id, rec in by_item.items():
            views = rec.get("views")
            if not views:
                continue
            try:
                truth = _truth_of(views, key)
            except KeyError:
                raise BadInputError(
                    f"Answer of {reader} for item {item_id} names an image the key does not know; "
                    f"is the key from this study?") from None
            rows.append({"reader": reader, "item": item_id, "rec": rec, "truth": truth})
    rows.sort(key=lambda r: (r["truth"]["A"]["case"], r["item"], r["reader"]))
    return rows


# ----------------------------------------------------------------------------- designs
def _detection_by_variant(scores: dict, ref: str, seed: int) -> dict:
    """:func:`score_detection` of each non-reference variant against the reference's scores.

    The study's AUC pools every normalized variant: a clean-texture variant that readers spot at
    once and a target-texture one they cannot tell from the original average to a middling AUC.
    """
    orig = scores.get(ref, [])
    return {v: score_detection(orig, g, seed=seed) for v, g in sorted(scores.items()) if v != ref}


def _analyze_single(rows, key, seed):
    ref = key.get("reference", "original")
    readers, cases, by_reader = {}, [], defaultdict(list)
    for r in rows:
        by_reader[r["reader"]].append(r)
    for reader, rs in sorted(by_reader.items()):
        orig = [r["rec"]["score"] for r in rs if r["truth"]["A"]["variant"] == ref]
        synth = [r["rec"]["score"] for r in rs if r["truth"]["A"]["variant"] != ref]
        m = score_detection(orig, synth, seed=seed)
        groups = defaultdict(list)
        for r in rs:
            groups[r["truth"]["A"]["variant"]].append(r["rec"]["score"])
        m["groups"] = {v: _summary(g) for v, g in sorted(groups.items())}
        m["by_variant"] = _detection_by_variant(groups, ref, seed)
        m["score_counts"] = {v: [int(np.sum(np.asarray(g) == s)) for s in range(D.SCORE_MIN, D.SCORE_MAX + 1)]
                             for v, g in sorted(groups.items())}
        m["time_spent_s"] = _summary([r["rec"]["time_spent_s"] for r in rs if r["rec"].get("time_spent_s") is not None])
        readers[reader] = m
    for r in rows:
        score = r["rec"]["score"]
        is_ref = r["truth"]["A"]["variant"] == ref
        cases.append({"case": r["truth"]["A"]["case"], "item": r["item"], "reader": r["reader"],
                      "shown": r["truth"]["A"]["variant"], "answer": score,
                      "correct": (score >= D.ORIGINAL_THRESHOLD) == is_ref,
                      "time_spent_s": r["rec"].get("time_spent_s"), "window": r["rec"].get("window")})
    pooled = score_detection([r["rec"]["score"] for r in rows if r["truth"]["A"]["variant"] == ref],
                             [r["rec"]["score"] for r in rows if r["truth"]["A"]["variant"] != ref], seed=seed)
    pooled_groups = defaultdict(list)
    for r in rows:
        pooled_groups[r["truth"]["A"]["variant"]].append(r["rec"]["score"])
    pooled["groups"] = {v: _summary(g) for v, g in sorted(pooled_groups.items())}
    pooled["by_variant"] = _detection_by_variant(pooled_groups, ref, seed)
    ratings = {reader: {r["rec"]["views"]["A"]: r["rec"]["score"] for r in rs} for reader, rs in by_reader.items()}
    agree = agreement(ratings, list(range(D.SCORE_MIN, D.SCORE_MAX + 1)))
    return readers, pooled, agree, cases


def _analyze_pair(rows, key, seed):
    from scipy import stats

    ref = key.get("reference", "original")
    readers, cases, by_reader = {}, [], defaultdict(list)
    for r in rows:
        by_reader[r["reader"]].append(r)

    def figures(rs):
        correct = np.array([r["truth"][r["rec"]["original"]]["variant"] == ref for r in rs], float)
        m = {"n": len(rs), "accuracy": float(correct.mean()) if len(rs) else None,
             "sensitivity": None, "specificity": None}
        m["auc"] = m["accuracy"]
        m["auc_ci"] = None
        if len(rs) > 1:
            res = stats.bootstrap((correct,), np.mean, n_resamples=N_BOOTSTRAP, method="percentile",
                                  rng=np.random.default_rng(seed))
            m["auc_ci"] = [float(v) for v in res.confidence_interval]
        if len(rs):
            bt = stats.binomtest(int(correct.sum()), len(rs), 0.5)
            m["binomial_test"] = {"k": int(correct.sum()), "n": len(rs), "p": float(bt.pvalue)}
        likert = {}
        for item in D.LIKERT_ITEMS:
            per = defaultdict(list)
            diffs = []
            for r in rs:
                vals = {r["truth"][side]["variant"]: r["rec"]["likert"][item][side] for side in r["truth"]}
                for v, x in vals.items():
                    per[v].append(x)
                others = [v for v in vals if v != ref]
                if ref in vals and others:
                    diffs.append(vals[others[0]] - vals[ref])
            entry = {v: _summary(x) for v, x in sorted(per.items())}
            entry["paired_difference"] = _summary(diffs)
            entry["wilcoxon"] = None
            if diffs and any(d != 0 for d in diffs):
                w = stats.wilcoxon(diffs)
                entry["wilcoxon"] = {"statistic": float(w.statistic), "p": float(w.pvalue)}
            likert[item] = entry
        m["likert"] = likert
        m["time_spent_s"] = _summary([r["rec"]["time_spent_s"] for r in rs if r["rec"].get("time_spent_s") is not None])
        return m

    for reader, rs in sorted(by_reader.items()):
        readers[reader] = figures(rs)
    for r in rows:
        chosen = r["truth"][r["rec"]["original"]]["variant"]
        cases.append({"case": r["truth"]["A"]["case"], "item": r["item"], "reader": r["reader"],
                      "shown": f"A={r['truth']['A']['variant']}, B={r['truth']['B']['variant']}",
                      "answer": f"{r['rec']['original']} ({chosen})", "correct": chosen == ref,
                      "time_spent_s": r["rec"].get("time_spent_s"), "window": r["rec"].get("window")})
    pooled = figures(rows)
    ratings = {reader: {r["truth"]["A"]["case"]: r["truth"][r["rec"]["original"]]["variant"] == ref for r in rs}
               for reader, rs in by_reader.items()}
    agree = agreement(ratings, [False, True])
    return readers, pooled, agree, cases


def _confusion(truth: list, guess: list) -> dict:
    labels = sorted(set(truth) | set(guess), key=lambda x: (isinstance(x, str), x))
    idx = {v: i for i, v in enumerate(labels)}
    mat = np.zeros((len(labels), len(labels)), int)
    for t, g in zip(truth, guess):
        mat[idx[t], idx[g]] += 1
    return {"labels": labels, "matrix": mat.tolist(), "accuracy": float(np.trace(mat) / max(mat.sum(), 1))}


def _analyze_protocol(rows, key, seed):
    from ..protocols import KERNEL_CLASSES

    readers, cases, by_reader = {}, [], defaultdict(list)
    for r in rows:
        by_reader[r["reader"]].append(r)

    def figures(rs):
        m = {"n": len(rs), "sensitivity": None, "specificity": None, "auc": None, "auc_ci": None}
        exact = [all(r["truth"]["A"]["protocol"][f] == r["rec"]["guess"][f] for f in D.PROTOCOL_FIELDS) for r in rs]
        m["accuracy"] = float(np.mean(exact)) if rs else None
        m["confusion"] = {f: _confusion([r["truth"]["A"]["protocol"][f] for r in rs],
                                        [r["rec"]["guess"][f] for r in rs]) for f in D.PROTOCOL_FIELDS}
        m["field_accuracy"] = {f: m["confusion"][f]["accuracy"] for f in D.PROTOCOL_FIELDS}
        by_variant = defaultdict(list)
        for r, e in zip(rs, exact):
            by_variant[r["truth"]["A"]["variant"]].append(e)
        m["accuracy_by_variant"] = {v: float(np.mean(e)) for v, e in sorted(by_variant.items())}
        return m

    for reader, rs in sorted(by_reader.items()):
        readers[reader] = figures(rs)
    for r in rows:
        t = r["truth"]["A"]["protocol"]
        cases.append({"case": r["truth"]["A"]["case"], "item": r["item"], "reader": r["reader"],
                      "shown": f"{r['truth']['A']['variant']} (kernel={t['kernel']},dose={t['dose']:g},"
                               f"thickness={t['thickness']:g}" + (f",profile={t['profile']}" if t.get("profile") else "")
                               + ")",
                      "answer": r["rec"]["protocol"],
                      "correct": all(t[f] == r["rec"]["guess"][f] for f in D.PROTOCOL_FIELDS),
                      "time_spent_s": r["rec"].get("time_spent_s"), "window": r["rec"].get("window")})
    ratings = {reader: {r["rec"]["views"]["A"]: r["rec"]["guess"]["kernel"] for r in rs}
               for reader, rs in by_reader.items()}
    return readers, figures(rows), agreement(ratings, list(KERNEL_CLASSES)), cases


def analyze(study: dict, key: dict, answers: dict, seed: int = 0) -> dict:
    """Analyze answers against the key.

    Parameters
    ----------
    study, key : dict
        ``study.json`` and ``key.json``.
    answers : dict
        reader -> {item id: newest answer line} (see :func:`collect_answers`).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``{"study", "readers": {name: {"accuracy", "auc", "auc_ci", ...}}, "pooled",
        "agreement", "cases", "warnings"}``.
    """
    if key.get("study_id") and study.get("study_id") and key["study_id"] != study["study_id"]:
        raise BadInputError("The key belongs to a different study (study_id differs).")
    design = D.check_design(study["design"])
    rows = _rows(study, key, answers)
    fn = {"single": _analyze_single, "pair": _analyze_pair, "protocol": _analyze_protocol}[design]
    readers, pooled, agree, cases = fn(rows, key, seed)
    warnings = []
    for reader in sorted(answers):
        try:
            n_items = len(D.reader_items(study, reader))
        except BadInputError:
            warnings.append({"code": "UNKNOWN_READER", "message": f"Answers from {reader!r}, who is not a reader of this study."})
            continue
        done = len(answers[reader])
        if reader in readers:
            readers[reader]["n_items"] = n_items
            readers[reader]["complete"] = done >= n_items
        if done < n_items:
            warnings.append({"code": "INCOMPLETE", "message": f"{reader} answered {done} of {n_items} items."})
    return {"study": {"design": design, "study_id": study.get("study_id"), "title": study.get("title", ""),
                      "randomization": study.get("randomization"), "n_cases": study.get("n_cases"),
                      "reference": key.get("reference", "original"), "variants": key.get("variants")},
            "readers": readers, "pooled": pooled, "agreement": agree, "cases": cases, "warnings": warnings}


def analyze_study(study_dir, key_path=None, seed: int = 0) -> dict:
    """Load ``study.json``, the key and every reader's valid answers, and :func:`analyze` them.

    Invalid answer lines are skipped, listed in ``result["invalid_lines"]`` (``file:line:
    reason``) and counted in an ``INVALID_ANSWER_LINES`` warning.
    """
    study = S.load_study(study_dir)
    key = S.load_key(study_dir, key_path)
    problems: list = []
    answers = collect_answers(study_dir, study, problems)
    warning = problems_warning(problems)
    if not answers:
        raise BadInputError(f"No valid answers yet in {Path(study_dir) / S.ANSWERS_DIR}"
                            + (f"; {warning['message']}" if warning else "."))
    result = analyze(study, key, answers, seed=seed)
    result["invalid_lines"] = [p.text() for p in problems]
    if warning:
        result["warnings"].insert(0, warning)
    return result


def study_status(study_dir) -> dict:
    """Progress per reader (no key needed): valid answers / total, revisions, last answer time.

    Only valid lines count (``complete`` included); skipped lines are counted per reader
    (``invalid_lines``) and listed in ``problems``.
    """
    study = S.load_study(study_dir)
    answers_dir = Path(study_dir) / S.ANSWERS_DIR
    readers = {}
    names = set(study.get("readers") or {})
    files, invalid, problems = {}, {}, []
    for path in sorted(answers_dir.glob("*.jsonl")):
        name, lines, bad = read_answer_file(path, study["design"], _items_of(study))
        problems.extend(bad)
        name = name or path.stem
        files[name] = lines
        invalid[name] = len(bad)
        names.add(name)
    for name in sorted(names):
        lines = files.get(name, [])
        try:
            total = len(D.reader_items(study, name))
        except BadInputError:
            total = None
        latest = latest_answers(lines)
        readers[name] = {"answered": len(latest), "total": total, "lines": len(lines),
                         "revisions": len(lines) - len(latest),
                         "last_answer": lines[-1]["time"] if lines else None,
                         "complete": total is not None and len(latest) >= total,
                         "invalid_lines": invalid.get(name, 0)}
    n_items = len(study["items"]) if "items" in study else None
    return {"design": study["design"], "randomization": study.get("randomization"),
            "n_cases": study.get("n_cases"), "n_items": n_items, "readers": readers,
            "problems": [p.text() for p in problems]}
