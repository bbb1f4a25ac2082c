"""Every loss of calm in one module: task losses, alignment objectives, and their sum.

- Task losses take similarity matrices or logits built from already-gathered global features, so
  a multi-process run plugs in by gathering before the call: symmetric InfoNCE for retrieval,
  token cross-entropy for captioning.
- Alignment objectives compare the video's and the text's anchor distributions. `none` is the
  baseline; `kl`, `ce` and `mse` align V_p and S_p directly; `vae` is CALM: the VAE generates
  S_p-hat from V_p, trained with L_rec + alpha * KL(q(z | V_p) || N(0, I)). Chosen by name so the
  paper's ablation table reruns from configs alone.
- `CALMLoss` is L = L_task + L_align for either task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from calm.config.schema import AlignmentConfig
from calm.model.vae import VAEOutput, kl_to_standard_normal
from calm.registry import Registry

MAX_LOGIT_SCALE = 100.0
IGNORE_INDEX = -100  # caption target id of the padding positions after the end token


# ---- task losses ----------------------------------------------------------------------------------
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


def caption_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy over [B, L, V] logits; IGNORE_INDEX positions (padding) do not count."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


# ---- alignment objectives -------------------------------------------------------------------------
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


# ---- the sum ------------------------------------------------------------------------------------
class CALMLoss(nn.Module):
    """L = L_task + L_align, with L_align from the model's configured objective (0 for `none`).

    `task_loss(model, out)` is the task's own term: InfoNCE for retrieval (the default), token
    cross-entropy for captioning. The alignment terms are added the same way for both.
    """

    def __init__(self, task_loss: Callable[[nn.Module, object], torch.Tensor] | None = None):
        super().__init__()
        self.task_loss = task_loss or retrieval_task_loss

    def forward(self, model: nn.Module, out) -> dict[str, torch.Tensor]:
        task = self.task_loss(model, out)
        terms = {"task": task}
        loss = task
        if out.anchors is not None:
            align = model.alignment(out.anchors.video_logits, out.anchors.text_logits, out.anchors.vae)
            terms.update(align)
            loss = loss + align["align"]
        terms["loss"] = loss
        return terms


def retrieval_task_loss(model: nn.Module, out) -> torch.Tensor:
    return symmetric_info_nce(out.sims, model.logit_scale)


def captioning_task_loss(model: nn.Module, out) -> torch.Tensor:
    return caption_token_loss(out.logits, out.targets)
