"""Multi-process training on torch.distributed, initialised only when a launcher asks for it.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs in one process and
`gather` is the identity. Ranks are always the global rank (several nodes work), the device index
is the local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistEnv:
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(device_type: str) -> DistEnv:
    """Joins the process group torchrun prepared (gloo on CPU, nccl on CUDA); no-op alone."""
    env = from_environment()
    if env.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return env


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` from every rank in rank order; gradients flow back to each rank's slice.

    The backward sums the gradient each rank computed for a slice, so with every rank evaluating
    the same global loss and DDP averaging parameter gradients, the update equals that of one
    process on the concatenated batch, whatever the world size.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_objects(obj):
    """Every rank's picklable `obj`, in rank order (evaluation shards, small metadata)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
