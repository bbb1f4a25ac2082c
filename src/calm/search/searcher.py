"""Two-stage text-to-video search over an index, with the matching moment and a calibrated
probability that the best result is right.

1. Shortlist: cosine of the query with every video's frame-mean vector (one fp16 matrix-vector
   product), keeping the best `shortlist` videos.
2. Exact: the model's own fusion head scores the query against the stored text-free video state
   of the shortlisted videos (and of a fixed reference sample, for the confidence features);
   the top k of those scores are the results, in the order `calm eval` would rank them.

Ranking depends only on (query, video). The probability that the top result is right comes
from a calibrator fitted on a split with known answers (`calm index --calibrate`,
`calm.search.calibration`); an index without one says "uncalibrated" and never abstains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from calm.search import store
from calm.search.calibration import Calibrator, query_features
from calm.search.duplicates import collapse, unit
from calm.search.filters import Filters
from calm.search.moment import best_frame_weights, moment, resolution, time_decimals
from calm.search.scoring import AGREEMENT, Scorer
from calm.search.shortlist import Shortlist, read_ivf
from calm.search.store import Manifest, SearchIndexError

DEFAULT_SHORTLIST = 500  # recall@10 1.0 at 250 in benchmarks/bench_search.py; 2x margin
REFERENCE_SIZE = 256
MAX_K = 100
UNCALIBRATED_KIND = "scores only (the confidence is calibrated for text queries)"


@dataclass
class Hit:
    path: str  # relative to the indexed folder
    score: float
    start: float  # seconds: the matching moment
    end: float
    anchors: list[tuple[str, float]]
    thumbnail: str = ""
    row: int = -1
    resolution: float = 0.0  # seconds per sampled frame: the moment is no finer than this
    duplicates: list[str] = field(default_factory=list)  # near-duplicate copies, folded in here


@dataclass
class Confidence:
    """How sure search is that the top result is right: a calibrated probability, or nothing."""

    calibrated: bool
    probability: float | None = None  # P(top result is right), from the index's calibrator
    threshold: float | None = None  # below it: "no confident match"
    method: str | None = None
    features: dict | None = None

    @property
    def confident(self) -> bool | None:
        """True / False against the threshold; None when uncalibrated (no abstention)."""
        if self.probability is None:
            return None
        return self.probability >= self.threshold

    def to_json(self) -> dict:
        return {
            "calibrated": self.calibrated,
            "probability": None if self.probability is None else round(self.probability, 4),
            "threshold": None if self.threshold is None else round(self.threshold, 4),
            "method": self.method,
        }


@dataclass
class SearchResult:
    query: str
    results: list[Hit]
    confidence: Confidence
    note: str = ""
    timings_ms: dict = field(default_factory=dict)
    filters: dict | None = None  # the filters applied and how many videos they keep

    @property
    def confident(self) -> bool | None:
        return self.confidence.confident

    def to_json(self) -> dict:
        return {
            "query": self.query,
            "results": [
                {"path": h.path, "score": round(h.score, 6),
                 "start": round(h.start, time_decimals(h.resolution)),
                 "end": round(h.end, time_decimals(h.resolution)),
                 "resolution": round(h.resolution, 3),
                 "anchors": [[a, round(p, 4)] for a, p in h.anchors],
                 "duplicates": h.duplicates, "thumbnail": h.thumbnail}
                for h in self.results
            ],
            "confidence": self.confidence.to_json(),
            "confident": self.confident,
            "note": self.note,
            "filters": self.filters,
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
            store.prefetch_rows(self.arrays[f"state.{key}"], rows)
        for key in self.manifest.state_keys:
            block = np.asarray(self.arrays[f"state.{key}"][rows])
            t = torch.from_numpy(block)
            out[key] = t if t.dtype == torch.bool else t.float()
        return out

    def thumbnail_path(self, row: int) -> Path:
        return self.folder / store.THUMBS / store.thumbnail_name(self.paths[row])

    @property
    def calibrator(self) -> Calibrator | None:
        data = self.manifest.calibration
        return None if data is None else Calibrator.from_json(data)


class MemoryIndex(SearchIndex):
    """Index rows held in memory (no folder): what calibration searches over."""

    def __init__(self, paths: list[str], arrays: dict[str, np.ndarray], checkpoint: dict):
        self.folder = None
        state_keys = sorted(k[len("state."):] for k in arrays if k.startswith("state."))
        self.manifest = Manifest(root="", checkpoint=checkpoint, state_keys=state_keys)
        self.arrays = arrays
        self.paths = list(paths)
        self.row_of = {p: i for i, p in enumerate(self.paths)}
        self.root = Path()
        self.labels = checkpoint.get("anchor_labels")


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

    def __init__(self, index: SearchIndex, scorer, encode_text=None,
                 shortlist: int = DEFAULT_SHORTLIST, backend: str = "auto",
                 calibrator: Calibrator | None = None,
                 duplicate_threshold: float | str | None = "index", model=None):
        """`scorer`: a `Scorer` (what `Searcher.open` builds from the checkpoint), or a bare
        fusion head, which scores in mode `base`."""
        self.index = index
        self.scorer = scorer if isinstance(scorer, Scorer) else Scorer(scorer)
        self.head = self.scorer.head
        self.encode_text = encode_text
        self.model = model  # a CalmModel: encodes image and video queries (Searcher.open sets it)
        self.shortlist_size = shortlist
        n = len(index)
        self.shortlist = self._shortlist(backend) if n else None
        self.reference = reference_rows(n)
        self._reference_state = index.state_rows(self.reference) if n else None
        self._reference_agreement = self._agreement(self.reference) if n else None
        self.calibrator = calibrator if calibrator is not None else index.calibrator
        if duplicate_threshold == "index":  # measured for this model; unmeasured: no folding
            measured = index.manifest.duplicates
            duplicate_threshold = measured["threshold"] if measured else None
        self.duplicate_threshold = duplicate_threshold  # None: every video is its own result
        self._masks: dict[Filters, np.ndarray] = {}

    def _shortlist(self, backend: str) -> Shortlist:
        """`auto`: the index's IVF when `calm index` built one, else the flat fp16 scan."""
        folder = self.index.folder
        ivf = None if folder is None else store.data_dir(folder, self.index.manifest.generation) / store.IVF
        if backend == "auto":
            if ivf is not None and ivf.is_file():
                return Shortlist.from_faiss(read_ivf(ivf))
            backend = "torch"
        return Shortlist(self.index.arrays["mean"], backend)

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
        return cls(index, Scorer.from_model(model), model.encode_texts, model=model, **kwargs)

    # ---- stages ---------------------------------------------------------------------------------
    def _agreement(self, rows: np.ndarray) -> np.ndarray | None:
        if not self.scorer.needs_agreement:
            return None
        if AGREEMENT not in self.index.arrays:
            raise SearchIndexError(
                f"{self.index.folder}: the checkpoint scores in mode anchor_agreement but the "
                "index stores no anchor agreement (built by an older calm): rebuild it"
            )
        return np.asarray(self.index.arrays[AGREEMENT][rows])

    def _exact(self, text: torch.Tensor, rows: np.ndarray, state=None, agreement=None) -> np.ndarray:
        if state is None:
            state, agreement = self.index.state_rows(rows), self._agreement(rows)
        return self.scorer.score(text, state, agreement)

    def moments(self, text: torch.Tensor, rows: np.ndarray) -> list[tuple[float, float, float]]:
        """(start, end, resolution) in seconds of where query `text` [D] matches each video row."""
        times = np.asarray(self.index.arrays["times"][rows], dtype=np.float64)
        durations = np.asarray(self.index.arrays["durations"][rows], dtype=np.float64)
        weights = self.scorer.frame_weights(text, self.index.state_rows(rows))
        if weights is None:
            frames = np.asarray(self.index.arrays["frames"][rows], dtype=np.float32)
            mask = np.asarray(self.index.arrays["mask"][rows])
            weights = best_frame_weights(text.cpu().numpy(), frames, mask)
        return [(*moment(w, t, d)[:2], resolution(t, d)) for w, t, d in zip(weights, times, durations)]

    def _anchors(self, row: int) -> list[tuple[str, float]]:
        if self.index.labels is None or "anchor_ids" not in self.index.arrays:
            return []
        ids = self.index.arrays["anchor_ids"][row]
        probs = self.index.arrays["anchor_probs"][row]
        return [(self.index.labels[int(i)], float(p)) for i, p in zip(ids, probs)]

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """bool [N] of the videos `filters` keep (None: all), cached per filter."""
        if filters is None or filters.empty:
            return None
        if filters not in self._masks:
            if len(self._masks) > 64:
                self._masks.clear()
            mtimes = np.fromiter((v.mtime_ns for v in self.index.manifest.videos), np.int64,
                                 len(self.index))
            self._masks[filters] = filters.mask(
                np.array(self.index.paths, dtype=str),
                np.asarray(self.index.arrays["durations"], np.float64), mtimes)
        return self._masks[filters]

    def ranked(self, text: torch.Tensor, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(every scored candidate's row, best first; their exact scores; the reference sample's
        scores) for one query; at least k candidates are scored, all among `allowed` rows."""
        n = len(self.index)
        text = text.float().cpu()
        candidates = np.sort(self.shortlist.top(text.numpy(), max(self.shortlist_size, k), allowed))
        scores = self._exact(text, candidates)
        order = np.argsort(-scores, kind="stable")
        if len(candidates) == n:
            reference = scores[np.searchsorted(candidates, self.reference)]
        elif not len(candidates):
            return candidates, scores, np.empty(0)
        else:
            reference = self._exact(text, self.reference, self._reference_state,
                                    self._reference_agreement)
        return candidates[order], scores[order], reference

    def groups(self, text: torch.Tensor, k: int, allowed: np.ndarray | None = None):
        """The k best results as (row, score, [rows of its near-duplicates]), and the reference
        sample's scores: ranked candidates with copies folded into the result they copy."""
        rows, scores, reference = self.ranked(text, k, allowed)
        if self.duplicate_threshold is None:
            return [(int(r), float(s), []) for r, s in zip(rows[:k], scores[:k])], reference
        ascending = np.argsort(rows)
        means = np.empty((len(rows), self.index.arrays["mean"].shape[1]), dtype=np.float32)
        means[ascending] = np.asarray(self.index.arrays["mean"][rows[ascending]], np.float32)
        grouped = collapse(rows, means, k, self.duplicate_threshold)
        score_of = dict(zip(rows.tolist(), scores.tolist()))
        return [(row, score_of[row], copies) for row, copies in grouped], reference

    def confidence_of(self, top_scores: np.ndarray, reference: np.ndarray) -> Confidence:
        """The calibrated probability that the first of `top_scores` is the right video."""
        cal = self.calibrator
        features = query_features(float(top_scores[0]),
                                  float(top_scores[1]) if len(top_scores) > 1 else None, reference)
        named = dict(zip(("score", "margin", "z"), (float(f) for f in features)))
        if cal is None:
            return Confidence(False, features=named)
        return Confidence(True, float(cal.probability(features)[0]), float(cal.threshold),
                          cal.method, named)

    # ---- queries --------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, filters: Filters | None = None) -> SearchResult:
        started = time.perf_counter()
        if self.encode_text is None:
            raise ValueError("this Searcher has no text encoder; use search_encoded")
        text = self.encode_text([query])[0]
        encoded = time.perf_counter()
        result = self.search_encoded(query, text, k, filters=filters)
        result.timings_ms["encode_text"] = round(1000 * (encoded - started), 2)
        return result

    def search_image(self, image, k: int = 10, label: str | None = None,
                     filters: Filters | None = None) -> SearchResult:
        """Videos matching a still image (a path or the file's bytes), scored as a text would be:
        the image's feature, computed as for a one-frame clip, queries the fusion head."""
        if self.model is None:
            raise ValueError("this Searcher has no model to encode images; use Searcher.open")
        feature = self.model.encode_images([image])[0]
        name = label or (str(image) if not isinstance(image, bytes) else "uploaded image")
        return self.search_encoded(f"image: {name}", feature, k, kind="image", filters=filters)

    def search_like(self, video: str, k: int = 10, filters: Filters | None = None) -> SearchResult:
        """Videos like `video` (an indexed path, or any video file): frame-mean cosine, the
        query video itself left out. Moments are whole clips: nothing in the query is a moment."""
        k = max(1, min(int(k), MAX_K))
        row = self.index.row_of.get(str(video))
        if row is not None:
            query = np.asarray(self.index.arrays["mean"][row], np.float32)
        else:
            if self.model is None:
                raise ValueError(f"{video} is not in the index and this Searcher has no model")
            path = Path(video)
            if not path.is_file():
                raise SearchIndexError(f"{video}: neither an indexed path nor a video file")
            try:
                query = self.model.encode_videos([path]).mean[0].numpy()
            except ValueError as exc:
                raise SearchIndexError(str(exc)) from None
        t0 = time.perf_counter()
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        allowed = self.allowed(filters)
        candidates = np.sort(self.shortlist.top(query, max(self.shortlist_size, k + 1), allowed))
        means = np.asarray(self.index.arrays["mean"][candidates], np.float32)
        sims = unit(means) @ query
        order = np.argsort(-sims, kind="stable")
        order = order[candidates[order] != (-1 if row is None else row)]
        rows, sims = candidates[order], sims[order]
        if self.duplicate_threshold is None:
            grouped = [(int(r), []) for r in rows[:k]]
        else:
            grouped = collapse(rows, means[order], k, self.duplicate_threshold)
        score_of = dict(zip(rows.tolist(), sims.tolist()))
        durations = self.index.arrays["durations"]
        times = self.index.arrays["times"]
        hits = [
            Hit(path=self.index.paths[r], score=float(score_of[r]), start=0.0,
                end=float(durations[r]), anchors=self._anchors(r),
                thumbnail=store.thumbnail_name(self.index.paths[r]), row=r,
                resolution=resolution(np.asarray(times[r], np.float64), float(durations[r])),
                duplicates=[self.index.paths[c] for c in copies])
            for r, copies in grouped
        ]
        note = "find similar: frame-mean cosine; " + UNCALIBRATED_KIND
        return SearchResult(f"like: {video}", hits, Confidence(False), note,
                            {"rank": round(1000 * (time.perf_counter() - t0), 2)},
                            filters=self._filter_report(filters, allowed))

    def _filter_report(self, filters: Filters | None, allowed: np.ndarray | None) -> dict | None:
        if allowed is None:
            return None
        return {**filters.to_json(), "matching": int(allowed.sum()), "of": len(self.index)}

    def search_encoded(self, query: str, text: torch.Tensor, k: int = 10,
                       kind: str = "text", filters: Filters | None = None) -> SearchResult:
        """Search with an already encoded query feature [D] (a text's, or an image's: `kind`)."""
        k = max(1, min(int(k), MAX_K))
        n = len(self.index)
        if n == 0:
            return SearchResult(query, [], Confidence(self.calibrator is not None),
                                "the index holds no videos")
        t0 = time.perf_counter()
        allowed = self.allowed(filters)
        report = self._filter_report(filters, allowed)
        if allowed is not None and not allowed.any():
            return SearchResult(query, [], Confidence(self.calibrator is not None),
                                "no indexed video matches the filters", filters=report)
        # one more than shown: the margin feature needs the second-best score
        groups, reference = self.groups(text, max(k, 2), allowed)
        t1 = time.perf_counter()
        confidence = self.confidence_of(np.array([g[1] for g in groups]), reference)
        if kind != "text":  # the calibration split held text queries only
            confidence = Confidence(False, features=confidence.features)
        groups = groups[:k]
        spans = self.moments(text.float().cpu(), np.array([g[0] for g in groups]))
        hits = [
            Hit(path=self.index.paths[row], score=score, start=span[0], end=span[1],
                anchors=self._anchors(row), thumbnail=store.thumbnail_name(self.index.paths[row]),
                row=row, resolution=span[2], duplicates=[self.index.paths[c] for c in copies])
            for (row, score, copies), span in zip(groups, spans)
        ]
        if kind != "text":
            note = f"{kind} query: " + UNCALIBRATED_KIND
        elif not confidence.calibrated:
            note = "uncalibrated: scores only (index with --calibrate for a probability)"
        elif not confidence.confident:
            note = (f"no confident match: the best result is right with probability "
                    f"{confidence.probability:.2f}, below the threshold {confidence.threshold:.2f}")
        else:
            note = ""
        t2 = time.perf_counter()
        timings = {"rank": (t1 - t0) * 1000, "explain": (t2 - t1) * 1000}
        return SearchResult(query, hits, confidence, note,
                            {name: round(v, 2) for name, v in timings.items()}, filters=report)


def format_results(result: SearchResult) -> str:
    """Plain-text rendering for `calm search`."""
    lines = [f"query: {result.query}"]
    c = result.confidence
    if c.calibrated and c.probability is not None:
        verdict = "confident" if c.confident else "no confident match"
        lines.append(f"  top result right with probability {100 * c.probability:.0f}% "
                     f"(threshold {100 * c.threshold:.0f}%): {verdict}")
    elif result.note:
        lines.append(f"  ({result.note})")
    for rank, h in enumerate(result.results, 1):
        anchors = ", ".join(f"{a} {p:.2f}" for a, p in h.anchors[:3])
        d = time_decimals(h.resolution)
        lines.append(
            f"{rank:3d}. {h.score:+.4f}  {h.start:7.{d}f}-{h.end:7.{d}f}s  {h.path}"
            + (f"  [{anchors}]" if anchors else "")
        )
        if h.duplicates:
            lines.append(f"       also: {', '.join(h.duplicates)}")
    return "\n".join(lines)
