"""One fine-tuning run of the synthetic recipe, decoding the mp4s against reading them from the
complete raw frame cache (`training_frame_cache`, what `calm demo` and `calm experiment` do).

Both runs train the same model from the same toy CLIP with the same seed in this process, one
after the other; the script prints each run's wall and CPU seconds, the ratio cache / decode, and
whether the two runs' weights are bit-identical (they must be: the cache changes how the frames
are read, not which). Needs a benchmark and a toy CLIP:

    calm synth --out data/synth && calm pretrain-clip --data data/synth   # prints the clip path
    python benchmarks/bench_frame_cache_run.py --data data/synth --clip PATH [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from calm.clock import Phase
from calm.engine.train import train
from calm.experiments.benchmark import training_frame_cache, training_videos
from calm.experiments.recipe import Recipe, experiment_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a `calm synth` folder")
    parser.add_argument("--clip", required=True, help="the toy CLIP (safetensors)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (60)")
    parser.add_argument("--alignment", default="vae", help="alignment of the runs (vae)")
    args = parser.parse_args()

    root = Path(args.data)
    manifest = json.loads((root / "manifest.json").read_text())
    domain = manifest["domains"][0]
    recipe = Recipe(steps=args.steps, evaluations=1)
    steps_per_epoch = max(1, training_videos(root, domain) // recipe.batch_size)
    with Phase() as build:
        cache = training_frame_cache(root, domain, recipe.num_frames, recipe.pretrain.model)
    print(f"frame cache {cache}: {build.wall_s:.1f} s wall, {build.cpu_s:.1f} CPU-s "
          "(written once; reused when present)")

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, frames in (("decode", None), ("cache", cache)):
            cfg = experiment_config(recipe, root, domain, args.clip, args.alignment,
                                    steps_per_epoch, frames)
            with Phase() as phase:
                train(cfg, Path(tmp) / label, progress=False)
            rows[label] = (phase.wall_s, phase.cpu_s)
        weights = {label: load_file(Path(tmp) / label / "checkpoints" / "best.safetensors")
                   for label in rows}
    identical = all(torch.equal(weights["decode"][k], weights["cache"][k])
                    for k in weights["decode"])
    print(f"\n{args.steps} steps of batch {recipe.batch_size} x {recipe.num_frames} frames, "
          f"decoding in {recipe.num_workers} loader workers, the cache read in-process; "
          f"{torch.get_num_threads()} torch threads")
    print("| frames from | wall s | CPU s (process + workers) |")
    print("|---|---|---|")
    for label, (wall, cpu) in rows.items():
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")
    print(f"ratio cache / decode: wall {rows['cache'][0] / rows['decode'][0]:.3f}, "
          f"CPU {rows['cache'][1] / rows['decode'][1]:.3f}")
    print(f"weights bit-identical: {identical}")


if __name__ == "__main__":
    main()
