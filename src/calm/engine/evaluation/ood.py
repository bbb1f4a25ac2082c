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
