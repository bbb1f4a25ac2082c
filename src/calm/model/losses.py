"""Every loss of calm in one module: task losses, alignment objectives, and their sum.

- Task losses take similarity matrices or logits built from already-gathered global features, so
  a multi-process run plugs in by gathering before the call: symmetric InfoNCE for retrieval,
  token cross-entropy for captioning.
- Alignment objectives compare the video's and the text's anchor distributions. `none` is the
  baseline; `kl`, `ce` and `mse` align V_p and S_p directly; `vae` is CALM: the VAE generates
  S_p-hat from V_p, trained with L_rec + alpha * KL(q(z | V_p) || N(0, I)) (the conditional VAE:
  KL(q(z | V_p, S_p) || p(z | V_p)), `calm.model.vae`). Chosen by name so the
  paper's ablation table reruns from configs alone.
- `CALMLoss` is L = L_task + L_align for either task, from the model's output alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from calm.config.schema import AlignmentConfig
from calm.model.vae import VAEOutput
from calm.registry import Registry, check_options

MAX_LOGIT_SCALE = 100.0
IGNORE_INDEX = -100  # caption target id of the padding positions after the end token


# ---- task losses ----------------------------------------------------------------------------------
def clamp_logit_scale_(log_scale: torch.nn.Parameter) -> None:
    """Keeps CLIP's learned temperature within [0, ln 100], as CLIP training does after each step."""
    with torch.no_grad():
        log_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def logit_scale_value(log_scale: torch.Tensor) -> float:
    """The temperature a model scores with: exp of its learned log scale, at most 100."""
    return float(log_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))


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


def multi_positive_info_nce(
    sims: torch.Tensor, log_scale: torch.Tensor, video_ids: torch.Tensor, same_video: str
) -> torch.Tensor:
    """Symmetric InfoNCE over a [N, N] pair matrix when several pairs share a video.

    Pair i is (text i, clip i); `video_ids[i]` names the video of clip i. `same_video`:
    `negative`: plain InfoNCE (another caption of the same video is a negative);
    `positive`: -log(sum over same-video pairs / sum over all), both directions;
    `masked`: the other same-video pairs are left out of the denominator.
    Without repeated videos in the batch all three are the same loss.
    """
    if same_video == "negative":
        return symmetric_info_nce(sims, log_scale)
    if sims.shape[0] != sims.shape[1] or video_ids.shape[0] != sims.shape[0]:
        raise ValueError(f"need a square matrix and one video id per pair, got {tuple(sims.shape)} "
                         f"and {tuple(video_ids.shape)}")
    logits = log_scale.exp().clamp(max=MAX_LOGIT_SCALE) * sims
    n = sims.shape[0]
    same = video_ids[:, None] == video_ids[None, :]
    if same_video == "masked":
        others = same & ~torch.eye(n, dtype=torch.bool, device=sims.device)
        logits = logits.masked_fill(others, float("-inf"))
        targets = torch.arange(n, device=sims.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    if same_video != "positive":
        raise ValueError(f"same_video must be negative, positive or masked, got {same_video!r}")
    positives = logits.masked_fill(~same, float("-inf"))
    t2v = (logits.logsumexp(dim=1) - positives.logsumexp(dim=1)).mean()
    v2t = (logits.logsumexp(dim=0) - positives.logsumexp(dim=0)).mean()
    return 0.5 * (t2v + v2t)


def caption_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy over [B, L, V] logits; IGNORE_INDEX positions (padding) do not count."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


# ---- alignment objectives -------------------------------------------------------------------------
ALIGNMENTS: Registry[AlignmentObjective] = Registry("alignment objective")


class AlignmentObjective(nn.Module):
    """Base class. An objective declares what the model must build for it (`uses_anchors`,
    `uses_vae`: the `none` baseline carries no unused parameters, and scoring with the VAE is
    refused for a model that never trained one) and the fields of `model.alignment` it reads
    (`options`; `calm.registry.check_options`)."""

    uses_anchors = True
    uses_vae = False
    options: tuple[str, ...] = ("weight", "detach_target")

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

    def step_done(self) -> None:
        """Called after each completed optimizer step (schedules inside the objective)."""


def _cross_entropy(log_target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    return -(log_target.exp() * log_pred).sum(dim=-1).mean()


@ALIGNMENTS.register("none")
class NoAlignment(AlignmentObjective):
    uses_anchors = False
    options = ()

    def terms(self, video_logits, text_logits, vae_out):
        raise RuntimeError("the 'none' objective has no terms; the model skips anchors entirely")


@ALIGNMENTS.register("kl")
class KLAlignment(AlignmentObjective):
    """`text_to_video`: KL(S_p || V_p), S_p the target. With a detached S_p this is `ce` minus
    the constant H(S_p), so the two have the same gradient; `video_to_text`: KL(V_p || S_p),
    which penalises V_p mass where S_p has none (mode-seeking)."""

    options = ("weight", "detach_target", "kl_direction")

    def terms(self, video_logits, text_logits, vae_out):
        log_t = self.target(text_logits)
        log_v = video_logits.log_softmax(dim=-1)
        if self.cfg.kl_direction == "text_to_video":
            kl = (log_t.exp() * (log_t - log_v)).sum(dim=-1).mean()
        else:
            kl = (log_v.exp() * (log_v - log_t)).sum(dim=-1).mean()
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
    """CALM: L_rec = -sum_k S_p(k) log S_p-hat(k), plus alpha * KL(q(z | V_p) || N(0, I)); with
    `model.vae.posterior: conditional`, alpha * KL(q(z | V_p, S_p) || p(z | V_p)), the learned
    prior's closed form (`VAEOutput.kl_per_dimension`). `kl_prior` is that KL either way."""

    uses_vae = True
    options = ("weight", "detach_target", "alpha", "kl_warmup_steps", "free_bits")

    def __init__(self, cfg: AlignmentConfig):
        super().__init__(cfg)
        # training steps seen, for the KL warm-up; saved with the weights so a resume continues it
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def step_done(self) -> None:
        self.steps_seen += 1

    def alpha(self) -> float:
        """alpha, ramped linearly from 0 over `kl_warmup_steps` training steps."""
        warmup = self.cfg.kl_warmup_steps
        if warmup <= 0:
            return self.cfg.alpha
        return self.cfg.alpha * min(1.0, float(self.steps_seen) / warmup)

    def terms(self, video_logits, text_logits, vae_out):
        if vae_out is None:
            raise ValueError("the 'vae' objective needs the VAE output")
        rec = _cross_entropy(self.target(text_logits), vae_out.logits.log_softmax(dim=-1))
        kl_per_dim = vae_out.kl_per_dimension().mean(dim=0)  # [d], batch mean
        kl_prior = kl_per_dim.sum()
        # free bits: dimensions below the floor cost the floor, so the encoder gains nothing by
        # collapsing them onto the prior (0 = the paper's plain KL)
        penalised = kl_per_dim.clamp(min=self.cfg.free_bits).sum() if self.cfg.free_bits else kl_prior
        alpha = self.alpha()
        return {
            "rec": rec,
            "kl_prior": kl_prior,
            "align": self.cfg.weight * (rec + alpha * penalised),
        }


def build_alignment(cfg: AlignmentConfig) -> AlignmentObjective:
    objective = ALIGNMENTS.get(cfg.name)
    check_options(cfg, objective.options, "model.alignment", cfg.name)
    return objective(cfg)


# ---- the sum ------------------------------------------------------------------------------------
class CALMLoss(nn.Module):
    """L = L_task + L_align, from the model's output alone.

    `task_loss(out)` is the task's own term: InfoNCE for retrieval (the default; the output
    carries the logit scale it needs), token cross-entropy for captioning. L_align is the sum the
    model's alignment objective put into `out.anchors.terms` (absent for `none`), added the same
    way for both tasks. Taking the output rather than the model keeps the loss a pure function
    of what the forward pass produced: a DDP wrapper, a compiled model or a test's hand-made
    output all plug in the same way.
    """

    def __init__(self, task_loss: Callable[[object], torch.Tensor] | None = None):
        super().__init__()
        self.task_loss = task_loss or retrieval_task_loss

    def forward(self, out) -> dict[str, torch.Tensor]:
        task = self.task_loss(out)
        terms = {"task": task}
        loss = task
        anchors = getattr(out, "anchors", None)
        if anchors is not None and anchors.terms:
            terms.update(anchors.terms)
            loss = loss + anchors.terms["align"]
        terms["loss"] = loss
        return terms


def retrieval_task_loss(out, same_video: str = "negative") -> torch.Tensor:
    """Symmetric InfoNCE over the global batch at the output's logit scale; `same_video` treats
    pairs sharing a video (see `multi_positive_info_nce`); it needs the batch's video ids in
    `out.video_ids`."""
    if same_video == "negative" or out.video_ids is None:
        return symmetric_info_nce(out.sims, out.logit_scale)
    return multi_positive_info_nce(out.sims, out.logit_scale, out.video_ids, same_video)


def captioning_task_loss(out) -> torch.Tensor:
    return caption_token_loss(out.logits, out.targets)
