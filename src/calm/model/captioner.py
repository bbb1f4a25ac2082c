"""Video captioning with CALM: the CALM video side feeding a transformer caption decoder.

The video side is built exactly as `CALM.from_config` builds it (CLIP backbone, anchors, VAE and
alignment objective chosen by `model.alignment`, so `none` is the plain captioning baseline and
the ablations swap only the objective). Per-frame CLIP features are projected to the decoder
width and form the memory of a causal transformer decoder over CLIP's BPE vocabulary, whose
output projection is tied to its token embedding. L = token cross-entropy + the alignment terms,
where the caption's own anchor distribution S_p (from the CLIP text encoder) is the target, as in
retrieval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from calm.config.errors import ConfigError
from calm.config.schema import CaptionConfig, ModelConfig
from calm.model.anchor_branch import AnchorOutput
from calm.model.backbone import trim_padding
from calm.model.core import CoreParts, VideoTextCore
from calm.model.decoding import Hypothesis, search
from calm.model.losses import IGNORE_INDEX


@dataclass
class CaptionOutput:
    logits: torch.Tensor  # [B, L'-1, V] next-token logits (L' = L without all-padding columns)
    targets: torch.Tensor  # [B, L'-1] tokens[:, 1:], IGNORE_INDEX after each caption's end token
    frames: torch.Tensor  # per-frame backbone features [B, T, D]
    frame_mask: torch.Tensor  # [B, T]
    anchors: AnchorOutput | None = None


def caption_targets(tokens: torch.Tensor, eot: int) -> torch.Tensor:
    """tokens[:, 1:] with every position after the first end token set to IGNORE_INDEX.

    Padding is recognised by position, not by id: CLIP pads with id 0, which is also the real
    token "!", so `ignore_index=0` would silently drop exclamation marks from the loss.
    """
    targets = tokens[:, 1:]
    is_eot = (targets == eot).long()
    after = (is_eot.cumsum(dim=1) - is_eot) > 0
    return targets.masked_fill(after, IGNORE_INDEX)


def sinusoidal_positions(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed frame-order encoding: parameter-free, so any number of frames works."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out.to(dtype or torch.float32)


class CaptionDecoder(nn.Module):
    """Causal transformer decoder over CLIP BPE tokens with cross-attention to frame features."""

    def __init__(self, vocab_size: int, feature_dim: int, cfg: CaptionConfig):
        super().__init__()
        self.max_length = cfg.max_length
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.max_length, cfg.width))
        self.frame_proj = nn.Linear(feature_dim, cfg.width)
        self.frame_norm = nn.LayerNorm(cfg.width)
        layer = nn.TransformerDecoderLayer(
            cfg.width, cfg.heads, dim_feedforward=4 * cfg.width, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerDecoder(layer, cfg.layers)
        self.ln_final = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def no_weight_decay(self) -> tuple[str, ...]:
        """The token positions are an additive embedding, not a weight matrix."""
        return ("positional_embedding",)

    def memory(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame features [B, T, D] -> decoder memory [B, T, W] (projection + frame order)."""
        x = self.frame_proj(frames)
        return self.frame_norm(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype))

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Next-token logits [N, t, V] for token prefixes [N, t] attending to memory [N, T, W]."""
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the decoder's max_length {self.max_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        pad = None if memory_mask is None else ~memory_mask.bool()
        x = self.layers(x, memory, tgt_mask=causal, tgt_is_causal=True,
                        memory_key_padding_mask=pad)
        return self.ln_final(x) @ self.token_embedding.weight.t()


class CALMCaptioner(VideoTextCore):
    def __init__(self, parts: CoreParts, decoder: CaptionDecoder, cfg: CaptionConfig):
        super().__init__(parts)
        self.decoder = decoder
        self.cfg = cfg
        tok = self.backbone.tokenizer
        missing = [a for a in ("sot_token_id", "eot_token_id", "decode") if not hasattr(tok, a)]
        if missing:
            raise ValueError(f"captioning needs open_clip's BPE tokenizer; {type(tok).__name__} "
                             f"lacks {missing}")
        self.sot = int(tok.sot_token_id)
        self.eot = int(tok.eot_token_id)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> CALMCaptioner:
        """Builds the video side as CALM does; a bad name or label file is a ConfigError."""
        if cfg.anchors.video_source != "frame_mean":
            raise ConfigError("model.anchors.video_source: captioning has no fusion head to take "
                              "a fused video from; use frame_mean")
        parts = cls.build_parts(cfg)
        tok = parts.backbone.tokenizer
        vocab = getattr(tok, "vocab_size", None) or len(getattr(tok, "encoder", ()))
        if not vocab:
            raise ConfigError(f"model.backbone.name: {cfg.backbone.name!r} has no BPE tokenizer "
                              "vocabulary to caption with")
        decoder = CaptionDecoder(int(vocab), parts.backbone.embed_dim, cfg.caption)
        return cls(parts, decoder, cfg.caption)

    @property
    def vocab_size(self) -> int:
        return self.decoder.token_embedding.num_embeddings

    # ---- text -----------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP BPE ids [N, max_length]: sot ... eot, then 0 padding (truncated ones end in eot)."""
        return self.backbone.tokenize(list(texts), context_length=self.cfg.max_length)

    def decode(self, tokens: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text: drops start tokens, stops at the first end token (padding follows)."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        if self.eot in ids:
            ids = ids[: ids.index(self.eot)]
        ids = [i for i in ids if i != self.sot]
        return clean_spaces(self.backbone.tokenizer.decode(ids))

    # ---- video ----------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame features [B, T, 3, H, W] -> [B, T, D]."""
        if mask is not None and not bool(mask.any(dim=1).all()):
            raise ValueError("every video needs at least one real frame (frame_mask row all False)")
        return self.backbone.encode_frames(frames, mask)

    # ---- training forward -----------------------------------------------------------------------
    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, tokens: torch.Tensor, gather=None,
        video_index=None,
    ) -> CaptionOutput:
        """Teacher forcing: logits for tokens[:, 1:] given tokens[:, :-1].

        `gather` and `video_index` are accepted for the training loop's common call and unused:
        the caption loss and the alignment terms are per-sample, so nothing needs the global
        batch.

        Trailing columns that are padding in every row are cut first (they are ignored anyway), so
        logits and targets may be shorter than L - 1; they always match each other.
        """
        tokens = trim_padding(tokens)
        if tokens.shape[1] < 2:
            raise ValueError("captions need at least a start and an end token")
        feats = self.encode_video(frames, frame_mask)
        memory = self.decoder.memory(feats)
        logits = self.decoder(tokens[:, :-1], memory, frame_mask)
        out = CaptionOutput(logits, caption_targets(tokens, self.eot), feats, frame_mask)
        if self.alignment.uses_anchors:
            out.anchors = self._anchor_branch(tokens, feats, frame_mask)
        return out

    def _anchor_branch(self, tokens, feats, frame_mask) -> AnchorOutput:
        """S_p of the caption; its text features need no graph when the target is detached."""
        if self.alignment.cfg.detach_target:
            with torch.no_grad():
                text = self.encode_text(tokens)
        else:
            text = self.encode_text(tokens)
        return self.anchor_branch(text, feats, frame_mask)

    # ---- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, frames: torch.Tensor, mask: torch.Tensor | None = None, beam_size: int | None = None,
        max_length: int | None = None, length_penalty: float | None = None,
    ) -> list[list[Hypothesis]]:
        """Per video, up to `beam_size` hypotheses (text, token ids, score), best first.

        Runs in eval mode (restored afterwards) without gradients. Defaults come from the config;
        beam size 1 is greedy decoding. The start token is never generated.
        """
        beam_size = beam_size or self.cfg.beam_size
        max_length = min(max_length or self.cfg.max_length, self.decoder.max_length)
        penalty = self.cfg.length_penalty if length_penalty is None else length_penalty
        was_training = self.training
        self.eval()
        try:
            memory = self.decoder.memory(self.encode_video(frames, mask))

            def step(prefix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
                mem_mask = None if mask is None else mask[index]
                logits = self.decoder(prefix, memory[index], mem_mask)[:, -1].float()
                logits[:, self.sot] = -math.inf
                return logits.log_softmax(dim=-1)

            hyps = search(step, frames.shape[0], bos=self.sot, eos=self.eot, beam_size=beam_size,
                          max_length=max_length, length_penalty=penalty, device=frames.device)
        finally:
            self.train(was_training)
        return [[replace(h, text=self.decode(h.tokens)) for h in video] for video in hyps]

    def caption(self, frames: torch.Tensor, mask: torch.Tensor | None = None, **kwargs) -> list[str]:
        """The best hypothesis's text per video."""
        return [video[0].text if video else "" for video in self.generate(frames, mask, **kwargs)]


_SPACE_BEFORE = re.compile(r"\s+([.,!?;:%)\]}]|'(?:s|t|re|ve|m|ll|d)\b|n't\b)")
_SPACE_AFTER = re.compile(r"([(\[{])\s+")


def clean_spaces(text: str) -> str:
    """Undoes the BPE word split: one space between words, none before punctuation/contractions."""
    text = " ".join(text.split())
    return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))
