"""t2v R@1 of a grid's runs over all test clips and over the first N of them.

The `large` scale renders 1,000 test clips per domain whose first 180 are the `default` scale's
test clips (every clip is seeded by benchmark seed, domain, split and index), so the similarity
matrices a `calm experiment` run keeps (`cells/<cell>/seed<k>/sim/<domain>.npy`) also give the
same model's R@1 on the default test set: what the extra distractors alone do to a model,
beside what they do to the oracle's ceiling (`calm synth` prints both scales' oracle). Ties count
as the mean rule does (a hit shared by k equal scores counts 1/k).

    python benchmarks/synthetic_subset_r1.py runs/alignment none vae [--first 180]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calm.metrics.retrieval import hit_rates


def r1_mean_ties(sim: np.ndarray, truth: np.ndarray) -> float:
    return float(100 * hit_rates(sim, truth, "t2v", 1, "mean").mean())


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a calm experiment folder")
    parser.add_argument("cells", nargs="+", help="cell names")
    parser.add_argument("--first", type=int, default=180, help="clips of the subset (180)")
    args = parser.parse_args()
    print(f"| cell | domain | seeds | R@1 over all clips | R@1 over the first {args.first} |")
    print("|---|---|---|---|---|")
    for cell in args.cells:
        runs = sorted((Path(args.out) / "cells" / cell).glob("seed*/sim"))
        domains = sorted(p.stem for p in runs[0].glob("*.npy")) if runs else []
        for domain in domains:
            full, sub = [], []
            for sim_dir in runs:
                ids = json.loads((sim_dir / f"{domain}.json").read_text())
                sim = np.load(sim_dir / f"{domain}.npy")
                truth = np.asarray(ids["text_to_video"])
                full.append(r1_mean_ties(sim, truth))
                keep = np.flatnonzero(truth < args.first)
                sub.append(r1_mean_ties(sim[keep][:, :args.first], truth[keep]))
            print(f"| {cell} | {domain} | {len(full)} | {spread(full)} | {spread(sub)} |")


if __name__ == "__main__":
    main()
