"""A small video library (real mp4 clips, one broken file) and tiny calm-micro checkpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from calm.config import ExperimentConfig, from_dict
from calm.engine.checkpoint import save_model
from tests.videos import moving_image, write_clip, write_garbage

NUM_FRAMES = 4
FPS = 10


def write_library(root: Path, clips: int = 10, frames: int = 30) -> Path:
    """`clips` mp4 files in two sub-folders (3 s at 10 fps each) plus `broken.mp4` (random bytes)."""
    for i in range(clips):
        write_clip(root / f"part{i % 2}" / f"clip{i}.mp4", num_frames=frames, width=48, height=32,
                   fps=FPS, frame_fn=lambda k, w, h, i=i: moving_image(k + 7 * i, w, h))
    write_garbage(root / "broken.mp4")
    return root


def scene(seed: int):
    """Frames of a distinct scene per seed: a random block texture panning one pixel a frame."""
    base = np.random.default_rng(seed).integers(0, 256, (8, 12, 3)).repeat(4, 0).repeat(4, 1)
    base = base.astype(np.uint8)
    return lambda k, w, h: np.ascontiguousarray(np.roll(base, k, axis=1)[:h, :w])


def write_scenes(root: Path, count: int, frames: int = 30) -> list[Path]:
    """`count` clips v0.mp4 ... of distinct scenes (unlike write_library's clips, which are
    overlapping cuts of one animation)."""
    return [write_clip(root / f"v{i}.mp4", num_frames=frames, width=48, height=32,
                       frame_fn=scene(i), crf=18) for i in range(count)]


def tiny_config(fusion: str = "xpool", alignment: str = "vae", score: str = "base",
                heads: int = 1) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "model": {
            "backbone": {"name": "calm-micro"},
            "anchors": {"labels": "coco"},
            "fusion": {"name": fusion, "dropout": 0.0, "layers": 1, "heads": heads},
            "alignment": {"name": alignment},
            "score": {"mode": score, "anchor_weight": 0.5},
        },
        "data": {"num_frames": NUM_FRAMES},
    })


def tiny_checkpoint(path: Path, fusion: str = "xpool", alignment: str = "vae", seed: int = 0,
                    score: str = "base", heads: int = 1) -> Path:
    """A random-init retrieval model saved as a calm checkpoint (what `calm train` writes)."""
    from calm.model.retrieval import CALM

    cfg = tiny_config(fusion, alignment, score, heads)
    torch.manual_seed(seed)
    return save_model(path, CALM.from_config(cfg.model).eval(), cfg, {"step": 0})


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serves `app` with uvicorn on 127.0.0.1 and a free port, in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
