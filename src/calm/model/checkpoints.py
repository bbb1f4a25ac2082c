"""Building an open_clip CLIP from a name and, optionally, local weights. Nothing is downloaded.

Accepted weights: OpenAI's released `.pt` files (TorchScript archives) and plain state dicts with
OpenAI's key names, open_clip `.bin` / `.pt` / `.safetensors` files, and open_clip `local-dir:`
folders. OpenAI weights are loaded into the named architecture built with QuickGELU, since loading them
into a GELU model silently degrades every feature.
"""

from __future__ import annotations

import logging
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
    if isinstance(state, dict):  # strip a DDP prefix before checking for CLIP's keys
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if not isinstance(state, dict) or "text_projection" not in state:
        raise CheckpointError(
            f"{path}: not an OpenAI CLIP checkpoint (no 'text_projection' weight)"
        )
    # attn_mask: the causal-mask buffer a TorchScript trace of an open_clip CLIP saves; derived.
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        state.pop(key, None)
    return state


def checkpoint_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return "openai" if is_torchscript_archive(path) else "open_clip"


class _QuietRandomInit(logging.Filter):
    """open_clip warns "No pretrained weights loaded" on every random init; calm loads weights
    itself afterwards (or means random init), so the warning only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


logging.getLogger().addFilter(_QuietRandomInit())


def _create(name: str, quick_gelu: bool) -> nn.Module:
    if name.startswith("local-dir:"):
        return open_clip.create_model(name, pretrained=None).float()
    if name not in open_clip.list_models():
        raise CheckpointError(
            f"unknown backbone {name!r}; use an open_clip model name such as ViT-B-32, "
            f"a calm tiny config ({', '.join(calm_model_names())}) or local-dir:/path"
        )
    return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu).float()


def resolve_quick_gelu(checkpoint: str | None, fmt: str, quick_gelu: bool | None) -> bool:
    """OpenAI weights were trained with QuickGELU; anything else uses the named config's choice."""
    if quick_gelu is not None:
        return quick_gelu
    if checkpoint is None:
        return False
    path = Path(checkpoint).expanduser()
    return path.is_file() and checkpoint_format(path, fmt) == "openai"


def load_clip(
    name: str, checkpoint: str | None = None, fmt: str = "auto", quick_gelu: bool | None = None
) -> nn.Module:
    """Returns a float32 open_clip CLIP of architecture `name`: random init, or local weights.

    OpenAI weights are loaded strictly into `name` built with QuickGELU, so a file of another
    architecture is an error rather than a silent partial load.
    """
    register_calm_configs()
    quick = resolve_quick_gelu(checkpoint, fmt, quick_gelu)
    if checkpoint is None:
        return _create(name, quick)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise CheckpointError(f"backbone checkpoint {path} does not exist; {CHECKPOINT_HINT}")
    if path.is_dir():
        return open_clip.create_model(f"local-dir:{path}", pretrained=None).float()
    fmt = checkpoint_format(path, fmt)
    model = _create(name, quick)
    try:
        if fmt == "openai":
            model.load_state_dict(_read_openai_state_dict(path), strict=True)
        else:
            open_clip.load_checkpoint(model, str(path), weights_only=True)
        return model
    except CheckpointError:
        raise
    except Exception as exc:  # torch/zip/safetensors raise many types; name the file either way
        raise CheckpointError(
            f"cannot load backbone checkpoint {path} as {fmt!r} weights into {name!r}: "
            f"{type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
