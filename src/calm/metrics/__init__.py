"""Retrieval and captioning metrics (pure functions; imports nothing from ``calm``)."""

from .captioning import (
    METRIC_NAMES,
    JavaNotFoundError,
    caption_metrics,
    close_meteor,
    ptb_tokenize,
)
from .retrieval import (
    DEFAULT_TIES,
    TIE_RULES,
    caption_groups,
    hit_rates,
    ranks_t2v,
    ranks_v2t,
    retrieval_metrics,
    summarize_ranks,
)

__all__ = [
    "METRIC_NAMES",
    "JavaNotFoundError",
    "DEFAULT_TIES",
    "TIE_RULES",
    "caption_groups",
    "hit_rates",
    "caption_metrics",
    "close_meteor",
    "ptb_tokenize",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
    "summarize_ranks",
]
