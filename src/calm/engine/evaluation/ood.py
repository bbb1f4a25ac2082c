"""In-domain and out-of-domain evaluation of checkpoints on several benchmarks: table and heatmap."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from calm.data.errors import DataError
from calm.engine.checkpoint import load_model
from calm.engine.evaluation.checkpoint import evaluate_checkpoint


@dataclass(frozen=True)
class Target:
    name: str
    dataset: str
    annotations: str
    videos: str
    split: str = "test"

    @classmethod
    def parse(cls, spec: str) -> Target:
        """NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]"""
        if "=" not in spec:
            raise DataError(f"target {spec!r}: expected NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]")
        name, rest = spec.split("=", 1)
        parts = rest.split(":")
        if len(parts) not in (3, 4):
            raise DataError(f"target {spec!r}: expected NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]")
        return cls(name, *parts)


def synthetic_targets(root: str | Path, split: str = "test") -> list[Target]:
    """Every domain of a `calm synth` folder, read from its manifest."""
    manifest_path = Path(root) / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path} does not exist; generate the benchmark with `calm synth`")
    manifest = json.loads(manifest_path.read_text())
    targets = []
    for domain in manifest["domains"]:
        base = Path(root) / domain["name"]
        targets.append(
            Target(
                domain["name"],
                domain["loader"],
                str(base / "annotations"),
                str(base / "videos"),
                split,
            )
        )
    return targets


def _same_path(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def ood_matrix(checkpoints: list[tuple[str, str]], targets: list[Target], progress=False) -> dict:
    """results[checkpoint label][target name] = metrics, with `in_domain` marking the training data."""
    rows = {}
    for label, path in checkpoints:
        loaded = load_model(path)
        trained_on = loaded[1].data.annotations
        row = {}
        for target in targets:
            result = evaluate_checkpoint(
                path,
                target.dataset,
                target.annotations,
                target.videos,
                target.split,
                progress=progress,
                loaded=loaded,
            )
            result["in_domain"] = _same_path(trained_on, target.annotations)
            row[target.name] = result
        rows[label] = row
    return {"targets": [t.__dict__ for t in targets], "results": rows}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_ood(matrix: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ood.json").write_text(json.dumps(matrix, indent=2))
    views = default_views(matrix)
    md = "\n".join(markdown_table(matrix, metric, direction) for metric, direction in views)
    (out_dir / "ood.md").write_text(md)
    return {"json": out_dir / "ood.json", "markdown": out_dir / "ood.md",
            "heatmap": heatmap(matrix, out_dir / "ood_heatmap.png", *views[0])}
