"""Retrieval metrics (pure functions; imports nothing from ``calm``)."""

from .retrieval import (
    TIE_RULES,
    caption_groups,
    ranks_t2v,
    ranks_v2t,
    retrieval_metrics,
    summarize_ranks,
)

__all__ = [
    "TIE_RULES",
    "caption_groups",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
    "summarize_ranks",
]
