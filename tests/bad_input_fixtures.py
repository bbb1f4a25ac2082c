"""One small world of good and bad inputs, shared by the whole bad-input matrix (test_bad_input).

Good clips are real 8-frame mp4s; each bad video is a real kind of broken file. Checkpoints are
random-init calm-micro models (what `calm train` writes), one per (loader workers, missing-video
policy) because `calm ood` reads both from the checkpoint's config; their weights are the same.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from calm.config import ExperimentConfig, from_dict
from calm.engine.checkpoint import save_model
from calm.engine.tasks import task_for
from tests.videos import moving_image, truncate_file, write_audio_only, write_clip

GOOD = [f"good{i}.mp4" for i in range(4)]
# Every kind of bad video a user's folder holds, by the name the test world gives it.
BAD_VIDEOS = {
    "missing file": "missing.mp4",
    "zero-byte file": "zero_byte.mp4",
    "text file named .mp4": "text.mp4",
    "truncated mp4": "truncated.mp4",
    "audio-only mp4": "audio_only.mp4",
}
WORKERS = (0, 2)
POLICIES = ("error", "skip")
NUM_FRAMES = 4


def model_config(workers: int = 0, policy: str = "error", task: str = "retrieval") -> dict:
    cfg = {
        "task": task,
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                  "fusion": {"name": "xpool", "dropout": 0.0, "layers": 1},
                  "alignment": {"name": "vae"}},
        "data": {"dataset": "jsonl", "num_frames": NUM_FRAMES, "num_workers": workers,
                 "missing_video": policy},
        "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8, "lr": 1e-3,
                  "log_every": 1},
    }
    if task == "captioning":
        cfg["model"]["caption"] = {"layers": 1, "width": 32, "heads": 2, "max_length": 6,
                                   "beam_size": 1}
    return cfg


def write_jsonl(path: Path, train: list[str], test: list[str], broken_line: bool = False) -> Path:
    """Train and test entries (one caption each; val: two good clips); optionally a cut line."""
    lines = [json.dumps({"video": v, "caption": f"clip {v}", "split": "train"}) for v in train]
    lines += [json.dumps({"video": v, "caption": f"val {v}", "split": "val"}) for v in GOOD[:2]]
    lines += [json.dumps({"video": v, "caption": f"test {v}", "split": "test"}) for v in test]
    if broken_line:
        lines.insert(2, lines[2][: len(lines[2]) // 2])
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class World:
    root: Path
    clips: Path  # every good and bad video, side by side

    def video(self, case: str) -> Path:
        return self.clips / BAD_VIDEOS[case]

    def annotations(self, case: str) -> Path:
        """JSONL whose train and test splits hold the good clips and the case's bad video;
        "every bad video": all five; "broken annotation line": a line cut in half."""
        return self.root / "ann" / f"{slug(case)}.jsonl"

    def folder(self, case: str) -> Path:
        """A folder of two good clips and the case's bad file (for index and prepare-frames)."""
        return self.root / "folders" / slug(case)

    def checkpoint(self, workers: int = 0, policy: str = "error") -> Path:
        return self.root / "ckpt" / f"retrieval-w{workers}-{policy}.safetensors"

    @property
    def captioner(self) -> Path:
        return self.root / "ckpt" / "captioning.safetensors"

    @property
    def truncated_checkpoint(self) -> Path:
        return self.root / "ckpt" / "truncated.safetensors"

    @property
    def truncated_backbone(self) -> Path:
        return self.root / "ckpt" / "truncated-backbone.safetensors"

    def config(self, name: str, cfg: dict) -> Path:
        path = self.root / "cfg" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg))
        return path


def slug(case: str) -> str:
    return case.replace(" ", "_").replace(".", "")


def build_world(root: Path) -> World:
    clips = root / "clips"
    for i, name in enumerate(GOOD):
        write_clip(clips / name, num_frames=8, width=32, height=32,
                   frame_fn=lambda k, w, h, i=i: moving_image(k + 5 * i, w, h))
    (clips / BAD_VIDEOS["zero-byte file"]).write_bytes(b"")
    (clips / BAD_VIDEOS["text file named .mp4"]).write_text("these are notes, not a video\n")
    write_clip(clips / BAD_VIDEOS["truncated mp4"], num_frames=24, width=32, height=32,
               frame_fn=moving_image, faststart=True)  # header first: opens, then runs out
    truncate_file(clips / BAD_VIDEOS["truncated mp4"], 0.4)
    write_audio_only(clips / BAD_VIDEOS["audio-only mp4"])
    world = World(root, clips)

    (root / "ann").mkdir()
    for case, name in BAD_VIDEOS.items():
        write_jsonl(world.annotations(case), GOOD + [name], GOOD[2:] + [name])
    every = list(BAD_VIDEOS.values())
    write_jsonl(world.annotations("every bad video"), GOOD + every, GOOD[2:] + every)
    write_jsonl(world.annotations("broken annotation line"), GOOD, GOOD[2:], broken_line=True)

    for case, name in [*BAD_VIDEOS.items(), ("every bad video", None)]:
        if case == "missing file":
            continue  # a folder cannot hold a missing file: that case names a missing folder
        folder = world.folder(case)
        folder.mkdir(parents=True)
        for good in GOOD[:2]:
            shutil.copy(clips / good, folder / good)
        for bad in [name] if name else [n for c, n in BAD_VIDEOS.items() if c != "missing file"]:
            shutil.copy(clips / bad, folder / bad)

    torch.manual_seed(0)
    retrieval = from_dict(ExperimentConfig, model_config())
    model = task_for(retrieval).build_model(retrieval.model).eval()
    for workers in WORKERS:
        for policy in POLICIES:
            cfg = from_dict(ExperimentConfig, model_config(workers, policy))
            save_model(world.checkpoint(workers, policy), model, cfg, {"step": 0})
    shutil.copy(world.checkpoint(), world.truncated_checkpoint)
    truncate_file(world.truncated_checkpoint, 0.5)
    from safetensors.torch import save_file

    backbone = model.backbone.clip.state_dict()
    save_file({k: v.contiguous() for k, v in backbone.items()}, str(world.truncated_backbone))
    truncate_file(world.truncated_backbone, 0.5)

    captioning = from_dict(ExperimentConfig, model_config(task="captioning"))
    captioner = task_for(captioning).build_model(captioning.model).eval()
    save_model(world.captioner, captioner, captioning, {"step": 0})
    return world
