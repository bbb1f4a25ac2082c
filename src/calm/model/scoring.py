"""Text x video ranking scores from cached embeddings, in chunks so memory stays bounded.

A pair's score depends only on that text and that video: the base score is the fusion head's
cosine similarity; `anchor_agreement` adds w * BC(S_p-hat(video), S_p(text)), the Bhattacharyya
coefficient of the VAE's generated distribution and the text's, reported as its own mode.
"""

from __future__ import annotations

import torch

from calm.config.schema import ScoreConfig
from calm.model.retrieval import CALM


def _vae_per_video(model: CALM, frames, mask, chunk: int, of_vp) -> torch.Tensor:
    """`of_vp(V_p)` (a per-video quantity of the VAE) for every video, computed in chunks."""
    anchors = model.anchor_matrix()
    out = []
    for i in range(0, frames.shape[0], chunk):
        logits = model.video_anchor_logits(frames[i : i + chunk], _sl(mask, i, chunk), anchors)
        out.append(of_vp(logits.softmax(-1)).float())
    return torch.cat(out)


@torch.no_grad()
def video_anchor_probs(model: CALM, frames, mask, chunk: int = 256) -> torch.Tensor:
    """S_p-hat for each video, [N_v, K]: the VAE's predictive distribution over z, which depends
    on that video alone (`CrossModalVAE.predictive`)."""
    return _vae_per_video(model, frames, mask, chunk, model.vae.predictive)


@torch.no_grad()
def video_uncertainty(model: CALM, frames, mask, chunk: int = 256) -> torch.Tensor:
    """Mean VAE sigma per video: how many different captions the model expects could fit it."""
    return _vae_per_video(model, frames, mask, chunk,
                          lambda vp: model.vae(vp, sample=False).uncertainty)


@torch.no_grad()
def text_anchor_probs(model: CALM, text: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    anchors = model.anchor_matrix()
    return torch.cat(
        [model.text_anchor_logits(text[i : i + chunk], anchors).softmax(-1).float()
         for i in range(0, text.shape[0], chunk)]
    )


def _sl(mask, start, size):
    return None if mask is None else mask[start : start + size]


@torch.no_grad()
def similarity_matrix(
    model: CALM, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None,
    cfg: ScoreConfig | None = None,
) -> torch.Tensor:
    """Scores [N_texts, N_videos] (float32) for cached sentence and per-frame features.

    Peak extra memory is one chunk: text_chunk x video_chunk x D for text-conditioned heads.
    """
    cfg = cfg or ScoreConfig()
    head = model.fusion
    n_t, n_v = text.shape[0], frames.shape[0]
    out = torch.empty(n_t, n_v, dtype=torch.float32)
    for j in range(0, n_v, cfg.video_chunk):
        state = head.video_state(frames[j : j + cfg.video_chunk], _sl(mask, j, cfg.video_chunk))
        for i in range(0, n_t, cfg.text_chunk):
            block = head.score(text[i : i + cfg.text_chunk], state)
            out[i : i + cfg.text_chunk, j : j + cfg.video_chunk] = block.float().cpu()
    if cfg.mode == "anchor_agreement":
        if model.vae is None:
            raise ValueError("score mode 'anchor_agreement' needs a model with a VAE")
        generated = video_anchor_probs(model, frames, mask).sqrt()
        text_probs = text_anchor_probs(model, text).sqrt()
        for i in range(0, n_t, cfg.text_chunk):
            agreement = text_probs[i : i + cfg.text_chunk] @ generated.t()
            out[i : i + cfg.text_chunk] += cfg.anchor_weight * agreement.cpu()
    return out
