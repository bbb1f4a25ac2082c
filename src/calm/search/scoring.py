"""Exact scores of one query against stored video rows, as `calm eval` computes them.

Evaluation (`calm.model.scoring.similarity_matrix`) scores a text and a video as the fusion
head's cosine, `head.score(text, head.video_state(frames))`, plus, in score mode
`anchor_agreement`, w * BC(S_p-hat(video), S_p(text)): the Bhattacharyya coefficient of the
VAE's generated anchor distribution and the text's. An index stores the text-free parts in
float32 -- the head's `video_state` and sqrt(S_p-hat) per video -- and this module makes the
same head calls and the same sum on them, so search ranks exactly as evaluation does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

AGREEMENT = "agreement"  # index array: sqrt of the VAE's generated anchor distribution [N, K]


class Scorer:
    """The checkpoint's score for a query feature [D] against rows of stored video state."""

    def __init__(self, head: nn.Module, mode: str = "base", anchor_weight: float = 0.0,
                 text_agreement=None):
        if mode not in ("base", "anchor_agreement"):
            raise ValueError(f"score mode must be base or anchor_agreement, got {mode!r}")
        if mode == "anchor_agreement" and text_agreement is None:
            raise ValueError("score mode anchor_agreement needs the text side (a model with a VAE)")
        self.head = head.eval()
        self.mode = mode
        self.anchor_weight = float(anchor_weight)
        self._text_agreement = text_agreement
        self.device = next(iter(head.parameters()), torch.empty(0)).device

    @classmethod
    def from_model(cls, model) -> Scorer:
        """The score `calm.load(...).score` computes for this `CalmModel`."""
        score = model.cfg.model.score
        if score.mode != "anchor_agreement":
            return cls(model.model.fusion)
        if not model.model.has_vae:
            raise ValueError("score mode 'anchor_agreement' needs a model with a VAE")

        def text_agreement(text: torch.Tensor) -> torch.Tensor:
            with model.model.evaluation_anchors():
                return model.model.text_anchor_probs(text, model.device).sqrt()

        return cls(model.model.fusion, score.mode, score.anchor_weight, text_agreement)

    @property
    def needs_agreement(self) -> bool:
        return self.mode == "anchor_agreement"

    def score(self, query: torch.Tensor, state: dict[str, torch.Tensor],
              agreement: np.ndarray | None = None) -> np.ndarray:
        """Scores [n] of `query` [D] against n videos' state (and their sqrt(S_p-hat) [n, K])."""
        return self.score_many(query[None], state, agreement)[0]

    @torch.no_grad()
    def score_many(self, queries: torch.Tensor, state: dict[str, torch.Tensor],
                   agreement: np.ndarray | None = None) -> np.ndarray:
        """Scores [Q, n] of queries [Q, D] against n videos (benchmarks score all at once)."""
        text = queries.float().to(self.device)
        state = {k: v.to(self.device) for k, v in state.items()}
        out = self.head.score(text, state).float().cpu()
        if self.needs_agreement:
            if agreement is None:
                raise ValueError("this index stores no anchor agreement; rebuild it with calm index")
            text_side = self._text_agreement(text).float().cpu()
            out = out + self.anchor_weight * (
                text_side @ torch.from_numpy(np.asarray(agreement, np.float32)).t())
        return out.numpy()

    @torch.no_grad()
    def frame_weights(self, query: torch.Tensor, state: dict[str, torch.Tensor]) -> np.ndarray | None:
        """[n, T] weights each video's frames get in the embedding the head compares `query`
        with; None for heads that pool without the text."""
        if not self.head.has_frame_weights:
            return None
        state = {k: v.to(self.device) for k, v in state.items()}
        return self.head.frame_weights(query.float()[None].to(self.device), state)[0].cpu().numpy()


def video_agreement(model, frames: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """sqrt(S_p-hat) per video [N, K] float32: the video side of the anchor-agreement term."""
    with model.model.evaluation_anchors():
        generated = model.model.generated_anchor_probs(frames, mask, model.device)
    return generated.sqrt().float().cpu().numpy()
