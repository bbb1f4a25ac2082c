"""`results.json` and `results.md` of `calm experiment`, from the runs' `result.json` files.

Built from whatever runs have finished, so the files are useful while a long grid is still going:
per cell and domain the mean ± std over finished seeds; per cell the t2v R@1 difference to its
reference cell (`Grid.reference`) with a paired bootstrap interval over test queries
(`calm.metrics.bootstrap`), over the seeds both have finished; and per cell the in-domain
mechanism numbers (anchor diagnostics, and for a VAE the uncertainty of sigma:
`calm.experiments.mechanism_results`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from calm.experiments.grid import Cell, Grid, run_folder
from calm.experiments.mechanism_results import (
    anchors_markdown,
    anchors_summary,
    uncertainty_markdown,
    uncertainty_summary,
)
from calm.io import write_json_atomic, write_text_atomic
from calm.metrics.bootstrap import hierarchical_bootstrap, mean_std, paired_bootstrap

METRICS = (("t2v", "R@1"), ("t2v", "R@5"), ("t2v", "MnR"), ("v2t", "R@1"))
COMPARED = "t2v R@1"


def load_results(out: str | Path, grid: Grid) -> dict[tuple[str, int], dict]:
    """(cell name, seed) -> that run's result, for the runs of the grid that have finished."""
    found = {}
    for cell, seed in grid.runs():
        path = run_folder(out, cell, seed) / "result.json"
        if path.is_file():
            found[(cell.name, seed)] = json.loads(path.read_text())
    return found


def _hits_at_1(result: dict, domain: str) -> np.ndarray:
    """Each query's R@1 term in percent (100 for a hit), so that means are R@1."""
    return 100.0 * np.asarray(result["domains"][domain]["t2v_hits_at_1"])


def _compare(grid: Grid, cell: Cell, ref: Cell, results: dict, domains: list[str]) -> dict | None:
    seeds = [s for s in grid.seeds if (cell.name, s) in results and (ref.name, s) in results]
    if not seeds:
        return None
    # floats differ from one CPU model to another, the toy CLIP's included: a comparison whose
    # runs ran on different machines measures the machine too, and says so
    cpus = sorted({results[(name, s)]["machine"]["cpu"] for s in seeds
                   for name in (cell.name, ref.name)})
    out = {"reference": ref.name, "metric": COMPARED, "seeds": seeds, "machines": cpus,
           "domains": {}}
    for domain in domains:
        runs = [results[(name, s)] for s in seeds for name in (cell.name, ref.name)]
        ids = runs[0]["domains"][domain]["text_ids"]
        for run in runs[1:]:
            if run["domains"][domain]["text_ids"] != ids:
                raise ValueError(
                    f"{domain}: runs {cell.name} and {ref.name} (seeds {seeds}) were not evaluated "
                    "on the same test queries; a paired comparison needs the same queries")
        scores = np.stack([_hits_at_1(results[(cell.name, s)], domain) for s in seeds])
        reference = np.stack([_hits_at_1(results[(ref.name, s)], domain) for s in seeds])
        b = grid.bootstrap
        paired = paired_bootstrap(scores, reference, b.resamples, b.confidence, b.seed)
        # runs written before per-query videos were stored: each query is its own video (true
        # of the synthetic benchmark's one query per test video)
        videos = runs[0]["domains"][domain].get("t2v_videos", ids)
        out["domains"][domain] = {
            **paired,
            "hierarchical": hierarchical_bootstrap(scores, reference, videos, b.resamples,
                                                   b.confidence, b.seed),
        }
    return out


def summarize(grid: Grid, results: dict[tuple[str, int], dict], command: str | None = None) -> dict:
    cells = grid.cells()
    first = next(iter(results.values()), None)
    domains = list(first["domains"]) if first else []
    summary: dict[str, Any] = {
        "command": command,
        "grid": {"source": grid.source, **grid.to_dict()},
        "trained_on": first["trained_on"] if first else None,
        # where the recipe was chosen, and which split these numbers are on (issue 20)
        "tuning": grid.to_dict().get("tuning"),
        "split": grid.reads,
        "domains": domains,
        "metrics": [f"{d} {m}" for d, m in METRICS],
        "planned_runs": len(grid.runs()),
        "finished_runs": len(results),
        "complete": len(results) == len(grid.runs()),
        "cells": {},
        "comparisons": {},
        "runs": {},
    }
    for cell in cells:
        seeds = [s for s in grid.seeds if (cell.name, s) in results]
        if not seeds:
            continue
        row = {"axes": dict(cell.values), "seeds": seeds, "domains": {}}
        for domain in domains:
            per_seed = [results[(cell.name, s)]["domains"][domain] for s in seeds]
            row["domains"][domain] = {
                "in_domain": per_seed[0]["in_domain"],
                "n_queries": per_seed[0]["n_texts"],
                **{f"{d} {m}": mean_std([r[d][m] for r in per_seed]) for d, m in METRICS},
            }
        runs = {s: results[(cell.name, s)] for s in seeds}
        row["anchors"] = anchors_summary(runs)
        row["uncertainty"] = uncertainty_summary(runs)
        summary["cells"][cell.name] = row
        ref = grid.reference(cell)
        comparison = _compare(grid, cell, ref, results, domains) if ref else None
        if comparison:
            summary["comparisons"][cell.name] = comparison
    by_name = {cell.name: cell for cell in cells}
    for name, against in grid.pairs:  # `compare:`, beside the references
        if grid.reference(by_name[name]) == by_name[against]:
            continue  # already there
        comparison = _compare(grid, by_name[name], by_name[against], results, domains)
        if comparison:
            summary["comparisons"][f"{name} vs {against}"] = {"cell": name, **comparison}
    for (name, seed), result in results.items():
        summary["runs"][f"{name}/seed{seed}"] = {
            "result": f"cells/{name}/seed{seed}/result.json",
            "seconds": result["seconds"], "machine": result["machine"],
        }
    summary["run_seconds"] = sum(r["seconds"]["total"] for r in results.values())
    machines = []
    for result in results.values():
        if result["machine"] not in machines:
            machines.append(result["machine"])
    summary["machines"] = machines
    summary["cells_by_machine"] = [
        sorted({name for (name, _), r in results.items() if r["machine"] == m},
               key=[c.name for c in cells].index) for m in machines]
    return summary


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def _signed(x: float) -> str:
    text = f"{x:+.1f}"
    return "0.0" if float(text) == 0 else text.replace("-", "−")


def markdown(summary: dict) -> str:
    grid = summary["grid"]
    domains = summary["domains"]
    split = summary.get("split", "test")
    lines = [f"# calm experiment: {Path(grid['source']).stem}", ""]
    if summary["command"]:
        lines += [f"`{summary['command']}`", ""]
    state = ("all" if summary["complete"] else "") + f" {summary['finished_runs']} of " \
        f"{summary['planned_runs']} runs finished"
    lines += [
        f"{state.strip().capitalize()}; seeds {', '.join(map(str, grid['seeds']))}; synthetic "
        f"scale `{grid['base']['scale']}`; trained on `{summary['trained_on']}`, evaluated on the "
        f"{split} split of every domain (* = in-domain). Mean ± std over seeds (std with n − 1).",
        "",
    ]
    tuning = summary.get("tuning")
    if tuning and summary.get("split") == "dev":
        lines += [f"**A tuning grid:** its numbers are on the dev split (the test split of the "
                  f"dev benchmark, seed {tuning['benchmark_seed']}), where recipe choices are "
                  "made; no reported benchmark's test split was read.", ""]
    elif tuning:
        lines += [f"The recipe was chosen on the dev split (benchmark seed "
                  f"{tuning['benchmark_seed']}" + (f", `{tuning['results']}`" if tuning.get(
                      "results") else "") + "); this grid reads its test split once.", ""]
    by_machine = summary.get("cells_by_machine")
    for i, machine in enumerate(summary["machines"]):
        which = (f" Cells: {', '.join(by_machine[i])}."
                 if by_machine and len(summary["machines"]) > 1 else "")
        lines.append(f"Machine: {machine['cpu']} ({machine['cpus']} cores, {machine['threads']} "
                     f"torch threads), {machine['platform']}, torch {machine['torch']}, "
                     f"device {machine['device']}.{which}")
    if summary["machines"]:
        lines += [f"Time: {_duration(summary['run_seconds'])} summed over the runs.", ""]
    metric_names = summary["metrics"]
    for domain in domains:
        first = next(iter(summary["cells"].values()))["domains"][domain]
        star = "*" if first["in_domain"] else ""
        lines += [f"## {domain}{star} ({first['n_queries']} {split} queries)", "",
                  "| cell | seeds | " + " | ".join(metric_names) + " |",
                  "|---|---|" + "---|" * len(metric_names)]
        for name, row in summary["cells"].items():
            stats = row["domains"][domain]
            cells = [f"{stats[m]['mean']:.1f} ± {stats[m]['std']:.1f}" for m in metric_names]
            lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["comparisons"]:
        b = grid["bootstrap"]
        first_cell = next(iter(summary["cells"].values()))
        references = {c["reference"] for c in summary["comparisons"].values()}
        against = (f"`{references.pop()}`" if len(references) == 1
                   else "each cell's reference")
        lines += [
            f"## {COMPARED} against {against} (percentage points)", "",
            f"Difference with two {100 * b['confidence']:g}% bootstrap intervals "
            f"({b['resamples']} resamples), pooled over the seeds both have finished. "
            "**seeds × videos** (the verdict's): each replicate draws the seeds and the test "
            "videos with replacement, a video with all its captions, so it covers another "
            "training run and another test set; **queries**: one draw of test queries shared by "
            "both methods and all seeds, the seeds held fixed. **Bold**: the seeds × videos "
            "interval excludes 0.", "",
            "| cell | against | seeds | " + " | ".join(
                f"{d}{'*' if first_cell['domains'][d]['in_domain'] else ''} seeds × videos | "
                f"{d} queries" for d in domains) + " |",
            "|---|---|---|" + "---|---|" * len(domains),
        ]
        for name, comp in summary["comparisons"].items():
            cells = []
            for domain in domains:
                c = comp["domains"][domain]
                h = c.get("hierarchical", c)
                diff = f"**{_signed(h['diff'])}**" if h["excludes_zero"] else _signed(h["diff"])
                cells.append(f"{diff} [{_signed(h['low'])}, {_signed(h['high'])}]")
                cells.append(f"[{_signed(c['low'])}, {_signed(c['high'])}]")
            mark = " †" if len(comp.get("machines", [])) > 1 else ""
            lines.append(f"| {comp.get('cell', name)}{mark} | {comp['reference']} | {len(comp['seeds'])} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        if any(len(c.get("machines", [])) > 1 for c in summary["comparisons"].values()):
            lines += ["† Across machines: the cell's runs and its reference's ran on different "
                      "CPU models, whose floats differ (the toy CLIP's included), so the "
                      "difference also holds the machine's effect; compare cells run on one "
                      "machine.", ""]
    lines += anchors_markdown(summary)
    lines += uncertainty_markdown(summary)
    return "\n".join(lines)


def results_markdown(summary: dict) -> str:
    """`results.md`: the tables, or a line saying that no run has finished yet."""
    if summary["finished_runs"]:
        return markdown(summary)
    return "# calm experiment\n\nNo run has finished yet.\n"


def write_results(out: str | Path, grid: Grid, command: str | None = None) -> dict:
    """Writes OUT/results.json and OUT/results.md from the finished runs; returns the summary."""
    out = Path(out)
    summary = summarize(grid, load_results(out, grid), command)
    write_json_atomic(out / "results.json", summary, indent=2)
    write_text_atomic(out / "results.md", results_markdown(summary))
    return summary
