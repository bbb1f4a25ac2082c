"""Baseline vs CALM on the synthetic benchmark over several fine-tuning seeds: mean +- std.

    python benchmarks/synthetic_seeds.py --out runs/seeds --seeds 0 1 2

Every seed reuses one generated benchmark and one cached toy CLIP (as `calm demo` builds them), so
the spread is the fine-tuning noise. Prints in-domain and out-of-domain t2v R@1 per method and
whether the CALM - baseline difference exceeds the seed noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from calm.demo.run import run_demo
from calm.experiments.recipe import Recipe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--data", default=None, help="benchmark folder (default: OUT/data)")
    args = p.parse_args()
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    table: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        demo = Recipe(seed=seed)
        if args.steps:
            demo.steps = args.steps
        summary = run_demo(out / f"seed{seed}", demo, progress=False, data_root=data)
        matrix = json.loads(Path(summary["files"]["json"]).read_text())
        for label, row in matrix["results"].items():
            for target, result in row.items():
                key = f"{target}{' (in-domain)' if result['in_domain'] else ''}"
                table.setdefault(label, {}).setdefault(key, []).append(result["t2v"]["R@1"])
    (out / "seeds.json").write_text(json.dumps({"seeds": args.seeds, "t2v_R@1": table}, indent=2))
    targets = list(next(iter(table.values())))
    print(f"t2v R@1 (%), mean +- std over seeds {args.seeds}")
    print("| method | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    for label, row in table.items():
        cells = [f"{statistics.mean(v):.1f} +- {statistics.stdev(v) if len(v) > 1 else 0:.1f}"
                 for v in row.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if {"baseline", "calm"} <= set(table):
        for target in targets:
            diffs = [c - b for b, c in zip(table["baseline"][target], table["calm"][target])]
            noise = max(statistics.stdev(table["baseline"][target]) if len(diffs) > 1 else 0,
                        statistics.stdev(table["calm"][target]) if len(diffs) > 1 else 0)
            mean = statistics.mean(diffs)
            verdict = "larger than" if abs(mean) > noise else "within"
            print(f"{target}: CALM - baseline = {mean:+.1f} (per seed {diffs}), {verdict} the seed "
                  f"noise (std {noise:.1f})")


if __name__ == "__main__":
    main()
