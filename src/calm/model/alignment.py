"""Alignment objectives between the video's and the text's anchor distributions.

`none` is the baseline; `kl`, `ce` and `mse` align V_p and S_p directly; `vae` is CALM: the VAE
generates S_p-hat from V_p, trained with L_rec + alpha * KL(q(z | V_p) || N(0, I)). Chosen by
name so the paper's ablation table reruns from configs alone.
"""

from __future__ import annotations

import torch
from torch import nn

from calm.config.schema import AlignmentConfig
from calm.model.vae import VAEOutput, kl_to_standard_normal
from calm.registry import Registry

ALIGNMENTS: Registry[AlignmentObjective] = Registry("alignment objective")


class AlignmentObjective(nn.Module):
    uses_anchors = True
    uses_vae = False

    def __init__(self, cfg: AlignmentConfig):
        super().__init__()
        self.cfg = cfg

    def target(self, text_logits: torch.Tensor) -> torch.Tensor:
        """log S_p, detached when the text distribution is a fixed teacher."""
        log_target = text_logits.log_softmax(dim=-1)
        return log_target.detach() if self.cfg.detach_target else log_target

    def terms(self, video_logits, text_logits, vae_out: VAEOutput | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, video_logits, text_logits, vae_out=None) -> dict[str, torch.Tensor]:
        """Named loss terms, including `align`, the weighted sum added to the task loss."""
        return self.terms(video_logits, text_logits, vae_out)


def _cross_entropy(log_target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    return -(log_target.exp() * log_pred).sum(dim=-1).mean()


@ALIGNMENTS.register("none")
class NoAlignment(AlignmentObjective):
    uses_anchors = False

    def terms(self, video_logits, text_logits, vae_out):
        raise RuntimeError("the 'none' objective has no terms; the model skips anchors entirely")


@ALIGNMENTS.register("kl")
class KLAlignment(AlignmentObjective):
    """KL(S_p || V_p): the text distribution is the target."""

    def terms(self, video_logits, text_logits, vae_out):
        log_t = self.target(text_logits)
        kl = (log_t.exp() * (log_t - video_logits.log_softmax(dim=-1))).sum(dim=-1).mean()
        return {"kl": kl, "align": self.cfg.weight * kl}


@ALIGNMENTS.register("ce")
class CrossEntropyAlignment(AlignmentObjective):
    """-sum_k S_p(k) log V_p(k)."""

    def terms(self, video_logits, text_logits, vae_out):
        ce = _cross_entropy(self.target(text_logits), video_logits.log_softmax(dim=-1))
        return {"ce": ce, "align": self.cfg.weight * ce}


@ALIGNMENTS.register("mse")
class MSEAlignment(AlignmentObjective):
    """||V_p - S_p||^2 summed over anchors."""

    def terms(self, video_logits, text_logits, vae_out):
        diff = video_logits.softmax(dim=-1) - self.target(text_logits).exp()
        mse = diff.pow(2).sum(dim=-1).mean()
        return {"mse": mse, "align": self.cfg.weight * mse}


@ALIGNMENTS.register("vae")
class VAEAlignment(AlignmentObjective):
    """CALM: L_rec = -sum_k S_p(k) log S_p-hat(k), plus alpha * KL(q(z | V_p) || N(0, I))."""

    uses_vae = True

    def terms(self, video_logits, text_logits, vae_out):
        if vae_out is None:
            raise ValueError("the 'vae' objective needs the VAE output")
        rec = _cross_entropy(self.target(text_logits), vae_out.logits.log_softmax(dim=-1))
        kl_prior = kl_to_standard_normal(vae_out.mu, vae_out.logvar).mean()
        return {
            "rec": rec,
            "kl_prior": kl_prior,
            "align": self.cfg.weight * (rec + self.cfg.alpha * kl_prior),
        }


def build_alignment(cfg: AlignmentConfig) -> AlignmentObjective:
    return ALIGNMENTS.build(cfg.name, cfg)
