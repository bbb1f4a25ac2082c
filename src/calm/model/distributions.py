"""The scaled cosine logits of features against the K class anchors; their softmax is an anchor
distribution (V_p, S_p), which `calm.model.anchor_branch` forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def anchor_logits(features: torch.Tensor, anchors: torch.Tensor, scale: torch.Tensor | float):
    """s * cos(features, anchors): [N, D] x [K, D] -> [N, K]."""
    return scale * (F.normalize(features, dim=-1) @ F.normalize(anchors, dim=-1).t())
