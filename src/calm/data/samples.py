"""Torch datasets over parsed annotations: training pairs, evaluation videos and texts, collate.

The datasets know nothing of the model: they receive a `FrameSampler` (image size, mean, std,
frame count already set), or a frame cache's `CachedFrames`, and a
`tokenize(list[str]) -> LongTensor[N, L]` callable. Frames come out as uint8 [T, 3, S, S]; the
engine normalises each batch on its device (`calm.data.video.normalize_frames`).

Missing or undecodable videos follow one of two policies:
- `error` (default): the sampler's `VideoDecodeError`, which names the path and the reason, is
  raised. Loaded through `calm.data.worker_errors.WorkerSafeLoader`, it reaches the main process
  as itself from DataLoader workers too (plain torch would turn it into a RuntimeError).
- `skip`: `__getitem__` returns a `SkippedVideo` record instead of an item; `collate` drops it and
  lists it under `batch["skipped"]`, so the main process sees every skip even when workers do
  the decoding, and `SkipLog` accumulates them for the run directory. A black frame is never
  substituted.

Randomness (which caption of a video, which frame offsets under training sampling) comes from a
generator seeded by (seed, epoch, index), so an epoch is the same whichever worker decodes which
item, and a resumed run repeats it exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from calm.data.annotations import SplitAnnotations
from calm.data.errors import DataError, VideoDecodeError

Tokenizer = Callable[[list[str]], Tensor]
POLICIES = ("error", "skip")
PAIR_MODES = ("all", "one_per_video")


@dataclass(frozen=True)
class SkippedVideo:
    """A sample dropped under the `skip` policy: which video, where it was expected, and why."""

    video_id: str
    path: str
    reason: str
    video_index: int


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one item in one epoch: the same in every worker and every resumed run."""
    return random.Random(f"calm/{seed}/{epoch}/{index}")


class _VideoItems(Dataset):
    """Decoding under the missing-video policy, shared by the datasets that return frames."""

    def __init__(self, annotations: SplitAnnotations, sampler, missing_video: str = "error"):
        if missing_video not in POLICIES:
            raise DataError(f"missing_video: {missing_video!r} is not one of {list(POLICIES)}")
        self.annotations = annotations
        self.sampler = sampler
        self.missing_video = missing_video

    def _frames(self, video_index: int, rng: random.Random | None) -> dict | SkippedVideo:
        record = self.annotations.videos[video_index]
        try:
            frames, mask = self.sampler.clip(record.path, rng=rng)  # uint8: normalised on device
        except VideoDecodeError as exc:
            if self.missing_video == "error":
                raise
            return SkippedVideo(record.video_id, exc.path, exc.reason, video_index)
        return {"frames": frames, "frame_mask": mask, "video_index": video_index}


class PairDataset(_VideoItems):
    """Training pairs of (caption tokens, sampled frames).

    `pairs="all"`: one item per caption (every caption-video pair, ~180k for MSR-VTT 9k).
    `pairs="one_per_video"`: one item per video with a caption drawn from (seed, epoch, index).
    Call `set_epoch(e)` before building each epoch's DataLoader iterator; with
    `persistent_workers=True` the workers would keep the epoch they were started with.
    """

    def __init__(
        self,
        annotations: SplitAnnotations,
        sampler,
        tokenize: Tokenizer,
        pairs: str = "all",
        missing_video: str = "error",
        seed: int = 0,
    ):
        super().__init__(annotations, sampler, missing_video)
        if pairs not in PAIR_MODES:
            raise DataError(f"pairs: {pairs!r} is not one of {list(PAIR_MODES)}")
        self.tokenize = tokenize
        self.pairs = pairs
        self.seed = seed
        self.epoch = 0
        groups = annotations.captions_per_video()
        # one_per_video: only videos that have a caption can form a pair.
        self._groups = [(v, g) for v, g in enumerate(groups) if g]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.annotations.texts) if self.pairs == "all" else len(self._groups)

    def __getitem__(self, index: int) -> dict | SkippedVideo:
        rng = item_rng(self.seed, self.epoch, index)
        if self.pairs == "all":
            text_index = index
            video_index = self.annotations.texts[index].video_index
        else:
            video_index, group = self._groups[index]
            text_index = group[rng.randrange(len(group))]
        item = self._frames(video_index, rng)
        if isinstance(item, SkippedVideo):
            return item
        item["tokens"] = self.tokenize([self.annotations.texts[text_index].text])[0]
        item["text_index"] = text_index
        return item


class VideoDataset(_VideoItems):
    """Every video of a split once, for evaluation; give it a sampler built with mode="test"."""

    def __len__(self) -> int:
        return len(self.annotations.videos)

    def __getitem__(self, index: int) -> dict | SkippedVideo:
        return self._frames(index, None)


class TextDataset(Dataset):
    """Every text of a split once, for evaluation."""

    def __init__(self, annotations: SplitAnnotations, tokenize: Tokenizer):
        self.annotations = annotations
        self.tokenize = tokenize

    def __len__(self) -> int:
        return len(self.annotations.texts)

    def __getitem__(self, index: int) -> dict:
        return {
            "tokens": self.tokenize([self.annotations.texts[index].text])[0],
            "text_index": index,
        }


def collate(items: Sequence[dict | SkippedVideo | None]) -> dict:
    """Stacks kept items; always returns a dict with `size` (kept items) and `skipped` (records).

    When every item was skipped the batch is `{"size": 0, "skipped": [...]}` with no tensors:
    the caller counts the skips and moves on to the next batch.
    """
    kept = [it for it in items if isinstance(it, dict)]
    batch: dict = {
        "size": len(kept),
        "skipped": [it for it in items if isinstance(it, SkippedVideo)],
    }
    for key in kept[0] if kept else ():
        values = [it[key] for it in kept]
        batch[key] = torch.stack(values) if isinstance(values[0], Tensor) else torch.tensor(values)
    return batch


class SkipLog:
    """Accumulates skipped samples across batches and writes them to the run directory."""

    def __init__(self):
        self.records: dict[str, SkippedVideo] = {}
        self.samples = 0  # skipped samples, counting a video once per time it was drawn

    def update(self, skipped: Sequence[SkippedVideo]) -> None:
        for record in skipped:
            self.samples += 1
            self.records.setdefault(record.video_id, record)

    def merge(self, other: SkipLog) -> None:
        """Adds another process's (or run segment's) skips."""
        self.samples += other.samples
        for video_id, record in other.records.items():
            self.records.setdefault(video_id, record)

    @classmethod
    def from_dict(cls, data: dict) -> SkipLog:
        """The inverse of `to_dict`, for resuming a run with its skips."""
        log = cls()
        log.samples = data.get("skipped_samples", 0)
        for record in data.get("videos", []):
            log.records[record["video_id"]] = SkippedVideo(**record)
        return log

    def __len__(self) -> int:
        return len(self.records)

    def to_dict(self) -> dict:
        return {
            "skipped_samples": self.samples,
            "skipped_videos": len(self.records),
            "videos": [asdict(r) for r in self.records.values()],
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path
