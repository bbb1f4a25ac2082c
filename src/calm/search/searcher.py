"""Two-stage text-to-video search over an index, with the matching moment and a confidence.

1. Shortlist: cosine of the query with every video's frame-mean vector (one fp16 matrix-vector
   product), keeping the best `shortlist` videos.
2. Exact: the model's own fusion head scores the query against the stored text-free video state
   of the shortlisted videos (and of a fixed reference sample, for confidence); the top k of
   those scores are the results, in the order `calm eval` would rank them.

Ranking depends only on (query, video). The confidence and the abstention also look at how the
query scores on the reference sample (see `calm.search.confidence`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from calm.search import confidence as conf
from calm.search import store
from calm.search.moment import best_frame_weights, moment
from calm.search.shortlist import Shortlist
from calm.search.store import Manifest, SearchIndexError

DEFAULT_SHORTLIST = 500  # recall@10 1.0 at 250 in benchmarks/bench_search.py; 2x margin
REFERENCE_SIZE = 256
MAX_K = 100


@dataclass
class Hit:
    path: str  # relative to the indexed folder
    score: float
    start: float  # seconds: the matching moment
    end: float
    anchors: list[tuple[str, float]]
    confidence: float | None
    sigma: float | None = None
    thumbnail: str = ""
    row: int = -1


@dataclass
class SearchResult:
    query: str
    results: list[Hit]
    confident: bool  # False: even the best result is weak ("no confident match")
    note: str = ""
    timings_ms: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "query": self.query,
            "results": [
                {"path": h.path, "score": round(h.score, 5), "start": round(h.start, 3),
                 "end": round(h.end, 3),
                 "anchors": [[a, round(p, 4)] for a, p in h.anchors],
                 "confidence": None if h.confidence is None else round(h.confidence, 4),
                 "sigma": h.sigma, "thumbnail": h.thumbnail}
                for h in self.results
            ],
            "confident": self.confident,
            "note": self.note,
        }


class SearchIndex:
    """An index folder opened for reading: manifest, memory-mapped arrays, thumbnails."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        manifest = store.read_manifest(self.folder)
        if manifest is None:
            raise SearchIndexError(f"{self.folder}: no calm search index here (no index.json)")
        self.manifest: Manifest = manifest
        self.arrays = store.open_arrays(self.folder, manifest)
        self.paths = [v.path for v in manifest.videos]
        self.row_of = {p: i for i, p in enumerate(self.paths)}
        self.root = Path(manifest.root)
        self.labels = manifest.checkpoint.get("anchor_labels")

    def __len__(self) -> int:
        return len(self.paths)

    def state_rows(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The fusion head's state for `rows` (ascending, for sequential reads) as float32."""
        out = {}
        for key in self.manifest.state_keys:
            block = np.asarray(self.arrays[f"state.{key}"][rows])
            t = torch.from_numpy(block)
            out[key] = t if t.dtype == torch.bool else t.float()
        return out

    def thumbnail_path(self, row: int) -> Path:
        return self.folder / store.THUMBS / store.thumbnail_name(self.paths[row])


def reference_rows(n: int, size: int = REFERENCE_SIZE) -> np.ndarray:
    """A fixed, evenly spread sample of rows (all rows when the index is small)."""
    if n <= size:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, size).round().astype(np.int64))


class Searcher:
    """Answers queries on one index with the fusion head of the model that built it.

    `encode_text(list[str]) -> [N, D]` turns a query into a sentence feature; `Searcher.open`
    takes both from the index's checkpoint. `search_encoded` needs only the head.
    """

    def __init__(self, index: SearchIndex, head, encode_text=None,
                 shortlist: int = DEFAULT_SHORTLIST, backend: str = "torch"):
        self.index = index
        self.head = head.eval()
        self.device = next(iter(head.parameters()), torch.empty(0)).device
        self.encode_text = encode_text
        self.shortlist_size = shortlist
        n = len(index)
        self.shortlist = Shortlist(index.arrays["mean"], backend) if n else None
        self.reference = reference_rows(n)
        self._reference_state = index.state_rows(self.reference) if n else None
        sigma = index.arrays.get("sigma")
        self._sigma_sorted = np.sort(np.asarray(sigma, dtype=np.float64)) if sigma is not None else None

    @classmethod
    def open(cls, folder: Path, checkpoint: Path | None = None, device: str = "cpu",
             **kwargs) -> Searcher:
        """Opens the index and loads its checkpoint (or `checkpoint`, which must be the same)."""
        from calm.api import load
        from calm.search.build import check_same_model

        index = SearchIndex(folder)
        path = Path(checkpoint or index.manifest.checkpoint["path"])
        if not path.is_file():
            raise SearchIndexError(
                f"{folder} was built with {path}, which no longer exists; pass the same "
                "checkpoint with --checkpoint"
            )
        model = load(path, device)
        check_same_model(index.manifest, model, index.folder)
        return cls(index, model.model.fusion, model.encode_texts, **kwargs)

    # ---- stages ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _exact(self, text: torch.Tensor, rows: np.ndarray, state=None) -> np.ndarray:
        state = self.index.state_rows(rows) if state is None else state
        state = {k: v.to(self.device) for k, v in state.items()}
        return self.head.score(text[None].to(self.device), state)[0].float().cpu().numpy()

    @torch.no_grad()
    def _moments(self, text: torch.Tensor, rows: np.ndarray) -> list[tuple[float, float]]:
        times = np.asarray(self.index.arrays["times"][rows], dtype=np.float64)
        durations = np.asarray(self.index.arrays["durations"][rows], dtype=np.float64)
        if self.head.has_frame_weights:
            state = {k: v.to(self.device) for k, v in self.index.state_rows(rows).items()}
            weights = self.head.frame_weights(text[None].to(self.device), state)[0].cpu().numpy()
        else:
            frames = np.asarray(self.index.arrays["frames"][rows], dtype=np.float32)
            mask = np.asarray(self.index.arrays["mask"][rows])
            weights = best_frame_weights(text.cpu().numpy(), frames, mask)
        return [moment(w, t, d)[:2] for w, t, d in zip(weights, times, durations)]

    def _anchors(self, row: int) -> list[tuple[str, float]]:
        if self.index.labels is None or "anchor_ids" not in self.index.arrays:
            return []
        ids = self.index.arrays["anchor_ids"][row]
        probs = self.index.arrays["anchor_probs"][row]
        return [(self.index.labels[int(i)], float(p)) for i, p in zip(ids, probs)]

    def _sigma_percentile(self, rows: np.ndarray):
        if self._sigma_sorted is None:
            return None, None
        sigma = np.asarray(self.index.arrays["sigma"][rows], dtype=np.float64)
        n = max(len(self._sigma_sorted) - 1, 1)
        return sigma, np.searchsorted(self._sigma_sorted, sigma, side="left") / n

    # ---- queries --------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10) -> SearchResult:
        started = time.perf_counter()
        if self.encode_text is None:
            raise ValueError("this Searcher has no text encoder; use search_encoded")
        text = self.encode_text([query])[0]
        encoded = time.perf_counter()
        result = self.search_encoded(query, text, k)
        result.timings_ms["encode_text"] = round(1000 * (encoded - started), 2)
        return result

    def search_encoded(self, query: str, text: torch.Tensor, k: int = 10) -> SearchResult:
        """Search with an already encoded query feature [D]."""
        k = max(1, min(int(k), MAX_K))
        n = len(self.index)
        if n == 0:
            return SearchResult(query, [], False, "the index holds no videos")
        t0 = time.perf_counter()
        text = text.float().cpu()
        candidates = np.sort(self.shortlist.top(text.numpy(), max(self.shortlist_size, k)))
        t1 = time.perf_counter()
        scores = self._exact(text, candidates)
        order = np.argsort(-scores, kind="stable")[:k]
        top_rows, top_scores = candidates[order], scores[order]
        t2 = time.perf_counter()
        if len(candidates) == n:
            reference_scores = scores
        else:
            reference_scores = self._exact(text, self.reference, self._reference_state)
        null = conf.NullModel.from_reference(reference_scores, n)
        spans = self._moments(text, top_rows)
        sigma, sigma_pct = self._sigma_percentile(top_rows)
        evidence = null.evidence(top_scores) if null is not None else None
        confidences = conf.confidence(evidence, sigma_pct) if evidence is not None else None
        hits = []
        for i, row in enumerate(top_rows):
            row = int(row)
            hits.append(Hit(
                path=self.index.paths[row], score=float(top_scores[i]),
                start=spans[i][0], end=spans[i][1], anchors=self._anchors(row),
                confidence=None if confidences is None else float(confidences[i]),
                sigma=None if sigma is None else round(float(sigma[i]), 5),
                thumbnail=store.thumbnail_name(self.index.paths[row]), row=row,
            ))
        best = None if evidence is None else float(evidence[0])
        if null is None:
            confident, note = True, f"too few videos ({n}) to judge confidence"
        elif conf.abstains(best):
            confident = False
            note = (f"no confident match: the best score {top_scores[0]:.3f} is not clearly above "
                    f"what the best of {n} unrelated videos would reach")
        else:
            confident, note = True, ""
        t3 = time.perf_counter()
        timings = {"shortlist": (t1 - t0) * 1000, "exact": (t2 - t1) * 1000,
                   "explain": (t3 - t2) * 1000}
        return SearchResult(query, hits, confident, note,
                            {name: round(v, 2) for name, v in timings.items()})


def format_results(result: SearchResult) -> str:
    """Plain-text rendering for `calm search`."""
    lines = [f"query: {result.query}"]
    if not result.confident or result.note:
        lines.append(f"  ({result.note})")
    for rank, h in enumerate(result.results, 1):
        confidence = "   -" if h.confidence is None else f"{100 * h.confidence:3.0f}%"
        anchors = ", ".join(f"{a} {p:.2f}" for a, p in h.anchors[:3])
        lines.append(
            f"{rank:3d}. {h.score:+.4f}  conf {confidence}  {h.start:7.2f}-{h.end:7.2f}s  {h.path}"
            + (f"  [{anchors}]" if anchors else "")
        )
    return "\n".join(lines)

