"""Building an open_clip CLIP from a name and, optionally, local weights. Nothing is downloaded.

Accepted weights: OpenAI's released `.pt` files (TorchScript archives) and plain state dicts with
OpenAI's key names, open_clip `.bin` / `.pt` / `.safetensors` files, and open_clip `local-dir:`
folders. OpenAI weights are rebuilt with QuickGELU and an architecture read off the weights, since
loading them into a GELU model silently degrades every feature.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import open_clip
import torch
from torch import nn

_CONFIG_DIR = Path(__file__).parent / "configs"
_registered = False

CHECKPOINT_HINT = (
    "pass a local CLIP weights file with --set model.backbone.checkpoint=PATH "
    "(for example OpenAI's ViT-B-32.pt or an open_clip .safetensors file); calm never downloads weights"
)


class CheckpointError(ValueError):
    """A named checkpoint is missing or cannot be read; says what to pass instead."""


def register_calm_configs() -> None:
    """Makes calm's tiny model configs (calm-tiny, calm-micro) known to open_clip by name."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def calm_model_names() -> list[str]:
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.json"))


def is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _read_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if is_torchscript_archive(path):
        module = torch.jit.load(str(path), map_location="cpu")
        state = module.state_dict()
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, dict) or "text_projection" not in state:
        raise CheckpointError(f"{path}: not an OpenAI CLIP checkpoint (no 'text_projection' weight)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def build_openai_clip(state: dict[str, torch.Tensor]) -> nn.Module:
    """OpenAI weights -> an fp32 open_clip CLIP with QuickGELU (the activation they were trained with)."""
    model = open_clip.model.build_model_from_openai_state_dict(
        dict(state), quick_gelu=True, cast_dtype=None
    )
    return model.float().train()


def checkpoint_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return "openai" if is_torchscript_archive(path) else "open_clip"


def load_clip(name: str, checkpoint: str | None = None, fmt: str = "auto") -> nn.Module:
    """Returns a float32 open_clip CLIP: random init from `name`, or with local weights."""
    register_calm_configs()
    if checkpoint is None:
        if name.startswith("local-dir:"):
            return open_clip.create_model(name, pretrained=None).float()
        if name not in open_clip.list_models():
            raise CheckpointError(
                f"unknown backbone {name!r}; use an open_clip model name such as ViT-B-32, "
                f"a calm tiny config ({', '.join(calm_model_names())}) or local-dir:/path"
            )
        return open_clip.create_model(name, pretrained=None).float()
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise CheckpointError(f"backbone checkpoint {path} does not exist; {CHECKPOINT_HINT}")
    if path.is_dir():
        return open_clip.create_model(f"local-dir:{path}", pretrained=None).float()
    try:
        if checkpoint_format(path, fmt) == "openai":
            return build_openai_clip(_read_openai_state_dict(path))
        model = open_clip.create_model(name, pretrained=None).float()
        open_clip.load_checkpoint(model, str(path), weights_only=True)
        return model
    except CheckpointError:
        raise
    except Exception as exc:  # torch/zip/safetensors raise many types; name the file either way
        raise CheckpointError(
            f"cannot load backbone checkpoint {path} as {checkpoint_format(path, fmt)!r} weights "
            f"for {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
