"""Task losses. They take similarity matrices built from already-gathered global features, so a
multi-process run plugs in by gathering before the call."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0


def clamp_logit_scale_(log_scale: torch.nn.Parameter) -> None:
    """Keeps CLIP's learned temperature within [0, ln 100], as CLIP training does after each step."""
    with torch.no_grad():
        log_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def symmetric_info_nce(
    sims: torch.Tensor, log_scale: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of text->video and video->text cross-entropies over a [N, N] cosine matrix.

    Row i (text i) is paired with column targets[i] (default: i). The scale is exp(log_scale),
    clamped at 100 in the forward pass too.
    """
    if sims.shape[0] != sims.shape[1]:
        raise ValueError(f"symmetric InfoNCE needs a square matrix of pairs, got {tuple(sims.shape)}")
    scale = log_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * sims
    n = sims.shape[0]
    if targets is None:
        targets = inverse = torch.arange(n, device=sims.device)
    else:
        if not torch.equal(targets.sort().values.cpu(), torch.arange(n)):
            raise ValueError("targets must be a permutation of 0..N-1 (one video per text)")
        inverse = torch.argsort(targets)  # video j is paired with text inverse[j]
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), inverse))
