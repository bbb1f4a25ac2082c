"""Seed spread and paired bootstrap intervals for comparing two methods on the same test queries.

Pure functions over per-query scores (for R@1: 100 times each query's hit, 1 when its true video
is ranked first, else 0, or its probability under random tie-breaking). Nothing here imports from
``calm``.

``paired_bootstrap(scores, reference)`` takes ``[n_seeds, n_queries]`` arrays (or one seed as
``[n_queries]``): entry ``[s, q]`` is query q's score in the run with fine-tuning seed s. Every
seed is evaluated on the *same* test queries, so a query, not a (seed, query) pair, is the unit
that was sampled: the statistic is the mean over queries of the seed-averaged difference

    d_q = mean_s(scores[s, q] - reference[s, q]),    estimate = mean_q d_q,

which pools the seeds, and each bootstrap replicate draws one set of query indices with
replacement and applies it to both methods and to every seed. Resampling each seed's queries
independently would count a query once per seed as if it were new evidence and narrow the interval
by up to sqrt(n_seeds). The interval is the percentile interval of the replicates
(``numpy.quantile``, linear interpolation), from a fixed-seed generator so that it reproduces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mean_std", "paired_bootstrap"]

# Replicates are drawn in blocks of about this many indices, whatever the number of queries.
_BLOCK_ELEMENTS = 1 << 22


def mean_std(values: Any) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    if np.isnan(v).any():
        raise ValueError(f"mean_std: {int(np.isnan(v).sum())} of {v.size} values are NaN")
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": int(v.size), "values": v.tolist()}


_ZERO_TOLERANCE = 1e-9  # relative to the largest per-query difference


def _per_query_differences(scores: Any, reference: Any) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"scores {a.shape} and reference {b.shape} must have the same shape "
                         "(the same seeds and the same test queries)")
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2:
        raise ValueError(f"scores must be [n_queries] or [n_seeds, n_queries], got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"scores must hold at least one seed and one query, got {a.shape}")
    for name, x in (("scores", a), ("reference", b)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(x)).sum())} non-finite values")
    return (a - b).mean(axis=0)


def paired_bootstrap(
    scores: Any,
    reference: Any,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean difference ``scores - reference`` with a percentile bootstrap interval over queries.

    Returns ``{"diff", "low", "high", "excludes_zero", "confidence", "n_queries", "n_seeds",
    "n_resamples", "seed"}``. ``excludes_zero`` is true when the whole interval lies on one side
    of 0 (``low > 0`` or ``high < 0``, up to float rounding): the difference is larger than the
    test set's noise.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise TypeError(f"n_resamples must be an int, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    n_seeds = int(np.asarray(scores).shape[0]) if np.asarray(scores).ndim == 2 else 1
    d = _per_query_differences(scores, reference)
    n = d.size
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        replicates[start:stop] = d[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    # an interval bound that is 0 in exact arithmetic can come out as -1e-17 from float sums
    # (hits averaged over seeds): such a bound touches 0, it does not exclude it
    zero = _ZERO_TOLERANCE * max(1.0, float(np.abs(d).max()))
    return {
        "diff": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "excludes_zero": bool(low > zero or high < -zero),
        "confidence": float(confidence),
        "n_queries": int(n),
        "n_seeds": n_seeds,
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }
