"""A frame cache: the frames training and evaluation sample, decoded once, read back in milliseconds.

Decoding video is the bottleneck of a GPU run (a 30 s 360p clip costs ~0.1-0.4 s of CPU per
sample). `calm prepare-frames` (calm.data.prepare_frames) decodes each clip once and stores, for
each of T segments of its timeline, the test-mode frame (the segment's middle, exactly what
`FrameSampler(mode="test")` returns) and K train candidates spread evenly over the segment (for
odd K the test frame is the middle candidate, so the default K=3 stores 3 frames per segment). At
train time one candidate per segment is drawn from the item's generator, so every epoch still
sees different frames, from K^T combinations per clip instead of the full timeline.

K=0 stores every slot of every segment: a *complete* cache. With the raw codec it is lossless,
and a train-mode draw takes the same random numbers as `FrameSampler`'s, so training from it is
bit-identical to training from the videos (tests/test_frame_cache.py); what it saves is the
decoding. The demo and the grids use one for the training domain of small synthetic clips.

Layout of a cache folder:
- `cache.json`: the settings (T, K, image size, codec) every clip was written with.
- `shards/*.bin`: frames back to back, each a JPEG (default) or raw uint8 S x S x 3 bytes;
  memory-mapped once per process.
- `manifest.jsonl`: one line per clip, appended as clips finish (the last line for a key wins):
  `{"key", "status": "ok", "source_bytes", "slots", "shard", "offset", "sizes", "test",
  "train"}` where `test` lists the row (frame within the clip) of each segment and `train` the
  candidate rows of each segment; or `{"key", "status": "failed", "reason"}`.

Keys are paths relative to the video folder the cache was written from, so a cache built from
`data.videos` serves any copy of that folder (or none: the videos need not be present).
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from calm.data.errors import DataError, VideoDecodeError
from calm.data.timeline import sample_indices, segment_bounds
from calm.data.video import FrameSpec, normalize_frames, to_clip

CACHE_FORMAT = "calm-frame-cache"
CACHE_VERSION = 1
SETTINGS_FILE = "cache.json"
MANIFEST = "manifest.jsonl"
SHARDS = "shards"
CODECS = ("jpeg", "raw")


@dataclass(frozen=True)
class CacheSettings:
    """What a cache holds per clip; fixed when the cache folder is first written."""

    num_frames: int = 12
    per_segment: int = 3  # train candidates per segment (odd: the middle one is the test frame;
    # 0: every slot, a complete cache)
    image_size: int = 224
    codec: str = "jpeg"  # jpeg (compact) | raw (lossless, ~10x the disk)
    quality: int = 90  # JPEG quality

    def __post_init__(self):
        if self.num_frames < 1 or self.per_segment < 0 or self.image_size < 1:
            raise DataError(
                f"frame cache: frames and size must be >= 1 and per-segment >= 0 (0: every "
                f"frame), got {self.num_frames}, {self.per_segment}, {self.image_size}"
            )
        if self.codec not in CODECS:
            raise DataError(f"frame cache: codec must be one of {list(CODECS)}, got {self.codec!r}")
        if not 1 <= self.quality <= 100:
            raise DataError(f"frame cache: JPEG quality must be in 1..100, got {self.quality}")

    def to_dict(self) -> dict:
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, **self.__dict__}

    @classmethod
    def from_dict(cls, data: dict, where) -> CacheSettings:
        if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
            raise DataError(
                f"{where}: not a calm frame cache of version {CACHE_VERSION} "
                f"(format {data.get('format')!r}, version {data.get('version')!r})"
            )
        keys = ("num_frames", "per_segment", "image_size", "codec", "quality")
        return cls(**{k: data[k] for k in keys if k in data})


def read_settings(root: str | Path) -> CacheSettings | None:
    """The settings in root/cache.json, or None when the folder holds no cache yet."""
    path = Path(root) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable frame cache settings: {exc}") from exc
    return CacheSettings.from_dict(data, path)


def read_manifest(root: str | Path) -> dict[str, dict]:
    """key -> the last record written for it. A torn last line (an interrupted run) is ignored."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the writer was stopped mid-line
                continue
            raise DataError(f"{path}: line {number}: not a JSON record") from None
        records[record["key"]] = record
    return records


def segment_plan(n_slots: int, num_frames: int, per_segment: int) -> tuple[list, list[list]]:
    """(test slot per segment, train candidate slots per segment) of a timeline of n_slots.

    The test slot is `sample_indices(n, T, "test")`'s; the K candidates are the centres of K equal
    parts of the segment (fewer when the segment is shorter), where for odd K the middle one is
    the test slot itself, so a clip stores K frames per segment rather than K + 1; K = 0: every
    slot of the segment. Timelines of at most T slots have one segment per slot, as the sampler
    gives them.
    """
    test = sample_indices(n_slots, num_frames, "test")
    if n_slots <= num_frames:
        return test, [[s] for s in test]
    bounds = segment_bounds(n_slots, num_frames)
    if per_segment == 0:
        return test, [list(range(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]
    train = []
    for middle, lo, hi in zip(test, bounds, bounds[1:]):
        spots = [lo + (2 * k + 1) * (hi - lo) // (2 * per_segment) for k in range(per_segment)]
        if per_segment % 2:
            spots[per_segment // 2] = middle
        train.append(sorted(set(spots)))
    return test, train


def encode_image(image: np.ndarray, settings: CacheSettings) -> bytes:
    if settings.codec == "raw":
        return np.ascontiguousarray(image).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=settings.quality)
    return buffer.getvalue()


class FrameCache:
    """Read side of a cache folder: its settings, its manifest and memory-mapped shards."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        settings = read_settings(self.root)
        if settings is None:
            raise DataError(
                f"{self.root}: not a frame cache (no {SETTINGS_FILE}); write one with "
                f"`calm prepare-frames --src VIDEOS --dst {self.root}`"
            )
        self.settings = settings
        self.records = read_manifest(self.root)
        self._by_stem: dict[str, str | None] = {}
        for key in self.records:
            stem = os.path.splitext(key)[0]
            self._by_stem[stem] = None if stem in self._by_stem else key  # None: ambiguous
        self._maps: dict[tuple[int, str], np.memmap] = {}

    def __len__(self) -> int:
        return len(self.records)

    def key_for(self, path, videos_root) -> str | None:
        """The cache key of a video path: its path under `videos_root`, or the same name with
        another extension (a loader may expect `x.mp4` where the cached file was `x.mov`)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(videos_root))
        if rel.startswith(".."):
            return None
        rel = Path(rel).as_posix()
        if rel in self.records:
            return rel
        return self._by_stem.get(os.path.splitext(rel)[0])

    def images(self, record: dict, rows: list[int]) -> torch.Tensor:
        """uint8 [len(rows), 3, S, S] of a clip's stored frames."""
        s = self.settings.image_size
        data = self._shard(record["shard"])
        starts = np.cumsum([record["offset"], *record["sizes"]])
        out = torch.empty(len(rows), 3, s, s, dtype=torch.uint8)
        planes = out.numpy()  # the same memory: numpy writes, no copy back
        for n, row in enumerate(rows):
            chunk = data[starts[row] : starts[row + 1]]
            try:
                if self.settings.codec == "raw":
                    planes[n] = chunk.reshape(s, s, 3).transpose(2, 0, 1)
                else:
                    planes[n] = _decode_jpeg(chunk).transpose(2, 0, 1)
            except (OSError, ValueError) as exc:  # a shard damaged after it was written
                raise DataError(
                    f"{self.root / record['shard']}: frame {row} of {record['key']} is unreadable "
                    f"({exc}); delete its manifest line and rerun calm prepare-frames"
                ) from exc
        return out

    def _shard(self, name: str) -> np.memmap:
        key = (os.getpid(), name)  # a forked worker maps its own view
        if key not in self._maps:
            path = self.root / name
            try:
                self._maps[key] = np.memmap(path, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: frame cache shard unreadable: {exc}") from exc
        return self._maps[key]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}  # spawned workers map the shards again
        return state

    def sampler(self, spec: FrameSpec, videos_root, mode: str = "test", augment: bool = False):
        return CachedFrames(self, spec, videos_root, mode, augment)


def _decode_jpeg(chunk: np.ndarray) -> np.ndarray:
    """JPEG bytes -> uint8 [S, S, 3] (Pillow's libjpeg-turbo)."""
    with Image.open(io.BytesIO(chunk)) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


class CachedFrames:
    """The `FrameSampler` interface (`clip`, `__call__`) served from a frame cache.

    Test mode returns the cached test-mode frames; train mode one candidate per segment drawn
    from `rng` (then the same augmentation as the sampler), so an item is the same in every
    worker and every resumed run.
    """

    def __init__(
        self,
        cache: FrameCache,
        spec: FrameSpec,
        videos_root,
        mode: str = "test",
        augment: bool = False,
        min_crop_area: float = 0.5,
    ):
        if augment and mode != "train":
            raise ValueError("augment=True needs mode='train'")
        got = cache.settings
        if (got.num_frames, got.image_size) != (spec.num_frames, spec.image_size):
            raise DataError(
                f"{cache.root}: frame cache holds T={got.num_frames} frames at {got.image_size} px,"
                f" but the run samples T={spec.num_frames} at {spec.image_size} px; write a cache "
                f"with `calm prepare-frames --frames {spec.num_frames} --size {spec.image_size}`"
            )
        self.cache = cache
        self.spec = spec
        self.videos_root = Path(videos_root)
        self.mode = mode
        self.augment = augment
        self.min_crop_area = min_crop_area

    def missing(self, paths) -> list[str]:
        """Paths of existing videos the cache does not hold (an unfinished prepare-frames)."""
        return [
            str(p) for p in paths
            if self.cache.key_for(p, self.videos_root) is None and Path(p).is_file()
        ]

    def rows(self, record: dict, rng: random.Random | None) -> list[int]:
        """The rows of the frames to return. A train draw consumes the generator exactly as
        `sample_indices` does (nothing for a timeline of at most T slots, one `randrange` of
        the segment's length per segment otherwise), so a complete cache draws the sampler's
        frames."""
        if self.mode == "test" or record["slots"] <= self.cache.settings.num_frames:
            return record["test"]
        draw = rng if rng is not None else random
        return [cands[draw.randrange(len(cands))] for cands in record["train"]]

    def clip(self, path, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames [T, 3, S, S] and mask [T], as `FrameSampler.clip` returns them."""
        key = self.cache.key_for(path, self.videos_root)
        if key is None:
            if not Path(path).is_file():
                raise VideoDecodeError(path, "file does not exist (and is not in the frame cache)")
            raise VideoDecodeError(path, f"not in the frame cache {self.cache.root}")
        record = self.cache.records[key]
        if record["status"] != "ok":
            raise VideoDecodeError(path, f"{record['reason']} (found by calm prepare-frames)")
        images = self.cache.images(record, self.rows(record, rng))
        return to_clip(images, self.spec.num_frames, self.augment, rng, self.min_crop_area)

    def __call__(self, path, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        frames, mask = self.clip(path, rng)
        return normalize_frames(frames, self.spec.mean, self.spec.std, mask), mask
