"""The CALM retrieval model: the shared video–text core plus a temporal fusion head.

One training step, in order: frames -> per-frame features h (backbone) -> retrieval similarity
through the fusion head; frame mean -> V_p and sentence feature -> S_p over the anchors P; V_p ->
VAE -> S_p-hat. The model returns all of these; `calm.model.losses.CALMLoss` turns them into loss
terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from calm.config.schema import ModelConfig
from calm.model.anchor_branch import AnchorOutput
from calm.model.core import CoreParts, VideoTextCore, config_key
from calm.model.fusion import FUSION_HEADS, FusionHead, build_fusion

Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class CALMOutput:
    text: torch.Tensor  # local sentence features [B, D]
    frames: torch.Tensor  # local per-frame features [B, T, D]
    frame_mask: torch.Tensor  # [B, T]
    sims: torch.Tensor  # global text x video cosine similarities [N, N]
    logit_scale: torch.Tensor  # CLIP's learned log temperature, which InfoNCE scales sims by
    anchors: AnchorOutput | None = None
    video_ids: torch.Tensor | None = None  # global video index of each pair, when given
    extras: dict = field(default_factory=dict)


class CALM(VideoTextCore):
    def __init__(self, parts: CoreParts, fusion: FusionHead):
        super().__init__(parts)
        self.fusion = fusion

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> CALM:
        """Builds every component by name; a bad name or label file is a ConfigError naming the key."""
        with config_key("model.fusion.name"):
            FUSION_HEADS.get(cfg.fusion.name)
        parts = cls.build_parts(cfg)
        return cls(parts, build_fusion(cfg.fusion, parts.backbone.embed_dim))

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.backbone.logit_scale

    def anchor_video_feature(self, frames, mask) -> torch.Tensor:
        """`anchors.video_source: fused` takes the fusion head's text-free video embedding, so
        the alignment term reaches the fusion head too; `frame_mean` is the paper's choice."""
        if self.anchors.video_source == "fused":
            return self.fusion.text_free_embedding(frames, mask)
        return super().anchor_video_feature(frames, mask)

    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, tokens: torch.Tensor,
        gather: Gather = _identity, video_index: torch.Tensor | None = None,
    ) -> CALMOutput:
        """`gather` concatenates a local tensor across processes (identity on one process);
        `video_index` (the dataset's video of each pair) lets the loss see shared videos."""
        text, anchors = self.encode_text_and_anchors(tokens)
        feats = self.encode_frames(frames, frame_mask)
        sims = self.fusion.similarity(gather(text), gather(feats), gather(frame_mask))
        out = CALMOutput(text, feats, frame_mask, sims, self.logit_scale)
        if video_index is not None:
            out.video_ids = gather(video_index)
        if self.alignment.uses_anchors:
            out.anchors = self.anchor_branch(text, feats, frame_mask, anchors)
        return out
