"""Stage one of search: the candidates whose frame-mean vector is closest to the query.

Exact scoring runs the fusion head (xpool: attention over every frame) and costs far more per
video than one dot product, so it sees only a shortlist. Backends, chosen by
benchmarks/bench_search.py on 2 cores over 100,000 x 512 vectors:
- `torch`: the vectors as one fp16 tensor, a matrix-vector product and top-k (the default:
  fastest measured, and half the memory of float32);
- `numpy`: float32 matmul and argpartition;
- `faiss`: a flat inner-product index (faiss-cpu, optional), and `faiss-ivf`, an inverted-file
  index that scans only `nprobe` of `nlist` clusters: the way past ~1M videos, where a flat scan
  stops fitting a 20 ms budget.
"""

from __future__ import annotations

import numpy as np
import torch

BACKENDS = ("torch", "numpy", "faiss", "faiss-ivf")


class Shortlist:
    """Top-`size` rows by cosine of the query with L2-normalised mean vectors [N, D]."""

    def __init__(self, vectors: np.ndarray, backend: str = "torch", nlist: int | None = None,
                 nprobe: int = 32):
        if backend not in BACKENDS:
            raise ValueError(f"shortlist backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.n = int(vectors.shape[0])
        if backend == "torch":
            self._half = torch.from_numpy(np.array(vectors, dtype=np.float16))  # a writable copy
        elif backend == "numpy":
            self._float = np.ascontiguousarray(vectors, dtype=np.float32)
        else:
            self._faiss = _faiss_index(np.ascontiguousarray(vectors, dtype=np.float32), backend,
                                       nlist, nprobe)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine of the (normalised) query with every vector, float32 [N]."""
        q = query / max(float(np.linalg.norm(query)), 1e-12)
        if self.backend == "torch":
            return (self._half @ torch.from_numpy(q.astype(np.float16))).float().numpy()
        if self.backend == "numpy":
            return self._float @ q.astype(np.float32)
        raise ValueError(f"backend {self.backend} does not score every vector")

    def top(self, query: np.ndarray, size: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Row ids of the `size` best candidates (unordered), as int64; with `allowed` (bool
        [N]) only among those rows."""
        n_allowed = self.n if allowed is None else int(allowed.sum())
        size = min(size, n_allowed)
        if size >= n_allowed:
            return np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
        q = query / max(float(np.linalg.norm(query)), 1e-12)
        if self.backend == "torch":
            sims = self._half @ torch.from_numpy(q.astype(np.float16))
            if allowed is not None:
                sims = sims.masked_fill(~torch.from_numpy(allowed), float("-inf"))
            return sims.topk(size, sorted=False).indices.numpy().astype(np.int64)
        if self.backend == "numpy":
            sims = self._float @ q.astype(np.float32)
            if allowed is not None:
                sims = np.where(allowed, sims, -np.inf)
            return np.argpartition(sims, -size)[-size:].astype(np.int64)
        params = None
        if allowed is not None:
            import faiss

            bits = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
            params = (faiss.SearchParametersIVF(sel=selector, nprobe=self._faiss.nprobe)
                      if self.backend == "faiss-ivf" else faiss.SearchParameters(sel=selector))
        _, ids = self._faiss.search(q.astype(np.float32)[None], size, params=params)
        ids = ids[0]
        return ids[ids >= 0].astype(np.int64)


def _faiss_index(vectors: np.ndarray, backend: str, nlist: int | None, nprobe: int):
    try:
        import faiss
    except ImportError:
        raise ValueError(
            f"shortlist backend {backend!r} needs faiss-cpu (pip install faiss-cpu)"
        ) from None
    dim = vectors.shape[1]
    if backend == "faiss":
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = nlist or max(1, int(4 * np.sqrt(len(vectors))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = nprobe
    index.add(vectors)
    return index
