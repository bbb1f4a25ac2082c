"""The uncertainty figure, per query side: R@1 per uncertainty bin, the sparsification curves, and
the risk-coverage curves (with each score's AURC, and the top-1 confidence's ECE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calm.reports.plotting import pyplot, save


def _scores(block: dict) -> dict[str, dict]:
    """Score name -> summary, the scores first, then the baselines (random last)."""
    own = {k: v for k, v in block.items() if isinstance(v, dict) and "bins_r1" in v}
    return {**own, **block["baselines"]}


def _bins_panel(ax, block: dict, title: str) -> None:
    for name, s in _scores(block).items():
        r1 = [np.nan if v is None else v for v in s["bins_r1"]]
        style = "--" if name == "random" else "o-"
        ax.plot(np.arange(1, len(r1) + 1), r1, style, ms=3, label=name)
    ax.set_xlabel("uncertainty bin (1 = least uncertain)")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _sparsification_panel(ax, block: dict, fractions: list[float], title: str) -> None:
    pct = 100 * np.asarray(fractions)
    ax.plot(pct, block["oracle"]["sparsification"], "k--", label="oracle (true rank)")
    for name, s in _scores(block).items():
        style = "--" if name == "random" else "o-"
        ax.plot(pct, s["sparsification"], style, ms=3, label=f"{name} (AUSE {s['ause']:.1f})")
    ax.set_xlabel("most uncertain queries dropped (%)")
    ax.set_ylabel("R@1 of the rest (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _risk_coverage_panel(ax, block: dict, title: str) -> None:
    pct = 100 * np.asarray(block["coverages"])
    oracle = block["oracle"]
    ax.plot(pct, oracle["risk_coverage"], "k--", label=f"oracle (AURC {oracle['aurc']:.1f})")
    for name, s in _scores(block).items():
        style = "--" if name == "random" else "o-"
        ax.plot(pct, s["risk_coverage"], style, ms=3, label=f"{name} (AURC {s['aurc']:.1f})")
    ax.set_xlabel("queries answered, least uncertain first (coverage, %)")
    ax.set_ylabel("wrong top-1 answers among them (risk, %)")
    if "calibration" in block:
        title += f"; ECE of top-1 prob {block['calibration']['ece']:.1f} %"
    ax.set_title(title)
    ax.legend(fontsize=6)


def uncertainty_figure(result: dict, path: Path) -> Path:
    """Two rows (video as query, text as query) of three panels (bins, sparsification,
    risk-coverage)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(17, 7.5))
    sides = [(result, "video query (v2t)"), (result["text_query"], "text query (t2v)")]
    for row, (block, side) in zip(axes, sides):
        _bins_panel(row[0], block, f"{side}: R@1 per bin, n={block['n_queries']}")
        _sparsification_panel(row[1], block, result["fractions"], f"{side}: sparsification")
        _risk_coverage_panel(row[2], block, f"{side}: risk-coverage")
    return save(fig, path)
