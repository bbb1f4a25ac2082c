"""Anchor distributions: how a video (frame mean) or a text spreads over the K class anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def anchor_logits(features: torch.Tensor, anchors: torch.Tensor, scale: torch.Tensor | float):
    """s * cos(features, anchors): [N, D] x [K, D] -> [N, K]."""
    return scale * (F.normalize(features, dim=-1) @ F.normalize(anchors, dim=-1).t())


def anchor_distribution(features, anchors, scale) -> torch.Tensor:
    """softmax(s * cos(., P)) -> rows on the probability simplex over the anchors."""
    return anchor_logits(features, anchors, scale).softmax(dim=-1)
