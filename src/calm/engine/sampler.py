"""A seeded, resumable, shardable order of training items."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Permutation of range(n) drawn from (seed, epoch); rank r of w takes every w-th batch slot.

    `start` skips the first items of this process's order, so a resumed run continues exactly
    where the killed one stopped.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch * self.batch_size

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.batches_per_epoch() * self.batch_size
        # global batch b holds perm[b*B*w : (b+1)*B*w]; rank r takes its r-th local slice
        mine = []
        for b in range(self.batches_per_epoch()):
            base = b * self.batch_size * self.world_size + self.rank * self.batch_size
            mine.extend(perm[base : base + self.batch_size])
        return mine[:per_rank]

    def __iter__(self):
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() * self.batch_size - self.start)
