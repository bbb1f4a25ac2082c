"""The synthetic benchmark as the demo and the experiment grid use it: generated once, then reused.

Shared by `calm demo` and `calm experiment` so both train on the same data the same way. The
training domain's clips are decoded once into a complete, lossless frame cache
(`training_frame_cache`): a run reads exactly the frames it would decode (tested), without
spending about 5 ms of CPU per clip on decoding, some 45 s of a 300-step run on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from calm.data.benchmarks.common import load_split
from calm.data.errors import DataError
from calm.data.frame_cache import CacheSettings
from calm.data.prepare_frames import prepare_frames
from calm.data.synthetic import generate

FRAMES = "frames"  # under the benchmark's folder: one complete frame cache per domain and size


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


def model_image_size(model: str) -> int:
    """The input side (pixels) of a CLIP architecture by name, without building it."""
    import open_clip

    from calm.model.clip_weights import register_calm_configs

    register_calm_configs()
    config = open_clip.get_model_config(model)
    if config is None:
        raise DataError(f"no CLIP architecture named {model!r}")
    size = config["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def training_frame_cache(data_root: str | Path, domain: dict, num_frames: int, model: str,
                         workers: int = 2) -> Path:
    """The domain's complete raw frame cache at the model's input size (written once, then
    reused), for `data.frame_cache`. Its folder names the benchmark's scale and seed, so a
    benchmark generated anew in the same place never meets the frames of the old one."""
    root = Path(data_root)
    manifest = json.loads((root / "manifest.json").read_text())
    size = model_image_size(model)
    settings = CacheSettings(num_frames=num_frames, per_segment=0, image_size=size, codec="raw")
    dst = (root / FRAMES / f"{domain['name']}-{manifest['scale']}-seed{manifest['seed']}"
           f"-{num_frames}x{size}px")
    results = prepare_frames(root / domain["videos"], dst, settings, workers=workers,
                             progress=False)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise DataError(f"{root / domain['videos']}: {len(failed)} generated videos could not be "
                        f"decoded into {dst} (first: {failed[0].key}: {failed[0].reason})")
    return dst
