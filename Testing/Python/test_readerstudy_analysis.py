"""Reader-study analysis on synthetic answers with known figures, and kappa on textbook tables."""

import numpy as np
import pytest

from CTNormalizeLib.readerstudy import analysis as AN
from CTNormalizeLib.readerstudy import design as D
from CTNormalizeLib.readerstudy.report import render_html


def synthetic_single(n_cases, readers, rng, variants=("original", "normalized")):
    """A per-study single-image design in memory: study, key and answers from score functions."""
    variants = list(variants)
    shown = D.balanced_choice(rng, n_cases, variants)
    items, images, truth = [], {}, {}
    for i, v in enumerate(shown):
        cid, img = f"{i + 1:03d}", f"{i + 1:03d}_A"
        items.append({"id": cid, "case": cid, "views": {"A": img}, "labels": {"A": f"Case {cid}"}})
        images[img] = {"case": f"P{i}", "variant": v}
        truth[cid] = v
    study = {"design": "single", "randomization": "per-study", "items": items, "n_cases": n_cases, "study_id": "x"}
    key = {"study_id": "x", "reference": "original", "variants": variants, "images": images}
    answers = {}
    for name, fn in readers.items():
        answers[name] = {it["id"]: {"item": it["id"], "score": int(fn(truth[it["id"]], i)), "views": it["views"],
                                    "time_spent_s": 5.0, "window": {"width": 1500.0, "level": -600.0}}
                         for i, it in enumerate(items)}
    return study, key, answers


def test_perfect_chance_and_inverted_readers():
    rng = np.random.default_rng(0)
    noise = np.random.default_rng(1)
    readers = {
        "perfect": lambda v, i: 4 + i % 2 if v == "original" else i % 2,
        "inverted": lambda v, i: i % 2 if v == "original" else 4 + i % 2,
        "chance": lambda v, i: noise.integers(0, 6),
    }
    study, key, answers = synthetic_single(400, readers, rng)
    res = AN.analyze(study, key, answers, seed=0)
    p, inv, ch = (res["readers"][r] for r in ("perfect", "inverted", "chance"))
    assert p["accuracy"] == 1.0 and p["auc"] == 1.0 and p["sensitivity"] == 1.0 and p["specificity"] == 1.0
    assert inv["accuracy"] == 0.0 and inv["auc"] == 0.0
    assert abs(ch["auc"] - 0.5) < 0.08 and abs(ch["accuracy"] - 0.5) < 0.08
    lo, hi = ch["auc_ci"]
    assert lo < 0.5 < hi and hi - lo < 0.25
    assert p["mann_whitney"]["p"] < 1e-10 and ch["mann_whitney"]["p"] > 0.001
    assert p["groups"]["original"]["mean"] == pytest.approx(4.5, abs=0.05)
    assert p["groups"]["normalized"]["mean"] == pytest.approx(0.5, abs=0.05)
    # Perfect vs inverted readers disagree completely.
    assert res["agreement"]["fleiss_kappa"] < 0


def test_detection_figures_on_a_small_known_table():
    # Originals scored 5,5,2,3 -> 3 of 4 called original; normalized 0,0,1,4 -> 3 of 4 called synthetic.
    m = AN.score_detection([5, 5, 2, 3], [0, 0, 1, 4], seed=0)
    assert m["accuracy"] == 0.75 and m["sensitivity"] == 0.75 and m["specificity"] == 0.75
    # Pairs (orig > synth): 5>{0,0,1,4}=4+4, 2>{0,0,1}=3, 3>{0,0,1}=3 -> 14 of 16.
    assert m["auc"] == pytest.approx(14 / 16)
    roc = m["roc"]
    assert roc[0] == (0.0, 0.0) and roc[-1] == (1.0, 1.0)
    # Trapezoids under the ROC points give the same AUC as the pair count.
    x, y = np.array(roc).T
    assert np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) == pytest.approx(m["auc"])


def test_scores_exactly_at_the_threshold():
    """Score 3 ("probably original") is the first score called original, for originals and normalized alike."""
    assert D.ORIGINAL_THRESHOLD == 3
    m = AN.score_detection([3, 3, 2, 2], [3, 2, 2, 2], seed=0)
    assert m["sensitivity"] == 0.75  # normalized scored 2 are called synthetic, the one scored 3 is not
    assert m["specificity"] == 0.5  # originals scored 3 are called original, those scored 2 are not
    assert m["accuracy"] == 5 / 8
    # ROC: called synthetic when score <= t, t = -1..5
    assert m["roc"] == [(0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.5, 0.75), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)]
    assert m["auc"] == pytest.approx((2 * 3 + 0.5 * (2 * 1 + 2 * 3)) / 16)  # pairs orig > synth + half the ties


def test_single_design_case_rows_at_the_threshold():
    readers = {"r": lambda v, i: 3 if i % 2 == 0 else 2}
    study, key, answers = synthetic_single(8, readers, np.random.default_rng(3))
    res = AN.analyze(study, key, answers, seed=0)
    for c in res["cases"]:
        assert c["correct"] == ((c["answer"] >= 3) == (c["shown"] == "original")), c
    truth = {it["id"]: key["images"][it["views"]["A"]]["variant"] for it in study["items"]}
    scores = {i: answers["r"][i]["score"] for i in truth}
    n_norm = sum(v == "normalized" for v in truth.values())
    called = sum(scores[i] == 2 for i, v in truth.items() if v == "normalized")
    assert 0 < called < n_norm  # normalized images scored 2 and 3 both occur
    assert res["readers"]["r"]["sensitivity"] == called / n_norm


def test_cohen_kappa_textbook_values():
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert AN.cohen_kappa(a, b) == pytest.approx(0.4)
    # With two categories every weighting is the same.
    assert AN.cohen_kappa(a, b, [0, 1], "linear") == pytest.approx(0.4)
    assert AN.cohen_kappa(a, b, [0, 1], "quadratic") == pytest.approx(0.4)
    assert AN.cohen_kappa([0, 1, 2, 3], [0, 1, 2, 3], range(6), "linear") == 1.0
    # Three categories by hand: observed linear disagreement 1/3, expected 4/9 -> 0.25
    r1, r2 = [0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 0]
    assert AN.cohen_kappa(r1, r2, None, "linear") == pytest.approx(0.25, rel=1e-12)
    assert AN.cohen_kappa(r1, r2) == pytest.approx(1 - (3 / 6) / (6 / 9), rel=1e-12)  # unweighted: 0.25 too
    assert AN.cohen_kappa([0, 1], [2, 2]) == pytest.approx(0.0)  # categories: the union of both raters'
    assert AN.cohen_kappa([1, 1], [1, 1], [0, 1]) is None and AN.cohen_kappa([], []) is None  # undefined
    with pytest.raises(ValueError):
        AN.cohen_kappa([0, 1], [0, 1], weights="cubic")


def test_quadratic_kappa_matches_the_moment_identity():
    # Quadratic-weighted kappa = 2 cov / (var1 + var2 + (mean1 - mean2)^2) (population moments;
    # Fleiss & Cohen 1973), an identity independent of the confusion-table formula.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 200)
    y = np.clip(x + rng.integers(-2, 3, 200), 0, 5)
    expected = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert AN.cohen_kappa(x, y, range(6), "quadratic") == pytest.approx(expected)
    lin = AN.cohen_kappa(x, y, range(6), "linear")
    unw = AN.cohen_kappa(x, y, range(6))
    assert unw < lin < AN.cohen_kappa(x, y, range(6), "quadratic")  # near misses count more and more


def test_fleiss_kappa_textbook_value():
    # Fleiss (1971) / Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert AN.fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert AN.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == 1.0
    with pytest.raises(ValueError):
        AN.fleiss_kappa([[3, 0], [1, 1]])


def test_each_variant_is_scored_against_the_originals():
    """A clean variant readers spot at once and a target-texture one they cannot tell from the originals
    pooled to one middling AUC; each variant gets its own AUC against the originals too."""
    noise = np.random.default_rng(8)
    reader = lambda v, i: int(noise.integers(0, 2)) if v == "clean" else int(noise.integers(2, 6))  # noqa: E731
    study, key, answers = synthetic_single(300, {"r": reader}, np.random.default_rng(7),
                                           variants=("original", "clean", "target"))
    res = AN.analyze(study, key, answers, seed=0)
    for m in (res["readers"]["r"], res["pooled"]):
        by = m["by_variant"]
        assert set(by) == {"clean", "target"}
        assert by["clean"]["auc"] == 1.0 and abs(by["target"]["auc"] - 0.5) < 0.1
        assert 0.6 < m["auc"] < 0.9
        assert by["clean"]["n_original"] == by["target"]["n_original"] == m["n_original"]
    page = render_html(res)
    section = page[page.index("<h2>Per variant</h2>"):page.index("<h2>Score distributions</h2>")]
    assert section.count("<td>clean</td>") == section.count("<td>target</td>") == 2  # the reader and pooled


def test_two_readers_get_cohen_and_report_renders():
    rng = np.random.default_rng(5)
    noise = np.random.default_rng(6)
    good = lambda v, i: int(np.clip((4 if v == "original" else 1) + noise.integers(-1, 2), 0, 5))  # noqa: E731
    study, key, answers = synthetic_single(40, {"r1": good, "r2": good}, rng)
    res = AN.analyze(study, key, answers)
    ag = res["agreement"]
    assert ag["n_subjects"] == 40 and 0 < ag["cohen_kappa_linear"] < 1 and "fleiss_kappa" not in ag
    assert 0.8 < res["readers"]["r1"]["auc"] <= 1.0
    page = render_html(res)
    assert page.count("data:image/png;base64,") == 2 and "cohen kappa linear" in page
    assert len(res["cases"]) == 80


def _pair_study(n, rng, pick_original, noise_orig=4, noise_norm=3):
    items, images, answers = [], {}, {"r": {}}
    for i in range(n):
        cid = f"{i + 1:03d}"
        a_is_orig = bool(i % 2)
        views = {"A": f"{cid}_A", "B": f"{cid}_B"}
        images[views["A"]] = {"case": f"P{i}", "variant": "original" if a_is_orig else "normalized"}
        images[views["B"]] = {"case": f"P{i}", "variant": "normalized" if a_is_orig else "original"}
        items.append({"id": cid, "case": cid, "views": views})
        orig_side = "A" if a_is_orig else "B"
        norm_side = "B" if a_is_orig else "A"
        chosen = orig_side if pick_original(i) else norm_side
        likert = {k: {orig_side: int(np.clip(noise_orig + rng.integers(-1, 2), 1, 5)),
                      norm_side: int(np.clip(noise_norm + rng.integers(-1, 2), 1, 5))} for k in D.LIKERT_ITEMS}
        answers["r"][cid] = {"item": cid, "original": chosen, "likert": likert, "views": views}
    study = {"design": "pair", "randomization": "per-study", "items": items, "n_cases": n}
    key = {"reference": "original", "variants": ["original", "normalized"], "images": images}
    return study, key, answers


def test_pair_analysis_accuracy_and_likert_test():
    rng = np.random.default_rng(2)
    study, key, answers = _pair_study(40, rng, lambda i: i % 4 != 0)  # 30 of 40 correct
    res = AN.analyze(study, key, answers)
    r = res["readers"]["r"]
    assert r["accuracy"] == 0.75 and r["auc"] == 0.75
    assert r["binomial_test"]["p"] < 0.01
    noise = r["likert"]["noise"]
    assert noise["original"]["mean"] > noise["normalized"]["mean"]
    assert noise["paired_difference"]["mean"] < 0 and noise["wilcoxon"]["p"] < 0.001
    study, key, answers = _pair_study(40, rng, lambda i: True, noise_orig=3, noise_norm=3)
    res = AN.analyze(study, key, answers)
    assert res["readers"]["r"]["accuracy"] == 1.0
    assert res["readers"]["r"]["likert"]["noise"]["wilcoxon"] is None or \
        res["readers"]["r"]["likert"]["noise"]["wilcoxon"]["p"] > 0.001
    assert "Likert" in render_html(res)


def test_protocol_confusion_matrix():
    truth = [("sharp", 0.25, 2.0), ("smooth", 1.0, 1.0), ("sharp", 0.25, 2.0), ("smooth", 1.0, 1.0)]
    guess = [("sharp", 0.25, 2.0), ("sharp", 1.0, 1.0), ("standard", 0.25, 1.0), ("smooth", 1.0, 1.0)]
    items, images, ans = [], {}, {}
    for i, (t, g) in enumerate(zip(truth, guess)):
        img = f"{i + 1:03d}_A"
        items.append({"id": img, "case": f"{i + 1:03d}", "views": {"A": img}})
        images[img] = {"case": f"P{i}", "variant": "source" if t[0] == "sharp" else "original",
                       "protocol": dict(zip(D.PROTOCOL_FIELDS, t))}
        ans[img] = {"item": img, "views": {"A": img}, "protocol": "x", "guess": dict(zip(D.PROTOCOL_FIELDS, g))}
    study = {"design": "protocol", "randomization": "per-study", "items": items}
    res = AN.analyze(study, {"images": images}, {"r": ans})
    r = res["readers"]["r"]
    assert r["accuracy"] == 0.5  # items 1 and 4 fully right
    k = r["confusion"]["kernel"]
    assert k["labels"] == ["sharp", "smooth", "standard"]
    assert k["matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert r["field_accuracy"] == {"kernel": 0.5, "dose": 1.0, "thickness": 0.75}
    assert r["accuracy_by_variant"] == {"original": 0.5, "source": 0.5}
    assert "Confusion" in render_html(res)


def test_figures_keep_one_colour_per_variant_and_kernel_order():
    """A variant has one colour in every reader's panel (it followed the order of appearance); kernel
    classes run smooth to sharp (alphabetical before); a one-cell matrix is not drawn blank."""
    import matplotlib

    matplotlib.use("Agg")
    from CTNormalizeLib.readerstudy import figures

    groups = {v: {"mean": 2.0, "sd": 1.0} for v in ("original", "clean", "normalized")}
    result = {"study": {"reference": "original"},
              "readers": {"A": {"score_counts": {"original": [1] * 6, "normalized": [1] * 6}, "groups": groups},
                          "B": {"score_counts": {"clean": [1] * 6, "original": [1] * 6}, "groups": groups}},
              "pooled": {"confusion": {"kernel": {"labels": ["sharp", "smooth", "standard"],
                                                  "matrix": [[3, 0, 0], [0, 2, 0], [1, 0, 4]], "accuracy": 0.9},
                                       "thickness": {"labels": [5.0], "matrix": [[12]], "accuracy": 1.0}}}}
    fig = figures.score_distribution_figure(result)
    by_label = {}
    for ax in fig.axes:
        for bars, text in zip(ax.containers, [t.get_text() for t in ax.get_legend().get_texts()]):
            by_label.setdefault(text.split(" (")[0], set()).add(tuple(bars.patches[0].get_facecolor()))
    assert all(len(c) == 1 for c in by_label.values()) and len({next(iter(c)) for c in by_label.values()}) == 3
    fig = figures.confusion_figure(result)
    kernel_ax, thick_ax = fig.axes
    assert [t.get_text() for t in kernel_ax.get_yticklabels()] == ["smooth", "standard", "sharp"]
    assert kernel_ax.images[0].get_array()[1, 2] == 1  # truth standard, guessed sharp: moved with its labels
    assert thick_ax.images[0].get_clim() == (0, 12)


def test_pairwise_agreement_says_what_it_rests_on():
    """Three readers with no subject in common showed 'n subjects 0' next to a pairwise kappa of 1.000."""
    ag = AN.agreement({"a": {1: 1, 2: 2}, "b": {1: 1, 2: 2}, "c": {3: 1}}, [1, 2])
    assert ag["n_subjects"] == 0 and ag["mean_pairwise_cohen_kappa_linear"] == 1.0
    assert ag["pairwise_kappa_reader_pairs"] == 1 and ag["pairwise_kappa_subjects_per_pair"] == 2.0


def test_kappa_at_chance_is_zero_not_minus_zero():
    """Agreement exactly at chance gave -2.2e-16, which the report printed as "-0.000"."""
    from CTNormalizeLib.readerstudy.analysis import cohen_kappa

    # no agreement, none expected: kappa 0 (the sum gave -2.2e-16 unweighted, 1.1e-16 quadratic on the next one)
    for r1, r2, w in (([1, 1, 1, 1, 3, 1], [2, 2, 2, 5, 4, 5], None), ([2, 2, 5], [5, 2, 3], "quadratic")):
        k = cohen_kappa(r1, r2, weights=w)
        assert k == 0.0 and f"{k:.3f}" == "0.000", (w, k)
