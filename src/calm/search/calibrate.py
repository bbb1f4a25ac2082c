"""`calm index --calibrate`: fit the search confidence on a split whose answers are known.

The split is the checkpoint's own validation split (its config's `data.dataset`,
`data.annotations`, `data.videos`, `data.val_split`, `data.options`) unless explicit
`--calibration-*` flags name another. Its videos are encoded and held in memory as a small
index; every caption is searched there exactly as `calm search` searches (shortlist, exact
scores, reference sample), and its best result is right when it is the caption's own video.
The fitted calibrator (`calm.search.calibration`) is stored in the index manifest with what it
measured, so `calm search` needs nothing but the index. The same split's videos, copied
(re-encoded, resized, cut), give the near-duplicate threshold for this model
(`calm.search.duplicates`).

The probability depends on how many videos compete: fitted among the split's 60 videos and read
in an index of 1,800, it said 0.49 where 5.6 % of top results were right (ECE 0.43,
README "Search"). So the split's captions are searched among the split's videos *and the
videos of the index being calibrated* (all of them up to `MAX_COMPETITORS`, else an evenly
spread sample of that many; a split video that is also in the index is counted once), with
near-duplicates folded at the threshold measured for this model, as `calm search` folds them.
The manifest records how many videos competed and out of how many.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calm.api import CalmModel
from calm.data.annotations import SplitAnnotations
from calm.data.errors import DataError
from calm.data.synthetic.copies import KINDS, write_copy
from calm.search.calibration import fit_calibrator
from calm.search.duplicates import COPIES, fit_threshold, unit
from calm.search.scoring import Scorer
from calm.search.searcher import MemoryIndex, Searcher
from calm.search.store import SearchIndexError

TEXT_BATCH = 256
# videos of the index searched beside the calibration split's own: 5,000 xpool states of 12 x 512
# are about 250 MB in memory; past that an evenly spread sample stands in for the index
MAX_COMPETITORS = 5000


@dataclass
class CalibrationSource:
    dataset: str
    annotations: str
    videos: str
    split: str
    options: dict


def source_for(model: CalmModel, dataset: str | None = None, annotations: str | None = None,
               videos: str | None = None, split: str | None = None) -> CalibrationSource:
    """The checkpoint's validation split, with any explicitly given part replacing its own."""
    data = model.cfg.data
    explicit = dataset is not None
    src = CalibrationSource(
        dataset=dataset or data.dataset,
        annotations=annotations or ("" if explicit else data.annotations) or "",
        videos=videos or ("" if explicit else data.videos) or "",
        split=split or data.val_split,
        options={} if explicit else dict(data.options or {}),
    )
    for name in ("annotations", "videos"):
        value = getattr(src, name)
        if not value:
            raise SearchIndexError(
                f"calibration: the checkpoint's config names no data.{name}; pass "
                f"--calibration-{name} (and --calibration-dataset) for a split with known answers"
            )
        if not Path(value).exists():
            raise SearchIndexError(
                f"calibration: {value} (data.{name} of the calibration split) does not exist; "
                f"pass --calibration-{name} where it lives now"
            )
    return src


def load_source(src: CalibrationSource) -> SplitAnnotations:
    from calm.data.benchmarks.common import load_split

    try:
        return load_split(src.dataset, src.annotations, src.videos, src.split, src.options)
    except DataError as exc:
        raise SearchIndexError(f"calibration split {src.dataset}/{src.split}: {exc}") from None


def encode_split(model: CalmModel, ann: SplitAnnotations, workers: int = 0,
                 batch_size: int = 8, progress: bool = False) -> tuple[MemoryIndex, list[str]]:
    """The split's videos as an in-memory index (row order = decoded files), and the failures."""
    from calm.search.build import index_rows, model_record

    paths = [str(v.path) for v in ann.videos]
    blocks, decoded, failed = [], [], []
    for enc in model.iter_encode_videos(paths, workers, progress, batch_size):
        failed.extend(f"{p}: {r}" for p, r in enc.failed)
        if len(enc):
            blocks.append(index_rows(model, enc))
            decoded.extend(enc.paths)
    if not blocks:
        raise SearchIndexError("calibration: no video of the split could be decoded; "
                               + "; ".join(failed[:5]))
    arrays = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    return MemoryIndex(decoded, arrays, model_record(model)), failed


def calibration_examples(searcher: Searcher, texts, targets: np.ndarray, batch: int = TEXT_BATCH):
    """(features [N, 3], top result right [N], target row [N]) for encoded queries `texts`."""
    features, correct = [], []
    for i, text in enumerate(texts):
        groups, reference = searcher.groups(text, 2)
        conf = searcher.confidence_of(np.array([g[1] for g in groups]), reference)
        features.append([conf.features[k] for k in ("score", "margin", "z")])
        top, copies = groups[0][0], groups[0][2]
        correct.append(int(targets[i]) in (top, *copies))
    return np.array(features, dtype=np.float64), np.array(correct, dtype=np.float64)


def measure_duplicates(model: CalmModel, index: MemoryIndex, workers: int = 0,
                       batch_size: int = 8, copies: int = COPIES) -> dict:
    """The near-duplicate threshold for this model: frame-mean cosines of up to `copies` of the
    split's videos with their copies of every kind, against those of distinct split videos."""
    means = unit(index.arrays["mean"])
    pick = np.linspace(0, len(index) - 1, min(copies, len(index))).round().astype(int)
    pick = np.unique(pick)
    with tempfile.TemporaryDirectory(prefix="calm-copies-") as tmp:
        written, origin = [], []
        for kind in KINDS:
            for i in pick:
                try:
                    written.append(write_copy(index.paths[i], Path(tmp) / kind / f"{i}.mp4", kind,
                                              seed=int(i)))
                    origin.append((kind, int(i)))
                except Exception:  # noqa: BLE001 - a clip too short to cut, a codec missing
                    continue
        encoded = {}
        for enc in model.iter_encode_videos(written, workers, False, batch_size):
            encoded.update(zip(enc.paths, unit(enc.mean.numpy())))
    cosines: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for path, (kind, i) in zip(written, origin):
        if str(path) in encoded:
            cosines[kind].append(float(encoded[str(path)] @ means[i]))
    cosines = {k: np.array(v) for k, v in cosines.items() if v}
    if not cosines:
        raise SearchIndexError("calibration: no copy of a split video could be written and read")
    pair = means @ means.T
    return fit_threshold(cosines, pair[np.triu_indices(len(means), 1)])


@dataclass
class Collection:
    """The index being calibrated: its videos' absolute paths and its arrays (memory-mapped)."""

    paths: list[Path]
    arrays: dict[str, np.ndarray]


def with_competitors(split: MemoryIndex, collection: Collection | None,
                     limit: int = MAX_COMPETITORS) -> tuple[MemoryIndex, int, int]:
    """The split's rows first (their row numbers are the captions' targets), then the
    collection's rows that are not split videos (all, or `limit` of them evenly spread);
    returns (index, competitors used, competitors available)."""
    if collection is None:
        return split, 0, 0
    own = {Path(p).resolve() for p in split.paths}
    others = [i for i, p in enumerate(collection.paths) if Path(p).resolve() not in own]
    available = len(others)
    if available > limit:
        others = [others[i] for i in np.linspace(0, available - 1, limit).round().astype(int)]
    if not others:
        return split, 0, available
    rows = np.asarray(others)
    keys = [k for k in split.arrays if k in collection.arrays]
    arrays = {k: np.concatenate([split.arrays[k], np.asarray(collection.arrays[k][rows])])
              for k in keys}
    paths = [*split.paths, *(str(collection.paths[i]) for i in others)]
    return MemoryIndex(paths, arrays, split.manifest.checkpoint), len(others), available


def calibrate(model: CalmModel, src: CalibrationSource, workers: int = 0, batch_size: int = 8,
              progress: bool = False, shortlist: int | None = None,
              collection: Collection | None = None) -> dict:
    """Fits the confidence calibrator and measures the duplicate threshold on `src`, searching
    its captions among its videos and `collection`'s; returns {"confidence": calibrator JSON
    with its report, "duplicates": the threshold's measurement}."""
    ann = load_source(src)
    split, failed = encode_split(model, ann, workers, batch_size, progress)
    duplicates = measure_duplicates(model, split, workers, batch_size)
    duplicates["source"] = asdict(src)
    row_of = {p: i for i, p in enumerate(split.paths)}
    kept = [(t.text, row_of[str(ann.videos[t.video_index].path)]) for t in ann.texts
            if str(ann.videos[t.video_index].path) in row_of]
    if not kept:
        raise SearchIndexError("calibration: no caption of the split has a decodable video")
    gallery, competitors, available = with_competitors(split, collection)
    kwargs = {} if shortlist is None else {"shortlist": shortlist}
    searcher = Searcher(gallery, Scorer.from_model(model),
                        duplicate_threshold=duplicates["threshold"], **kwargs)
    texts = [t for t, _ in kept]
    targets = np.array([r for _, r in kept])
    encoded = [model.encode_texts(texts[i : i + TEXT_BATCH]) for i in range(0, len(texts), TEXT_BATCH)]
    features, correct = calibration_examples(searcher, [t for block in encoded for t in block],
                                             targets)
    try:
        cal = fit_calibrator(features, correct, targets)
    except ValueError as exc:
        raise SearchIndexError(f"calibration on {src.dataset}/{src.split}: {exc}") from None
    cal.report.update({
        "source": asdict(src),
        "collection": len(gallery),
        "split_videos": len(split),
        "competitors": competitors,
        "competitors_available": available,
        "videos_failed": len(failed),
    })
    return {"confidence": cal.to_json(), "duplicates": duplicates}
