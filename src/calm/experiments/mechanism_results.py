"""The mechanism and uncertainty tables of `calm experiment`, from the runs' in-domain blocks.

Per cell, over the seeds whose `result.json` carries the block (`calm.experiments.mechanism`):
the anchor diagnostics as mean ± std (anchor mAP: its `mAP` field, with the chance level beside
it), and for a cell whose model has a VAE the AUROC (wrong top-1 answers), AUSE, AURC and Spearman
rho of every VAE signal and baseline, the ECE of the top-1 confidence, the signals' correlation
with the synthetic ambiguity, and in how many seeds each signal beats the margin's AUROC. A number a cell does not have (the
`none` baseline has no VAE, so no rec_ce or kl) is None in the JSON and "–" in the tables.
"""

from __future__ import annotations

from typing import Any

from calm.experiments.mechanism import (
    DIAGNOSTIC_COLUMNS,
    DIAGNOSTICS_LEGEND,
    SUMMARY_NUMBERS,
    TEXT_BASELINES,
    TEXT_SCORES,
    VIDEO_BASELINES,
    VIDEO_SCORES,
)
from calm.metrics.bootstrap import mean_std

ANCHOR_MAPS = ("anchor_map_video", "anchor_map_text", "anchor_map_generated")
QUERY_SIDES = (("video_query", VIDEO_SCORES, VIDEO_BASELINES),
               ("text_query", TEXT_SCORES, TEXT_BASELINES))
SPREADS_BEYOND_RANDOM = 2  # random_summary: an AUSE within ~2 spreads of random's is not better
DASH = "–"


def _stats(values: list) -> dict | None:
    """mean ± std over the values that exist (a constant score has no Spearman rho: None)."""
    present = [v for v in values if v is not None]
    return mean_std(present) if present else None


def anchors_summary(runs: dict[int, dict]) -> dict | None:
    """seed -> result: the mean ± std of each anchor diagnostic over the seeds that have one."""
    blocks = {seed: r["anchors"] for seed, r in runs.items() if r.get("anchors")}
    if not blocks:
        return None
    out: dict[str, Any] = {
        "seeds": list(blocks),
        "source": sorted({b.get("source", "") for b in blocks.values()}),
        "numbers": {k: _stats([b.get(k) for b in blocks.values()]) for k in DIAGNOSTIC_COLUMNS},
        "maps": {},
    }
    for key in ANCHOR_MAPS:
        maps = [b[key] for b in blocks.values() if isinstance(b.get(key), dict)]
        out["maps"][key] = {
            "mAP": mean_std([m["mAP"] for m in maps]),
            "chance": mean_std([m["chance"] for m in maps])["mean"],
            "n": maps[0]["n"],
        } if maps else None
    return out


def _ause_beyond_random(side: dict, name: str) -> bool:
    return side[name]["ause"] < (side["random"]["ause"]
                                 - SPREADS_BEYOND_RANDOM * side["random"]["ause_std"])


def _beats(blocks: dict[int, dict], side: str, name: str) -> dict:
    """Seed by seed: does the score's AUROC exceed the margin's, and is its AUSE below random's
    by more than SPREADS_BEYOND_RANDOM spreads of random orders?"""
    seeds = list(blocks)
    auroc = [s for s in seeds if (blocks[s][side][name].get("auroc") or 0)
             > (blocks[s][side]["margin"].get("auroc") or 0)]
    beyond = [s for s in seeds if _ause_beyond_random(blocks[s][side], name)]
    return {"seeds": len(seeds), "auroc_above_margin": len(auroc),
            "ause_below_random_beyond_spread": len(beyond)}


def _synthetic(block: dict) -> dict:
    """The ambiguity correlations by score (result.json files written before every signal was
    measured name only sigma and the V_p entropy)."""
    if "spearman" in block:
        return block["spearman"]
    return {"sigma": block["spearman_sigma"], "vp_entropy": block["spearman_vp_entropy"]}


def uncertainty_summary(runs: dict[int, dict]) -> dict | None:
    """seed -> result: mean ± std of each score's AUSE, Spearman rho, AUROC and AURC, the top-1
    confidence's ECE, and each score against the margin and random seed by seed; None for a
    cell without a VAE (no run has the block)."""
    blocks = {seed: r["uncertainty"] for seed, r in runs.items() if r.get("uncertainty")}
    if not blocks:
        return None
    out: dict[str, Any] = {"seeds": list(blocks)}
    for side, scores, baselines in QUERY_SIDES:
        present = [b[side] for b in blocks.values()]
        scores = tuple(n for n in scores if all(n in p for p in present))
        baselines = tuple(n for n in baselines if all(n in p for p in present))
        numbers = {}
        for name in (*scores, *baselines):
            numbers[name] = {m: _stats([p[name].get(m) for p in present])
                             for m in SUMMARY_NUMBERS}
        numbers["random"]["ause_std"] = _stats([p["random"]["ause_std"] for p in present])
        out[side] = {
            "scores": list(scores), "baselines": list(baselines), "numbers": numbers,
            "r1": _stats([p["r1"] for p in present]),
            "ece": _stats([p.get("ece") for p in present]),
            "oracle_aurc": _stats([p.get("oracle_aurc") for p in present]),
            "beats": {name: _beats(blocks, side, name)
                      for name in (*scores, *baselines) if name not in ("margin", "random")},
        }
    synthetic = [_synthetic(b["synthetic"]) for b in blocks.values() if b.get("synthetic")]
    if synthetic:
        names = [n for n in synthetic[0] if all(n in s for s in synthetic)]
        out["synthetic"] = {name: {measure: _stats([s[name][measure] for s in synthetic])
                                   for measure in synthetic[0][name]} for name in names}
    return out


def _fmt(stats: dict | None, digits: int) -> str:
    if stats is None:
        return DASH
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


NUMBER_DIGITS = {"active_dims": 1, "top1_agreement": 1}  # the rest: nats, 3 decimals


def anchors_markdown(summary: dict) -> list[str]:
    """One table, a column per cell: the anchor diagnostics on the training domain's test split."""
    cells = {name: row["anchors"] for name, row in summary["cells"].items() if row.get("anchors")}
    if not cells:
        return []
    names = list(cells)
    lines = [
        f"## Mechanism on `{summary['trained_on']}` {summary.get('split', 'test')} (in-domain), "
        "mean ± std over seeds", "",
        DIAGNOSTICS_LEGEND + f" {DASH}: the cell has no such number.", "",
        "| number | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| seeds | " + " | ".join(str(len(cells[n]["seeds"])) for n in names) + " |",
        "| source | " + " | ".join("; ".join(cells[n]["source"]) for n in names) + " |",
    ]
    for key in DIAGNOSTIC_COLUMNS:
        digits = NUMBER_DIGITS.get(key, 3)
        lines.append(f"| {key} | " + " | ".join(_fmt(cells[n]["numbers"][key], digits)
                                               for n in names) + " |")
    for key in ANCHOR_MAPS:
        values = [cells[n]["maps"][key] for n in names]
        chances = sorted({round(v["chance"], 1) for v in values if v})
        label = key + (f" (chance {chances[0]:.1f})" if len(chances) == 1 else "")
        shown = [DASH if v is None else _fmt(v["mAP"], 1)
                 + ("" if len(chances) == 1 else f" (chance {v['chance']:.1f})") for v in values]
        lines.append(f"| {label} | " + " | ".join(shown) + " |")
    return [*lines, ""]


def uncertainty_markdown(summary: dict) -> list[str]:
    """A comparison of the cells (AUROC of each score for wrong top-1 answers, video queries),
    then a table per cell with a VAE: AUROC, AUSE, AURC and Spearman(score, rank) of every score
    and baseline, the top-1 confidence's ECE, and the scores' correlation with the synthetic
    ambiguity."""
    cells = {name: row["uncertainty"] for name, row in summary["cells"].items()
             if row.get("uncertainty")}
    if not cells:
        return []
    split = summary.get("split", "test")
    lines = [f"## Uncertainty on `{summary['trained_on']}` {split}: AUROC for wrong top-1 answers "
             "(video queries), mean ± std over seeds", "",
             "0.5 = chance; the score flags a wrong top-1 answer when it is high.", ""]
    names = list(cells)
    rows = list(dict.fromkeys(n for c in cells.values() for n in
                              (*c["video_query"]["scores"], *c["video_query"]["baselines"])))
    rows = [r for r in rows if r != "random"]
    lines += ["| score | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for score in rows:
        shown = [_fmt(cells[n]["video_query"]["numbers"].get(score, {}).get("auroc"), 3)
                 for n in names]
        lines.append(f"| {score} | " + " | ".join(shown) + " |")
    lines.append("")
    for name, u in cells.items():
        lines += [
            f"## Uncertainty of `{name}` on `{summary['trained_on']}` {split} ({len(u['seeds'])} "
            "seeds)", "",
            "AUROC: how well the score tells wrong top-1 answers from right ones (0.5 = chance). "
            "AUSE: area between the score's sparsification curve (R@1 as the most uncertain "
            "queries are dropped) and the oracle's; lower is better. AURC: the top-1 error (%) "
            "averaged over every coverage when only the least uncertain queries are answered; "
            "lower is better, random = 100 − R@1. Spearman(score, rank of the true match). "
            "Baselines: the entropy of V_p, the negative margin between the two best "
            "candidates, the negative softmax probability of the best one, and a random order "
            "(± its AUSE spread over permutations).", "",
            "| query | score | AUROC | AUSE | AURC | Spearman(score, rank) |",
            "|---|---|---|---|---|---|",
        ]
        for side_key, label in (("video_query", "video"), ("text_query", "text")):
            side = u[side_key]
            for score in (*side["scores"], *side["baselines"]):
                n = side["numbers"][score]
                ause = _fmt(n["ause"], 2)
                if score == "random":
                    ause += f" (spread {_fmt(n['ause_std'], 2)})"
                kind = " (baseline)" if score in side["baselines"] else ""
                lines.append(f"| {label} | {score}{kind} | {_fmt(n['auroc'], 3)} | {ause} | "
                             f"{_fmt(n['aurc'], 2)} | {_fmt(n['spearman'], 3)} |")
        lines.append("")
        for side_key, label in (("video_query", "Video queries"), ("text_query", "Text queries")):
            side = u[side_key]
            lines.append(f"- {label}: R@1 {_fmt(side['r1'], 1)}, oracle AURC "
                         f"{_fmt(side['oracle_aurc'], 2)}, ECE of the top-1 softmax "
                         f"probability {_fmt(side['ece'], 2)} %.")
            beats = side["beats"]
            if beats:
                seeds = next(iter(beats.values()))["seeds"]
                above = ", ".join(f"{k} {v['auroc_above_margin']}" for k, v in beats.items())
                clear = ", ".join(f"{k} {v['ause_below_random_beyond_spread']}"
                                  for k, v in beats.items())
                lines.append(f"  Seeds (of {seeds}) where the AUROC beats the margin's: {above}; "
                             f"where the AUSE is below random's by more than "
                             f"{SPREADS_BEYOND_RANDOM} spreads: {clear}.")
        if u.get("synthetic"):
            measures = list(next(iter(u["synthetic"].values())))
            lines += ["", "Spearman(score, the clip's ambiguity as generated):", "",
                      "| score | " + " | ".join(measures) + " |",
                      "|---|" + "---|" * len(measures)]
            for score, corr in u["synthetic"].items():
                lines.append(f"| {score} | " + " | ".join(_fmt(corr[m], 3) for m in measures)
                             + " |")
        lines.append("")
    return lines
