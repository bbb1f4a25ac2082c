"""Models without a calm checkpoint: what a config builds, or a plain CLIP as a zero-shot model.

Every paper's table has a CLIP zero-shot row, and users want one before they train. A config
names a backbone (OpenAI's ViT-B-32.pt, an open_clip file, a Hugging Face CLIP folder) and a
fusion head; `model_from_config` builds exactly that model, with no training, and returns it in
the `(model, config, meta)` shape `load_model` gives for a calm checkpoint, so evaluation and
the Python API take either. `load_model_or_clip` is the one entry point for "a path the user
gave": a calm checkpoint loads as trained, anything else is read as CLIP weights.

Only parameter-free fusion (meanP) is a true zero-shot model; other heads start from random
weights, which the meta records so a result is never mistaken for a trained one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from calm.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, to_dict
from calm.config.loader import check_required, located, read_yaml
from calm.engine.checkpoint import load_model, read_metadata, read_safetensors_metadata
from calm.engine.evaluation.checkpoint import evaluate_checkpoint
from calm.engine.tasks import task_for
from calm.model.errors import CheckpointError

PARAMETER_FREE_FUSION = ("meanP",)


def model_from_config(
    cfg: ExperimentConfig, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ExperimentConfig, dict]:
    """The model `cfg` builds (backbone weights from the config, nothing trained by calm)."""
    try:
        model = task_for(cfg).build_model(cfg.model)
    except CheckpointError as exc:
        raise ConfigError(f"model.backbone.checkpoint: {exc}") from None
    backbone = cfg.model.backbone
    meta = {
        "zero_shot": True,
        "backbone": backbone.name if backbone.architecture is None else "architecture",
        "backbone_checkpoint": backbone.checkpoint,
        "fusion": cfg.model.fusion.name,
        # meanP has no weights; any other head (and the anchor offsets, the VAE) is random init
        "untrained_parts": cfg.model.fusion.name not in PARAMETER_FREE_FUSION,
    }
    return model.eval().to(device), cfg, meta


def load_config(
    path: str | Path | None, overrides=(), data: dict | None = None
) -> ExperimentConfig:
    """A config file with `data` keys set (from command-line flags), then `--set` overrides.

    Fields marked ??? must be filled: a zero-shot model with a forgotten backbone checkpoint
    would otherwise evaluate random weights without a word.
    """
    raw = read_yaml(path) if path is not None else {}
    data = {k: v for k, v in (data or {}).items() if v is not None}
    if data:
        section = raw.setdefault("data", {})
        if "dataset" in data and data["dataset"] != section.get("dataset", "msrvtt"):
            section["options"] = {}  # the file's options belong to its own dataset
        section.update({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})
    raw = apply_overrides(raw, list(overrides))
    try:
        return from_dict(ExperimentConfig, check_required(raw))
    except ConfigError as exc:
        raise located(exc, path, overrides) from None


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


def load_model_or_clip(
    path: str | Path,
    device: str | torch.device = "cpu",
    name: str = "ViT-B-32",
    checkpoint_format: str = "auto",
    overrides=(),
) -> tuple[nn.Module, ExperimentConfig, dict]:
    """A calm checkpoint as trained, or plain CLIP weights as a zero-shot model.

    Plain weights: OpenAI's `.pt`, an open_clip file or folder, or a Hugging Face CLIP folder;
    `name` is the open_clip architecture of a weights file (a Hugging Face folder brings its own).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a calm checkpoint (.safetensors from calm train) or "
            "local CLIP weights (OpenAI .pt, open_clip file, or a Hugging Face CLIP folder)"
        )
    if is_calm_checkpoint(path):
        return load_model(path, device)
    if path.is_file() and path.suffix == ".safetensors":
        read_safetensors_metadata(path)  # a cut file is no weights at all: not "wrong CLIP weights"
    return model_from_config(clip_config(path, name, checkpoint_format, overrides), device)


def evaluate_config(cfg: ExperimentConfig, split: str = "test", **kwargs) -> dict:
    """`calm eval --config`: metrics of the model `cfg` builds on `cfg.data`'s `split`.

    `kwargs` go to `evaluate_checkpoint` (score_mode, save_sim, progress, uncertainty, ...).
    """
    for key in ("annotations", "videos"):
        if getattr(cfg.data, key) is None:
            raise ConfigError(f"data.{key}: required; set it in the config, with --{key} or with "
                              f"--set data.{key}=PATH")
    loaded = model_from_config(cfg)
    backbone = cfg.model.backbone
    label = f"zero-shot:{backbone.checkpoint or backbone.name + ' (random init)'}"
    result = evaluate_checkpoint(label, cfg.data.dataset, cfg.data.annotations, cfg.data.videos,
                                 split, loaded=loaded, options=cfg.data.options, **kwargs)
    result["zero_shot"] = {k: v for k, v in loaded[2].items() if k != "zero_shot"}
    return result
