"""Near-duplicates: the same content re-encoded, resized or cut comes back as one result.

Two videos are copies of each other when the cosine of their frame-mean vectors (the
L2-normalised mean of the per-frame features the index already stores for the shortlist) is at
least a threshold. How close copies and distinct clips come depends on the model, so the
threshold is measured for it: `calm index --calibrate` copies up to COPIES of the calibration
split's videos in every way of `calm.data.synthetic.copies` (re-encoded, resized, cut, all
three), encodes them and keeps (`fit_threshold`) the highest threshold that joins 99 % of the
copies of each kind -- raised, if distinct videos of the split come that close, until at most
0.1 % of distinct pairs would merge: merging two different videos hides one, missing a copy
only shows it twice. An index without that measurement folds nothing: how close copies come
is a property of the model, and a threshold guessed for another model could merge distinct
videos. (`benchmarks/bench_search.py --duplicates` measures it for any checkpoint.)

Collapsing happens after exact scoring and never changes the order: walking the ranked
candidates best first, a video that is a copy of an earlier result joins that result's
`duplicates` instead of taking a place of its own.
"""

from __future__ import annotations

import numpy as np

COPIES = 24  # calibration videos copied (x 4 kinds) to measure the threshold
JOIN_QUANTILE = 0.01  # a copy of each kind may fall below the threshold this often
MERGE_QUANTILE = 0.999  # distinct pairs may reach the threshold at most this often


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def frame_containment(a: np.ndarray, b: np.ndarray, mask_a=None, mask_b=None) -> float:
    """Mean over the real frames of the shorter clip of the best cosine with a frame of the other
    (frames L2-normalised [T, D]): 1 for a cut of the other clip. A finer measure than the
    frame mean, reported beside it by the benchmark."""
    a = a if mask_a is None else a[np.asarray(mask_a, bool)]
    b = b if mask_b is None else b[np.asarray(mask_b, bool)]
    if len(a) > len(b):
        a, b = b, a
    return float((a @ b.T).max(axis=1).mean())


def collapse(rows: np.ndarray, means: np.ndarray, k: int, threshold: float):
    """Groups ranked candidates (`rows`, best first, with their frame-mean vectors [n, D]) into
    at most k results: a list of (row, [rows of its copies])."""
    vectors = unit(means)
    taken = np.zeros(len(rows), dtype=bool)
    groups = []
    for i in range(len(rows)):
        if taken[i]:
            continue
        if len(groups) == k:
            break
        sims = vectors[i + 1 :] @ vectors[i]
        copies = np.flatnonzero((sims >= threshold) & ~taken[i + 1 :]) + i + 1
        taken[copies] = True
        groups.append((int(rows[i]), [int(rows[j]) for j in copies]))
    return groups


def fit_threshold(copy_cosines: dict[str, np.ndarray], distinct_cosines: np.ndarray) -> dict:
    """The duplicate threshold from cosines of originals with their copies (per kind) and of
    distinct pairs, with what it joins and merges."""
    low = min(float(np.quantile(c, JOIN_QUANTILE)) for c in copy_cosines.values())
    distinct = np.asarray(distinct_cosines, np.float64)
    high = float(np.quantile(distinct, MERGE_QUANTILE)) if len(distinct) else -1.0
    threshold = round(min(max(low, high + 1e-4), 1.0), 4)
    return {
        "threshold": threshold,
        "joined": {k: round(float(np.mean(c >= threshold)), 4) for k, c in copy_cosines.items()},
        "merged_distinct": round(float(np.mean(distinct >= threshold)), 5) if len(distinct) else 0.0,
        "copies": int(min(len(c) for c in copy_cosines.values())),
        "distinct_pairs": int(len(distinct)),
        "limited_by": "copies" if low > high else "distinct videos",
    }
