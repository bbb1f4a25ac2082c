"""Process-level settings: device, seeding, mixed precision."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def threads_beside(workers: int, cores: int | None = None) -> int:
    """torch threads for a process whose `workers` DataLoader processes decode or render beside
    it: the cores they leave, at least one. Why: on 2 cores, 2 torch threads beside 2 busy
    decoders spun in OpenMP's barriers (several times the CPU seconds per training step)."""
    from calm.machine import available_cores

    return max(1, (cores or available_cores()) - workers)


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's intra-op thread count for the length of the block, restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast; weights stay fp32 (the master copy), only activations are cast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
