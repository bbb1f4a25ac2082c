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


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns, to each rank, the sum over ranks of the gradient that
    reached its slice. Local batches may differ in size (skipped videos): they are padded to the
    largest for the collective and cut back afterwards."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        sizes = [int(n) for n in sizes]
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank, ctx.longest = sizes, rank, longest
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        sizes, longest = ctx.sizes, ctx.longest
        padded = grad.new_zeros((len(sizes) * longest, *grad.shape[1:]))
        offset = 0
        for r, n in enumerate(sizes):
            padded[r * longest : r * longest + n] = grad[offset : offset + n]
            offset += n
        dist.all_reduce(padded)
        start = ctx.rank * longest
        return padded[start : start + sizes[ctx.rank]]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` from every rank in rank order; gradients flow back to each rank's slice.

    The backward sums the gradient each rank computed for a slice, so with every rank evaluating
    the same global loss and DDP averaging parameter gradients, the update equals that of one
    process on the concatenated batch, whatever the world size.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_objects(obj):
    """Every rank's picklable `obj`, in rank order (evaluation shards, small metadata)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_ranks(flag: bool) -> bool:
    """True only if `flag` holds on every rank: ranks must agree on taking a step, or DDP hangs."""
    if not dist.is_initialized():
        return flag
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
