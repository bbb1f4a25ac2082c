"""Time and peak extra memory of retrieval_metrics on an MSVD-shaped matrix (27,763 x 670).

Run: python benchmarks/bench_metrics.py [--texts N] [--videos N] [--chunk N]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from calm.metrics import retrieval_metrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--texts", type=int, default=27_763)
    p.add_argument("--videos", type=int, default=670)
    p.add_argument("--chunk", type=int, default=None)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    t2v = rng.integers(0, a.videos, size=a.texts)
    sim = rng.standard_normal((a.texts, a.videos), dtype=np.float32)
    for name, x in (("numpy fp32", sim), ("torch fp32", torch.from_numpy(sim))):
        for ties in ("optimistic", "mean"):
            tracemalloc.start()
            t0 = time.perf_counter()
            res = retrieval_metrics(x, t2v, ties=ties, chunk_size=a.chunk)
            dt = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"{name:10s} {ties:10s} {dt * 1e3:8.1f} ms  peak numpy alloc "
                f"{peak / 2**20:6.1f} MiB (sim {sim.nbytes / 2**20:.1f} MiB)  "
                f"t2v R@1 {res['t2v']['R@1']:.2f}"
            )


if __name__ == "__main__":
    main()
