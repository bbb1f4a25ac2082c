"""Confidence of a search result, and when to say that nothing matches.

A cosine score means little on its own: its typical level depends on the model and on the
collection. So every query is also scored, with the same fusion head, against a fixed reference
sample of the index (all videos when the index is small). Nearly all of those are unrelated to
the query, so their scores show what "unrelated" looks like for this query: a robust centre
(median) and spread (1.4826 x median absolute deviation). A result's z is how many spreads it
lies above that centre.

The best of N unrelated videos would already reach z ~ E[max of N standard normals], about 2.0
for 40 videos and 4.3 for 100,000, so a z means something only beyond that level. The evidence
of a result is sigmoid((z - E[max_N]) / WIDTH): 0.5 exactly at the level the best unrelated
video reaches, near 1 two spreads above it. The search abstains -- says there is no confident
match -- when even the best result's evidence is below 0.5.

With a VAE, the reported confidence also discounts videos the model itself is unsure of:
confidence = evidence x (1 - SIGMA_WEIGHT x the video's sigma percentile in the index). A clip
whose sigma is the largest of the collection (many different captions could fit it) keeps half
its evidence. Sigma never changes the ranking or the abstention, only the reported confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

WIDTH = 0.5
SIGMA_WEIGHT = 0.5
MIN_REFERENCE = 8  # fewer reference scores than this give no usable spread


@lru_cache(maxsize=256)
def expected_max_normal(n: int) -> float:
    """E[max of n iid standard normals], by numerical integration (exact to ~1e-6)."""
    if n <= 1:
        return 0.0
    x = torch.linspace(-10.0, 12.0, 22001, dtype=torch.float64)
    log_pdf = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
    log_cdf = torch.special.log_ndtr(x)
    density = torch.exp(math.log(n) + log_pdf + (n - 1) * log_cdf)
    return float(torch.trapezoid(x * density, x))


@dataclass(frozen=True)
class NullModel:
    """Scores of unrelated videos for one query: centre, spread and collection size."""

    centre: float
    spread: float
    collection: int

    @classmethod
    def from_reference(cls, scores: np.ndarray, collection: int) -> NullModel | None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < MIN_REFERENCE:
            return None
        centre = float(np.median(scores))
        spread = 1.4826 * float(np.median(np.abs(scores - centre)))
        spread = max(spread, 1e-6, 1e-3 * float(scores.std()))
        return cls(centre, spread, collection)

    def z(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.centre) / self.spread

    def evidence(self, scores: np.ndarray) -> np.ndarray:
        level = expected_max_normal(self.collection)
        return 1.0 / (1.0 + np.exp(-(self.z(scores) - level) / WIDTH))


def confidence(evidence: np.ndarray, sigma_percentile: np.ndarray | None) -> np.ndarray:
    if sigma_percentile is None:
        return evidence
    return evidence * (1.0 - SIGMA_WEIGHT * np.asarray(sigma_percentile))


def abstains(best_evidence: float | None) -> bool:
    return best_evidence is not None and best_evidence < 0.5
