"""Is the VAE's sigma informative? Uncertainty scores of a split, measured against retrieval ranks.

From the cached split (`SplitEmbeddings`) and its similarity matrix this computes, per video,
sigma-bar (the mean sigma of q(z | V_p)) and the entropy of V_p; per text, the entropy of S_p;
per query, the margin between its two best candidates. The pure functions in
`calm.metrics.uncertainty` then relate each score to the rank of the query's first true match:

* video as query (v2t): ``sigma`` against the baselines ``vp_entropy``, ``margin`` and ``random``;
* text as query (t2v, under ``"text_query"``): ``sigma`` of the true video, the text's own
  ``sp_entropy``, and the same baselines (``vp_entropy`` of the true video, the text row's margin).

On the synthetic benchmark, sigma-bar is also correlated with each clip's ambiguity as the
generator recorded it (``"synthetic"``; see `calm.data.synthetic.ambiguity`).
"""

from __future__ import annotations

import numpy as np
import torch

from calm.config.errors import ConfigError
from calm.data.truth import GroundTruth
from calm.engine.evaluation.retrieval import SplitEmbeddings
from calm.metrics.retrieval import DEFAULT_TIES, TIE_RULES, hit_rates, ranks_t2v, ranks_v2t
from calm.metrics.uncertainty import (
    FRACTIONS,
    N_BINS,
    entropy,
    spearman,
    top2_margin,
    uncertainty_report,
)


def require_vae(model, what: str = "uncertainty evaluation (calm eval --uncertainty)") -> None:
    """A clear error for a model whose alignment has no VAE, so no sigma to evaluate."""
    if not getattr(model, "has_vae", False):
        raise ConfigError(
            f"{what} needs a model with a VAE (model.alignment.name: vae, or score mode "
            "anchor_agreement); this model has none, so it has no sigma to evaluate"
        )


@torch.no_grad()
def split_uncertainty_scores(model, emb: SplitEmbeddings, device) -> dict[str, np.ndarray]:
    """Per-video ``sigma`` and ``vp_entropy``, per-text ``sp_entropy`` (numpy float64), from one
    pass of the anchor branch over the split."""
    require_vae(model)
    model.eval()
    d = model.anchor_distributions(emb.text, emb.frames, emb.mask, device)
    return {
        "sigma": d.sigma.double().numpy(),
        "vp_entropy": entropy(d.vp),
        "sp_entropy": entropy(d.sp),
    }


def _ambiguity_block(truth: GroundTruth, video_ids: list[str], sigma, vp_entropy) -> dict:
    amb = truth.ambiguity(video_ids)
    return {
        "metadata": str(truth.source),
        "n_clips": len(video_ids),
        "mean": {k: float(amb[k].mean()) for k in truth.measures},
        "spearman_sigma": {k: spearman(sigma, amb[k]) for k in truth.measures},
        "spearman_vp_entropy": {k: spearman(vp_entropy, amb[k]) for k in truth.measures},
    }


def uncertainty_from_scores(
    sim: torch.Tensor | np.ndarray,
    text_to_video: np.ndarray,
    scores: dict[str, np.ndarray],
    ties: str = DEFAULT_TIES,
    n_bins: int = N_BINS,
    fractions=FRACTIONS,
) -> dict:
    """The ``"uncertainty"`` JSON block from per-video / per-text scores and the matrix.

    `scores` holds ``sigma`` and ``vp_entropy`` per video (all columns of `sim`) and
    ``sp_entropy`` per text (rows). Videos without a caption are not queries.
    """
    sim_np = sim.float().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    t2v = np.asarray(text_to_video, dtype=np.int64)
    has_caption = np.bincount(t2v, minlength=sim_np.shape[1]) > 0
    sigma, vp_entropy = scores["sigma"], scores["vp_entropy"]
    # video as query: its candidates are the texts, the matrix's column
    v2t = uncertainty_report(
        ranks_v2t(sim_np, t2v, ties),
        {"sigma": sigma[has_caption]},
        {"vp_entropy": vp_entropy[has_caption],
         "margin": -top2_margin(sim_np, axis=0)[has_caption]},
        n_bins, fractions, hits=hit_rates(sim_np, t2v, "v2t", 1, ties),
    )
    # text as query: its candidates are the videos, the matrix's row
    text_query = uncertainty_report(
        ranks_t2v(sim_np, t2v, ties),
        {"sigma": sigma[t2v], "sp_entropy": scores["sp_entropy"]},
        {"vp_entropy": vp_entropy[t2v], "margin": -top2_margin(sim_np, axis=1)},
        n_bins, fractions, hits=hit_rates(sim_np, t2v, "t2v", 1, ties),
    )
    return {
        **v2t,
        "query": "video",
        "text_query": text_query,
        "fractions": list(fractions),
        "n_bins": n_bins,
        "tie_rule": TIE_RULES[ties],
    }


def evaluate_uncertainty(
    model,
    emb: SplitEmbeddings,
    sim: torch.Tensor,
    device,
    truth: GroundTruth | None = None,
) -> dict:
    """Everything `calm eval --uncertainty` reports (`calm.reports.uncertainty` draws it).

    `truth`: the split's ground truth (`SplitAnnotations.truth`, the synthetic benchmark's);
    when given, sigma-bar is correlated with each evaluated clip's ambiguity.
    """
    scores = split_uncertainty_scores(model, emb, device)
    result = uncertainty_from_scores(sim, emb.text_to_video, scores)
    if truth is not None:
        result["synthetic"] = _ambiguity_block(
            truth, emb.video_ids, scores["sigma"], scores["vp_entropy"]
        )
    return result
