"""Tests for calm.metrics: hand-worked values, tie rules, padding, chunking and properties."""

from __future__ import annotations

import ast
import itertools
import pathlib
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import calm.metrics as M
from calm.metrics import (
    caption_groups,
    ranks_t2v,
    ranks_v2t,
    retrieval_metrics,
    summarize_ranks,
)

TIES = ("optimistic", "pessimistic", "mean")


# --------------------------------------------------------------------------------------------
# brute-force reference: sort with explicit tie-breaking, then read the position (independent of
# the counting used by the implementation).
# --------------------------------------------------------------------------------------------


def _first_hit(scores, is_gt, ties):
    def pos(gt_first):
        # gt_first: ties broken in favour of ground truth (optimistic), else against it.
        key = [
            (-float(s), (0 if g else 1) if gt_first else (1 if g else 0))
            for s, g in zip(scores, is_gt)
        ]
        order = sorted(range(len(scores)), key=lambda k: key[k])
        return next(p for p, k in enumerate(order, start=1) if is_gt[k])

    if ties == "optimistic":
        return pos(True)
    if ties == "pessimistic":
        return pos(False)
    return float(np.mean(_random_tie_positions(scores, is_gt)))


def _random_tie_positions(scores, is_gt):
    """First-hit position under every equally likely placement of the ground truths among the
    candidates tied with the best ground-truth score (exhaustive, no formula)."""
    best = max(float(s) for s, g in zip(scores, is_gt) if g)
    above = sum(1 for s in scores if float(s) > best)
    tied = [g for s, g in zip(scores, is_gt) if float(s) == best]
    m = sum(tied)
    return [above + min(slots) + 1 for slots in itertools.combinations(range(len(tied)), m)]


def ref_t2v(sim, t2v, ties):
    sim = np.asarray(sim)
    out = []
    for i in range(sim.shape[0]):
        is_gt = [j == t2v[i] for j in range(sim.shape[1])]
        out.append(_first_hit(list(sim[i]), is_gt, ties))
    return np.array(out)


def ref_v2t(sim, t2v, ties):
    sim = np.asarray(sim)
    out = []
    for j in range(sim.shape[1]):
        is_gt = [t2v[i] == j for i in range(sim.shape[0])]
        if not any(is_gt):
            continue  # no caption: excluded
        out.append(_first_hit(list(sim[:, j]), is_gt, ties))
    return np.array(out)


@st.composite
def problems(draw, max_texts=8, max_videos=8, lo=-2, hi=2):
    """Small integer-valued score matrices (frequent ties) with any text->video mapping."""
    n_t = draw(st.integers(1, max_texts))
    n_v = draw(st.integers(1, max_videos))
    t2v = np.array(draw(st.lists(st.integers(0, n_v - 1), min_size=n_t, max_size=n_t)))
    vals = draw(st.lists(st.integers(lo, hi), min_size=n_t * n_v, max_size=n_t * n_v))
    sim = np.array(vals, dtype=np.float64).reshape(n_t, n_v)
    return sim, t2v


def _full_v2t(ranks, t2v, n_videos):
    """Scatter v2t ranks (videos with captions only) into a per-video array (-1 = excluded)."""
    full = np.full(n_videos, -1.0)
    full[np.bincount(t2v, minlength=n_videos) > 0] = ranks
    return full


# --------------------------------------------------------------------------------------------
# hand-worked cases
# --------------------------------------------------------------------------------------------


def test_identity_is_perfect():
    n = 7
    sim = np.eye(n)
    for ties in TIES:
        res = retrieval_metrics(sim, np.arange(n), ties=ties)
        for d in ("t2v", "v2t"):
            assert res[d] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    assert res["n_texts"] == n and res["n_videos"] == n


def test_reversed_ranking_gt_always_last():
    # sim[i, j] = (j - i) mod 12: the diagonal (gt) is 0, the other 11 scores are 1..11, distinct,
    # in every row and every column -> gt is last: rank 12 for every query, in both directions.
    # R@1 = R@5 = R@10 = 0 (12 > 10); MdR = MnR = 12. No ties, so every tie rule agrees.
    n = 12
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    sim = ((j - i) % n).astype(np.float32)
    for ties in TIES:
        assert np.array_equal(ranks_t2v(sim, np.arange(n), ties=ties), np.full(n, 12))
        assert np.array_equal(ranks_v2t(sim, np.arange(n), ties=ties), np.full(n, 12))
        res = retrieval_metrics(sim, np.arange(n), ties=ties)
        for d in ("t2v", "v2t"):
            assert res[d] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 12.0, "MnR": 12.0}


def test_all_tied_row():
    # One text, 9 videos, all scores equal: optimistic 1 (nothing strictly better),
    # pessimistic 9 (8 others >= gt), mean 5.
    sim = np.full((1, 9), 0.25)
    for gt in (0, 4, 8):
        assert ranks_t2v(sim, [gt], ties="optimistic").tolist() == [1]
        assert ranks_t2v(sim, [gt], ties="pessimistic").tolist() == [9]
        assert ranks_t2v(sim, [gt], ties="mean").tolist() == [5.0]


# 4x4, one caption per video (identity pairing). Integer scores.
#          v0 v1 v2 v3
# t0 gt v0 [9, 1, 9, 3]  gt 9: >9 none -> opt 1;  others >=9: v2      -> pes 2; mean 1.5
# t1 gt v1 [8, 7, 2, 1]  gt 7: >7 v0   -> opt 2;  others >=7: v0      -> pes 2; mean 2
# t2 gt v2 [5, 6, 4, 4]  gt 4: >4 v0,v1 -> opt 3; others >=4: v0,v1,v3 -> pes 4; mean 3.5
# t3 gt v3 [1, 2, 3, 0]  gt 0: >0 all 3 -> opt 4; pes 4; mean 4
# t2v opt [1,2,3,4]: R@1 25, R@5 100, R@10 100, MdR median(1,2,3,4)=2.5, MnR 10/4=2.5
# t2v pes [2,2,4,4]: R@1 0, R@5 100, MdR 3, MnR 3
# v2t (columns; gt text = same index):
# v0 col [9,8,5,1]  gt 9: opt 1, pes 1
# v1 col [1,7,6,2]  gt 7: opt 1, pes 1
# v2 col [9,2,4,3]  gt 4: >4 t0(9) -> opt 2; others >=4: t0 -> pes 2
# v3 col [3,1,4,0]  gt 0: >0 t0,t1,t2 -> opt 4, pes 4
# v2t opt [1,1,2,4]: R@1 50, R@5 100, R@10 100, MdR 1.5, MnR 8/4=2
SIM_4x4 = np.array([[9, 1, 9, 3], [8, 7, 2, 1], [5, 6, 4, 4], [1, 2, 3, 0]], dtype=np.float64)


def test_hand_worked_4x4():
    t2v = np.arange(4)
    assert ranks_t2v(SIM_4x4, t2v, ties="optimistic").tolist() == [1, 2, 3, 4]
    assert ranks_t2v(SIM_4x4, t2v, ties="pessimistic").tolist() == [2, 2, 4, 4]
    assert ranks_t2v(SIM_4x4, t2v, ties="mean").tolist() == [1.5, 2.0, 3.5, 4.0]
    assert ranks_v2t(SIM_4x4, t2v, ties="optimistic").tolist() == [1, 1, 2, 4]
    assert ranks_v2t(SIM_4x4, t2v, ties="pessimistic").tolist() == [1, 1, 2, 4]
    # expected hits: t0 is tied with v2 for first place -> half a hit
    res_m = retrieval_metrics(SIM_4x4, t2v)
    assert res_m["tie_rule"] == "expected-under-random-tie-breaking"
    assert res_m["t2v"] == {"R@1": 12.5, "R@5": 100.0, "R@10": 100.0, "MdR": 2.75, "MnR": 2.75}
    res = retrieval_metrics(SIM_4x4, t2v, ties="optimistic")
    assert res["t2v"] == {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.5}
    assert res["v2t"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 2.0}
    assert res["tie_rule"] == "strictly-better"
    res_p = retrieval_metrics(SIM_4x4, t2v, ties="pessimistic")
    assert res_p["t2v"] == {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 3.0, "MnR": 3.0}
    assert res_p["tie_rule"] == "better-or-equal"


# Several captions per video; 5 texts, 4 videos, video 3 has no caption (a distractor).
#            v0 v1 v2 v3
# t0 (v0)  [5, 4, 1, 0]  gt 5: >5 none -> opt 1; others >=5 none        -> pes 1
# t1 (v0)  [3, 2, 3, 9]  gt 3: >3 v3   -> opt 2; others >=3 v2,v3       -> pes 3
# t2 (v1)  [4, 4, 4, 4]  gt 4: opt 1; others >=4 v0,v2,v3               -> pes 4
# t3 (v2)  [7, 1, 8, 2]  gt 8: opt 1; pes 1
# t4 (v2)  [0, 0, 8, 1]  gt 8: opt 1; pes 1
# t2v opt [1,2,1,1,1] -> R@1 80, R@5 100, MdR 1, MnR 6/5 = 1.2
# v2t: best own-caption score, all 5 texts are candidates:
# v0 col [5,3,4,7,0] own {t0,t1} best 5: >5 t3 -> opt 2; non-own >=5: t3         -> pes 2
# v1 col [4,2,4,1,0] own {t2}    best 4: >4 none -> opt 1; non-own >=4: t0        -> pes 2
# v2 col [1,3,4,8,8] own {t3,t4} best 8: opt 1; non-own >=8 none (own tie t3=t4) -> pes 1
# v3: no caption -> excluded (reported as n_videos_without_captions = 1)
# v2t opt [2,1,1] -> R@1 200/3, R@5 100, MdR 1, MnR 4/3
SIM_MC = np.array(
    [[5, 4, 1, 0], [3, 2, 3, 9], [4, 4, 4, 4], [7, 1, 8, 2], [0, 0, 8, 1]], dtype=np.float64
)
T2V_MC = np.array([0, 0, 1, 2, 2])


def test_hand_worked_multi_caption():
    assert ranks_t2v(SIM_MC, T2V_MC, ties="optimistic").tolist() == [1, 2, 1, 1, 1]
    assert ranks_t2v(SIM_MC, T2V_MC, ties="pessimistic").tolist() == [1, 3, 4, 1, 1]
    assert ranks_v2t(SIM_MC, T2V_MC, ties="optimistic").tolist() == [2, 1, 1]
    assert ranks_v2t(SIM_MC, T2V_MC, ties="pessimistic").tolist() == [2, 2, 1]
    # v2's two captions tie at 8 with nothing else: its first caption is surely first
    assert ranks_v2t(SIM_MC, T2V_MC, ties="mean").tolist() == [2.0, 1.5, 1.0]
    res = retrieval_metrics(SIM_MC, T2V_MC, ties="optimistic")
    assert res["n_texts"] == 5 and res["n_videos"] == 4
    assert res["n_videos_without_captions"] == 1
    assert res["t2v"] == pytest.approx(
        {"R@1": 80.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.2}
    )
    assert res["v2t"] == pytest.approx(
        {"R@1": 200 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 4 / 3}
    )


def test_caption_groups():
    g = caption_groups(T2V_MC, 4)
    assert g.tolist() == [[0, 1], [2, -1], [3, 4], [-1, -1]]
    assert caption_groups(np.arange(3), 3).tolist() == [[0], [1], [2]]
    assert caption_groups(torch.tensor([2, 0, 2]), 3).tolist() == [[1, -1], [-1, -1], [0, 2]]
    assert caption_groups(np.array([], dtype=np.int64), 2).shape == (2, 0)
    with pytest.raises(ValueError):
        caption_groups([0, 3], 3)


@pytest.mark.parametrize("pad_score", [1e30, np.inf, -np.inf, 0.0, -1e30])
def test_padding_never_counts(pad_score):
    # Video 1 has one caption, so its group row is [2, -1]; -1 would index the LAST text (t4,
    # a caption of v2). Whatever t4 scores against v1, it may only act as an ordinary non-own
    # candidate, never as a ground truth, and the pad must add no candidate.
    sim = SIM_MC.copy()
    sim[4, 1] = pad_score
    for ties in TIES:
        assert np.array_equal(ranks_v2t(sim, T2V_MC, ties=ties), ref_v2t(sim, T2V_MC, ties))
    # Huge score: t4 now beats v1's caption (4) -> rank 2, not 1 (a counted pad would give 1).
    if pad_score > 4:
        assert ranks_v2t(sim, T2V_MC, ties="optimistic")[1] == 2
    else:
        assert ranks_v2t(sim, T2V_MC, ties="optimistic")[1] == 1


def test_padding_with_all_negative_scores():
    # A zero/sentinel pad would win a max over all-negative real scores; ranks are shift-invariant.
    for shift in (-100.0, -1e6):
        for ties in TIES:
            assert np.array_equal(
                ranks_v2t(SIM_MC + shift, T2V_MC, ties=ties), ranks_v2t(SIM_MC, T2V_MC, ties=ties)
            )
            assert np.array_equal(
                ranks_t2v(SIM_MC + shift, T2V_MC, ties=ties), ranks_t2v(SIM_MC, T2V_MC, ties=ties)
            )


def test_unequal_counts_more_videos_than_texts():
    # 2 texts, 5 videos: 3 distractor videos have no caption and are excluded from v2t.
    sim = np.array([[0.9, 0.1, 0.95, 0.0, 0.2], [0.1, 0.8, 0.0, 0.0, 0.3]])
    t2v = [0, 1]
    assert ranks_t2v(sim, t2v).tolist() == [2, 1]
    assert ranks_v2t(sim, t2v).tolist() == [1, 1]
    res = retrieval_metrics(sim, t2v)
    assert res["n_videos_without_captions"] == 3
    assert res["t2v"]["R@1"] == 50.0 and res["v2t"]["R@1"] == 100.0


def test_torch_inputs_match_numpy():
    t_sim = torch.tensor(SIM_MC)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        for ties in TIES:
            x = t_sim.to(dtype)
            assert np.array_equal(
                ranks_t2v(x, torch.tensor(T2V_MC), ties=ties), ranks_t2v(SIM_MC, T2V_MC, ties=ties)
            )
            assert np.array_equal(
                ranks_v2t(x, T2V_MC, ties=ties), ranks_v2t(SIM_MC, T2V_MC, ties=ties)
            )
    assert retrieval_metrics(t_sim, T2V_MC) == retrieval_metrics(SIM_MC, T2V_MC)


def test_summarize_ranks():
    s = summarize_ranks(np.array([1, 3, 5, 6, 11, 20]))
    # R@1 1/6, R@5 3/6, R@10 4/6 (percent); MdR median = (5+6)/2; MnR 46/6
    assert s == pytest.approx(
        {"R@1": 100 / 6, "R@5": 50.0, "R@10": 400 / 6, "MdR": 5.5, "MnR": 46 / 6}
    )
    assert all(isinstance(v, float) for v in s.values())
    with pytest.raises(ValueError):
        summarize_ranks([])
    with pytest.raises(ValueError):
        summarize_ranks([0, 1])


@pytest.mark.parametrize("fn", [ranks_t2v, ranks_v2t, retrieval_metrics])
def test_nan_raises_with_count(fn):
    sim = np.random.default_rng(0).normal(size=(10, 4))
    sim[[1, 7, 9], [0, 2, 3]] = np.nan
    for chunk in (1, 3, None):
        with pytest.raises(ValueError, match=r"\b3 NaN"):
            fn(sim, np.arange(10) % 4, chunk_size=chunk)
    with pytest.raises(ValueError, match=r"\b3 NaN"):
        fn(torch.from_numpy(sim).float(), np.arange(10) % 4)


def test_invalid_inputs():
    sim = np.zeros((3, 2))
    with pytest.raises(ValueError):
        ranks_t2v(sim, [0, 1])  # wrong length
    with pytest.raises(ValueError):
        ranks_t2v(sim, [0, 1, 2])  # out of range
    with pytest.raises(TypeError):
        ranks_t2v(sim, [0.0, 1.0, 1.0])  # not integer indices
    with pytest.raises(ValueError):
        ranks_t2v(sim, [0, 1, 1], ties="random")
    with pytest.raises(ValueError):
        ranks_t2v(sim, [0, 1, 1], chunk_size=0)
    with pytest.raises(ValueError):
        ranks_t2v(np.zeros(3), [0, 1, 1])
    with pytest.raises(TypeError):
        ranks_t2v([[0.0, 1.0]], [0])


def test_chunked_memory_is_bounded():
    # 6000 x 670 float64 = 32 MB; chunked ranking must not allocate anything close to that.
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(6000, 670))
    t2v = rng.integers(0, 670, size=6000)
    tracemalloc.start()
    try:
        retrieval_metrics(sim, t2v, chunk_size=256, ties="mean")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < sim.nbytes / 8, (peak, sim.nbytes)


def test_metrics_package_imports_nothing_from_calm():
    pkg = pathlib.Path(M.__file__).parent
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level > 0 or not (node.module or "").startswith("calm"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("calm") for a in node.names), path


# --------------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(problems())
def test_matches_brute_force(prob):
    sim, t2v = prob
    for ties in TIES:
        same = np.allclose if ties == "mean" else np.array_equal  # expectations are floats
        assert same(ranks_t2v(sim, t2v, ties=ties), ref_t2v(sim, t2v, ties))
        assert same(ranks_v2t(sim, t2v, ties=ties), ref_v2t(sim, t2v, ties))


@settings(max_examples=80, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_candidates_leaves_ranks_unchanged(prob, rnd):
    sim, t2v = prob
    n_t, n_v = sim.shape
    perm = np.array(rnd.sample(range(n_v), n_v))  # new column k holds old video perm[k]
    inv = np.argsort(perm)  # old video v -> new column inv[v]
    sim_p, t2v_p = sim[:, perm], inv[t2v]
    qperm = np.array(rnd.sample(range(n_t), n_t))  # shuffle texts too
    for ties in TIES:
        r = ranks_t2v(sim, t2v, ties=ties)
        assert np.array_equal(ranks_t2v(sim_p, t2v_p, ties=ties), r)
        assert np.array_equal(ranks_t2v(sim[qperm], t2v[qperm], ties=ties), r[qperm])
        full = _full_v2t(ranks_v2t(sim, t2v, ties=ties), t2v, n_v)
        full_p = _full_v2t(ranks_v2t(sim_p, t2v_p, ties=ties), t2v_p, n_v)
        assert np.array_equal(full_p[inv], full)
        assert np.array_equal(
            ranks_v2t(sim[qperm], t2v[qperm], ties=ties), ranks_v2t(sim, t2v, ties=ties)
        )


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(1, 9))
def test_chunk_size_does_not_change_results(prob, chunk):
    sim, t2v = prob
    for ties in TIES:
        assert np.array_equal(
            ranks_t2v(sim, t2v, ties=ties, chunk_size=chunk), ranks_t2v(sim, t2v, ties=ties)
        )
        assert np.array_equal(
            ranks_v2t(sim, t2v, ties=ties, chunk_size=chunk), ranks_v2t(sim, t2v, ties=ties)
        )
    assert retrieval_metrics(sim, t2v, chunk_size=chunk) == retrieval_metrics(sim, t2v)


@settings(max_examples=60, deadline=None)
@given(problems(lo=-1, hi=1))
def test_ranks_in_range_and_ordered(prob):
    sim, t2v = prob
    n_t, n_v = sim.shape
    for fn, n in ((ranks_t2v, n_v), (ranks_v2t, n_t)):
        opt = fn(sim, t2v, ties="optimistic")
        pes = fn(sim, t2v, ties="pessimistic")
        mean = fn(sim, t2v, ties="mean")
        assert opt.dtype.kind == "i" and pes.dtype.kind == "i"
        assert ((opt >= 1) & (opt <= n)).all() and ((pes >= 1) & (pes <= n)).all()
        assert (opt <= mean).all() and (mean <= pes).all()
    n_with = int((np.bincount(t2v, minlength=n_v) > 0).sum())
    assert ranks_v2t(sim, t2v).shape == (n_with,)
    assert retrieval_metrics(sim, t2v)["n_videos_without_captions"] == n_v - n_with


# --------------------------------------------------------------------------------------------
# expected hits under random tie-breaking (the default): collapsed models score chance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 7, 50, 180])
def test_constant_scores_give_chance_not_perfection(n):
    sim = np.zeros((n, n))
    res = retrieval_metrics(sim, np.arange(n))
    for d in ("t2v", "v2t"):
        assert res[d]["R@1"] == pytest.approx(100.0 / n)
        assert res[d]["R@5"] == pytest.approx(100.0 * min(5, n) / n)
        assert res[d]["MnR"] == pytest.approx((n + 1) / 2)
    assert retrieval_metrics(sim, np.arange(n), ties="optimistic")["t2v"]["R@1"] == 100.0


def test_constant_scores_with_several_captions_per_video():
    # 3 videos x 4 captions, all tied: the first of 4 own captions among 12 texts lands in the
    # top 1 with probability 4/12, in the top 5 with 1 - C(8,5)/C(12,5)
    t2v = np.repeat(np.arange(3), 4)
    res = retrieval_metrics(np.zeros((12, 3)), t2v)
    assert res["v2t"]["R@1"] == pytest.approx(100 * 4 / 12)
    assert res["v2t"]["R@5"] == pytest.approx(100 * (1 - 56 / 792))
    assert res["v2t"]["MnR"] == pytest.approx(13 / 5)
    assert res["t2v"]["R@1"] == pytest.approx(100 / 3)


@settings(max_examples=120, deadline=None)
@given(problems(), st.sampled_from([1, 2, 5]))
def test_expected_hits_match_exhaustive_tie_breaking(prob, k):
    sim, t2v = prob
    t2v_ref = [np.mean(np.array(_random_tie_positions(list(sim[i]),
                                                      [j == t2v[i] for j in range(sim.shape[1])]))
                       <= k) for i in range(sim.shape[0])]
    assert M.hit_rates(sim, t2v, "t2v", k) == pytest.approx(np.array(t2v_ref))
    v2t_ref = [np.mean(np.array(_random_tie_positions(list(sim[:, j]),
                                                      [t2v[i] == j for i in range(sim.shape[0])]))
                       <= k) for j in range(sim.shape[1]) if (t2v == j).any()]
    assert M.hit_rates(sim, t2v, "v2t", k) == pytest.approx(np.array(v2t_ref))
    res = retrieval_metrics(sim, t2v)
    if k != 2:  # R@2 is not reported
        assert res["t2v"][f"R@{k}"] == pytest.approx(100 * np.mean(t2v_ref))
