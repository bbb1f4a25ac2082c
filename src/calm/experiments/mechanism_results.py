"""The mechanism and uncertainty tables of `calm experiment`, from the runs' in-domain blocks.

Per cell, over the seeds whose `result.json` carries the block (`calm.experiments.mechanism`):
the anchor diagnostics as mean ± std (anchor mAP: its `mAP` field, with the chance level beside
it), and for a cell whose model has a VAE the AUSE and Spearman rho of sigma and of each baseline,
plus in how many seeds sigma's AUSE lies below each baseline's. A number a cell does not have (the
`none` baseline has no VAE, so no rec_ce or kl) is None in the JSON and "–" in the tables.
"""

from __future__ import annotations

from typing import Any

from calm.experiments.mechanism import (
    DIAGNOSTIC_COLUMNS,
    DIAGNOSTICS_LEGEND,
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


def _below(blocks: dict[int, dict], side: str, baseline: str) -> dict:
    """In how many seeds sigma's AUSE is below `baseline`'s (random: also by more than
    SPREADS_BEYOND_RANDOM times the AUSE spread of random orders)."""
    seeds = list(blocks)
    below = [s for s in seeds if blocks[s][side]["sigma"]["ause"]
             < blocks[s][side][baseline]["ause"]]
    out = {"seeds": len(seeds), "seeds_below": len(below), "every_seed": len(below) == len(seeds)}
    if baseline == "random":
        clear = [s for s in seeds if blocks[s][side]["sigma"]["ause"]
                 < blocks[s][side]["random"]["ause"]
                 - SPREADS_BEYOND_RANDOM * blocks[s][side]["random"]["ause_std"]]
        out["seeds_below_beyond_spread"] = len(clear)
    return out


def uncertainty_summary(runs: dict[int, dict]) -> dict | None:
    """seed -> result: mean ± std of each AUSE and Spearman rho, and sigma against each
    baseline seed by seed; None for a cell without a VAE (no run has the block)."""
    blocks = {seed: r["uncertainty"] for seed, r in runs.items() if r.get("uncertainty")}
    if not blocks:
        return None
    out: dict[str, Any] = {"seeds": list(blocks)}
    for side, scores, baselines in QUERY_SIDES:
        numbers = {}
        for name in (*scores, *baselines):
            numbers[name] = {m: _stats([b[side][name][m] for b in blocks.values()])
                             for m in ("ause", "spearman")}
        numbers["random"]["ause_std"] = _stats([b[side]["random"]["ause_std"]
                                                for b in blocks.values()])
        out[side] = {
            "scores": list(scores), "baselines": list(baselines), "numbers": numbers,
            "r1": _stats([b[side]["r1"] for b in blocks.values()]),
            "sigma_below": {name: _below(blocks, side, name) for name in baselines},
        }
    synthetic = [b["synthetic"] for b in blocks.values() if b.get("synthetic")]
    if synthetic:
        out["synthetic"] = {
            key: {measure: _stats([s[key][measure] for s in synthetic])
                  for measure in synthetic[0][key]}
            for key in ("spearman_sigma", "spearman_vp_entropy")
        }
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
        f"## Mechanism on `{summary['trained_on']}` test (in-domain), mean ± std over seeds", "",
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


def _below_line(side: dict, label: str) -> str:
    parts = []
    for name in side["baselines"]:
        b = side["sigma_below"][name]
        text = (f"{name}'s in {b['seeds_below']} of {b['seeds']} seeds "
                f"(every seed: {'yes' if b['every_seed'] else 'no'})")
        if name == "random":
            text += (f", by more than {SPREADS_BEYOND_RANDOM} random spreads in "
                     f"{b['seeds_below_beyond_spread']}")
        parts.append(text)
    return f"- {label}: sigma's AUSE is below " + "; ".join(parts) + "."


def uncertainty_markdown(summary: dict) -> list[str]:
    """A table per cell with a VAE: AUSE and Spearman(score, rank) of sigma and its baselines."""
    lines: list[str] = []
    for name, row in summary["cells"].items():
        u = row.get("uncertainty")
        if not u:
            continue
        lines += [
            f"## Uncertainty of `{name}` on `{summary['trained_on']}` test ({len(u['seeds'])} "
            "seeds)", "",
            "AUSE: area between a score's sparsification curve (R@1 as the most uncertain "
            "queries are dropped) and the oracle's; lower is better. Spearman(score, rank of the "
            "true match): positive when more uncertain queries find their match further down. "
            "Baselines: "
            "the entropy of V_p, the negative margin between the two best candidates, and a "
            "random order (± its AUSE spread over permutations).", "",
            "| query | score | AUSE | Spearman(score, rank) |", "|---|---|---|---|",
        ]
        for side_key, label in (("video_query", "video"), ("text_query", "text")):
            side = u[side_key]
            for score in (*side["scores"], *side["baselines"]):
                n = side["numbers"][score]
                ause = _fmt(n["ause"], 2)
                if score == "random":
                    ause += f" (spread {_fmt(n['ause_std'], 2)})"
                kind = " (baseline)" if score in side["baselines"] else ""
                lines.append(f"| {label} | {score}{kind} | {ause} | {_fmt(n['spearman'], 3)} |")
        lines += ["", _below_line(u["video_query"], "Video queries"),
                  _below_line(u["text_query"], "Text queries (sigma of the true video)")]
        if u.get("synthetic"):
            for key, what in (("spearman_sigma", "sigma"), ("spearman_vp_entropy", "V_p entropy")):
                corr = ", ".join(f"{m} {_fmt(s, 3)}" for m, s in u["synthetic"][key].items())
                lines.append(f"- Spearman({what}, the clip's ambiguity as generated): {corr}.")
        lines.append("")
    return lines
