"""Checkpoints in standard, safe formats, written atomically.

Weights: one `.safetensors` file whose metadata holds the resolved experiment config, so a
checkpoint alone rebuilds its model. Training state (optimizer, scheduler, RNG, position): a
`.state.pt` file of plain containers, loaded with `weights_only=True`; a file that would need
arbitrary pickled code to load is refused.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from calm.config import ExperimentConfig, from_dict, to_dict
from calm.io import atomic_write, write_json_atomic
from calm.model.errors import CheckpointError, UnsafeCheckpointError
from calm.model.factory import build_model


def model_config_for_checkpoint(model: nn.Module, cfg: ExperimentConfig) -> dict:
    """The config to rebuild exactly this model from its own weights (no external checkpoint).

    Self-contained: no file outside the checkpoint is named. The anchor labels are stored as
    the list itself (not a label file's path) and a Hugging Face backbone as its architecture.
    """
    data = to_dict(cfg)
    backbone = data["model"]["backbone"]
    backbone["checkpoint"] = None
    backbone["checkpoint_format"] = "auto"
    backbone["quick_gelu"] = bool(model.backbone.quick_gelu)
    backbone["architecture"] = getattr(model.backbone, "architecture", None)
    anchors = getattr(model, "anchors", None)
    if anchors is not None:
        data["model"]["anchors"]["labels"] = list(anchors.labels)
    return data


def save_model(path: Path, model: nn.Module, cfg: ExperimentConfig, meta: dict | None = None) -> Path:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": "calm-checkpoint-v1",
        "config": json.dumps(model_config_for_checkpoint(model, cfg)),
        "meta": json.dumps(meta or {}),
    }
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata of any safetensors file; CheckpointError for a cut or garbled one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None


def read_metadata(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a calm checkpoint "
                              "(a run's checkpoints/best.safetensors)")
    metadata = read_safetensors_metadata(path)
    if metadata.get("format") != "calm-checkpoint-v1":
        raise CheckpointError(
            f"checkpoint {path} is not a calm checkpoint (no calm config in its metadata)"
        )
    return {
        "config": json.loads(metadata["config"]),
        "meta": json.loads(metadata.get("meta", "{}")),
    }


def load_model(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ExperimentConfig, dict]:
    """Rebuilds the model from the config stored in the checkpoint and loads its weights."""
    info = read_metadata(path)
    cfg = from_dict(ExperimentConfig, info["config"])
    model = build_model(cfg)
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device), cfg, info["meta"]


def save_state(path: Path, state: dict) -> Path:
    """torch.save of plain containers; `load_state` reads it back with weights_only=True."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    """Loads training state with `weights_only=True`: plain data and tensors only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path} does not exist")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path} holds pickled objects that are not plain data (tensors, numbers, strings, "
            f"lists, dicts); loading it could execute arbitrary code, so calm refuses: {exc}"
        ) from None


def save_resume_point(ckpt_dir: Path, step: int, model: nn.Module, cfg: ExperimentConfig, state: dict):
    """Writes weights and training state for `step`, then points `last.json` at the pair.

    The pointer is replaced atomically after both files are complete, so a process killed at any
    moment leaves a consistent resume point (the new one or the previous one).
    """
    ckpt_dir = Path(ckpt_dir)
    weights = ckpt_dir / f"last-step{step}.safetensors"
    state_path = ckpt_dir / f"last-step{step}.state.pt"
    save_state(state_path, state)
    save_model(weights, model, cfg, {"step": step})
    pointer = {"step": step, "weights": weights.name, "state": state_path.name}
    write_json_atomic(ckpt_dir / "last.json", pointer)
    for old in ckpt_dir.glob("last-step*"):
        if old.name not in (weights.name, state_path.name):
            old.unlink(missing_ok=True)


def load_resume_point(ckpt_dir: Path) -> tuple[dict, dict]:
    """(model state dict, training state) of the newest complete resume point."""
    pointer_path = Path(ckpt_dir) / "last.json"
    if not pointer_path.is_file():
        raise FileNotFoundError(f"{pointer_path} does not exist: nothing to resume in {ckpt_dir}")
    pointer = json.loads(pointer_path.read_text())
    state = load_state(Path(ckpt_dir) / pointer["state"])
    weights_path = Path(ckpt_dir) / pointer["weights"]
    if read_metadata(weights_path)["meta"].get("step") != state["position"]["step"]:
        raise RuntimeError(f"{ckpt_dir}: {pointer['weights']} and {pointer['state']} disagree on the step")
    return load_file(str(weights_path), device="cpu"), state
