"""The hierarchical (seeds x videos) bootstrap against answers known in closed form, and its
coverage by simulation beside the query-level paired bootstrap's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.metrics.bootstrap import (
    hierarchical_bootstrap,
    hierarchical_replicates,
    paired_bootstrap,
)

Z95 = 1.959964


def _standard_error(result: dict) -> float:
    """The bootstrap's standard error read back from its 95 % percentile interval (the
    replicates of a mean over hundreds of draws are close to normal)."""
    return (result["high"] - result["low"]) / (2 * Z95)


def test_one_seed_one_query_per_video_is_the_paired_bootstrap():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(size=400)
    d = a - b
    closed_form = np.sqrt(np.mean((d - d.mean()) ** 2) / d.size)
    hier = hierarchical_bootstrap(a, b, np.arange(400), n_resamples=20_000)
    paired = paired_bootstrap(a, b, n_resamples=20_000)
    assert hier["diff"] == pytest.approx(d.mean())
    assert _standard_error(hier) == pytest.approx(closed_form, rel=0.04)
    assert _standard_error(paired) == pytest.approx(closed_form, rel=0.04)
    assert hier["n_clusters"] == 400 and hier["n_seeds"] == 1


def test_captions_of_one_video_are_drawn_together():
    """Five identical captions per video: the evidence is one draw per video, so the standard
    error is that of a mean of 100 values, sqrt(5) times what the query-level bootstrap says."""
    rng = np.random.default_rng(1)
    per_video = rng.normal(size=100)
    d = np.repeat(per_video, 5)
    videos = np.repeat(np.arange(100), 5)
    hier = hierarchical_bootstrap(d, np.zeros_like(d), videos, n_resamples=20_000)
    paired = paired_bootstrap(d, np.zeros_like(d), n_resamples=20_000)
    closed_form = np.sqrt(np.mean((per_video - per_video.mean()) ** 2) / 100)
    assert _standard_error(hier) == pytest.approx(closed_form, rel=0.04)
    assert _standard_error(hier) / _standard_error(paired) == pytest.approx(np.sqrt(5), rel=0.06)


def test_seeds_are_resampled():
    """Runs that differ only by seed (every query moves with its seed): the query-level interval
    has no width; the hierarchical one has the standard error of a mean over the seeds."""
    seed_effect = np.array([2.0, -1.0, 0.5, 3.0, -0.5])
    scores = np.tile(seed_effect[:, None], (1, 50))
    reference = np.zeros_like(scores)
    hier = hierarchical_bootstrap(scores, reference, np.arange(50), n_resamples=50_000)
    paired = paired_bootstrap(scores, reference, n_resamples=1_000)
    assert paired["low"] == paired["high"] == pytest.approx(seed_effect.mean())
    # five values: the bootstrap distribution is discrete, so compare its standard deviation
    closed_form = np.sqrt(np.mean((seed_effect - seed_effect.mean()) ** 2) / 5)
    replicates = hierarchical_replicates(scores - reference, np.arange(50), 50_000)
    assert replicates.std() == pytest.approx(closed_form, rel=0.03)
    assert hier["low"] < seed_effect.mean() < hier["high"]


def _simulated_world(rng, n_seeds=5, n_videos=300, captions=2, mu=1.0, seed_sd=0.8,
                     video_sd=3.0, noise_sd=3.0):
    """Per-query differences with a seed effect, a video effect shared by the video's captions
    and noise: the true mean difference is `mu`."""
    videos = np.repeat(np.arange(n_videos), captions)
    d = (mu + rng.normal(0, seed_sd, (n_seeds, 1))
         + rng.normal(0, video_sd, n_videos)[videos][None]
         + rng.normal(0, noise_sd, (n_seeds, videos.size)))
    return d, videos


def test_coverage_by_simulation():
    """Over 200 simulated experiments (another 5 training runs and another 300 test videos of 2
    captions each, every time) the hierarchical 95 % interval holds the true difference nearly
    95 % of the time; the query-level interval, blind to both, far less often."""
    rng = np.random.default_rng(7)
    mu, hits_hier, hits_paired = 1.0, 0, 0
    sims = 200
    for i in range(sims):
        d, videos = _simulated_world(rng, mu=mu)
        zeros = np.zeros_like(d)
        hier = hierarchical_bootstrap(d, zeros, videos, n_resamples=2_000, seed=i)
        paired = paired_bootstrap(d, zeros, n_resamples=2_000, seed=i)
        hits_hier += hier["low"] <= mu <= hier["high"]
        hits_paired += paired["low"] <= mu <= paired["high"]
    # 5 seeds: a percentile bootstrap of a mean of 5 draws cannot reach 95 % (it uses the normal
    # quantile where Student's t(4) applies), so the bar is 0.85, not 0.95
    assert hits_hier / sims >= 0.85
    assert hits_paired / sims <= 0.75
    assert hits_hier > hits_paired + 20


def test_reproducible_and_checked():
    d = np.random.default_rng(3).normal(size=(3, 20))
    videos = np.arange(20) // 2
    a = hierarchical_bootstrap(d, np.zeros_like(d), videos, 500, seed=4)
    assert a == hierarchical_bootstrap(d, np.zeros_like(d), videos, 500, seed=4)
    assert a["unit"] == "seeds x videos" and a["n_clusters"] == 10 and a["n_seeds"] == 3
    with pytest.raises(ValueError, match="one video per query"):
        hierarchical_bootstrap(d, np.zeros_like(d), videos[:-1])
    with pytest.raises(ValueError, match="same shape"):
        hierarchical_bootstrap(d, np.zeros((3, 19)), videos)
    with pytest.raises(ValueError, match="non-finite"):
        hierarchical_bootstrap(np.full((1, 2), np.nan), np.zeros((1, 2)), [0, 1])
    with pytest.raises(ValueError, match="confidence"):
        hierarchical_bootstrap(d, np.zeros_like(d), videos, confidence=1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(1, 3), st.integers(0, 10_000))
def test_names_of_videos_do_not_matter_and_the_interval_holds_the_estimate(
        n_seeds, n_videos, captions, seed):
    rng = np.random.default_rng(seed)
    videos = np.repeat(np.arange(n_videos), captions)
    scores = 100.0 * rng.integers(0, 2, (n_seeds, videos.size))
    reference = 100.0 * rng.integers(0, 2, (n_seeds, videos.size))
    a = hierarchical_bootstrap(scores, reference, videos, 300, seed=1)
    renamed = np.array([f"video{(v * 7919) % 10007}.mp4" for v in videos])
    b = hierarchical_bootstrap(scores, reference, renamed, 300, seed=1)
    assert a["diff"] == pytest.approx(b["diff"])
    assert a["low"] <= a["high"]
    assert -100.0 <= a["low"] and a["high"] <= 100.0
    assert a["diff"] == pytest.approx((scores - reference).mean())
