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

An index of at least IVF_ABOVE videos (`calm index --ivf-above`) gets its IVF built once by
`calm index` (`build_ivf`: sqrt(N) clusters trained on a sample, vectors stored as fp16, about
1 KiB per video at 512 dimensions) and saved with the generation's arrays; `calm search` loads
it instead of holding the flat vectors. Exact scoring then reads only the shortlisted videos'
memory-mapped states.
"""

from __future__ import annotations

import numpy as np
import torch

BACKENDS = ("torch", "numpy", "faiss", "faiss-ivf")
IVF_ABOVE = 200_000  # videos: from here on `calm index` builds an IVF shortlist
IVF_NPROBE = 32  # clusters scanned per query (recall@10 against exhaustive: bench_search.py)
TRAIN_PER_CLUSTER = 40  # k-means sample: faiss wants >= 39 points a cluster
ADD_CHUNK = 65536


class Shortlist:
    """Top-`size` rows by cosine of the query with L2-normalised mean vectors [N, D]."""

    def __init__(self, vectors: np.ndarray, backend: str = "torch", nlist: int | None = None,
                 nprobe: int = IVF_NPROBE):
        if backend not in BACKENDS:
            raise ValueError(f"shortlist backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.n = int(vectors.shape[0])
        if backend == "torch":
            self._half = torch.from_numpy(np.array(vectors, dtype=np.float16))  # a writable copy
        elif backend == "numpy":
            self._float = np.ascontiguousarray(vectors, dtype=np.float32)
        elif backend == "faiss":
            self._faiss = _faiss(backend).IndexFlatIP(vectors.shape[1])
            self._faiss.add(np.ascontiguousarray(vectors, dtype=np.float32))
        else:
            self._faiss = build_ivf(vectors, nlist)
            self._faiss.nprobe = nprobe

    @classmethod
    def from_faiss(cls, index, nprobe: int = IVF_NPROBE) -> Shortlist:
        """A shortlist over a built faiss IVF index (`build_ivf` / `read_ivf`)."""
        self = cls.__new__(cls)
        self.backend = "faiss-ivf"
        self.n = int(index.ntotal)
        index.nprobe = nprobe
        self._faiss = index
        return self

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


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss(backend: str):
    try:
        import faiss
    except ImportError:
        raise ValueError(
            f"shortlist backend {backend!r} needs faiss-cpu (pip install faiss-cpu)"
        ) from None
    return faiss


def build_ivf(vectors: np.ndarray, nlist: int | None = None, seed: int = 0):
    """An IVF index (inner product, fp16 vectors) over unit vectors [N, D], which may be
    memory-mapped: k-means on a sample of TRAIN_PER_CLUSTER x nlist rows, then added in chunks."""
    faiss = _faiss("faiss-ivf")
    n, dim = vectors.shape
    nlist = nlist or max(1, int(round(np.sqrt(n))))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, TRAIN_PER_CLUSTER * nlist), replace=False))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    index.nprobe = IVF_NPROBE
    return index


def write_ivf(index, path) -> None:
    _faiss("faiss-ivf").write_index(index, str(path))


def read_ivf(path):
    return _faiss("faiss-ivf").read_index(str(path))
