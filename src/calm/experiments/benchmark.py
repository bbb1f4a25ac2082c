"""The synthetic benchmark as the demo and the experiment grid use it: generated once, then reused.

Shared by `calm demo` and `calm experiment` so both train on the same data the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from calm.data.benchmarks.common import load_split
from calm.data.synthetic import generate


def prepare_benchmark(data_root: str | Path, scale: str, seed: int) -> tuple[dict, float | None]:
    """The manifest of the benchmark at `data_root`, generated first unless one of this scale and
    seed is already there; also the generation time in seconds (None when it was reused)."""
    manifest_path = Path(data_root) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if manifest and manifest.get("scale") == scale and manifest.get("seed") == seed:
        return manifest, None
    started = time.perf_counter()
    generate(data_root, scale=scale, seed=seed)
    return json.loads(manifest_path.read_text()), time.perf_counter() - started


def training_videos(data_root: str | Path, domain: dict) -> int:
    """Videos in a domain's training split: with one caption per video an epoch, the pairs per
    epoch, from which the demo's step budget is turned into epochs."""
    root = Path(data_root)
    split = load_split(domain["loader"], root / domain["annotations"], root / domain["videos"],
                       "train", domain.get("loader_options"))
    return len(split.videos)
