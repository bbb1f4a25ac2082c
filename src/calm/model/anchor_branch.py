"""CALM's anchor branch, in one home: the anchors P, the distributions V_p and S_p, the VAE's
generation S_p-hat and its uncertainty, and the anchor bank's lifecycle.

`AnchorBranch` is the part of `VideoTextCore` (`calm.model.core`) that owns `anchors` (the
`AnchorBank`) and `vae`; both models (retrieval and captioning) inherit it. Everything that turns
features into anchor distributions lives here, so a change to how V_p is formed (the frame
mean, the fused video, per-frame distributions) is a change to this file:

- V_p from the frame mean (the paper), the fused video (`video_source: fused`, `CALM`), or per
  frame (`video_source: frames`): V_p of every sampled frame (T x K, `frame_anchor_logits`) and
  the video's V_p their mixture, with equal weights or a learned attention over the frames
  (`frame_pooling`); `frame_anchor_probs` tells which frames carry which anchor;
- training: `anchor_branch(text, frames, mask)` gives the logits of V_p and S_p, the VAE's output
  (its input V_p at the VAE's own temperature; the conditional VAE's posterior also sees S_p)
  and the alignment objective's loss terms for one batch; `encode_text_and_anchors` encodes the
  batch's captions and, under `refresh: step`, the anchor prompts in one text-encoder call;
- evaluation and inference: `anchor_distributions` (V_p, S_p, S_p-hat, the posterior) over cached
  features in chunks, with the masks of short clips honoured; `video_anchor_probs`,
  `text_anchor_probs`, `generated_anchor_probs` and `video_uncertainty` are its parts, and
  `AnchorDistributions.signals` every per-video uncertainty signal calm measures;
- lifecycle hooks the training loop and the evaluators call, so no code outside `calm.model`
  reaches into the bank: `start_epoch`, `observe_step`, `after_optimizer_step` (a learned anchor
  scale clamped), `evaluation_anchors`, `anchor_resume_state`
  / `restore_anchor_resume_state`, and `zero_shot_anchors` (a model trained without anchors,
  measured with prompts encoded by its own text encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from calm.config.schema import AnchorConfig
from calm.model.anchors import AnchorBank, build_anchors
from calm.model.distributions import anchor_logits
from calm.model.fusion import masked_mean
from calm.model.vae import VAEOutput

VIDEO_CHUNK = 256  # videos per chunk in evaluation: bounds the VAE's [samples, chunk, K] draws
TEXT_CHUNK = 4096

# Per-video uncertainty signals (higher = less sure), `AnchorDistributions.signals`:
SIGNALS = {
    "sigma": "mean posterior sigma over all latent dimensions (the paper's uncertainty)",
    "sigma_active": "mean sigma over the latent dimensions active in training",
    "log_sigma_sum": "sum of log sigma over the latent dimensions (the posterior's log volume)",
    "s_hat_entropy": "entropy of the generated distribution S_p-hat (nats)",
    "mutual_info": "mutual information between S_p-hat and z: H(E_z p) - E_z H(p) over the "
                   "predictive draws (nats)",
}
# The VAE signal `video_uncertainty` returns when none is named. None of them told wrong top-1
# answers from right ones better than chance on the dev split (docs/results.md, "Uncertainty"),
# so `calm.CalmModel.uncertainty` defaults to the retrieval's top-1 probability instead
# (`calm.api.UNCERTAINTY_SIGNAL`); this is the VAE's own default for callers that want one
UNCERTAINTY_SIGNAL = "mutual_info"


@dataclass
class AnchorOutput:
    """One training batch through the anchor branch."""

    video_logits: torch.Tensor  # s * cos(video feature, P), [B, K]; softmax gives V_p
    text_logits: torch.Tensor  # s * cos(S, P), [B, K]; softmax gives S_p
    vae: VAEOutput | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # the alignment's loss terms


@dataclass
class AnchorDistributions:
    """A split's anchor distributions (float32, CPU): per video V_p and, with a VAE, the
    predictive S_p-hat, its decoding at z = mu and the posterior; per text S_p."""

    vp: torch.Tensor  # [N_v, K]
    sp: torch.Tensor  # [N_t, K]
    s_hat: torch.Tensor | None = None  # [N_v, K] E_z[S_p-hat(z)], what the VAE generates
    s_hat_mu: torch.Tensor | None = None  # [N_v, K] the decoder at z = mu
    # the distribution over z that generates S_p-hat at test time: the paper's posterior
    # q(z | V_p), or the conditional VAE's prior p(z | V_p)
    mu: torch.Tensor | None = None  # [N_v, d]
    logvar: torch.Tensor | None = None  # [N_v, d]
    mutual_info: torch.Tensor | None = None  # [N_v] between S_p-hat and z (`SIGNALS`)
    active: torch.Tensor | None = None  # [d] bool, the latent dimensions active in training

    @property
    def sigma(self) -> torch.Tensor | None:
        """Mean posterior sigma per video over the latent dimensions, [N_v]."""
        return None if self.logvar is None else (0.5 * self.logvar).exp().mean(dim=-1)

    def signals(self) -> dict[str, torch.Tensor]:
        """Every per-video uncertainty signal of `SIGNALS` ([N_v] each, float32), for a model
        with a VAE; empty without one."""
        if self.logvar is None:
            return {}
        active = self.active if self.active is not None else torch.ones(
            self.logvar.shape[1], dtype=torch.bool)
        return {
            "sigma": self.sigma,
            "sigma_active": (0.5 * self.logvar[:, active]).exp().mean(dim=-1),
            "log_sigma_sum": 0.5 * self.logvar.sum(dim=-1),
            "s_hat_entropy": entropy(self.s_hat),
            "mutual_info": self.mutual_info,
        }


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row; 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def _rows(x: torch.Tensor | None, start: int, size: int) -> torch.Tensor | None:
    return None if x is None else x[start : start + size]


class AnchorBranch:
    """Mixin of `VideoTextCore`: needs `backbone`, `alignment`, `anchors` and `vae` attributes and
    `anchor_video_feature(frames, mask)`, which a subclass may override (CALM's fused video)."""

    anchors: AnchorBank | None
    vae: object

    # ---- what the model has ----------------------------------------------------------------------
    @property
    def has_anchors(self) -> bool:
        return self.anchors is not None

    @property
    def has_vae(self) -> bool:
        return self.vae is not None

    @property
    def anchor_labels(self) -> list[str] | None:
        return None if self.anchors is None else list(self.anchors.labels)

    @property
    def num_anchors(self) -> int:
        return 0 if self.anchors is None else self.anchors.num_anchors

    def text_marginal(self) -> torch.Tensor | None:
        """The training pairs' mean S_p (last complete epoch and the current one), or None."""
        return None if self.anchors is None else self.anchors.text_marginal()

    # ---- P and the logits ------------------------------------------------------------------------
    def anchor_matrix(self) -> torch.Tensor:
        return self.anchors(self.backbone.encode_text)

    def anchor_video_feature(self, frames, mask) -> torch.Tensor:
        """The video side of the anchor branch: the frame mean, as the paper has it."""
        return masked_mean(frames, mask)

    def video_anchor_logits(self, frames, mask, anchors=None) -> torch.Tensor:
        """Logits of the video's V_p [B, K]. Per frame (`video_source: frames`) they are the
        log of the frames' mixture: log sum_t w_t V_p(frame t), so softmax gives the mixture."""
        anchors = self.anchor_matrix() if anchors is None else anchors
        if self.anchors.video_source == "frames":
            # in float32: a weight of 0 (padding) is clamped to 1e-30, which half precision
            # would round back to 0 and log to -inf (NaN gradients)
            per_frame = self.frame_anchor_logits(frames, anchors).float().log_softmax(dim=-1)
            log_weights = self.frame_weights(frames, mask).clamp_min(1e-30).log()
            return (per_frame + log_weights.unsqueeze(-1)).logsumexp(dim=1)
        return anchor_logits(self.anchor_video_feature(frames, mask), anchors, self.anchors.scale)

    def frame_anchor_logits(self, frames, anchors=None) -> torch.Tensor:
        """s * cos(h_t, P) for every sampled frame, [B, T, K]: V_p per frame."""
        anchors = self.anchor_matrix() if anchors is None else anchors
        return anchor_logits(frames, anchors, self.anchors.scale)

    def frame_weights(self, frames, mask) -> torch.Tensor:
        """The weight of each frame in the video's V_p [B, T], summing to 1 over the clip's real
        frames (padding gets 0): equal (`frame_pooling: mean`), or softmax over the frames of a
        learned query against their normalised features (`attention`; zero query = equal)."""
        real = (torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
                if mask is None else mask.bool())
        query = self.anchors.frame_query
        if query is None:
            scores = torch.zeros(frames.shape[:2], device=frames.device)
        else:
            scores = torch.nn.functional.normalize(frames.float(), dim=-1) @ query.float()
        return scores.masked_fill(~real, float("-inf")).softmax(dim=1).nan_to_num(0.0)

    def text_anchor_logits(self, text, anchors=None) -> torch.Tensor:
        anchors = self.anchor_matrix() if anchors is None else anchors
        return anchor_logits(text, anchors, self.anchors.text_scale)

    # ---- training --------------------------------------------------------------------------------
    def encode_text_and_anchors(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's sentence features and, when this step re-encodes anchor prompts with
        gradient (`refresh: step`), P from the same text-encoder call: one batched pass over
        captions and prompts costs less than two (issue 18), and the gradient of the alignment
        terms reaches the text tower exactly as with a separate call. Returns (text, P or None:
        the caller then takes P from `anchor_matrix`)."""
        bank = self.anchors
        if bank is None or not bank.encodes_with_grad():
            return self.backbone.encode_text(tokens), None
        prompts = bank.step_prompt_tokens()
        length = max(tokens.shape[1], int(_last_nonzero(prompts)) + 1)
        joint = torch.cat([_fit(tokens, length), _fit(prompts.to(tokens.device), length)])
        encoded = self.backbone.encode_text(joint)
        text, fresh = encoded[: tokens.shape[0]], encoded[tokens.shape[0]:]
        return text, bank.with_step_encodings(fresh, self.backbone.encode_text)

    def anchor_branch(self, text, frames, mask, anchors: torch.Tensor | None = None) -> AnchorOutput:
        """V_p and S_p logits, the VAE's output on V_p, and the alignment objective's terms."""
        anchors = self.anchor_matrix() if anchors is None else anchors
        video_logits = self.video_anchor_logits(frames, mask, anchors)
        text_logits = self.text_anchor_logits(text, anchors)
        vae_out = None
        if self.vae is not None:
            # the conditional VAE's posterior sees S_p as an input, never as a path for gradient
            text_probs = text_logits.detach().softmax(dim=-1) if self.vae.conditional else None
            vae_out = self.vae(self.vae.input_probs(video_logits), text_probs)
        terms = self.alignment(video_logits, text_logits, vae_out)
        return AnchorOutput(video_logits, text_logits, vae_out, terms)

    # ---- lifecycle hooks -------------------------------------------------------------------------
    def start_epoch(self) -> None:
        """Start of a training epoch: the `epoch` policy re-encodes its prompts; the S_p
        marginal of the epoch that ended is kept as the last complete one."""
        if self.anchors is not None:
            self.anchors.start_epoch()

    def observe_step(self, out, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """After a completed optimizer step: the batch's S_p rows (over the global batch, via
        `gather`) join the training marginal that `rec_ce_marginal` compares against."""
        anchors = getattr(out, "anchors", None)
        if self.anchors is not None and anchors is not None:
            self.anchors.observe_text(gather(anchors.text_logits.float().softmax(dim=-1)))
            if self.vae is not None and anchors.vae is not None:
                self.vae.observe(anchors.vae)

    def after_optimizer_step(self) -> None:
        """After each optimizer step (the task's `after_step`): a learned anchor scale back
        within its clamp, as CLIP's logit scale is."""
        if self.anchors is not None:
            self.anchors.clamp_scales_()

    @contextmanager
    def evaluation_anchors(self):
        """Inside the block the model scores with anchors from its current text encoder (those
        a checkpoint saved now would score with); the training cache is restored afterwards, so
        evaluating never changes what training sees. `refresh: once` keeps the anchors it
        trained with: its prompts are never re-encoded, in training or evaluation."""
        if self.anchors is None:
            yield
            return
        with self.anchors.fresh_encodings():
            yield

    def anchor_resume_state(self) -> torch.Tensor | None:
        """What a resume point must keep of the bank beyond its weights: the cached encodings,
        so a resumed run scores with exactly the anchors the interrupted one had."""
        return None if self.anchors is None else self.anchors.cached_encodings()

    def restore_anchor_resume_state(self, cache: torch.Tensor | None) -> None:
        if self.anchors is not None:
            self.anchors.restore_encodings(cache)

    @contextmanager
    def zero_shot_anchors(self, cfg: AnchorConfig):
        """A model trained without anchors (the `none` baseline) measured with the prompts of
        `cfg` encoded by its own text encoder: no offsets e_k, no VAE. A model with anchors
        keeps its own."""
        if self.anchors is not None:
            yield
            return
        bank = build_anchors(cfg, self.backbone.tokenize, self.backbone.embed_dim)
        self.anchors = bank.to(next(self.parameters()).device)
        try:
            with self.anchors.fresh_encodings():
                yield
        finally:
            self.anchors = None

    # ---- evaluation: distributions over cached features, in chunks --------------------------------
    @torch.no_grad()
    def anchor_distributions(self, text: torch.Tensor | None, frames: torch.Tensor,
                             mask: torch.Tensor | None, device=None, generated: bool = True,
                             video_chunk: int = VIDEO_CHUNK,
                             text_chunk: int = TEXT_CHUNK) -> AnchorDistributions:
        """V_p (and, with a VAE and `generated`, S_p-hat and the posterior) of every video and
        S_p of every text, chunk by chunk on `device`; results are float32 on the CPU.

        Each row depends on its own video or text alone (the VAE's predictive draws are shared by
        all rows), so chunking and order change nothing."""
        device = device or frames.device
        anchors = self.anchor_matrix()
        with_vae = generated and self.vae is not None
        vp, s_hat, s_hat_mu, mu, logvar, mutual_info = [], [], [], [], [], []
        for i in range(0, frames.shape[0], video_chunk):
            logits = self.video_anchor_logits(frames[i : i + video_chunk].to(device),
                                              _to(_rows(mask, i, video_chunk), device), anchors)
            vp.append(logits.float().softmax(-1).cpu())
            if with_vae:
                post_mu, post_logvar = self.vae.encode(self.vae.input_probs(logits.float()))
                draws = self.vae.predictive_draws(post_mu, post_logvar).float()
                predictive = draws.mean(dim=0)
                s_hat.append(predictive.cpu())
                mutual_info.append((entropy(predictive) - entropy(draws).mean(dim=0)).cpu())
                s_hat_mu.append(self.vae.decoder(post_mu).float().softmax(-1).cpu())
                mu.append(post_mu.float().cpu())
                logvar.append(post_logvar.float().cpu())
        sp = []
        if text is not None:
            for i in range(0, text.shape[0], text_chunk):
                chunk = text[i : i + text_chunk].to(device)
                sp.append(self.text_anchor_logits(chunk, anchors).float().softmax(-1).cpu())
        k = self.num_anchors
        out = AnchorDistributions(vp=torch.cat(vp) if vp else torch.empty(0, k),
                                  sp=torch.cat(sp) if sp else torch.empty(0, k))
        if with_vae:
            out.s_hat, out.s_hat_mu = torch.cat(s_hat), torch.cat(s_hat_mu)
            out.mu, out.logvar = torch.cat(mu), torch.cat(logvar)
            out.mutual_info = torch.cat(mutual_info)
            out.active = self.vae.active_dimensions().cpu()
        return out

    @torch.no_grad()
    def frame_anchor_probs(self, frames, mask, device=None, chunk: int = VIDEO_CHUNK):
        """V_p of every sampled frame [N_v, T, K] (float32, CPU); padded frames of short clips
        are all zero, so a row sums to 1 exactly where `mask` is True."""
        device = device or frames.device
        anchors = self.anchor_matrix()
        out = []
        for i in range(0, frames.shape[0], chunk):
            probs = self.frame_anchor_logits(frames[i : i + chunk].to(device), anchors)
            probs = probs.float().softmax(-1).cpu()
            if mask is not None:
                probs = probs * mask[i : i + chunk].bool().cpu().unsqueeze(-1)
            out.append(probs)
        k = self.num_anchors
        return torch.cat(out) if out else torch.empty(0, frames.shape[1], k)

    def video_anchor_probs(self, frames, mask, device=None, chunk: int = VIDEO_CHUNK):
        """V_p [N_v, K]."""
        return self.anchor_distributions(None, frames, mask, device, generated=False,
                                         video_chunk=chunk).vp

    def text_anchor_probs(self, text, device=None, chunk: int = TEXT_CHUNK) -> torch.Tensor:
        """S_p [N_t, K]."""
        empty = text.new_zeros(0, 1, text.shape[-1])
        return self.anchor_distributions(text, empty, None, device, generated=False,
                                         text_chunk=chunk).sp

    def generated_anchor_probs(self, frames, mask, device=None, chunk: int = VIDEO_CHUNK):
        """S_p-hat [N_v, K]: the VAE's predictive distribution, which depends on that video alone
        (`CrossModalVAE.predictive`)."""
        self._require_vae("the generated anchor distribution")
        return self.anchor_distributions(None, frames, mask, device, video_chunk=chunk).s_hat

    def video_uncertainty(self, frames, mask, device=None, chunk: int = VIDEO_CHUNK,
                          signal: str = UNCERTAINTY_SIGNAL):
        """One uncertainty signal per video [N_v] (`SIGNALS`; default `UNCERTAINTY_SIGNAL`, the
        best measured); higher = less sure. Each video's value depends on that video alone."""
        self._require_vae("uncertainty")
        if signal not in SIGNALS:
            raise ValueError(f"uncertainty signal {signal!r} is not one of {list(SIGNALS)}")
        d = self.anchor_distributions(None, frames, mask, device, video_chunk=chunk)
        return d.signals()[signal]

    def _require_vae(self, what: str) -> None:
        if self.vae is None:
            raise ValueError(f"{what} needs a model with a VAE (model.alignment.name: vae)")


def _last_nonzero(tokens: torch.Tensor) -> int:
    """The last column holding a token in any row (token id 0 is padding)."""
    used = (tokens != 0).any(dim=0).nonzero()
    return int(used.max()) if used.numel() else 0


def _fit(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Token rows cut or zero-padded to `length` columns; only padding is ever cut (callers
    choose `length` past every row's last token), and under the text encoder's causal mask the
    pooled end token never sees the columns after it, so the features are unchanged."""
    if tokens.shape[1] >= length:
        return tokens[:, :length]
    pad = tokens.new_zeros(tokens.shape[0], length - tokens.shape[1])
    return torch.cat([tokens, pad], dim=1)


def _to(x: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if x is None else x.to(device)



