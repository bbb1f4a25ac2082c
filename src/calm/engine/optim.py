"""Optimizer and schedule: AdamW with separate rates for CLIP and the new modules, cosine with warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

from calm.config.schema import TrainConfig


def _module_kind(name: str) -> str:
    if name.startswith("backbone."):
        return "backbone"
    return "vae" if name.startswith("vae.") else "new"


def decayed_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get weight decay: weight matrices, never gains, biases or
    scales (fewer than 2 dimensions), nn.Embedding tables, or what a module declares through
    `no_weight_decay()` (its own parameter names: additive embeddings such as open_clip's
    positions or the anchor offsets e_k). Modules say what they hold; no name is guessed."""
    excluded: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.Embedding):
            excluded.add(f"{prefix}weight")
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            excluded.update(f"{prefix}{name}" for name in declared())
    return {name for name, param in model.named_parameters()
            if param.ndim >= 2 and name not in excluded}


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Groups by {backbone, vae, new modules} x {decayed matrices, undecayed parameters}.

    Weight decay follows `decayed_names`. The VAE takes `vae_lr` / `vae_weight_decay` when set,
    else the new modules' values.
    """
    decayed = decayed_names(model)
    rates = {"backbone": cfg.backbone_lr, "new": cfg.lr,
             "vae": cfg.lr if cfg.vae_lr is None else cfg.vae_lr}
    decays = {"backbone": cfg.weight_decay, "new": cfg.weight_decay,
              "vae": cfg.weight_decay if cfg.vae_weight_decay is None else cfg.vae_weight_decay}
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = name in decayed
        groups.setdefault((_module_kind(name), decay), []).append(param)
    return [{"params": params, "lr": rates[kind], "weight_decay": decays[kind] if decay else 0.0,
             "name": f"{kind}/{'decay' if decay else 'no_decay'}"}
            for (kind, decay), params in sorted(groups.items())]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # fused: one pass over each tensor instead of a dozen; the toy CLIP's 49,408-row token
    # table alone made the for-loop AdamW a large part of a CPU step
    return torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=True)


def cosine_with_warmup(optimizer, total_steps: int, warmup: float):
    warmup_steps = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
