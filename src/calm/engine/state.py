"""The resume state of a training run: position, RNG streams, skips and cached anchors.

`TrainState` is what `train()` advances; `capture` turns it (with the optimizer, schedule and
scaler) into plain data for `save_resume_point`, and `restore` puts everything back, so a killed
run continues bit for bit where it stopped.
"""

from __future__ import annotations

import ast
import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from calm.data.samples import SkipLog


@dataclass
class TrainState:
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already consumed
    step: int = 0
    best: float = -math.inf  # best validation selection score so far
    skipped_steps: int = 0
    skips: SkipLog = field(default_factory=SkipLog)

    def position(self) -> dict:
        data = asdict(self)
        data.pop("skips")
        return data


def rng_state() -> dict:
    """Every random stream a step draws from, as plain data (safe for weights_only loading)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def capture(state: TrainState, model, optimizer, scheduler, scaler, rngs: list[dict]) -> dict:
    """Plain data for a resume point; `rngs` holds every process's RNG streams."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "position": state.position(),
        "rng": rngs,
        "skips": state.skips.to_dict(),
        "anchor_cache": model.anchor_resume_state(),
    }


def restore(saved: dict, model, optimizer, scheduler, scaler, rank: int) -> TrainState:
    """Puts a resume point back; returns the position to continue from."""
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"][min(rank, len(saved["rng"]) - 1)])
    model.restore_anchor_resume_state(saved.get("anchor_cache"))
    return TrainState(**saved["position"], skips=SkipLog.from_dict(saved["skips"]))
