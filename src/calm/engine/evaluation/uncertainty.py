"""Does an uncertainty signal know when retrieval fails? Every signal of a split, measured against
retrieval ranks.

From the cached split (`SplitEmbeddings`) and its similarity matrix this computes, per video,
every VAE signal of `calm.model.anchor_branch.SIGNALS` (sigma over all latent dimensions and
over the active ones, the sum of log sigma, the entropy of S_p-hat, the mutual information
between S_p-hat and z) and the entropy of V_p; per text, the entropy of S_p; per query, the
margin between its two best candidates and the softmax probability of the best one (its top-1
confidence at the model's logit scale). The pure functions in `calm.metrics.uncertainty` then
relate each score to the rank of the query's first true match (bins, Spearman, AUSE, AUROC for
wrong top-1 answers, risk-coverage and AURC), and the top-1 confidence's calibration (ECE):

* video as query (v2t): the VAE signals against the baselines ``vp_entropy``, ``margin``,
  ``top1_prob`` and ``random``;
* text as query (t2v, under ``"text_query"``): the VAE signals of the true video, the text's own
  ``sp_entropy``, and the same baselines (``vp_entropy`` of the true video, the text row's margin
  and top-1 probability).

On the synthetic benchmark each per-video signal is also correlated with each clip's ambiguity
as the generator recorded it (``"synthetic"``; see `calm.data.synthetic.ambiguity`).
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
    calibration,
    entropy,
    spearman,
    top1_probability,
    top2_margin,
    uncertainty_report,
)
from calm.model.anchor_branch import SIGNALS
from calm.model.losses import logit_scale_value


def require_vae(model, what: str = "uncertainty evaluation (calm eval --uncertainty)") -> None:
    """A clear error for a model whose alignment has no VAE, so no sigma to evaluate."""
    if not getattr(model, "has_vae", False):
        raise ConfigError(
            f"{what} needs a model with a VAE (model.alignment.name: vae, or score mode "
            "anchor_agreement); this model has none, so it has no sigma to evaluate"
        )


@torch.no_grad()
def split_uncertainty_scores(model, emb: SplitEmbeddings, device) -> dict[str, np.ndarray]:
    """Per-video VAE signals (`SIGNALS`) and ``vp_entropy``, per-text ``sp_entropy`` (numpy
    float64), from one pass of the anchor branch over the split."""
    require_vae(model)
    model.eval()
    d = model.anchor_distributions(emb.text, emb.frames, emb.mask, device)
    scores = {name: value.double().numpy() for name, value in d.signals().items()}
    scores["vp_entropy"] = entropy(d.vp)
    scores["sp_entropy"] = entropy(d.sp)
    return scores


def video_signals(scores: dict) -> list[str]:
    """The per-video VAE signals present in `scores`, in `SIGNALS` order."""
    return [name for name in SIGNALS if name in scores]


def _ambiguity_block(truth: GroundTruth, video_ids: list[str], scores: dict) -> dict:
    amb = truth.ambiguity(video_ids)
    names = [*video_signals(scores), "vp_entropy"]
    return {
        "metadata": str(truth.source),
        "n_clips": len(video_ids),
        "mean": {k: float(amb[k].mean()) for k in truth.measures},
        "spearman": {name: {k: spearman(scores[name], amb[k]) for k in truth.measures}
                     for name in names},
    }


def uncertainty_from_scores(
    sim: torch.Tensor | np.ndarray,
    text_to_video: np.ndarray,
    scores: dict[str, np.ndarray],
    ties: str = DEFAULT_TIES,
    n_bins: int = N_BINS,
    fractions=FRACTIONS,
    logit_scale: float | None = None,
) -> dict:
    """The ``"uncertainty"`` JSON block from per-video / per-text scores and the matrix.

    `scores` holds ``vp_entropy`` and any VAE signals (`SIGNALS`) per video (all columns of
    `sim`) and ``sp_entropy`` per text (rows). Videos without a caption are not queries.
    `logit_scale` (CLIP's, exp of the log): the top-1 confidence is the softmax probability of
    the best candidate at that scale; it adds the ``top1_prob`` baseline and the
    ``calibration`` block (ECE) per query side.
    """
    sim_np = sim.float().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    t2v = np.asarray(text_to_video, dtype=np.int64)
    has_caption = np.bincount(t2v, minlength=sim_np.shape[1]) > 0
    signals = video_signals(scores)
    vp_entropy = scores["vp_entropy"]

    def side(ranks, own: dict, vp: np.ndarray, axis: int, hits) -> dict:
        baselines = {"vp_entropy": vp, "margin": -top2_margin(sim_np, axis=axis)}
        confidence = None
        if logit_scale is not None:
            confidence = top1_probability(sim_np, logit_scale, axis)
            baselines["top1_prob"] = -confidence
        if axis == 0:  # video queries: only the videos with a caption
            baselines = {k: v if k == "vp_entropy" else v[has_caption]
                         for k, v in baselines.items()}
            confidence = None if confidence is None else confidence[has_caption]
        report = uncertainty_report(ranks, own, baselines, n_bins, fractions, hits=hits)
        if confidence is not None:
            report["calibration"] = {"confidence": "top-1 softmax probability",
                                     "logit_scale": float(logit_scale),
                                     **calibration(confidence, ranks, hits=hits)}
        return report

    # video as query: its candidates are the texts, the matrix's column
    v2t = side(ranks_v2t(sim_np, t2v, ties), {n: scores[n][has_caption] for n in signals},
               vp_entropy[has_caption], 0, hit_rates(sim_np, t2v, "v2t", 1, ties))
    # text as query: its candidates are the videos, the matrix's row
    text_query = side(ranks_t2v(sim_np, t2v, ties),
                      {**{n: scores[n][t2v] for n in signals}, "sp_entropy": scores["sp_entropy"]},
                      vp_entropy[t2v], 1, hit_rates(sim_np, t2v, "t2v", 1, ties))
    return {
        **v2t,
        "query": "video",
        "signals": signals,
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
    when given, every per-video signal is correlated with each evaluated clip's ambiguity.
    """
    scores = split_uncertainty_scores(model, emb, device)
    scale = None
    if getattr(model, "logit_scale", None) is not None:
        scale = logit_scale_value(model.logit_scale)
    result = uncertainty_from_scores(sim, emb.text_to_video, scores, logit_scale=scale)
    if truth is not None:
        result["synthetic"] = _ambiguity_block(truth, emb.video_ids, scores)
    return result
