"""The mechanism numbers of one `calm experiment` run, on its training domain's test split.

Two blocks go into each run's `result.json`:

* `"anchors"`: the anchor diagnostics (`calm.engine.evaluation.anchors`) of the run's own anchors
  (and VAE), as the test evaluation of an anchor model reports them; a model without anchors (the
  `none` baseline) gets the zero-shot block of `calm.demo.run.mechanism_diagnostics` instead:
  V_p and S_p from the grid's anchor prompts encoded by its own text encoder.
* `"uncertainty"`: for a model with a VAE, the AUSE and Spearman rho of sigma and of the
  baselines from `evaluate_checkpoint(..., uncertainty=True)` (video queries, text queries, and
  the synthetic benchmark's ambiguity correlations); None for a model without a VAE, which has no
  sigma. The full block with its curves is kept beside it in `uncertainty.json`.

An anchor model's in-domain test evaluation (with `uncertainty=True` where there is a VAE) gives
both blocks in the same pass as its metrics; a run finished before these blocks existed gets them
from one more evaluation of its best checkpoint, without retraining (`calm.experiments.runs`).
"""

from __future__ import annotations

import json
from pathlib import Path

from calm.data.synthetic.ambiguity import synthetic_metadata_path
from calm.engine.checkpoint import atomic_write, load_model
from calm.engine.evaluation.anchors import (
    anchor_diagnostics,
    fresh_anchors,
    zero_shot_anchor_diagnostics,
)
from calm.engine.evaluation.retrieval import encode_split
from calm.engine.inputs import data_setup
from calm.engine.runtime import pick_device

DIAGNOSTIC_COLUMNS = ("rec_ce", "rec_ce_mu", "rec_ce_marginal", "rec_ce_split_marginal",
                      "rec_ce_uniform", "kl", "active_dims", "entropy_vp", "entropy_sp",
                      "top1_agreement")
DIAGNOSTICS_LEGEND = (
    "rec_ce: the cross-entropy with which the VAE's generation Ŝ_p (its predictive distribution, "
    "the mean over z ~ q(z|V_p)) reconstructs S_p on true pairs; rec_ce_mu: the same decoding z = "
    "mu alone. Bars a VAE that generates from V_p must pass: rec_ce_marginal (always predicting "
    "the training split's mean S_p), rec_ce_split_marginal (this split's own mean S_p, the best "
    "constant) and rec_ce_uniform (ln K). kl: KL(q(z|V_p) || N(0, I)); active_dims: latent "
    "dimensions whose mean varies over videos; entropies in nats; top1_agreement: argmax V_p = "
    "argmax S_p on true pairs (%). Anchor mAP (%): how well V_p (video), S_p (text) and Ŝ_p "
    "(generated) rank the anchors true of the clip / named by the caption. A run without anchors "
    "(the baseline) is measured with the anchor prompts encoded by its own text encoder "
    "(zero-shot: no e_k, no VAE)."
)


def mechanism_diagnostics(checkpoints: dict[str, Path], anchor_cfg,
                          split: str = "test") -> dict[str, dict]:
    """The anchor diagnostics of each run on its training domain's `split`: CALM's own anchors
    and VAE, and for a run without anchors (the baseline) its zero-shot V_p / S_p."""
    device = pick_device("auto")
    out = {}
    for label, ckpt in checkpoints.items():
        model, cfg, _ = load_model(ckpt, device)
        data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                          cfg.data.text_length)
        metadata = synthetic_metadata_path(cfg.data.annotations)
        with fresh_anchors(model):
            emb = encode_split(model, data.split(split), data, cfg.train.eval_batch_size, device)
            if model.anchors is None:
                out[label] = {"source": "zero-shot anchors (no e_k, no VAE)",
                              **zero_shot_anchor_diagnostics(model, anchor_cfg, emb, device,
                                                             metadata)}
            else:
                out[label] = {"source": "trained anchors and VAE",
                              **anchor_diagnostics(model, emb, device, metadata)}
    return out


def diagnostics_table(diagnostics: dict[str, dict]) -> str:
    maps = ("anchor_map_video", "anchor_map_text", "anchor_map_generated")
    head = [*DIAGNOSTIC_COLUMNS, *maps]
    lines = ["| run | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]

    def cell(value) -> str:
        if isinstance(value, dict):
            return f"{value['mAP']:.1f} (chance {value['chance']:.1f})"
        if value is None:
            return "–"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    for label, block in diagnostics.items():
        lines.append(f"| {label} | " + " | ".join(cell(block.get(k)) for k in head) + " |")
    return "\n".join(lines) + "\n"



MECHANISM_BLOCKS = ("anchors", "uncertainty")  # a result.json without one is completed
VIDEO_SCORES = ("sigma",)
VIDEO_BASELINES = ("vp_entropy", "margin", "random")
TEXT_SCORES = ("sigma", "sp_entropy")
TEXT_BASELINES = ("vp_entropy", "margin", "random")


def has_anchors(model) -> bool:
    return getattr(model, "anchors", None) is not None


def has_vae(model) -> bool:
    return getattr(model, "vae", None) is not None


def _numbers(summary: dict) -> dict:
    out = {"ause": summary["ause"], "spearman": summary["spearman"]}
    if "ause_std" in summary:
        out["ause_std"] = summary["ause_std"]
    return out


def _query_numbers(report: dict, scores: tuple[str, ...], baselines: tuple[str, ...]) -> dict:
    return {"n_queries": report["n_queries"], "r1": report["r1"],
            **{name: _numbers(report[name]) for name in scores},
            **{name: _numbers(report["baselines"][name]) for name in baselines}}


def uncertainty_numbers(block: dict) -> dict:
    """AUSE and Spearman of each score and baseline (random with its AUSE spread), by query side,
    and the synthetic ambiguity correlations when the split has them."""
    out = {"video_query": _query_numbers(block, VIDEO_SCORES, VIDEO_BASELINES),
           "text_query": _query_numbers(block["text_query"], TEXT_SCORES, TEXT_BASELINES),
           "tie_rule": block["tie_rule"]}
    if "synthetic" in block:
        out["synthetic"] = {k: v for k, v in block["synthetic"].items() if k != "metadata"}
    return out


def in_domain_blocks(checkpoint: Path, model, evaluated: dict | None, anchor_cfg,
                     split: str = "test", folder: Path | None = None) -> dict:
    """`{"anchors": ..., "uncertainty": ...}` of one run on its training domain's `split`.

    `evaluated`: that split's `evaluate_checkpoint` result, with `uncertainty=True` for a model
    with a VAE (None will do for a model with neither anchors nor VAE); `anchor_cfg`: the run's
    `model.anchors`, whose prompts a model without anchors is measured with; `folder`: where the
    full uncertainty block goes (`uncertainty.json`)."""
    if has_anchors(model):
        source = "trained anchors and VAE" if has_vae(model) else "trained anchors"
        anchors = {"source": source, **evaluated["anchors"]}
    else:
        anchors = mechanism_diagnostics({"run": Path(checkpoint)}, anchor_cfg, split)["run"]
    uncertainty = None
    if has_vae(model):
        full = evaluated["uncertainty"]
        uncertainty = uncertainty_numbers(full)
        if folder is not None:
            atomic_write(folder / "uncertainty.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(full, indent=1)))
    return {"anchors": anchors, "uncertainty": uncertainty}
