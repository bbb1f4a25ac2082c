"""Text x video ranking scores from cached embeddings, in chunks so memory stays bounded.

A pair's score depends only on that text and that video: the base score is the fusion head's
cosine similarity; `anchor_agreement` adds w * BC(S_p-hat(video), S_p(text)), the Bhattacharyya
coefficient of the VAE's generated distribution and the text's, reported as its own mode (the
distributions come from the anchor branch, `calm.model.anchor_branch`).
"""

from __future__ import annotations

import torch

from calm.config.schema import ScoreConfig
from calm.model.retrieval import CALM


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
        generated = model.generated_anchor_probs(frames, mask).sqrt()
        text_probs = model.text_anchor_probs(text).sqrt()
        for i in range(0, n_t, cfg.text_chunk):
            agreement = text_probs[i : i + cfg.text_chunk] @ generated.t()
            out[i : i + cfg.text_chunk] += cfg.anchor_weight * agreement.cpu()
    return out
