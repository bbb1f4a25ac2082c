"""Uncertainty metrics: bins, Spearman, sparsification, AUSE and the baselines, on hand-built cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.data.errors import DataError
from calm.data.synthetic.ambiguity import clip_ambiguity, nameable_facts
from calm.data.truth import synthetic_metadata_path
from calm.engine.evaluation.uncertainty import uncertainty_from_scores
from calm.metrics.uncertainty import (
    FRACTIONS,
    ause,
    average_ranks,
    entropy,
    oracle_curve,
    random_summary,
    recall_by_bins,
    sparsification_curve,
    spearman,
    top2_margin,
    uncertainty_report,
    uncertainty_summary,
)

# Ten queries: the five hits (rank 1) are the five least uncertain, the misses are ranked 2..6.
RANKS = [1, 1, 1, 1, 1, 2, 3, 4, 5, 6]
ORACLE = [50.0, 500 / 9, 62.5, 500 / 7, 250 / 3, 100.0, 100.0, 100.0, 100.0, 100.0]


def test_sigma_that_orders_queries_like_the_truth_matches_the_oracle():
    s = uncertainty_summary(list(range(10)), RANKS)
    assert s["bins_r1"] == [100.0] * 5 + [0.0] * 5
    assert s["sparsification"] == pytest.approx(ORACLE)
    assert s["ause"] == pytest.approx(0.0)
    # average ranks of RANKS: 3 (five tied hits), 6..10; of sigma: 1..10 -> rho = sqrt(72.5/82.5)
    assert s["spearman"] == pytest.approx(np.sqrt(29 / 33))


def test_sigma_that_orders_queries_backwards_drops_the_hits_first():
    s = uncertainty_summary(list(range(10))[::-1], RANKS)
    assert s["bins_r1"] == [0.0] * 5 + [100.0] * 5
    # dropping k of the 10 removes k hits: R@1 = (5 - k) / (10 - k) until the hits run out
    assert s["sparsification"] == pytest.approx([50.0, 400 / 9, 37.5, 200 / 7, 50 / 3] + [0.0] * 5)
    gaps = [0, 100 / 9, 25, 300 / 7, 200 / 3, 100, 100, 100, 100, 100]
    assert s["ause"] == pytest.approx(0.1 * (sum(gaps) - (gaps[0] + gaps[-1]) / 2))
    assert s["spearman"] == pytest.approx(-np.sqrt(29 / 33))


def test_constant_sigma_is_exactly_the_random_baseline():
    s = uncertainty_summary([0.3] * 10, RANKS)
    rnd = random_summary(RANKS)
    assert s["bins_r1"] == pytest.approx(rnd["bins_r1"]) and rnd["bins_r1"] == [50.0] * 10
    assert s["sparsification"] == pytest.approx([50.0] * 10)
    assert s["ause"] == pytest.approx(rnd["ause"])
    assert s["spearman"] is None and rnd["spearman"] == 0.0


def test_sigma_correlated_with_the_error_beats_random_and_bins_fall():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 6, size=3000)  # a fifth of the queries are hits
    sigma = ranks + rng.normal(0, 1.0, size=ranks.size)  # noisy, but rises with the rank
    s = uncertainty_summary(sigma, ranks)
    rnd = random_summary(ranks)
    assert s["spearman"] > 0.7
    assert 0 < s["ause"] < rnd["ause"] - 5 * rnd["ause_std"]
    assert s["bins_r1"][0] > 60 and s["bins_r1"][-1] < 5
    assert all(a >= b for a, b in zip(s["bins_r1"], s["bins_r1"][1:]))


def test_random_sigma_matches_the_random_baseline_within_noise():
    rng = np.random.default_rng(1)
    ranks = rng.integers(1, 4, size=4000)
    s = uncertainty_summary(rng.random(ranks.size), ranks)
    rnd = random_summary(ranks)
    assert rnd["ause_std"] > 0
    assert abs(s["ause"] - rnd["ause"]) < 3 * rnd["ause_std"]
    assert abs(s["spearman"]) < 0.06
    assert max(abs(b - rnd["bins_r1"][0]) for b in s["bins_r1"]) < 8


def test_more_bins_than_queries_leaves_empty_bins_as_none():
    assert recall_by_bins([0.1, 0.2, 0.3], [1, 2, 1], n_bins=5) == [100.0, 0.0, 100.0, None, None]
    assert random_summary([1, 2, 1], n_bins=5)["bins_r1"][3:] == [None, None]


def test_ties_count_their_expected_hit_rate_whatever_the_query_order():
    # two tied queries (one hit) at the top of the uncertainty: dropping one keeps half a hit
    u, r = [0.0, 1.0, 1.0], [1, 1, 7]
    assert sparsification_curve(u, r, [0.0, 1 / 3]) == pytest.approx([200 / 3, 75.0])
    assert sparsification_curve([1.0, 0.0, 1.0], [7, 1, 1], [0.0, 1 / 3]) == pytest.approx(
        [200 / 3, 75.0]
    )


def test_spearman_and_average_ranks():
    assert list(average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    x = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    y = [2.0, 7.0, 1.0, 8.0, 2.5, 3.0]
    d = average_ranks(x) - average_ranks(y)
    assert spearman(x, y) == pytest.approx(1 - 6 * np.sum(d**2) / (6 * (36 - 1)))
    assert spearman([1, 2, 3], [10, 20, 300]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_entropy_and_margin():
    assert entropy([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]) == pytest.approx([np.log(2), 0.0])
    scores = np.array([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
    assert list(top2_margin(scores)) == [1.0, 5.0]
    assert list(top2_margin(scores, axis=0)) == [3.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="at least 2 candidates"):
        top2_margin(np.ones((3, 1)))


@pytest.mark.parametrize(
    ("u", "r", "message"),
    [([0.1, 0.2], [1], "2 queries but ranks has 1"), ([np.nan], [1], "NaN"),
     ([0.1], [0], "1-based"), ([], [], "empty")],
)
def test_bad_inputs_are_named(u, r, message):
    with pytest.raises(ValueError, match=message):
        uncertainty_summary(u, r)


def test_report_holds_every_score_the_baselines_and_the_oracle():
    rep = uncertainty_report(RANKS, {"sigma": range(10)}, {"margin": [0.0] * 10})
    assert set(rep) == {"sigma", "baselines", "oracle", "n_queries", "r1", "coverages"}
    assert set(rep["baselines"]) == {"margin", "random"}
    assert rep["oracle"]["sparsification"] == pytest.approx(ORACLE)
    # the oracle answers the five hits first: no risk until half the queries are answered
    assert rep["oracle"]["risk_coverage"][:10] == [0.0] * 10
    assert rep["oracle"]["aurc"] == pytest.approx(rep["sigma"]["aurc"])
    assert rep["n_queries"] == 10 and rep["r1"] == 50.0
    json.dumps(rep)


# ---- invariants ------------------------------------------------------------------------------

queries = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 6), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),  # few values: many ties
    )
)


@settings(max_examples=150, deadline=None)
@given(queries)
def test_the_oracle_dominates_every_order_and_ause_is_non_negative(q):
    ranks, u = q
    curve, oracle = sparsification_curve(u, ranks), oracle_curve(ranks)
    assert all(o >= c - 1e-9 for o, c in zip(oracle, curve))
    assert ause(curve, oracle) >= -1e-9
    assert random_summary(ranks, permutations=5)["ause"] >= -1e-9
    r1 = 100.0 * np.mean(np.asarray(ranks) <= 1)
    assert curve[0] == pytest.approx(r1) and oracle[0] == pytest.approx(r1)
    assert all(b >= a - 1e-9 for a, b in zip(oracle, oracle[1:]))  # dropping the worst helps


@settings(max_examples=100, deadline=None)
@given(queries, st.randoms(use_true_random=False))
def test_results_depend_neither_on_query_order_nor_on_the_scale_of_sigma(q, rnd):
    ranks, u = q
    base = uncertainty_summary(u, ranks)
    order = list(range(len(ranks)))
    rnd.shuffle(order)
    shuffled = uncertainty_summary([u[i] for i in order], [ranks[i] for i in order])
    rescaled = uncertainty_summary([np.exp(x) * 3 for x in u], ranks)
    for other in (shuffled, rescaled):
        assert other["sparsification"] == pytest.approx(base["sparsification"])
        assert other["ause"] == pytest.approx(base["ause"], abs=1e-9)
        assert [b is None for b in other["bins_r1"]] == [b is None for b in base["bins_r1"]]
        assert [b for b in other["bins_r1"] if b is not None] == pytest.approx(
            [b for b in base["bins_r1"] if b is not None])
        assert (other["spearman"] is None) == (base["spearman"] is None)
        if base["spearman"] is not None:
            assert other["spearman"] == pytest.approx(base["spearman"])


@settings(max_examples=100, deadline=None)
@given(queries)
def test_bins_average_back_to_r1(q):
    ranks, u = q
    bins = recall_by_bins(u, ranks)
    sizes = [len(b) for b in np.array_split(np.arange(len(ranks)), 10)]
    total = sum(b * n for b, n in zip(bins, sizes) if b is not None)
    assert total / len(ranks) == pytest.approx(100.0 * np.mean(np.asarray(ranks) <= 1))


# ---- the JSON block from scores and a matrix ------------------------------------------------


def test_block_from_a_matrix_uses_videos_with_captions_and_each_query_side():
    # texts 0, 1 describe video 0; text 2 describes video 1; video 2 has no caption
    sim = np.array([[0.9, 0.1, 0.5],
                    [0.2, 0.75, 0.1],
                    [0.8, 0.7, 0.0]], dtype=np.float32)
    scores = {"sigma": np.array([0.5, 0.2, 9.0]), "vp_entropy": np.array([1.0, 2.0, 3.0]),
              "sp_entropy": np.array([0.1, 0.2, 0.3])}
    block = uncertainty_from_scores(sim, np.array([0, 0, 1]), scores, n_bins=2,
                                    fractions=[0.0, 0.5])
    assert block["query"] == "video" and block["n_queries"] == 2  # video 2 is not a query
    # v2t: video 0 ranks its caption first (0.9); video 1's caption (0.7) is 2nd, after 0.75
    assert block["r1"] == 50.0
    assert block["sigma"]["bins_r1"] == [0.0, 100.0]  # video 1 (sigma 0.2) is the miss
    assert block["sigma"]["spearman"] == pytest.approx(-1.0)
    # margins of the queries' rows (columns of sim): video 0: 0.9 - 0.8, video 1: 0.75 - 0.7
    assert block["baselines"]["margin"]["bins_r1"] == [100.0, 0.0]
    t = block["text_query"]
    assert t["n_queries"] == 3 and set(t) >= {"sigma", "sp_entropy", "baselines", "oracle"}
    assert set(t["baselines"]) == {"vp_entropy", "margin", "random"}
    # t2v ranks: text 0 -> 1, text 1 -> 2 (0.75 > 0.2), text 2 -> 2 (0.8 > 0.7)
    assert t["r1"] == pytest.approx(100 / 3)
    assert block["fractions"] == [0.0, 0.5]
    assert block["tie_rule"] == "expected-under-random-tie-breaking"
    json.dumps(block)


# ---- synthetic ambiguity ---------------------------------------------------------------------


def _obj(shape, colour, size="medium", motion="left"):
    return {"shape": shape, "colour": colour, "size": size, "motion": motion}


def _write_metadata(path, domain="msrvtt"):
    clips = [
        ("a", {"background": "sky", "main": _obj("circle", "red"), "second": None},
         [{"shape": "circle"}, {"colour": "red", "motion": "left"}]),
        ("b", {"background": "sky", "main": _obj("circle", "blue", "large"),
               "second": _obj("star", "red", "small", "up")},
         [{"shape": "circle", "colour": "blue"}]),
        ("c", {"background": "sand", "main": _obj("square", "red"), "second": None},
         [{"colour": "red"}]),
    ]
    data = {"domain": domain, "splits": {"test": [
        {"video_id": v, "file": f"{v}.mp4", "attributes": attrs,
         "texts": [{"text": "...", "mention": m} for m in mentions]}
        for v, attrs, mentions in clips]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_clip_ambiguity_counts_fitting_captions_and_nameable_facts(tmp_path):
    meta = _write_metadata(tmp_path / "msrvtt" / "metadata.json")
    assert synthetic_metadata_path(tmp_path / "msrvtt" / "annotations") == meta
    amb = clip_ambiguity(meta, ["a", "b", "c"])
    # a: fits c's "red" -> 1; b: a's "circle", c's "red" (its second object is red) -> 2;
    # c: a's "red, left" -> 1 (a's "circle" does not fit a square)
    assert list(amb["captions_fitting"]) == [1, 2, 1]
    # a: bg + shape, colour, motion; b: bg + 4 + 4 (small second); c: bg + 3
    assert list(amb["nameable_facts"]) == [4, 9, 4]
    assert nameable_facts({"main": _obj("bar", "red", "small"), "second": None}) == 5
    # a's captions fit {a, b} and {a, c}: 2 each; b's fits only b; c's "red" fits a, b, c
    assert list(amb["own_caption_matches"]) == [2, 1, 3]
    # as DiDeMo paragraphs, a's two sentences are one caption: circle + red + left fits only a,
    # so b is fitted only by c's "red" and c by nothing
    didemo = clip_ambiguity(_write_metadata(tmp_path / "d" / "metadata.json", "didemo"),
                            ["a", "b", "c"])
    assert list(didemo["captions_fitting"]) == [1, 1, 0]
    assert list(didemo["own_caption_matches"]) == [1, 1, 3]


def test_missing_clip_or_foreign_metadata(tmp_path):
    meta = _write_metadata(tmp_path / "msrvtt" / "metadata.json")
    with pytest.raises(DataError, match="metadata.json.*'zz'"):
        clip_ambiguity(meta, ["a", "zz"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metadata.json").write_text('{"something": "else"}')
    assert synthetic_metadata_path(tmp_path / "other" / "annotations") is None
    assert synthetic_metadata_path(tmp_path / "nowhere" / "annotations") is None


def test_fractions_are_validated():
    with pytest.raises(ValueError, match="fractions"):
        sparsification_curve([0.1, 0.2], [1, 2], [0.0, 1.0])
    assert len(FRACTIONS) == 10 and FRACTIONS[0] == 0.0 and FRACTIONS[-1] == pytest.approx(0.9)


def test_a_collapsed_model_is_at_chance_in_every_bin():
    # all scores tie: every query's expected R@1 is 1/n, whatever its sigma
    n = 8
    scores = {"sigma": np.arange(n, dtype=float), "vp_entropy": np.ones(n),
              "sp_entropy": np.ones(n)}
    block = uncertainty_from_scores(np.zeros((n, n)), np.arange(n), scores, n_bins=4)
    assert block["r1"] == pytest.approx(100 / n)
    assert block["sigma"]["bins_r1"] == pytest.approx([100 / n] * 4)
    assert block["sigma"]["ause"] == pytest.approx(0.0)


# ---- AUROC for wrong top-1 answers, risk-coverage, calibration (issue 19) ------------------------


def test_auroc_by_hand_with_ties_counting_half():
    from calm.metrics.uncertainty import auroc_wrong

    # misses (rank > 1) at scores 3, 1; hits at 0, 1, 2: pairs (miss > hit): 3 > all three,
    # 1 > 0, 1 = 1 (half), 1 < 2 -> (3 + 1 + 0.5) / 6
    assert auroc_wrong([0, 1, 2, 3, 1], [1, 1, 1, 2, 5]) == pytest.approx(4.5 / 6)
    assert auroc_wrong(list(range(10)), RANKS) == pytest.approx(1.0)  # misses the most uncertain
    assert auroc_wrong(list(range(10))[::-1], RANKS) == pytest.approx(0.0)
    assert auroc_wrong([0.3] * 10, RANKS) == pytest.approx(0.5)
    assert auroc_wrong([1, 2], [1, 1]) is None  # no wrong answer to find
    # expected hits: a query half right counts half on each side
    assert auroc_wrong([0, 1], [1, 2], hits=[1.0, 0.5]) == pytest.approx(1.0)


def test_risk_coverage_and_aurc_by_hand():
    from calm.metrics.uncertainty import aurc, risk_coverage

    # least uncertain first: hit, miss, hit, miss -> risks 0, 50, 33.3, 50
    u, r = [0, 1, 2, 3], [1, 2, 1, 3]
    assert aurc(u, r) == pytest.approx((0 + 50 + 100 / 3 + 50) / 4)
    assert risk_coverage(u, r, coverages=(0.25, 0.5, 0.6, 1.0)) == pytest.approx(
        [0.0, 50.0, 100 / 3, 50.0])
    rnd = random_summary(RANKS, permutations=5)
    assert rnd["aurc"] == 50.0 and rnd["auroc"] == 0.5
    # a constant score is the random one
    assert aurc([0.3] * 10, RANKS) == pytest.approx(rnd["aurc"])


def test_calibration_by_hand():
    from calm.metrics.uncertainty import calibration

    # bins of width 0.5: {0.2, 0.4} with one hit -> |0.3 - 0.5|; {0.9, 0.9} both hits -> 0.1
    cal = calibration([0.2, 0.4, 0.9, 0.9], [1, 3, 1, 1], n_bins=2)
    assert cal["ece"] == pytest.approx(100 * (0.5 * 0.2 + 0.5 * 0.1))
    assert [b["n"] for b in cal["bins"]] == [2, 2] and cal["accuracy"] == 75.0
    assert calibration([1.0, 0.0], [1, 2])["ece"] == pytest.approx(0.0)  # perfectly calibrated
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([1.5], [1])


@settings(max_examples=100, deadline=None)
@given(queries)
def test_the_oracle_has_the_lowest_aurc_and_auroc_lies_in_0_1(q):
    from calm.metrics.uncertainty import aurc, auroc_wrong

    ranks, u = q
    hits = (np.asarray(ranks) <= 1).astype(float)
    assert aurc(-hits, ranks) <= aurc(u, ranks) + 1e-9
    a = auroc_wrong(u, ranks)
    assert a is None or 0.0 <= a <= 1.0
    if a is not None:  # reversing the score mirrors the AUROC
        assert auroc_wrong([-x for x in u], ranks) == pytest.approx(1.0 - a)
