"""`torchrun ... -m calm index`: the files to encode shared across processes, one index written.

Rank 0 reads the index, scans the folder and decides what to encode (new or changed files
only, as one process would), then sends that list to every rank. The list is cut into batches
of `batch_size` files; batch c goes to rank c mod world. In round r every rank encodes its
batch r x world + rank and `gather_object` brings the rows to rank 0, which writes them in
batch order -- the order one process writes -- so the index is the one-process index: the same
rows in the same order, encoded in batches of the same files (bit-identical on one machine).

Only rank 0 touches the index folder; the other ranks read the video files at the paths rank 0
sends, so on several nodes the folder must be at the same path on each (a shared or a copied
file system); the index is written on rank 0's node. NCCL on GPUs (each rank on its local GPU),
gloo on CPU, both set up by `calm.engine.distributed.init`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch.distributed as dist

from calm.search.store import SearchIndexError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def _broadcast(obj=None):
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def announce_failure(message: str) -> None:
    """Rank 0 could not plan the run: every other rank stops with the same message."""
    if active():
        _broadcast({"error": message})


def _rounds(paths: list[str], batch_size: int, world: int, rank: int) -> tuple[list[str], int]:
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    mine = [p for chunk in chunks[rank::world] for p in chunk]
    return mine, -(-len(chunks) // world)


def _my_batches(encode, paths: list[str], batch_size: int) -> Iterator:
    world, rank = dist.get_world_size(), dist.get_rank()
    mine, rounds = _rounds(paths, batch_size, world, rank)
    batches = encode(mine, batch_size)
    for _ in range(rounds):
        yield next(batches, None)


def gathered_batches(encode, paths: list[str], batch_size: int) -> Iterator:
    """On rank 0: every rank's encoded batches, in the order of `paths` (the plan is sent
    first). `encode(paths, batch_size)` yields one item per batch of `batch_size` paths."""
    _broadcast({"paths": paths, "batch_size": batch_size})
    world = dist.get_world_size()
    for mine in _my_batches(encode, paths, batch_size):
        received = [None] * world
        dist.gather_object(mine, received, dst=0)
        yield from (item for item in received if item is not None)


def encode_share(encode) -> None:
    """On every rank but 0: receive the plan, encode this rank's batches, send them to rank 0."""
    plan = _broadcast()
    if "error" in plan:
        raise SearchIndexError(f"rank 0 stopped: {plan['error']}")
    for mine in _my_batches(encode, plan["paths"], plan["batch_size"]):
        dist.gather_object(mine, None, dst=0)
