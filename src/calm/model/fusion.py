"""Temporal fusion heads: per-frame features [N, T, D] (+ frame mask) -> video embeddings.

Every head scores a (text, video) pair from that text and that video alone, so a ranking never
depends on which other candidates are present. Scoring is split in two steps so evaluation can
cache the video side once: `video_state` (per video, text-free) and `score` (texts x videos).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from calm.config.schema import FusionConfig
from calm.registry import Registry, check_options

FUSION_HEADS: Registry[FusionHead] = Registry("fusion head")


def masked_mean(frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real frames only; padded frames of short clips never dilute the average."""
    if mask is None:
        return frames.mean(dim=1)
    weights = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class FusionHead(nn.Module):
    """Base class. Text-agnostic heads implement `pool`; text-conditioned ones override the rest.

    A head declares its capabilities, which search, zero-shot loading and the checks read
    instead of its name: `text_conditioned` (the pooled video depends on the text, so search
    must rescore with the text), `has_frame_weights` (`frame_weights` says how much each frame
    counts in a score: search's matching moment), `parameter_free` (no weights: the untrained
    head is the head, so a CLIP with it is a true zero-shot model), and `options` (the fields of
    `model.fusion` it reads; `calm.registry.check_options`).
    """

    text_conditioned = False
    has_frame_weights = False
    parameter_free = False
    options: tuple[str, ...] = ()

    def pool(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def video_state(self, frames: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"video": F.normalize(self.pool(frames, mask), dim=-1)}

    def text_free_embedding(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """One embedding per video that no text conditions ([N_v, D]); CALM's anchor branch
        can describe the video by it (`anchors.video_source: fused`)."""
        return self.pool(frames, mask)

    def score(self, text: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cosine similarity [N_texts, N_videos]."""
        return F.normalize(text, dim=-1) @ state["video"].t()

    def frame_weights(self, text: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N_t, N_v, T]: each frame's share in each score (heads with `has_frame_weights`)."""
        raise NotImplementedError(f"{type(self).__name__} has no frame weights")

    def similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None):
        return self.score(text, self.video_state(frames, mask))

    def forward(self, frames, mask=None, text=None):
        """Video embeddings: [N_v, D], or [N_v, N_t, D] for text-conditioned heads."""
        return self.pool(frames, mask)


@FUSION_HEADS.register("meanP")
class MeanPooling(FusionHead):
    """CLIP4Clip's parameter-free mean of frame features."""

    parameter_free = True

    def __init__(self, dim: int, cfg: FusionConfig | None = None):
        super().__init__()

    def pool(self, frames, mask):
        return masked_mean(frames, mask)


@FUSION_HEADS.register("seqTransf")
class SequenceTransformer(FusionHead):
    """CLIP4Clip's seqTransf: frame position embeddings, a small temporal transformer, a residual."""

    options = ("layers", "heads", "dropout", "max_frames")

    def __init__(self, dim: int, cfg: FusionConfig | None = None):
        super().__init__()
        cfg = cfg or FusionConfig(name="seqTransf")
        heads = cfg.heads if cfg.heads > 1 else max(1, dim // 64)
        self.frame_position = nn.Embedding(cfg.max_frames, dim)
        nn.init.normal_(self.frame_position.weight, std=0.01)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=cfg.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)

    def pool(self, frames, mask):
        t = frames.shape[1]
        if t > self.frame_position.num_embeddings:
            raise ValueError(f"seqTransf has {self.frame_position.num_embeddings} frame positions, got {t}")
        positions = torch.arange(t, device=frames.device)
        x = frames + self.frame_position(positions).to(frames.dtype)
        padding = None if mask is None else ~mask
        x = self.transformer(x, src_key_padding_mask=padding) + frames
        return masked_mean(x, mask)


@FUSION_HEADS.register("xpool")
class TextConditionedPooling(FusionHead):
    """X-Pool: a text attends over the frames; one pooled video embedding per (text, video) pair.

    Projections start at identity (biases at zero), so at initialisation the pooling is a
    text-weighted average of normalised frame features rather than a random mix.
    """

    text_conditioned = True
    has_frame_weights = True
    options = ("heads", "dropout")

    def __init__(self, dim: int, cfg: FusionConfig | None = None):
        super().__init__()
        cfg = cfg or FusionConfig(name="xpool")
        if dim % cfg.heads:
            raise ValueError(f"xpool: embedding size {dim} is not divisible by {cfg.heads} heads")
        self.heads = cfg.heads
        self.norm_in = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm_mid = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear):
            nn.init.eye_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads)

    def video_state(self, frames, mask):
        """Keys and output-projected values per frame: text-free, so computed once per video.

        Attention weights sum to one, so out_proj(sum_f a_f v_f) = sum_f a_f (W_h v_f) + b: the
        output projection moves from every (text, video) pair to every frame.
        """
        x = self.norm_in(frames)
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        values = self._split(self.v_proj(x))  # [Nv, T, H, dh]
        w = self.out_proj.weight.reshape(-1, self.heads, values.shape[-1])  # [D, H, dh]
        return {
            "keys": self._split(self.k_proj(x)),
            "values": torch.einsum("vfhd,ohd->vfho", values, w),  # [Nv, T, H, D]
            "mask": mask,
        }

    def _attention(self, text: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Attention of each text over each video's frames, [N_v, N_t, H, T]; padding gets 0."""
        q = self._split(self.q_proj(self.norm_in(text)))  # [Nt, H, dh]
        keys, mask = state["keys"], state["mask"]
        logits = torch.einsum("thd,vfhd->vthf", q, keys) / math.sqrt(q.shape[-1])
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        return logits.softmax(dim=-1)

    def frame_weights(self, text: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """How much each frame counts in each (text, video) pooled embedding, [N_t, N_v, T],
        rows sum to 1; search reports the frames with the most weight as the matching moment.

        The pooled vector (before its bias) is sum_h p_h with p_h = sum_f a_hf W_h v_hf: head h
        pools with its own attention a_h. A frame's weight is sum_h s_h a_hf, where s_h =
        <p_h, p> / |p|^2 is head h's share of the pooled vector (clamped at 0, renormalised).
        With one head this is exactly the attention; a plain mean over heads would let a head
        that adds almost nothing to the embedding move the moment as much as the one that
        carries it.
        """
        attn = self._attention(text, state)  # [Nv, Nt, H, T]
        per_head = torch.einsum("vthf,vfho->vtho", attn, state["values"])  # p_h
        pooled = per_head.sum(dim=2, keepdim=True)
        share = (per_head * pooled).sum(-1) / (pooled * pooled).sum(-1).clamp_min(1e-12)
        share = share.clamp_min(0.0)
        share = share / share.sum(dim=2, keepdim=True).clamp_min(1e-12)  # [Nv, Nt, H]
        return torch.einsum("vth,vthf->vtf", share, attn).permute(1, 0, 2)

    def pool_state(self, text: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled video embeddings [N_v, N_t, D] for every (video, text) pair of the inputs."""
        attn = self._attention(text, state)
        pooled = torch.einsum("vthf,vfho->vto", attn, state["values"]) + self.out_proj.bias
        x = self.norm_mid(pooled)
        return self.norm_out(x + self.dropout(self.linear(x)))

    def text_free_embedding(self, frames, mask):
        """The same pooling path with uniform attention over the real frames, so the value,
        output and residual layers see the anchor branch's gradient; queries and keys do not."""
        state = self.video_state(frames, mask)
        weights = state["mask"].to(state["values"].dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        pooled = torch.einsum("vf,vfho->vo", weights, state["values"])  # heads summed, as in score
        x = self.norm_mid(pooled + self.out_proj.bias)
        return self.norm_out(x + self.dropout(self.linear(x)))

    def score(self, text, state):
        pooled = F.normalize(self.pool_state(text, state), dim=-1)  # [Nv, Nt, D]
        return torch.einsum("td,vtd->tv", F.normalize(text, dim=-1), pooled)

    def forward(self, frames, mask=None, text=None):
        if text is None:
            raise ValueError("xpool pools frames conditioned on a text; pass text features")
        return self.pool_state(text, self.video_state(frames, mask))


def build_fusion(cfg: FusionConfig, dim: int) -> FusionHead:
    head = FUSION_HEADS.get(cfg.name)
    check_options(cfg, head.options, "model.fusion", cfg.name)
    return head(dim, cfg)
