"""Does an uncertainty score know when retrieval fails? Pure functions over per-query ranks.

Inputs are, per query, the 1-based rank of its first true match (``ranks_t2v`` / ``ranks_v2t``
with their tie rule) and an uncertainty score (higher = less sure). A query is a *hit* when its
rank is <= 1, as in R@1. Nothing here imports from ``calm``.

* ``recall_by_bins``: R@1 in equal-count bins from the lowest to the highest score.
* ``spearman``: Spearman rho between score and rank (ties get average ranks). Positive = the score
  rises with the rank, i.e. it is informative.
* ``sparsification_curve``: drop the most uncertain 0%, 10%, ..., 90% of queries, R@1 of the rest.
  The ``oracle_curve`` drops by true rank (worst first), the best any score can do.
* ``ause``: area between the oracle curve and a score's curve (trapezoid rule over the dropped
  fraction, R@1 in percent). Lower is better; 0 means the score orders queries as well as the
  truth does.
* ``auroc_wrong``: the area under the ROC curve of the score as a detector of wrong top-1 answers
  (0.5 = no better than chance, 1 = every wrong answer more uncertain than every right one).
* ``risk_coverage`` / ``aurc``: answer only the least uncertain fraction (the coverage) and count
  the top-1 errors among those answered (the risk, %); AURC is the risk averaged over every
  coverage 1/n .. n/n, lower is better (an abstention worth having lowers it below 100 - R@1).
* ``calibration``: the expected calibration error (ECE) of a top-1 confidence (e.g. the softmax
  probability of the best candidate): the gap between confidence and accuracy over 15
  equal-width confidence bins, weighted by their size, with the reliability table.
* ``random_summary``: what random order gives: its expected curve (flat at the full R@1), expected
  bins, rho = 0, AUROC 0.5, AURC 100 - R@1, and the spread of AUSE over fixed-seed permutations,
  to judge "within noise".

Ties in a score are broken by expectation, not by position: a group of queries with equal scores
contributes its mean hit rate to every slot it occupies. Results therefore do not depend on the
order of the queries, and a constant score gives exactly the random curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_BINS",
    "COVERAGES",
    "FRACTIONS",
    "N_BINS",
    "aurc",
    "auroc_wrong",
    "ause",
    "calibration",
    "average_ranks",
    "entropy",
    "expected_sorted_hits",
    "hits_at_1",
    "oracle_curve",
    "random_summary",
    "recall_by_bins",
    "risk_coverage",
    "sparsification_curve",
    "spearman",
    "top2_margin",
    "uncertainty_report",
    "uncertainty_summary",
]

#: Fractions of queries dropped, most uncertain first: 0%, 10%, ..., 90%.
FRACTIONS: tuple[float, ...] = tuple(k / 10 for k in range(10))
N_BINS = 10
#: Coverages at which the risk-coverage curve is reported: 5%, 10%, ..., 100% answered.
COVERAGES: tuple[float, ...] = tuple(k / 20 for k in range(1, 21))
CALIBRATION_BINS = 15


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _vector(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().float().cpu().numpy()
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per query), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty: there are no queries")
    if np.isnan(v).any():
        raise ValueError(f"{name} contains NaN for {int(np.isnan(v).sum())} of {v.size} queries")
    return v


def _pair(uncertainty: Any, ranks: Any) -> tuple[np.ndarray, np.ndarray]:
    u = _vector(uncertainty, "uncertainty")
    r = _vector(ranks, "ranks")
    if u.shape != r.shape:
        raise ValueError(f"uncertainty has {u.size} queries but ranks has {r.size}")
    if (r < 1).any():
        raise ValueError("ranks must be 1-based (>= 1)")
    return u, r


def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 2 or (f < 0).any() or (f >= 1).any() or (np.diff(f) <= 0).any():
        raise ValueError(f"fractions must increase strictly within [0, 1), got {list(fractions)}")
    return f


def hits_at_1(ranks: Any, hits: Any = None) -> np.ndarray:
    """R@1's per-query term: `hits` when given (e.g. expected hits under random tie-breaking,
    `calm.metrics.hit_rates`), else 1.0 where the first true match is ranked first."""
    r = _vector(ranks, "ranks")
    if hits is None:
        return (r <= 1).astype(np.float64)
    h = _vector(hits, "hits")
    if h.shape != r.shape or (h < 0).any() or (h > 1).any():
        raise ValueError("hits must be probabilities in [0, 1], one per query")
    return h


# --------------------------------------------------------------------------------------------
# ordering with ties broken by expectation
# --------------------------------------------------------------------------------------------


def expected_sorted_hits(uncertainty: Any, hits: Any) -> np.ndarray:
    """Hits sorted by increasing uncertainty, each tie group replaced by its mean hit rate.

    That is the expected hit at every sorted position when ties are broken uniformly at random,
    so any cut through a tie group counts the group's average, whatever the queries' order.
    """
    u, h = _vector(uncertainty, "uncertainty"), _vector(hits, "hits")
    order = np.argsort(u, kind="stable")
    u, h = u[order], h[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, u.size])
    means = np.add.reduceat(h, starts) / sizes
    return np.repeat(means, sizes)


def _kept_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Queries kept after dropping each fraction (at least one is always kept)."""
    dropped = np.floor(fractions * n + 1e-9).astype(np.int64)
    return np.maximum(n - dropped, 1)


def _curve_from_sorted(sorted_hits: np.ndarray, fractions: np.ndarray) -> list[float]:
    """R@1 (percent) of the first `kept` queries of a least-uncertain-first ordering."""
    cum = np.cumsum(sorted_hits)
    kept = _kept_counts(sorted_hits.size, fractions)
    return [float(100.0 * cum[k - 1] / k) for k in kept]


# --------------------------------------------------------------------------------------------
# the measures
# --------------------------------------------------------------------------------------------


def recall_by_bins(uncertainty: Any, ranks: Any, n_bins: int = N_BINS,
                   hits: Any = None) -> list[float | None]:
    """R@1 (percent) in `n_bins` equal-count bins, lowest uncertainty first.

    Bin sizes differ by at most one query; with fewer queries than bins the surplus bins are
    empty and reported as None.
    """
    u, r = _pair(uncertainty, ranks)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    sorted_hits = expected_sorted_hits(u, hits_at_1(r, hits))
    return [float(100.0 * b.mean()) if b.size else None
            for b in np.array_split(sorted_hits, n_bins)]


def sparsification_curve(uncertainty: Any, ranks: Any, fractions=FRACTIONS,
                         hits: Any = None) -> list[float]:
    """R@1 (percent) after dropping the most uncertain fraction of queries, for each fraction."""
    u, r = _pair(uncertainty, ranks)
    return _curve_from_sorted(expected_sorted_hits(u, hits_at_1(r, hits)),
                              _check_fractions(fractions))


def oracle_curve(ranks: Any, fractions=FRACTIONS, hits: Any = None) -> list[float]:
    """The sparsification curve of the true rank itself: drop the worst-ranked queries first
    (with `hits`, the least likely hits first)."""
    r = _vector(ranks, "ranks")
    if hits is None:
        return sparsification_curve(r, r, fractions)
    h = hits_at_1(r, hits)
    return sparsification_curve(-h, r, fractions, h)


def ause(curve: Any, oracle: Any, fractions=FRACTIONS) -> float:
    """Area between the oracle curve and `curve` over the dropped fraction (trapezoid rule).

    In R@1 percentage points x fraction; >= 0 for any curve from `sparsification_curve` (no order
    keeps more hits than the oracle's), lower is better.
    """
    f = _check_fractions(fractions)
    gap = np.asarray(oracle, dtype=np.float64) - np.asarray(curve, dtype=np.float64)
    if gap.shape != f.shape:
        raise ValueError(f"curves must have one value per fraction ({f.size}), got {gap.shape}")
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(f)))


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of `x` in increasing order; tied values share the average of their ranks."""
    v = _vector(x, "x")
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    sizes = np.diff(np.r_[starts, v.size])
    mean_rank = starts + (sizes + 1) / 2.0  # positions starts+1 .. starts+size, averaged
    out = np.empty(v.size, dtype=np.float64)
    out[order] = np.repeat(mean_rank, sizes)
    return out


def spearman(a: Any, b: Any) -> float | None:
    """Spearman rho (Pearson correlation of average ranks); None when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.size != rb.size:
        raise ValueError(f"spearman needs equal lengths, got {ra.size} and {rb.size}")
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((da * da).sum() * (db * db).sum())
    if denom == 0:
        return None
    return float(np.clip((da * db).sum() / denom, -1.0, 1.0))


def entropy(probs: Any, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of each distribution along `axis`; 0 log 0 counts as 0."""
    if hasattr(probs, "detach"):
        probs = probs.detach().float().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if np.isnan(p).any() or (p < 0).any():
        raise ValueError("probabilities must be non-negative and not NaN")
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis) + 0.0  # + 0.0 turns -0.0 into 0.0


# Per-query signals of the retrieval itself (higher = less sure), beside the VAE's per-video ones
# (`calm.model.anchor_branch.SIGNALS`): they need the candidates the query is matched against.
RETRIEVAL_SIGNALS = {
    "top1_prob": "1 - the softmax probability of the best candidate at the model's logit scale",
    "margin": "minus the score margin between the two best candidates",
}


def retrieval_uncertainty(scores: Any, signal: str, scale: float, axis: int = -1) -> np.ndarray:
    """A `RETRIEVAL_SIGNALS` value per query of `scores` (its candidates along `axis`)."""
    if signal == "top1_prob":
        return 1.0 - top1_probability(scores, scale, axis)
    if signal == "margin":
        return -top2_margin(scores, axis)
    raise ValueError(f"unknown retrieval signal {signal!r}; one of {list(RETRIEVAL_SIGNALS)}")


def top1_probability(scores: Any, scale: float, axis: int = -1) -> np.ndarray:
    """Softmax probability of the best candidate along `axis` (a query's row) at the logit
    scale `scale`: the query's top-1 confidence."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    logits = scale * np.asarray(scores, dtype=np.float64)
    logits = logits - logits.max(axis=axis, keepdims=True)
    return 1.0 / np.exp(logits).sum(axis=axis)


def top2_margin(scores: Any, axis: int = -1) -> np.ndarray:
    """Best minus second-best score along `axis` (a query's row). A small margin = a close call."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[axis] < 2:
        raise ValueError(f"a margin needs at least 2 candidates per query, got {s.shape[axis]}")
    top2 = -np.partition(-s, 1, axis=axis).take([0, 1], axis=axis)
    return top2.take(0, axis=axis) - top2.take(1, axis=axis)


def auroc_wrong(uncertainty: Any, ranks: Any, hits: Any = None) -> float | None:
    """AUROC of the score at telling wrong top-1 answers (positives) from right ones: the
    probability that a wrong answer is more uncertain than a right one, ties counting half.

    With `hits` in [0, 1] (expected hits under random tie-breaking), a query counts 1 - h as wrong
    and h as right, and is never paired with itself (its two outcomes never happen together).
    None when every query is right or every one is wrong.
    """
    u, r = _pair(uncertainty, ranks)
    right = hits_at_1(r, hits)
    wrong = 1.0 - right
    self_pairs = (wrong * right).sum()
    total = wrong.sum() * right.sum() - self_pairs
    if total <= 1e-12:
        return None
    order = np.argsort(u, kind="stable")
    u, right, wrong = u[order], right[order], wrong[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    group_right = np.add.reduceat(right, starts)
    group_wrong = np.add.reduceat(wrong, starts)
    right_below = np.cumsum(group_right) - group_right  # right weight strictly less uncertain
    pairs = (group_wrong * (right_below + 0.5 * group_right)).sum() - 0.5 * self_pairs
    return float(pairs / total)


def _risks(uncertainty: Any, ranks: Any, hits: Any = None) -> np.ndarray:
    """Risk (%) after answering the k least uncertain queries, k = 1..n (ties by expectation)."""
    u, r = _pair(uncertainty, ranks)
    sorted_hits = expected_sorted_hits(u, hits_at_1(r, hits))
    return 100.0 * (1.0 - np.cumsum(sorted_hits) / np.arange(1, sorted_hits.size + 1))


def risk_coverage(uncertainty: Any, ranks: Any, coverages=COVERAGES,
                  hits: Any = None) -> list[float]:
    """Risk (% wrong top-1 answers) among the least uncertain queries at each coverage (at least
    one query answered)."""
    risks = _risks(uncertainty, ranks, hits)
    c = np.asarray(coverages, dtype=np.float64)
    if c.ndim != 1 or (c <= 0).any() or (c > 1).any():
        raise ValueError(f"coverages must lie in (0, 1], got {list(coverages)}")
    kept = np.maximum(np.ceil(c * risks.size - 1e-9).astype(np.int64), 1)
    return [float(risks[k - 1]) for k in kept]


def aurc(uncertainty: Any, ranks: Any, hits: Any = None) -> float:
    """Area under the risk-coverage curve: the risk (%) averaged over every coverage k/n."""
    return float(_risks(uncertainty, ranks, hits).mean())


def calibration(confidence: Any, ranks: Any, n_bins: int = CALIBRATION_BINS,
                hits: Any = None) -> dict[str, Any]:
    """ECE (%) of a top-1 confidence in [0, 1] against the top-1 hits, over `n_bins` equal-width
    bins, and the reliability table (per non-empty bin: its range, count, mean confidence and
    accuracy, both in %)."""
    c = _vector(confidence, "confidence")
    r = _vector(ranks, "ranks")
    if c.shape != r.shape:
        raise ValueError(f"confidence has {c.size} queries but ranks has {r.size}")
    if (c < 0).any() or (c > 1).any():
        raise ValueError("confidence must lie in [0, 1]")
    h = hits_at_1(r, hits)
    index = np.minimum((c * n_bins).astype(np.int64), n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        inside = index == b
        if not inside.any():
            continue
        conf, acc = float(c[inside].mean()), float(h[inside].mean())
        ece += inside.mean() * abs(conf - acc)
        bins.append({"range": [b / n_bins, (b + 1) / n_bins], "n": int(inside.sum()),
                     "confidence": 100.0 * conf, "accuracy": 100.0 * acc})
    return {"ece": 100.0 * float(ece), "mean_confidence": 100.0 * float(c.mean()),
            "accuracy": 100.0 * float(h.mean()), "n_bins": int(n_bins), "bins": bins}


# --------------------------------------------------------------------------------------------
# summaries (the JSON blocks)
# --------------------------------------------------------------------------------------------


def uncertainty_summary(
    uncertainty: Any, ranks: Any, n_bins: int = N_BINS, fractions=FRACTIONS, hits: Any = None
) -> dict[str, Any]:
    """``{"bins_r1", "spearman", "ause", "sparsification", "auroc", "aurc", "risk_coverage"}``
    of one score on one set of queries (risk-coverage at `COVERAGES`)."""
    u, r = _pair(uncertainty, ranks)
    curve = sparsification_curve(u, r, fractions, hits)
    return {
        "bins_r1": recall_by_bins(u, r, n_bins, hits),
        "spearman": spearman(u, r),
        "ause": ause(curve, oracle_curve(r, fractions, hits), fractions),
        "sparsification": curve,
        "auroc": auroc_wrong(u, r, hits),
        "aurc": aurc(u, r, hits),
        "risk_coverage": risk_coverage(u, r, COVERAGES, hits),
    }


def random_summary(
    ranks: Any, n_bins: int = N_BINS, fractions=FRACTIONS, permutations: int = 200, seed: int = 0,
    hits: Any = None,
) -> dict[str, Any]:
    """Random order: the expected summary, plus the AUSE spread over fixed-seed permutations.

    The expected R@1 of a random subset (a bin, or the queries kept) is the full R@1, so the
    expected curve is flat and rho is 0. ``ause_std`` is the standard deviation of AUSE over
    `permutations` random orders (numpy seed `seed`): a score whose AUSE lies within about two of
    these of ``ause`` is indistinguishable from random.
    """
    r = _vector(ranks, "ranks")
    f = _check_fractions(fractions)
    hits = hits_at_1(r, hits)
    r1 = float(100.0 * hits.mean())
    sizes = [b.size for b in np.array_split(hits, n_bins)]
    curve = [r1] * f.size
    oracle = oracle_curve(r, f, hits)
    rng = np.random.default_rng(seed)
    kept = _kept_counts(hits.size, f)
    shuffled = np.stack([hits[rng.permutation(hits.size)] for _ in range(permutations)])
    curves = 100.0 * np.cumsum(shuffled, axis=1)[:, kept - 1] / kept
    aues = [ause(c, oracle, f) for c in curves]
    return {
        "bins_r1": [r1 if s else None for s in sizes],
        "spearman": 0.0,
        "ause": ause(curve, oracle, f),
        "sparsification": curve,
        "auroc": 0.5 if 0 < r1 < 100 else None,
        "aurc": 100.0 - r1,
        "risk_coverage": [100.0 - r1] * len(COVERAGES),
        "ause_std": float(np.std(aues)),
        "permutations": int(permutations),
        "seed": int(seed),
    }


def uncertainty_report(
    ranks: Any,
    scores: dict[str, Any],
    baselines: dict[str, Any],
    n_bins: int = N_BINS,
    fractions=FRACTIONS,
    hits: Any = None,
) -> dict[str, Any]:
    """Every score and baseline on the same queries, the random baseline and the oracle curve.

    ``{name: summary for scores, "baselines": {name: summary, ..., "random": ...},
    "oracle": {"sparsification", "risk_coverage", "aurc"}, "n_queries", "r1", "coverages"}``.
    """
    r = _vector(ranks, "ranks")
    out: dict[str, Any] = {name: uncertainty_summary(u, r, n_bins, fractions, hits)
                           for name, u in scores.items()}
    out["baselines"] = {name: uncertainty_summary(u, r, n_bins, fractions, hits)
                        for name, u in baselines.items()}
    out["baselines"]["random"] = random_summary(r, n_bins, fractions, hits=hits)
    h = hits_at_1(r, hits)
    out["oracle"] = {"sparsification": oracle_curve(r, fractions, hits),
                     "risk_coverage": risk_coverage(-h, r, COVERAGES, h), "aurc": aurc(-h, r, h)}
    out["coverages"] = list(COVERAGES)
    out["n_queries"] = int(r.size)
    out["r1"] = float(100.0 * hits_at_1(r, hits).mean())
    return out
