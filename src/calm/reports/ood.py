"""The in-domain / out-of-domain matrix as markdown tables and a heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calm.reports.plotting import pyplot, save


def value(result: dict, metric: str, direction: str | None) -> float:
    """Retrieval results nest metrics by direction; captioning results are flat."""
    return float(result[direction][metric] if direction else result[metric])


def default_views(matrix: dict) -> list[tuple[str, str | None]]:
    """(metric, direction) pairs the table shows: R@1 both ways, or the four caption metrics."""
    first = next(iter(next(iter(matrix["results"].values())).values()))
    if first.get("task") == "captioning":
        return [("CIDEr", None), ("BLEU-4", None), ("METEOR", None), ("ROUGE-L", None)]
    return [("R@1", "t2v"), ("R@1", "v2t")]


def markdown_table(matrix: dict, metric: str = "R@1", direction: str | None = "t2v") -> str:
    names = [t["name"] for t in matrix["targets"]]
    title = f"{direction} {metric}" if direction else metric
    lines = [f"{title} (* = in-domain; test-set sizes in the header)", ""]
    first = next(iter(matrix["results"].values()))
    sizes = [f"{n} (n={first[n]['n_videos']})" for n in names]
    lines.append("| checkpoint | " + " | ".join(sizes) + " |")
    lines.append("|---|" + "---|" * len(names))
    for label, row in matrix["results"].items():
        cells = [f"{value(row[n], metric, direction):.1f}{'*' if row[n]['in_domain'] else ''}"
                 for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heatmap(matrix: dict, path: str | Path, metric: str = "R@1",
            direction: str | None = "t2v") -> Path:
    plt = pyplot()
    names = [t["name"] for t in matrix["targets"]]
    labels = list(matrix["results"])
    values = np.array([[value(matrix["results"][lab][n], metric, direction) for n in names]
                       for lab in labels])
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(names), 1.2 + 0.6 * len(labels)))
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=max(1.0, float(values.max())),
                   aspect="auto")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(labels)), labels)
    for i, lab in enumerate(labels):
        for j, n in enumerate(names):
            mark = "*" if matrix["results"][lab][n]["in_domain"] else ""
            ax.text(j, i, f"{values[i, j]:.1f}{mark}", ha="center", va="center",
                    color="white" if values[i, j] < values.max() * 0.6 else "black")
    ax.set_title(f"{direction + ' ' if direction else ''}{metric}, * = in-domain")
    fig.colorbar(im, ax=ax)
    return save(fig, path, dpi=120)


def dropped_note(matrix: dict) -> str:
    """The videos each cell left out of its gallery (with their texts), or "" when none."""
    lines = [f"- {label} on {name}: {d['path']}: {d['reason']} ({len(d['texts'])} texts)"
             for label, row in matrix["results"].items() for name, result in row.items()
             for d in result.get("dropped", [])]
    if not lines:
        return ""
    return "\nVideos that could not be decoded, left out with their texts:\n\n" + "\n".join(lines) + "\n"


def write_ood(matrix: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ood.json").write_text(json.dumps(matrix, indent=2))
    views = default_views(matrix)
    md = "\n".join(markdown_table(matrix, metric, direction) for metric, direction in views)
    md += dropped_note(matrix)
    (out_dir / "ood.md").write_text(md)
    return {"json": out_dir / "ood.json", "markdown": out_dir / "ood.md",
            "heatmap": heatmap(matrix, out_dir / "ood_heatmap.png", *views[0])}
