"""What CALM's anchor branch does on a split: is the VAE generating anything, do V_p and S_p agree,
and (on the synthetic benchmark, where the truth is known) do they rank the right anchors?

All numbers come from the split's cached embeddings and the anchor branch's distributions
(`calm.model.anchor_branch`), under the caller's `model.evaluation_anchors()`:
- `rec_ce`: mean over true pairs of -sum_k S_p(text, k) log S_p-hat(video, k), with S_p-hat the
  VAE's predictive distribution E_z[S_p-hat(z)] over z ~ q(z | V_p) (`CrossModalVAE.predictive`,
  32 draws): the reconstruction loss of what the VAE generates. Its floor is the
  mean entropy of S_p (`entropy_sp`). `rec_ce_mu`: the same at z = mu alone, which the decoder,
  trained on sampled z, never saw (it can sit above the marginal while the predictive is below).
- `rec_ce_uniform` = ln K: what a decoder predicting the uniform distribution scores;
  `rec_ce_marginal`: what always predicting the training split's mean S_p scores (the best a
  decoder that ignores z can do), over the last complete training epoch and the current one;
  `rec_ce_split_marginal`: always predicting this split's own mean S_p, the best any constant
  can score here (a bar no decoder that ignores z can pass). A VAE that learns from V_p goes
  below all three.
- `kl`: mean KL(q(z | V_p) || N(0, I)) of the distribution that generates at test time (the
  conditional VAE's: its prior p(z | V_p)); `active_dims`: latent dimensions whose mean varies
  across the split's videos (variance > 0.01), the usual posterior-collapse count.
- `entropy_vp`, `entropy_sp` (nats), `top1_agreement`: argmax V_p = argmax S_p on true pairs (%).
- `anchor_map_video` / `anchor_map_text` (a split with ground truth: the synthetic benchmark):
  mean average precision (%) with which V_p ranks the anchors true of the clip and S_p the
  anchors its caption names (`SplitAnnotations.truth`, `calm.data.truth`), with the chance level
  of a random order beside it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from calm.data.errors import DataError
from calm.data.truth import GroundTruth
from calm.engine.evaluation.retrieval import SplitEmbeddings
from calm.metrics.ranking import mean_average_precision
from calm.metrics.uncertainty import entropy
from calm.model.anchor_branch import AnchorDistributions
from calm.model.vae import ACTIVE_VARIANCE, kl_to_standard_normal


def _cross_entropy(target: torch.Tensor, pred: torch.Tensor) -> float:
    return float(-(target * pred.clamp_min(1e-12).log()).sum(dim=-1).mean())


def anchor_diagnostics(model, emb: SplitEmbeddings, device,
                       truth: GroundTruth | None = None) -> dict:
    """The `"anchors"` block of the metrics JSON (see the module docstring)."""
    model.eval()
    d = model.anchor_distributions(emb.text, emb.frames, emb.mask, device)
    pairs = torch.as_tensor(emb.text_to_video)  # the true video of each text
    vp_pairs, sp = d.vp[pairs], d.sp
    k = sp.shape[1]
    out: dict = {
        "num_anchors": k,
        "rec_ce_uniform": math.log(k),
        "entropy_vp": float(entropy(d.vp).mean()),
        "entropy_sp": float(entropy(sp).mean()),
        "top1_agreement": float(100.0 * (vp_pairs.argmax(-1) == sp.argmax(-1)).float().mean()),
        "rec_ce": None, "rec_ce_mu": None, "rec_ce_marginal": None,
        "rec_ce_split_marginal": _cross_entropy(sp, sp.mean(dim=0, keepdim=True)),
        "kl": None, "active_dims": None,
    }
    marginal = model.text_marginal()
    if marginal is not None:
        out["rec_ce_marginal"] = _cross_entropy(sp, marginal.cpu()[None, :])
    if d.s_hat is not None:
        out["rec_ce"] = _cross_entropy(sp, d.s_hat[pairs])
        out["rec_ce_mu"] = _cross_entropy(sp, d.s_hat_mu[pairs])
        out["kl"] = float(kl_to_standard_normal(d.mu, d.logvar).mean())
        out["active_dims"] = int((d.mu.var(dim=0) > ACTIVE_VARIANCE).sum())
        out["latent_dim"] = int(d.mu.shape[1])
    if truth is not None:
        out.update(_anchor_maps(truth, emb, model.anchor_labels, d))
    return out


def _anchor_maps(truth: GroundTruth, emb: SplitEmbeddings, labels,
                 d: AnchorDistributions) -> dict:
    """mAP of V_p against the clips' true anchors and of S_p against the captions' named ones;
    skipped (with the reason) when the anchors are not the synthetic world's labels."""
    captions = [(emb.video_ids[v], text) for v, text in zip(emb.text_to_video, emb.texts)]
    try:
        known = truth.anchor_truth(emb.video_ids, captions, labels)
    except DataError as exc:
        return {"anchor_map_skipped": str(exc)}
    maps = {
        "anchor_map_video": mean_average_precision(d.vp.numpy(), known.video_matrix()),
        "anchor_map_text": mean_average_precision(d.sp.numpy(), known.caption_matrix()),
    }
    if d.s_hat is not None:
        pairs = np.asarray(emb.text_to_video)
        maps["anchor_map_generated"] = mean_average_precision(d.s_hat.numpy()[pairs],
                                                              known.caption_matrix())
    return maps


def zero_shot_anchor_diagnostics(model, anchor_cfg, emb: SplitEmbeddings, device,
                                 truth: GroundTruth | None = None) -> dict:
    """The same block for a model trained without anchors (the `none` baseline): V_p and S_p
    with the prompts encoded by its own text encoder, no offsets e_k and no VAE. It shows what
    contrastive training alone does to the anchor distributions."""
    with model.zero_shot_anchors(anchor_cfg):
        return anchor_diagnostics(model, emb, device, truth)
