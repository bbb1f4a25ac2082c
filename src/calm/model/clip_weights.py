"""Building an open_clip CLIP from a name and, optionally, local weights. Nothing is downloaded.

Accepted weights: OpenAI's released `.pt` files (TorchScript archives) and plain state dicts with
OpenAI's key names, open_clip `.bin` / `.pt` / `.safetensors` files, and open_clip `local-dir:`
folders, and Hugging Face `CLIPModel` folders (format `hf`, see hf_clip.py). OpenAI weights are
loaded into the named architecture built with QuickGELU, since loading them into a GELU model
silently degrades every feature. A Hugging Face folder brings its own architecture (config.json);
calm checkpoints of such a backbone store it as `architecture`, so they rebuild without the folder.
"""

from __future__ import annotations

import copy
import logging
import zipfile
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg
from torch import nn

from calm.model import hf_clip
from calm.model.errors import CheckpointError

_CONFIG_DIR = Path(__file__).parent / "configs"
_registered = False

CHECKPOINT_HINT = (
    "pass a local CLIP weights file with --set model.backbone.checkpoint=PATH "
    "(for example OpenAI's ViT-B-32.pt or an open_clip .safetensors file); calm never downloads weights"
)


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
    """The declared format, or for `auto`: TorchScript = openai, a folder with config.json = hf."""
    if declared != "auto":
        return declared
    if path.is_dir():
        hf = (path / "config.json").is_file() and not (path / "open_clip_config.json").is_file()
        return "hf" if hf else "open_clip"
    return "openai" if is_torchscript_archive(path) else "open_clip"


def hf_architecture(checkpoint: str | None, fmt: str) -> dict | None:
    """The open_clip config (`model_cfg`, `preprocess_cfg`) of a Hugging Face folder, else None."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    if fmt == "hf" or (fmt == "auto" and path.is_dir() and checkpoint_format(path, fmt) == "hf"):
        try:
            return hf_clip.open_clip_config(path)
        except hf_clip.HFCheckpointError as exc:
            raise CheckpointError(str(exc)) from None
    return None


def _create_from_architecture(architecture: dict) -> nn.Module:
    """An open_clip CLIP from an explicit config, with its preprocessing mean and std attached."""
    model_cfg = copy.deepcopy(architecture["model_cfg"])
    model = CLIP(**model_cfg).float()
    preprocess = {**asdict(PreprocessCfg()), **architecture.get("preprocess_cfg", {})}
    preprocess["size"] = model.visual.image_size
    set_model_preprocess_cfg(model, preprocess)
    return model


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


def resolve_quick_gelu(
    checkpoint: str | None, fmt: str, quick_gelu: bool | None, architecture: dict | None = None
) -> bool:
    """OpenAI weights were trained with QuickGELU; an explicit architecture (a Hugging Face
    config) says itself; anything else uses the named config's choice."""
    if quick_gelu is not None:
        return quick_gelu
    if architecture is not None:
        return bool(architecture["model_cfg"].get("quick_gelu", False))
    if checkpoint is None:
        return False
    path = Path(checkpoint).expanduser()
    return path.is_file() and checkpoint_format(path, fmt) == "openai"


def load_clip(
    name: str,
    checkpoint: str | None = None,
    fmt: str = "auto",
    quick_gelu: bool | None = None,
    architecture: dict | None = None,
) -> nn.Module:
    """Returns a float32 open_clip CLIP of architecture `name`: random init, or local weights.

    `architecture` (an open_clip config, as `hf_architecture` returns) replaces `name`. OpenAI
    weights are loaded strictly into `name` built with QuickGELU, so a file of another
    architecture is an error rather than a silent partial load.
    """
    register_calm_configs()
    if checkpoint is not None and not Path(checkpoint).expanduser().exists():
        path = Path(checkpoint).expanduser()
        hint = hf_clip.HF_HINT if fmt == "hf" else CHECKPOINT_HINT
        raise CheckpointError(f"backbone checkpoint {path} does not exist; {hint}")
    architecture = architecture or hf_architecture(checkpoint, fmt)
    quick = resolve_quick_gelu(checkpoint, fmt, quick_gelu, architecture)
    if architecture is not None:
        architecture = copy.deepcopy(architecture)
        architecture["model_cfg"]["quick_gelu"] = quick
    if checkpoint is None:
        return _create_from_architecture(architecture) if architecture else _create(name, quick)
    path = Path(checkpoint).expanduser()
    fmt = checkpoint_format(path, fmt)
    if fmt == "hf":
        return _load_hf(path, architecture)
    if path.is_dir():
        return open_clip.create_model(f"local-dir:{path}", pretrained=None).float()
    model = _create_from_architecture(architecture) if architecture else _create(name, quick)
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


def _load_hf(folder: Path, architecture: dict) -> nn.Module:
    """A transformers CLIPModel folder loaded strictly into the open_clip CLIP it describes."""
    model = _create_from_architecture(architecture)
    try:
        state = hf_clip.convert_state_dict(hf_clip.read_state_dict(folder), str(folder))
        model.load_state_dict(state, strict=True)
    except hf_clip.HFCheckpointError as exc:
        raise CheckpointError(str(exc)) from None
    except RuntimeError as exc:  # shape mismatches between config.json and the weights
        raise CheckpointError(
            f"cannot load Hugging Face CLIP {folder}: its weights do not match its config.json: "
            f"{str(exc)[:500]}"
        ) from exc
    return model
