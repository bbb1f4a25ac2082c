"""One encode-shard-gather loop for every evaluation pass (video features, text features, captions).

Under torch.distributed each rank walks a strided shard of the split; the per-sample results are
keyed by sample index and gathered, so every rank returns the same complete dict whatever the
number of processes. Skipped videos are merged the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch.distributed as dist
from tqdm import tqdm

from calm.data.samples import SkipLog
from calm.engine.distributed import gather_objects

Shard = tuple[int, int]  # (rank, world size)


def current_shard() -> Shard:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def map_shards(
    batches: Callable[[Shard], Iterable[dict]],
    per_batch: Callable[[dict], dict[int, Any]],
    desc: str,
    progress: bool = False,
) -> tuple[dict[int, Any], SkipLog]:
    """Runs `per_batch` over this rank's shard and gathers {sample index: result} from all ranks.

    `batches(shard)` yields collated batches (`size`, `skipped`, tensors); batches whose every
    video was skipped are counted and passed over.
    """
    shard = current_shard()
    skips, results = SkipLog(), {}
    for batch in tqdm(batches(shard), desc=desc, disable=not progress, leave=False):
        skips.update(batch["skipped"])
        if batch["size"] == 0:
            continue
        results.update(per_batch(batch))
    if shard[1] > 1:
        merged, merged_skips = {}, SkipLog()
        for part, part_skips in gather_objects((results, skips)):
            merged.update(part)
            merged_skips.merge(part_skips)
        return merged, merged_skips
    return results, skips
