"""What CALM's anchor branch does on a split: is the VAE generating anything, do V_p and S_p agree,
and (on the synthetic benchmark, where the truth is known) do they rank the right anchors?

All numbers come from the split's cached embeddings and fresh anchors (`fresh_anchors`):
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
- `kl`: mean KL(q(z | V_p) || N(0, I)); `active_dims`: latent dimensions whose posterior mean
  varies across the split's videos (variance > 0.01), the usual posterior-collapse count.
- `entropy_vp`, `entropy_sp` (nats), `top1_agreement`: argmax V_p = argmax S_p on true pairs (%).
- `anchor_map_video` / `anchor_map_text` (synthetic benchmark only): mean average precision (%)
  with which V_p ranks the anchors true of the clip and S_p the anchors its caption names
  (`calm.data.synthetic.anchor_truth`), with the chance level of a random order beside it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from calm.data.errors import DataError
from calm.data.synthetic.anchor_truth import anchor_truth
from calm.engine.evaluation.retrieval import SplitEmbeddings
from calm.metrics.ranking import mean_average_precision
from calm.model.anchors import build_anchors
from calm.model.vae import kl_to_standard_normal

ACTIVE_VARIANCE = 0.01


@contextmanager
def fresh_anchors(model):
    """Inside the block the model scores with anchors from its current text encoder; the
    training cache is restored afterwards (a model without anchors is left alone)."""
    anchors = getattr(model, "anchors", None)
    with anchors.fresh_encodings() if anchors is not None else nullcontext():
        yield


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


@torch.no_grad()
def anchor_distributions(model, emb: SplitEmbeddings, device, chunk: int = 256) -> dict:
    """V_p per video, S_p per text, and per video the VAE's predictive S_p-hat (`s_hat`), its
    decoding at z = mu (`s_hat_mu`), mu and logvar."""
    model.eval()
    anchors = model.anchor_matrix()
    vp, sp, s_hat, s_hat_mu, mu, logvar = [], [], [], [], [], []
    for i in range(0, emb.frames.shape[0], chunk):
        frames = emb.frames[i : i + chunk].to(device)
        mask = emb.mask[i : i + chunk].to(device)
        probs = model.video_anchor_logits(frames, mask, anchors).float().softmax(-1)
        vp.append(probs.cpu())
        if model.vae is not None:
            out = model.vae(probs, sample=False)
            s_hat_mu.append(out.probs.float().cpu())
            s_hat.append(model.vae.predictive_from(out.mu, out.logvar).float().cpu())
            mu.append(out.mu.float().cpu())
            logvar.append(out.logvar.float().cpu())
    for i in range(0, emb.text.shape[0], 4 * chunk):
        text = emb.text[i : i + 4 * chunk].to(device)
        sp.append(model.text_anchor_logits(text, anchors).float().softmax(-1).cpu())
    result = {"vp": torch.cat(vp), "sp": torch.cat(sp)}
    if model.vae is not None:
        result.update(s_hat=torch.cat(s_hat), s_hat_mu=torch.cat(s_hat_mu), mu=torch.cat(mu),
                      logvar=torch.cat(logvar))
    return result


def _cross_entropy(target: torch.Tensor, pred: torch.Tensor) -> float:
    return float(-(target * pred.clamp_min(1e-12).log()).sum(dim=-1).mean())


def anchor_diagnostics(model, emb: SplitEmbeddings, device,
                       metadata: str | Path | None = None) -> dict:
    """The `"anchors"` block of the metrics JSON (see the module docstring)."""
    d = anchor_distributions(model, emb, device)
    pairs = torch.as_tensor(emb.text_to_video)  # the true video of each text
    vp_pairs, sp = d["vp"][pairs], d["sp"]
    k = sp.shape[1]
    out: dict = {
        "num_anchors": k,
        "rec_ce_uniform": math.log(k),
        "entropy_vp": float(_entropy(d["vp"]).mean()),
        "entropy_sp": float(_entropy(sp).mean()),
        "top1_agreement": float(100.0 * (vp_pairs.argmax(-1) == sp.argmax(-1)).float().mean()),
        "rec_ce": None, "rec_ce_mu": None, "rec_ce_marginal": None,
        "rec_ce_split_marginal": _cross_entropy(sp, sp.mean(dim=0, keepdim=True)),
        "kl": None, "active_dims": None,
    }
    marginal = model.anchors.text_marginal()
    if marginal is not None:
        out["rec_ce_marginal"] = _cross_entropy(sp, marginal.cpu()[None, :])
    if model.vae is not None:
        out["rec_ce"] = _cross_entropy(sp, d["s_hat"][pairs])
        out["rec_ce_mu"] = _cross_entropy(sp, d["s_hat_mu"][pairs])
        out["kl"] = float(kl_to_standard_normal(d["mu"], d["logvar"]).mean())
        out["active_dims"] = int((d["mu"].var(dim=0) > ACTIVE_VARIANCE).sum())
        out["latent_dim"] = int(d["mu"].shape[1])
    if metadata is not None:
        out.update(_anchor_maps(metadata, emb, model.anchors.labels, d))
    return out


def _anchor_maps(metadata, emb: SplitEmbeddings, labels, d: dict) -> dict:
    """mAP of V_p against the clips' true anchors and of S_p against the captions' named ones;
    skipped (with the reason) when the anchors are not the synthetic world's labels."""
    captions = [(emb.video_ids[v], text) for v, text in zip(emb.text_to_video, emb.texts)]
    try:
        truth = anchor_truth(metadata, emb.video_ids, captions, labels)
    except DataError as exc:
        return {"anchor_map_skipped": str(exc)}
    maps = {
        "anchor_map_video": mean_average_precision(d["vp"].numpy(), truth.video_matrix()),
        "anchor_map_text": mean_average_precision(d["sp"].numpy(), truth.caption_matrix()),
    }
    if "s_hat" in d:
        pairs = np.asarray(emb.text_to_video)
        maps["anchor_map_generated"] = mean_average_precision(d["s_hat"].numpy()[pairs],
                                                              truth.caption_matrix())
    return maps


def zero_shot_anchor_diagnostics(model, anchor_cfg, emb: SplitEmbeddings, device,
                                 metadata: str | Path | None = None) -> dict:
    """The same block for a model trained without anchors (the `none` baseline): V_p and S_p
    with the prompts encoded by its own text encoder, no offsets e_k and no VAE. It shows what
    contrastive training alone does to the anchor distributions."""
    bank = build_anchors(anchor_cfg, model.backbone.tokenize, model.backbone.embed_dim)
    saved = model.anchors
    model.anchors = bank.to(next(model.parameters()).device)
    try:
        return anchor_diagnostics(model, emb, device, metadata)
    finally:
        model.anchors = saved
