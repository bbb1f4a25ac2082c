"""The mechanism numbers of one `calm experiment` run, on its training domain's test split.

Two blocks go into each run's `result.json`:

* `"anchors"`: the anchor diagnostics (`calm.engine.evaluation.anchors`) of the run's own anchors
  (and VAE), as the test evaluation of an anchor model reports them; a model without anchors (the
  `none` baseline) gets the zero-shot block of `calm.demo.run.mechanism_diagnostics` instead:
  V_p and S_p from the grid's anchor prompts encoded by its own text encoder.
* `"uncertainty"`: for a model with a VAE, the AUSE, Spearman rho, AUROC (wrong top-1 answers)
  and AURC of every VAE signal (`calm.model.anchor_branch.SIGNALS`) and of the baselines from
  `evaluate_checkpoint(..., uncertainty=True)` (video queries, text queries, the top-1
  confidence's ECE, and the synthetic benchmark's ambiguity correlations); None for a model
  without a VAE, which has no sigma. The full block with its curves is kept beside it in `uncertainty.json`.

An anchor model's in-domain test evaluation (with `uncertainty=True` where there is a VAE) gives
both blocks in the same pass as its metrics; a run finished before these blocks existed gets them
from one more evaluation of its best checkpoint, without retraining (`calm.experiments.runs`).
"""

from __future__ import annotations

from pathlib import Path

from calm.io import write_json_atomic
from calm.model.anchor_branch import SIGNALS

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
VIDEO_SCORES = tuple(SIGNALS)  # the VAE's per-video signals
VIDEO_BASELINES = ("vp_entropy", "margin", "top1_prob", "random")
TEXT_SCORES = (*SIGNALS, "sp_entropy")
TEXT_BASELINES = VIDEO_BASELINES
SUMMARY_NUMBERS = ("ause", "spearman", "auroc", "aurc")


def _numbers(summary: dict) -> dict:
    out = {m: summary.get(m) for m in SUMMARY_NUMBERS}
    if "ause_std" in summary:
        out["ause_std"] = summary["ause_std"]
    return out


def _query_numbers(report: dict, scores: tuple[str, ...], baselines: tuple[str, ...]) -> dict:
    out = {"n_queries": report["n_queries"], "r1": report["r1"],
           **{name: _numbers(report[name]) for name in scores if name in report},
           **{name: _numbers(report["baselines"][name]) for name in baselines
              if name in report["baselines"]}}
    if "calibration" in report:
        out["ece"] = report["calibration"]["ece"]
    out["oracle_aurc"] = report["oracle"].get("aurc")
    return out


def uncertainty_numbers(block: dict) -> dict:
    """AUSE, Spearman, AUROC (wrong top-1 answers) and AURC of each signal and baseline (random
    with its AUSE spread), by query side, the top-1 confidence's ECE, and the synthetic
    ambiguity correlations when the split has them."""
    out = {"video_query": _query_numbers(block, VIDEO_SCORES, VIDEO_BASELINES),
           "text_query": _query_numbers(block["text_query"], TEXT_SCORES, TEXT_BASELINES),
           "tie_rule": block["tie_rule"]}
    if "synthetic" in block:
        out["synthetic"] = {k: v for k, v in block["synthetic"].items() if k != "metadata"}
    return out


def in_domain_blocks(model, evaluated: dict, folder: Path | None = None) -> dict:
    """`{"anchors": ..., "uncertainty": ...}` of one run on its training domain's test split.

    `evaluated`: that split's `evaluate_checkpoint` result with `anchor_prompts` (so a model
    without anchors carries its zero-shot block) and, for a model with a VAE, `uncertainty=True`;
    `folder`: where the full uncertainty block goes (`uncertainty.json`)."""
    uncertainty = None
    if model.has_vae:
        full = evaluated["uncertainty"]
        uncertainty = uncertainty_numbers(full)
        if folder is not None:
            write_json_atomic(folder / "uncertainty.json", full, indent=1)
    return {"anchors": evaluated["anchors"], "uncertainty": uncertainty}
