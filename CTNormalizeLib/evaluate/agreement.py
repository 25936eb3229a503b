"""Agreement statistics: Lin's concordance correlation coefficient, feature reproducibility,
relative feature error, paired Wilcoxon tests, and the replicate-floor "gap closed".
"""

from __future__ import annotations

import math

import numpy as np

REPRODUCIBLE_CCC = 0.85


def lins_ccc(x, y) -> float:
    """Lin's concordance correlation coefficient of paired values.

    ``CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population
    (1/n) moments, as in Lin (1989). 1 for identical vectors; a shift lowers it.
    NaN with fewer than 2 finite pairs; 1 when both vectors are the same constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = ((x - mx) * (y - my)).mean()
    den = vx + vy + (mx - my) ** 2
    if den == 0:
        return 1.0
    return float(2.0 * cov / den)


def feature_ccc(test: dict, reference: dict) -> dict:
    """Per-feature CCC across cases.

    Parameters
    ----------
    test, reference : dict
        feature name -> sequence of values, one per case, in the same case order.

    Returns
    -------
    dict
        ``{"ccc": {feature: value}, "n_cases": n, "percent_reproducible": % of features with
        CCC > 0.85, "threshold": 0.85}``.
    """
    names = [k for k in reference if k in test]
    ccc = {k: lins_ccc(test[k], reference[k]) for k in names}
    finite = [v for v in ccc.values() if math.isfinite(v)]
    pct = 100.0 * sum(v > REPRODUCIBLE_CCC for v in finite) / len(finite) if finite else float("nan")
    n = len(next(iter(reference.values()))) if reference else 0
    return {"ccc": ccc, "n_cases": n, "percent_reproducible": pct, "threshold": REPRODUCIBLE_CCC}


def relative_feature_error(test: dict, reference: dict, eps: float = 1e-6) -> float:
    """Mean over features of ``|test - reference| / max(|reference|, eps)`` for one case.

    ``test`` and ``reference`` map feature names to scalar values. NaN features are skipped.
    """
    errs = []
    for k, r in reference.items():
        if k not in test:
            continue
        t, r = float(test[k]), float(r)
        if math.isfinite(t) and math.isfinite(r):
            errs.append(abs(t - r) / max(abs(r), eps))
    return float(np.mean(errs)) if errs else float("nan")


def paired_wilcoxon(a, b) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples ``a`` vs ``b`` (scipy.stats).

    Pairs with a NaN are dropped. Returns ``{"n", "statistic", "p_value", "median_difference"}``;
    ``p_value`` is NaN (with a ``note``) when fewer than 2 pairs differ.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    out = {"n": int(len(a)), "median_difference": float(np.median(d)) if len(d) else float("nan")}
    if np.count_nonzero(d) < 2:
        return {**out, "statistic": float("nan"), "p_value": float("nan"),
                "note": "fewer than 2 non-zero paired differences"}
    res = wilcoxon(a, b)
    return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def gap_closed(m_src: float, m_out: float, m_rep: float, min_gap: float = 1e-9,
               rel_min_gap: float = 0.01):
    """``(m_src - m_out) / (m_src - m_rep)``: 0 = no better than the source, 1 = at the replicate floor.

    Works for lower-is-better and higher-is-better metrics alike. Returns None when the
    gap ``|m_src - m_rep|`` is below ``max(min_gap, rel_min_gap * max(|m_src|, |m_rep|))``
    (source already at the floor: the ratio would only amplify noise) or an input is not finite.
    """
    vals = (m_src, m_out, m_rep)
    if any(v is None or not math.isfinite(float(v)) for v in vals):
        return None
    gap = float(m_src) - float(m_rep)
    if abs(gap) <= max(min_gap, rel_min_gap * max(abs(float(m_src)), abs(float(m_rep)))):
        return None
    return float((float(m_src) - float(m_out)) / gap) + 0.0  # no "-0.0" in tables
