"""Near-duplicates: copies fold into the result they copy, with a threshold measured on copies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.search.duplicates import collapse, fit_threshold


def test_copies_fold_into_the_earlier_result_and_the_order_is_kept():
    means = np.array([[1, 0, 0], [0, 1, 0], [1, 0.01, 0], [0, 0, 1], [0.01, 1, 0]], np.float32)
    rows = np.array([10, 11, 12, 13, 14])
    assert collapse(rows, means, k=3, threshold=0.99) == [(10, [12]), (11, [14]), (13, [])]
    assert collapse(rows, means, k=2, threshold=0.99) == [(10, [12]), (11, [14])]
    assert collapse(rows, means, k=5, threshold=1.01) == [(r, []) for r in rows.tolist()]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 30), st.integers(1, 10), st.floats(0.5, 0.999), st.integers(0, 10_000))
def test_every_candidate_lands_in_at_most_one_result_and_heads_are_not_copies(n, k, t, seed):
    means = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    groups = collapse(np.arange(n), means, k, t)
    seen = [r for head, copies in groups for r in (head, *copies)]
    assert len(seen) == len(set(seen)) and len(groups) <= k
    heads = np.array([h for h, _ in groups])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    sims = unit[heads] @ unit[heads].T
    assert np.all(sims[np.triu_indices(len(heads), 1)] < t)
    assert heads.tolist() == sorted(heads.tolist())  # ranked order kept


def test_the_threshold_joins_copies_and_rises_above_distinct_videos_when_they_come_close():
    copies = {"reencode": np.full(50, 0.999), "cut": np.linspace(0.95, 0.99, 100)}
    far = fit_threshold(copies, np.linspace(0.2, 0.8, 1000))
    assert far["limited_by"] == "copies" and far["threshold"] == pytest.approx(0.9504, abs=1e-3)
    assert far["joined"]["cut"] >= 0.99 and far["merged_distinct"] == 0.0
    close = fit_threshold(copies, np.linspace(0.2, 0.98, 1000))
    assert close["limited_by"] == "distinct videos" and close["merged_distinct"] <= 0.001
    assert close["threshold"] > 0.979
