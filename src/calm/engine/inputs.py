"""Turns a DataConfig plus the backbone's preprocessing settings into datasets and loaders."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Subset

from calm.config.errors import ConfigError
from calm.config.schema import DataConfig
from calm.data.annotations import SplitAnnotations
from calm.data.benchmarks.common import get_loader
from calm.data.errors import DataError
from calm.data.frame_cache import FrameCache
from calm.data.samples import PairDataset, TextDataset, VideoDataset, collate
from calm.data.video import FrameSampler, FrameSpec
from calm.data.worker_errors import WorkerSafeLoader
from calm.model.backbone import Preprocess


class Tokenize:
    """A picklable tokenizer callable with a fixed length, so DataLoader workers can use it."""

    def __init__(self, tokenizer, length: int):
        self.tokenizer = tokenizer
        self.length = length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), context_length=self.length)


@dataclass
class DataSetup:
    cfg: DataConfig
    spec: FrameSpec
    tokenize: Tokenize
    _frame_cache: object = field(default=None, init=False, repr=False)

    def split(self, name: str) -> SplitAnnotations:
        loader = get_loader(
            self.cfg.dataset, self.cfg.annotations, self.cfg.videos, self.cfg.options
        )
        return loader.load_split(name)

    def train_dataset(self, ann: SplitAnnotations, seed: int) -> PairDataset:
        return PairDataset(
            ann,
            self.sampler("train", self.cfg.augment, ann),
            self.tokenize,
            pairs=self.cfg.train_pairs,
            missing_video=self.cfg.missing_video,
            seed=seed,
        )

    def video_loader(self, ann: SplitAnnotations, batch_size: int, shard=(0, 1)) -> WorkerSafeLoader:
        dataset = VideoDataset(ann, self.sampler("test", ann=ann), self.cfg.missing_video)
        return self._loader(_shard(dataset, *shard), batch_size)

    def sampler(self, mode: str, augment: bool = False, ann: SplitAnnotations | None = None):
        """A FrameSampler, or the frame cache's reader when `data.frame_cache` is set.

        Both yield uint8 clips; the engine normalises each batch on its device. With a cache,
        videos of `ann` that exist but were never cached (an unfinished prepare-frames) stop
        the run here rather than as skips or errors hours in.
        """
        if not self.cfg.frame_cache:
            return FrameSampler(self.spec, mode=mode, augment=augment)
        if self._frame_cache is None:
            self._frame_cache = FrameCache(self.cfg.frame_cache)
        cached = self._frame_cache.sampler(self.spec, self.cfg.videos, mode, augment)
        missing = cached.missing(r.path for r in ann.videos) if ann is not None else []
        if missing:
            raise DataError(
                f"data.frame_cache {self.cfg.frame_cache}: {len(missing)} videos of split "
                f"{ann.split!r} are not cached (first: {missing[0]}); finish the cache with "
                f"`calm prepare-frames --src {self.cfg.videos} --dst {self.cfg.frame_cache}`"
            )
        return cached

    def text_loader(self, ann: SplitAnnotations, batch_size: int, shard=(0, 1)) -> WorkerSafeLoader:
        return self._loader(_shard(TextDataset(ann, self.tokenize), *shard), batch_size)

    def _loader(self, dataset, batch_size: int, **kwargs) -> WorkerSafeLoader:
        return WorkerSafeLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.cfg.num_workers,
            collate_fn=collate,
            **kwargs,
        )


def _shard(dataset, rank: int, world_size: int):
    """Rank r takes items r, r + w, r + 2w, ...: no padding, no duplicates."""
    if world_size == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


def data_setup(cfg: DataConfig, pre: Preprocess, tokenizer, text_length: int | None = None) -> DataSetup:
    if cfg.annotations is None or cfg.videos is None:
        missing = "data.annotations" if cfg.annotations is None else "data.videos"
        raise ConfigError(
            f"{missing}: required; pass the benchmark's folder with --set {missing}=DIR"
        )
    spec = FrameSpec(
        num_frames=cfg.num_frames, image_size=pre.image_size, mean=pre.mean, std=pre.std
    )
    length = min(text_length or cfg.text_length, pre.context_length)
    return DataSetup(cfg, spec, Tokenize(tokenizer, length))
