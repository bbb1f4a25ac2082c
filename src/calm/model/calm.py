"""The CALM model: backbone + temporal fusion for retrieval, and the anchor branch for alignment.

One training step, in order: frames -> per-frame features h (backbone) -> retrieval similarity
through the fusion head; frame mean -> V_p and sentence feature -> S_p over the anchors P; V_p ->
VAE -> S_p-hat. The model returns all of these; `CALMLoss` turns them into loss terms.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from calm.config.errors import ConfigError
from calm.config.schema import ModelConfig
from calm.model.alignment import AlignmentObjective, build_alignment
from calm.model.anchors import AnchorBank, build_anchors
from calm.model.backbone import CLIPBackbone, build_backbone
from calm.model.distributions import anchor_logits
from calm.model.fusion import FUSION_HEADS, FusionHead, build_fusion, masked_mean
from calm.model.losses import symmetric_info_nce
from calm.model.vae import CrossModalVAE, VAEOutput

Gather = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def _config_key(key: str):
    try:
        yield
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise ConfigError(f"{key}: {message}") from None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def check_alignment_parts(alignment: AlignmentObjective, anchors, vae) -> None:
    if alignment.uses_anchors and anchors is None:
        raise ValueError(f"alignment {type(alignment).__name__} needs an anchor bank")
    if alignment.uses_vae and vae is None:
        raise ValueError("the 'vae' alignment needs a VAE")


def build_shared_parts(cfg: ModelConfig, needs_vae: bool = False):
    """Backbone, alignment objective, anchors and VAE: what retrieval and captioning share.

    Anchors and the VAE exist only when the objective (or `needs_vae`) uses them, so the `none`
    baseline carries no unused parameters.
    """
    with _config_key("model.alignment.name"):
        alignment = build_alignment(cfg.alignment)
    backbone = build_backbone(cfg.backbone)
    needs_vae = needs_vae or alignment.uses_vae
    anchors = None
    if alignment.uses_anchors or needs_vae:
        with _config_key("model.anchors.labels"):
            anchors = build_anchors(cfg.anchors, backbone.tokenize, backbone.embed_dim)
    vae = CrossModalVAE(anchors.num_anchors, cfg.vae) if needs_vae else None
    return backbone, alignment, anchors, vae


@dataclass
class AnchorOutput:
    video_logits: torch.Tensor  # s * cos(mean_t h_t, P), [B, K]
    text_logits: torch.Tensor  # s * cos(S, P), [B, K]
    vae: VAEOutput | None = None


@dataclass
class CALMOutput:
    text: torch.Tensor  # local sentence features [B, D]
    frames: torch.Tensor  # local per-frame features [B, T, D]
    frame_mask: torch.Tensor  # [B, T]
    sims: torch.Tensor  # global text x video cosine similarities [N, N]
    anchors: AnchorOutput | None = None
    extras: dict = field(default_factory=dict)


class CALM(nn.Module):
    def __init__(
        self,
        backbone: CLIPBackbone,
        fusion: FusionHead,
        alignment: AlignmentObjective,
        anchors: AnchorBank | None = None,
        vae: CrossModalVAE | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.alignment = alignment
        self.anchors = anchors
        self.vae = vae
        check_alignment_parts(alignment, anchors, vae)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> CALM:
        """Builds every component by name; a bad name or label file is a ConfigError naming the key."""
        with _config_key("model.fusion.name"):
            FUSION_HEADS.get(cfg.fusion.name)
        backbone, alignment, anchors, vae = build_shared_parts(
            cfg, needs_vae=cfg.score.mode == "anchor_agreement"
        )
        return cls(backbone, build_fusion(cfg.fusion, backbone.embed_dim), alignment, anchors, vae)

    # ---- encoders -------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_text(tokens)

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone.encode_frames(frames, mask)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.backbone.logit_scale

    # ---- anchor branch --------------------------------------------------------------------------
    def anchor_matrix(self) -> torch.Tensor:
        return self.anchors(self.backbone.encode_text)

    def video_anchor_logits(self, frames, mask, anchors=None) -> torch.Tensor:
        """The anchor branch always uses the frame mean, whatever the retrieval fusion."""
        anchors = self.anchor_matrix() if anchors is None else anchors
        return anchor_logits(masked_mean(frames, mask), anchors, self.anchors.scale)

    def text_anchor_logits(self, text, anchors=None) -> torch.Tensor:
        anchors = self.anchor_matrix() if anchors is None else anchors
        return anchor_logits(text, anchors, self.anchors.scale)

    def anchor_branch(self, text, frames, mask) -> AnchorOutput:
        anchors = self.anchor_matrix()
        video_logits = self.video_anchor_logits(frames, mask, anchors)
        text_logits = self.text_anchor_logits(text, anchors)
        vae_out = self.vae(video_logits.softmax(dim=-1)) if self.vae is not None else None
        return AnchorOutput(video_logits, text_logits, vae_out)

    # ---- training forward -----------------------------------------------------------------------
    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, tokens: torch.Tensor,
        gather: Gather = _identity,
    ) -> CALMOutput:
        """`gather` concatenates a local tensor across processes (identity on one process)."""
        text = self.encode_text(tokens)
        feats = self.encode_frames(frames, frame_mask)
        sims = self.fusion.similarity(gather(text), gather(feats), gather(frame_mask))
        out = CALMOutput(text, feats, frame_mask, sims)
        if self.alignment.uses_anchors:
            out.anchors = self.anchor_branch(text, feats, frame_mask)
        return out


class CALMLoss(nn.Module):
    """L = L_task + L_align, with L_align from the configured objective (0 for `none`)."""

    def forward(self, model: CALM, out: CALMOutput, targets: torch.Tensor | None = None):
        task = symmetric_info_nce(out.sims, model.logit_scale, targets)
        terms = {"task": task}
        loss = task
        if out.anchors is not None:
            align = model.alignment(out.anchors.video_logits, out.anchors.text_logits, out.anchors.vae)
            terms.update(align)
            loss = loss + align["align"]
        terms["loss"] = loss
        return terms
