"""Parameter counts per component, to check CALM's overhead against the paper's +0.5M."""

from __future__ import annotations

from torch import nn

from calm.model.calm import CALM


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: CALM) -> dict[str, int]:
    """Components plus `calm_extra`: what anchors and the VAE add over the same baseline."""
    counts = {
        "backbone": count(model.backbone),
        "fusion": count(model.fusion),
        "anchors": count(model.anchors),
        "vae": count(model.vae),
    }
    counts["calm_extra"] = counts["anchors"] + counts["vae"]
    counts["total"] = count(model)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
