"""Writes a frame cache (calm.data.frame_cache) for every video under a folder, resumably.

Each clip is decoded once with the training sampler's own timeline and decoder (one pass over the
frames it needs: T test frames and up to T x K train candidates), centre-cropped to S x S as the
sampler does, encoded and appended to the worker's shard. The main process appends the clip's
manifest line only after the worker has flushed its frames, so the manifest never points at
missing bytes. A rerun reads the manifest and caches only clips without a good record (or whose
source size changed); a killed run loses at most the clips in flight, whose orphaned bytes stay
unreferenced in their shard.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from calm.data.errors import DataError, VideoDecodeError
from calm.data.frame_cache import (
    MANIFEST,
    SETTINGS_FILE,
    SHARDS,
    CacheSettings,
    encode_image,
    read_manifest,
    read_settings,
    segment_plan,
)
from calm.data.prepare import find_videos
from calm.data.video import FrameSampler, FrameSpec, open_video, read_frame_table

SHARD_BYTES = 1 << 30  # start a new shard file past 1 GiB


@dataclass
class CacheResult:
    key: str
    status: str  # cached | skipped | failed
    reason: str = ""
    frames: int = 0  # frames stored for the clip
    bytes: int = 0  # bytes stored for the clip
    elapsed: float = 0.0


class _ShardWriter:
    """The current worker process's open shard (one per process, rolled at SHARD_BYTES)."""

    def __init__(self, root: Path):
        self.root = root
        self.file = None
        self.name = ""
        self.size = 0

    def append(self, blobs: list[bytes]) -> tuple[str, int]:
        total = sum(len(b) for b in blobs)
        if self.file is None or self.size + total > SHARD_BYTES:
            if self.file is not None:
                self.file.close()
            self.name = f"{SHARDS}/{uuid.uuid4().hex}.bin"
            (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
            self.file = open(self.root / self.name, "ab")  # noqa: SIM115 - lives with the process
            self.size = 0
        offset = self.size
        for blob in blobs:
            self.file.write(blob)
        self.file.flush()  # before the main process records the clip
        self.size += total
        return self.name, offset


_WRITERS: dict[int, _ShardWriter] = {}


def _writer(root: Path) -> _ShardWriter:
    pid = os.getpid()
    if pid not in _WRITERS:
        _WRITERS[pid] = _ShardWriter(root)
    return _WRITERS[pid]


def cache_clip(path: Path, settings: CacheSettings) -> tuple[list[bytes], dict]:
    """(encoded frames, manifest fields) of one clip; raises VideoDecodeError naming the file."""
    sampler = FrameSampler(FrameSpec(settings.num_frames, settings.image_size), "test")
    container, stream = open_video(path)
    with container:
        table = read_frame_table(container, stream, path)
        test_slots, train_slots = segment_plan(
            table.num_slots, settings.num_frames, settings.per_segment
        )
        test = table.frames_at(test_slots)
        train = [table.frames_at(c) for c in train_slots]
        needed = sorted(set(test).union(*train))
        got = sampler.decode_frames(container, stream, table, needed, path)
    row = {frame: r for r, frame in enumerate(needed)}
    blobs = [encode_image(got[frame], settings) for frame in needed]
    fields = {
        "slots": table.num_slots,
        "test": [row[f] for f in test],
        "train": [[row[f] for f in cands] for cands in train],  # slots, so repeats stay
    }
    return blobs, fields


def _work(task: tuple[str, str, str, CacheSettings]) -> tuple[CacheResult, dict]:
    """One clip in a worker: never raises; the record says what happened."""
    src, key, root, settings = task
    t0 = time.perf_counter()
    path = Path(src)
    try:
        source_bytes = path.stat().st_size
        blobs, fields = cache_clip(path, settings)
        shard, offset = _writer(Path(root)).append(blobs)
    except Exception as exc:  # one bad file must not stop the others; the manifest says why
        reason = exc.reason if isinstance(exc, VideoDecodeError) else f"{type(exc).__name__}: {exc}"
        record = {"key": key, "status": "failed", "reason": reason}
        return CacheResult(key, "failed", reason, elapsed=time.perf_counter() - t0), record
    sizes = [len(b) for b in blobs]
    record = {
        "key": key,
        "status": "ok",
        "source_bytes": source_bytes,
        "shard": shard,
        "offset": offset,
        "sizes": sizes,
        **fields,
    }
    result = CacheResult(key, "cached", "", len(blobs), sum(sizes), time.perf_counter() - t0)
    return result, record


def prepare_frames(
    src: str | Path,
    dst: str | Path,
    settings: CacheSettings,
    workers: int = 2,
    progress: bool = True,
    limit: int | None = None,
) -> list[CacheResult]:
    """Caches every video under `src` into the cache folder `dst` (created or resumed).

    `limit`: stop after caching this many clips (for tests and trial runs); the rest stay
    missing, exactly as after an interrupted run.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"source folder {src} does not exist")
    dst.mkdir(parents=True, exist_ok=True)
    existing = read_settings(dst)
    if existing is None:
        (dst / SETTINGS_FILE).write_text(
            json.dumps({**settings.to_dict(), "source": str(src)}, indent=2) + "\n"
        )
    elif existing != settings:
        raise DataError(
            f"{dst}: the cache there was written with {asdict(existing)}, not {asdict(settings)};"
            " resume it with the same settings or write a new cache to another folder"
        )
    done = read_manifest(dst)
    _repair_torn_line(dst / MANIFEST)

    results: list[CacheResult] = []
    tasks = []
    for path in find_videos(src, skip=dst.resolve()):
        key = path.relative_to(src).as_posix()
        record = done.get(key)
        if record and record["status"] == "ok" and record["source_bytes"] == _size(path):
            results.append(CacheResult(key, "skipped", "cached before", len(record["sizes"]),
                                       sum(record["sizes"])))
        else:
            tasks.append((str(path), key, str(dst), settings))
    if limit is not None:
        tasks = tasks[:limit]

    bar = _progress(len(results) + len(tasks), progress)
    bar.update(len(results))
    with open(dst / MANIFEST, "a", encoding="utf-8") as manifest:

        def record(result: CacheResult, line: dict) -> None:
            manifest.write(json.dumps(line) + "\n")
            manifest.flush()
            results.append(result)
            bar.update(1)

        if workers > 1 and len(tasks) > 1:
            ctx = multiprocessing.get_context("spawn" if sys.platform != "linux" else "fork")
            with ctx.Pool(min(workers, len(tasks))) as pool:
                for result, line in pool.imap_unordered(_work, tasks):
                    record(result, line)
        else:
            for task in tasks:
                record(*_work(task))
    bar.close()
    writer = _WRITERS.pop(os.getpid(), None)
    if writer is not None and writer.file is not None:
        writer.file.close()
    results.sort(key=lambda r: r.key)
    return results


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _repair_torn_line(path: Path) -> None:
    """Cuts a last line left without its newline by a killed run, so appends start clean."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _progress(total: int, enabled: bool):
    return tqdm(total=total, unit="video", disable=not enabled, dynamic_ncols=True)
