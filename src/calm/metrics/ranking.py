"""Average precision of a ranking against a set of relevant items (e.g. anchors true of a clip).

Ties are broken pessimistically: among equal scores, relevant items rank after irrelevant ones.
A constant scorer therefore gets the lowest average precision its ties allow, never a lucky
order, so a collapsed model cannot look good.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def average_precisions(scores: Any, relevant: Any) -> np.ndarray:
    """AP of each row of `scores` [N, K] against bool `relevant` [N, K]; NaN for rows with no
    relevant item. AP = mean over relevant items of the precision at their rank."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(relevant, dtype=bool)
    if s.ndim != 2 or s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and relevant {r.shape} must be equal 2-D shapes")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    # sort by score descending, relevant last among ties (pessimistic)
    order = np.lexsort((r, -s), axis=1) if s.size else np.zeros_like(s, dtype=int)
    hits = np.take_along_axis(r, order, axis=1)
    cum = np.cumsum(hits, axis=1)
    ranks = np.arange(1, s.shape[1] + 1)
    n_rel = hits.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (hits * cum / ranks).sum(axis=1) / n_rel
    return np.where(n_rel > 0, ap, np.nan)


def random_average_precision(m: int, k: int) -> float:
    """Expected AP of a uniformly random order of k items of which m are relevant.

    Position p is relevant with probability m / k and then holds 1 + (p - 1)(m - 1)/(k - 1)
    relevant items on average, so E[AP] = (1/k) * sum_p (1 + (p - 1)(m - 1)/(k - 1)) / p.
    """
    if not 1 <= m <= k:
        raise ValueError(f"need 1 <= m <= k, got m={m}, k={k}")
    if k == 1:
        return 1.0
    p = np.arange(1, k + 1)
    return float(((1 + (p - 1) * (m - 1) / (k - 1)) / p).sum() / k)


def mean_average_precision(scores: Any, relevant: Any) -> dict[str, float]:
    """{"mAP": mean AP in percent over rows with at least one relevant item, "n": those rows,
    "chance": the mean AP in percent a random order would get on the same rows}."""
    ap = average_precisions(scores, relevant)
    r = np.asarray(relevant, dtype=bool)
    keep = ~np.isnan(ap)
    if not keep.any():
        return {"mAP": float("nan"), "n": 0, "chance": float("nan")}
    k = r.shape[1]
    chance = [random_average_precision(int(m), k) for m in r[keep].sum(axis=1)]
    return {"mAP": round(100.0 * float(ap[keep].mean()), 2), "n": int(keep.sum()),
            "chance": round(100.0 * float(np.mean(chance)), 2)}
