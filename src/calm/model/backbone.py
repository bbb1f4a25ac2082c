"""A thin wrapper over an open_clip CLIP: frames -> per-frame features, captions -> sentence features."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.transformer import text_global_pool
from torch import nn

from calm.config.schema import BackboneConfig
from calm.model.clip_weights import (
    hf_architecture,
    load_clip,
    register_calm_configs,
    resolve_quick_gelu,
)


@dataclass(frozen=True)
class Preprocess:
    """What the data side needs to feed this backbone (it must not import the model)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int


class CLIPBackbone(nn.Module):
    def __init__(self, clip: nn.Module, tokenizer, freeze: str = "none"):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.quick_gelu = False  # recorded in calm checkpoints so the architecture rebuilds exactly
        self.architecture: dict | None = None  # an explicit open_clip config (Hugging Face CLIP)
        self.embed_dim = int(clip.text_projection.shape[1]) if isinstance(clip, CLIP) else None
        if self.embed_dim is None:
            self.embed_dim = int(getattr(clip.visual, "output_dim", 0)) or int(
                clip.encode_text(tokenizer(["a"])).shape[-1]
            )
        self.freeze(freeze)

    # ---- settings -------------------------------------------------------------------------------
    @property
    def preprocess(self) -> Preprocess:
        size = self.clip.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        mean = getattr(self.clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        return Preprocess(int(size), tuple(mean), tuple(std), self.context_length)

    @property
    def context_length(self) -> int:
        return int(self.clip.context_length)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def freeze(self, what: str) -> None:
        """Freezes a tower; the logit scale stays trainable unless everything is frozen."""
        towers = {"none": (), "all": ("visual", "text"), "vision": ("visual",), "text": ("text",)}
        for name, param in self.clip.named_parameters():
            is_visual = name.startswith("visual.")
            frozen = ("visual" in towers[what] and is_visual) or (
                "text" in towers[what] and not is_visual and name != "logit_scale"
            )
            if what == "all" and name == "logit_scale":
                frozen = True
            param.requires_grad_(not frozen)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> tuple[str, ...]:
        """open_clip's additive embeddings (text and image positions, the class token, the
        attention pool's positions of ResNet towers): tables, not weight matrices."""
        return tuple(f"clip.{name}" for name, _ in self.clip.named_parameters()
                     if name.endswith(("positional_embedding", "class_embedding")))

    # ---- text -----------------------------------------------------------------------------------
    def tokenize(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        length = min(context_length or self.context_length, self.context_length)
        return self.tokenizer(list(texts), context_length=length)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sentence features (the EOT-token projection), [N, L] -> [N, D].

        Trailing all-padding columns are cut first: with a causal mask they cannot change the EOT
        feature, and short prompts (anchors) then cost a fraction of the full context.
        """
        if not isinstance(self.clip, CLIP):
            if tokens.shape[1] < self.context_length:
                tokens = nn.functional.pad(tokens, (0, self.context_length - tokens.shape[1]))
            return self.clip.encode_text(tokens)
        tokens = trim_padding(tokens)
        clip = self.clip
        length = tokens.shape[1]
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:length].to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = text_global_pool(x, tokens, clip.text_pool_type, getattr(clip, "text_eos_id", None))
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    # ---- video ----------------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame features [B, T, 3, H, W] -> [B, T, D]; padded frames are skipped and left zero."""
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])
        if mask is None or bool(mask.all()):
            return self.clip.encode_image(flat).reshape(b, t, -1)
        keep = mask.reshape(-1)
        feats = self.clip.encode_image(flat[keep])
        out = feats.new_zeros(b * t, feats.shape[-1])
        out = out.index_copy(0, keep.nonzero().squeeze(1), feats)
        return out.reshape(b, t, -1)


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drops trailing columns that are padding (id 0) in every row; keeps at least one column."""
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :length]


def build_backbone(cfg: BackboneConfig) -> CLIPBackbone:
    register_calm_configs()
    architecture = cfg.architecture or hf_architecture(cfg.checkpoint, cfg.checkpoint_format)
    quick_gelu = resolve_quick_gelu(cfg.checkpoint, cfg.checkpoint_format, cfg.quick_gelu,
                                    architecture)
    clip = load_clip(cfg.name, cfg.checkpoint, cfg.checkpoint_format, quick_gelu, architecture)
    # An explicit architecture (a Hugging Face CLIP) uses CLIP's BPE: ViT-B-32's tokenizer.
    known = architecture is None and cfg.name in open_clip.list_models()
    tokenizer = open_clip.get_tokenizer(cfg.name if known else "ViT-B-32")
    if hasattr(tokenizer, "context_length"):
        tokenizer.context_length = int(clip.context_length)
    backbone = CLIPBackbone(clip, tokenizer, freeze=cfg.freeze)
    backbone.quick_gelu = quick_gelu
    backbone.architecture = architecture  # stored in calm checkpoints: rebuilds without the folder
    if cfg.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    return backbone
