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

``paired_bootstrap`` treats the seeds as fixed and the queries as independent draws, so its
interval answers "would another test set of these queries' kind change the verdict, for these
very training runs?". ``hierarchical_bootstrap(scores, reference, clusters)`` answers the question
a paper's claim needs, "would another training run and another test set?": each replicate draws
the seeds with replacement (a seed's run of one method stays paired with the same seed's run of
the reference) and, independently, the test *videos* with replacement, each drawn video bringing
all of its queries (its captions are not independent of each other: they describe one clip, and
a model that fails on the clip tends to fail on all of them). The replicate's statistic is the
mean over the drawn seeds and the drawn videos' queries of ``scores - reference``. With one seed
and one query per video it is the paired bootstrap; with several captions per video and runs that
differ from seed to seed it is wider, as it should be (tests/test_bootstrap.py checks its
standard error against the closed form of each case and its coverage by simulation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["hierarchical_bootstrap", "hierarchical_replicates", "mean_std", "paired_bootstrap"]

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


def _differences(scores: Any, reference: Any) -> np.ndarray:
    """``scores - reference`` as ``[n_seeds, n_queries]``, after checking both."""
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
    return a - b


def _check_resampling(n_resamples: Any, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise TypeError(f"n_resamples must be an int, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _interval(estimate: float, replicates: np.ndarray, confidence: float, scale: float) -> dict:
    """The percentile interval of the replicates; a bound that is 0 in exact arithmetic can come
    out as -1e-17 from float sums (hits averaged over seeds): it touches 0, it does not exclude
    it."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    zero = _ZERO_TOLERANCE * max(1.0, scale)
    return {
        "diff": float(estimate),
        "low": float(low),
        "high": float(high),
        "half_width": float(high - low) / 2.0,
        "excludes_zero": bool(low > zero or high < -zero),
        "confidence": float(confidence),
    }


def paired_bootstrap(
    scores: Any,
    reference: Any,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean difference ``scores - reference`` with a percentile bootstrap interval over queries.

    Returns ``{"diff", "low", "high", "half_width", "excludes_zero", "confidence", "n_queries",
    "n_seeds", "n_resamples", "seed"}``. ``excludes_zero`` is true when the whole interval lies
    on one side of 0 (``low > 0`` or ``high < 0``, up to float rounding): the difference is
    larger than the test set's noise.
    """
    _check_resampling(n_resamples, confidence)
    per_seed = _differences(scores, reference)
    n_seeds = per_seed.shape[0]
    d = per_seed.mean(axis=0)
    n = d.size
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        replicates[start:stop] = d[idx].mean(axis=1)
    return {
        **_interval(d.mean(), replicates, confidence, float(np.abs(d).max())),
        "n_queries": int(n),
        "n_seeds": n_seeds,
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


def hierarchical_replicates(differences: Any, clusters: Any, n_resamples: int = 10_000,
                            seed: int = 0) -> np.ndarray:
    """The bootstrap replicates behind ``hierarchical_bootstrap``: ``differences`` is
    ``[n_seeds, n_queries]`` (scores - reference), ``clusters[q]`` query q's video."""
    d_seed = np.asarray(differences, dtype=np.float64)
    d_seed = d_seed[None] if d_seed.ndim == 1 else d_seed
    n_seeds = d_seed.shape[0]
    labels = np.asarray(clusters)
    if labels.shape != (d_seed.shape[1],):
        raise ValueError(f"clusters must name one video per query ({d_seed.shape[1]}), got "
                         f"shape {labels.shape}")
    _, cluster_of = np.unique(labels, return_inverse=True)
    n_clusters = int(cluster_of.max()) + 1
    # per seed and video: the sum of its queries' differences; per video its number of queries
    sums = np.stack([np.bincount(cluster_of, weights=row, minlength=n_clusters)
                     for row in d_seed])
    sizes = np.bincount(cluster_of, minlength=n_clusters).astype(np.float64)
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(n_clusters, n_seeds))
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        r = stop - start
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=r)
        video_counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=r)
        total = np.einsum("rc,rc->r", seed_counts @ sums, video_counts)
        replicates[start:stop] = total / (n_seeds * (video_counts @ sizes))
    return replicates


def hierarchical_bootstrap(
    scores: Any,
    reference: Any,
    clusters: Any,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean difference ``scores - reference`` with a percentile interval that resamples seeds and
    videos (see the module docstring).

    ``scores`` and ``reference`` are ``[n_seeds, n_queries]`` (or ``[n_queries]`` for one seed);
    ``clusters[q]`` names query q's video (any hashable values; queries with the same value are
    drawn together). Returns the keys of ``paired_bootstrap`` plus ``n_clusters`` and ``unit``
    (``"seeds x videos"``).
    """
    _check_resampling(n_resamples, confidence)
    d_seed = _differences(scores, reference)
    replicates = hierarchical_replicates(d_seed, clusters, n_resamples, seed)
    return {
        **_interval(d_seed.mean(), replicates, confidence, float(np.abs(d_seed).max())),
        "n_queries": int(d_seed.shape[1]),
        "n_clusters": int(np.unique(np.asarray(clusters)).size),
        "n_seeds": int(d_seed.shape[0]),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "unit": "seeds x videos",
    }
