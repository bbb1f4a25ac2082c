"""Parameter counts per component, to check CALM's overhead against the paper's +0.5M."""

from __future__ import annotations

from torch import nn


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Components of a retrieval model or a captioner, plus `calm_extra`: what anchors and the
    VAE add over the same baseline. A component the model does not have counts 0."""
    counts = {name: count(getattr(model, name, None))
              for name in ("backbone", "fusion", "decoder", "anchors", "vae")}
    counts["calm_extra"] = counts["anchors"] + counts["vae"]
    counts["total"] = count(model)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
