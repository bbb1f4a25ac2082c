"""The one door through which calm opens a model: `open_model(path)`.

A path the user gave is either a calm checkpoint (a `.safetensors` file written by `calm train`,
whose metadata holds the config that rebuilds it), loaded as trained, or plain CLIP weights
(OpenAI's `.pt`, an open_clip file or folder, a Hugging Face CLIP folder), opened as a zero-shot
model: every paper's table has a CLIP zero-shot row, and users want one before they train.
`model_from_config` builds what a config describes with no training (`calm eval --config`). All
three give a `LoadedModel` (model, config, meta), so evaluation, search and the Python API take
any of them the same way.

Only a parameter-free fusion head (`FusionHead.parameter_free`, e.g. meanP) makes a true
zero-shot model; other heads start from random weights, which the meta records so a result is
never mistaken for a trained one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from calm.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, to_dict
from calm.engine.checkpoint import load_model, read_metadata, read_safetensors_metadata
from calm.model.errors import CheckpointError
from calm.model.factory import build_model
from calm.model.fusion import FUSION_HEADS


class LoadedModel(NamedTuple):
    model: nn.Module
    cfg: ExperimentConfig
    meta: dict


def model_from_config(cfg: ExperimentConfig, device: str | torch.device = "cpu") -> LoadedModel:
    """The model `cfg` builds (backbone weights from the config, nothing trained by calm)."""
    try:
        model = build_model(cfg)
    except CheckpointError as exc:
        raise ConfigError(f"model.backbone.checkpoint: {exc}") from None
    backbone = cfg.model.backbone
    meta = {
        "zero_shot": True,
        "backbone": backbone.name if backbone.architecture is None else "architecture",
        "backbone_checkpoint": backbone.checkpoint,
        "fusion": cfg.model.fusion.name,
        # a parameter-free head is the head; any other (and the anchor offsets, the VAE) is
        # random init
        "untrained_parts": not FUSION_HEADS.get(cfg.model.fusion.name).parameter_free,
    }
    return LoadedModel(model.eval().to(device), cfg, meta)


def clip_config(
    checkpoint: str | Path,
    name: str = "ViT-B-32",
    checkpoint_format: str = "auto",
    overrides=(),
) -> ExperimentConfig:
    """The zero-shot config around plain CLIP weights: meanP fusion and the Charades anchors
    without a VAE (CLIP's own anchor probabilities; no sigma, which needs a trained VAE)."""
    data = to_dict(ExperimentConfig())
    data["model"]["backbone"].update(
        name=name, checkpoint=str(checkpoint), checkpoint_format=checkpoint_format
    )
    data["model"]["fusion"]["name"] = "meanP"
    data["model"]["alignment"]["name"] = "kl"
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def is_calm_checkpoint(path: str | Path) -> bool:
    """True for a `.safetensors` file written by calm (its metadata holds a calm config)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return False
    try:
        read_metadata(path)
    except ValueError:
        return False
    return True


def open_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    name: str = "ViT-B-32",
    checkpoint_format: str = "auto",
    overrides=(),
) -> LoadedModel:
    """A calm checkpoint as trained, or plain CLIP weights as a zero-shot model.

    Plain weights: OpenAI's `.pt`, an open_clip file or folder, or a Hugging Face CLIP folder;
    `name` is the open_clip architecture of a weights file (a Hugging Face folder brings its own).
    A missing path is an error saying what to pass.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a calm checkpoint (.safetensors from calm train) or "
            "local CLIP weights (OpenAI .pt, open_clip file, or a Hugging Face CLIP folder)"
        )
    if is_calm_checkpoint(path):
        return LoadedModel(*load_model(path, device))
    if path.is_file() and path.suffix == ".safetensors":
        read_safetensors_metadata(path)  # a cut file is no weights at all: not "wrong CLIP weights"
    return model_from_config(clip_config(path, name, checkpoint_format, overrides), device)
