"""The video–text core that retrieval and captioning share: CLIP backbone plus CALM's anchor branch.

The anchor branch (`calm.model.anchor_branch`), in the paper's order: anchors P (prompted label
encodings + e_k); V_p from the frame *mean* and S_p from the sentence feature, each a softmax over
scaled cosines to P; the VAE generating S_p-hat from V_p. Which of these exist depends on the alignment objective, so the `none`
baseline carries no unused parameters. `CALM` (retrieval) and `CALMCaptioner` extend this class
with a fusion head or a caption decoder; nothing here is specific to either task.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from calm.config.errors import ConfigError
from calm.config.schema import ModelConfig
from calm.model.anchor_branch import AnchorBranch
from calm.model.anchors import AnchorBank, build_anchors
from calm.model.backbone import CLIPBackbone, build_backbone
from calm.model.losses import ALIGNMENTS, AlignmentObjective, build_alignment
from calm.model.vae import CrossModalVAE


@contextmanager
def config_key(key: str):
    """Turns a KeyError/ValueError raised while building a component into a ConfigError naming `key`."""
    try:
        yield
    except ConfigError:
        raise  # already names its key
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise ConfigError(f"{key}: {message}") from None


@dataclass
class CoreParts:
    backbone: CLIPBackbone
    alignment: AlignmentObjective
    anchors: AnchorBank | None
    vae: CrossModalVAE | None


class VideoTextCore(AnchorBranch, nn.Module):
    """Backbone, alignment objective, anchors and VAE; the encoders here, everything the anchors
    and the VAE compute in `AnchorBranch` (`calm.model.anchor_branch`)."""

    def __init__(self, parts: CoreParts):
        super().__init__()
        self.backbone = parts.backbone
        self.alignment = parts.alignment
        self.anchors = parts.anchors
        self.vae = parts.vae
        if self.alignment.uses_anchors and self.anchors is None:
            raise ValueError(f"alignment {type(self.alignment).__name__} needs an anchor bank")
        if self.alignment.uses_vae and self.vae is None:
            raise ValueError("the 'vae' alignment needs a VAE")

    @staticmethod
    def build_parts(cfg: ModelConfig) -> CoreParts:
        """Builds the shared components by name; a bad name or label file is a ConfigError.

        Anchors and the VAE exist only when the objective uses them (the config refuses a
        score that would need a VAE the objective does not train).
        """
        with config_key("model.alignment.name"):
            alignment = build_alignment(cfg.alignment)
        if cfg.score.mode == "anchor_agreement" and not alignment.uses_vae:
            raise ConfigError(
                f"model.score.mode: 'anchor_agreement' scores with the VAE's generated "
                f"distribution, which alignment {cfg.alignment.name!r} does not train (only an "
                f"objective with a VAE does: "
                f"{[n for n in ALIGNMENTS.names() if ALIGNMENTS.get(n).uses_vae]})")
        backbone = build_backbone(cfg.backbone)
        anchors = None
        if alignment.uses_anchors:
            with config_key("model.anchors.labels"):
                anchors = build_anchors(cfg.anchors, backbone.tokenize, backbone.embed_dim)
        vae = CrossModalVAE(anchors.num_anchors, cfg.vae) if alignment.uses_vae else None
        return CoreParts(backbone, alignment, anchors, vae)

    # ---- encoders -------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_text(tokens)

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone.encode_frames(frames, mask)
