"""Confidence of a search result, and when to say that nothing matches.

A cosine score means little on its own: its typical level depends on the model and on the
collection. So every query is also scored, with the same fusion head, against a fixed reference
sample of the index (all videos when the index is small). Nearly all of those are unrelated to
the query, so their scores show what "unrelated" looks like for this query: a robust centre
(median) and spread (1.4826 x median absolute deviation). A result's z is how many spreads it
lies above that centre.

Even among N unrelated videos the best one lies well above the centre: under a Gaussian null
its z exceeds z*(N) = Phi^-1((1 - ALPHA)^(1/N)) only with probability ALPHA = 1% (z* is about
3.5 for 40 videos and 5.2 for 100,000). A result's evidence is sigmoid((z - z*(N)) / WIDTH):
0.5 exactly at that level, 0.98 two spreads above it. The search abstains -- says there is no
confident match -- when even the best result's evidence is below 0.5, i.e. when the best score is
within what chance alone gives the best of N unrelated videos in 99 queries out of 100.
(benchmarks/bench_search.py checks both sides: queries built from an indexed clip and random
queries that match nothing.)

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

ALPHA = 0.01
WIDTH = 0.5
SIGMA_WEIGHT = 0.5
MIN_REFERENCE = 8  # fewer reference scores than this give no usable spread


@lru_cache(maxsize=256)
def null_max_level(n: int, alpha: float = ALPHA) -> float:
    """z that the maximum of n iid standard normals exceeds with probability `alpha`."""
    n = max(int(n), 1)
    tail = -math.expm1(math.log1p(-alpha) / n)  # 1 - (1 - alpha)^(1/n), without cancellation
    return float(-torch.special.ndtri(torch.tensor(tail, dtype=torch.float64)))


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
        level = null_max_level(self.collection)
        return 1.0 / (1.0 + np.exp(-(self.z(scores) - level) / WIDTH))


def confidence(evidence: np.ndarray, sigma_percentile: np.ndarray | None) -> np.ndarray:
    if sigma_percentile is None:
        return evidence
    return evidence * (1.0 - SIGMA_WEIGHT * np.asarray(sigma_percentile))


def abstains(best_evidence: float | None) -> bool:
    return best_evidence is not None and best_evidence < 0.5
