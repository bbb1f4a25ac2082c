"""A tiny MSR-VTT-format benchmark with real mp4 clips and a calm-micro config, for engine tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.fixtures_benchmarks import write_msrvtt
from tests.videos import moving_image, write_clip


def write_tiny_msrvtt(root: Path, num_frames: int = 8) -> tuple[Path, Path]:
    """40 clips of 8 frames at 40x32 px; annotation files as MSR-VTT publishes them."""
    ann, vid = root / "ann", root / "vid"
    write_msrvtt(ann)
    for i in range(40):
        write_clip(vid / f"video{i}.mp4", num_frames=num_frames, width=40, height=32,
                   frame_fn=lambda k, w, h, i=i: moving_image(k + 3 * i, w, h))
    return ann, vid


def tiny_config(ann: Path, vid: Path, **train) -> dict:
    return {
        "model": {
            "backbone": {"name": "calm-micro"},
            "anchors": {"labels": "coco"},
            "fusion": {"name": "xpool", "dropout": 0.0},
            "alignment": {"name": "vae"},
        },
        "data": {
            "dataset": "msrvtt", "annotations": str(ann), "videos": str(vid), "num_frames": 4,
            "num_workers": 0, "options": {"val_size": 4},
        },
        "train": {"epochs": 1, "batch_size": 8, "log_every": 1, "lr": 1e-3, "backbone_lr": 1e-4,
                  "eval_batch_size": 16, **train},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def three_clip_batch(model):
    """frames [3, 4, 3, 32, 32] (two clips shorter than 4 frames), their mask and three captions:
    the smallest batch that exercises padding, for model-level tests."""
    import torch

    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, 4, 3, 32, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    tokens = model.backbone.tokenize(["a man cooks", "a dog runs on grass", "people dance"])
    return frames, mask, tokens
