"""Hugging Face `CLIPModel` folders read into the open_clip architecture calm trains.

X-Pool and T-MASS start from a transformers `CLIPModel` saved with `save_pretrained`: a folder
holding `config.json` and `model.safetensors` (or `pytorch_model.bin`, possibly sharded). The
two implementations are the same network under different names, so this module

- turns `config.json` into an open_clip model config (widths, depths, heads, patch and image
  size, context length, vocabulary, projection width, QuickGELU, LayerNorm epsilon, and the
  text pooling rule), and
- renames the state dict: q/k/v projections are stacked into `in_proj`, the Linear projections
  are transposed into open_clip's matrices, and the rest maps one to one.

Text pooling: transformers takes the feature at the argmax of the token ids when the config's
`eos_token_id` is the legacy 2, else at the first `eos_token_id`. open_clip's `argmax` and `eos`
pool types are exactly these two rules, so the right one is chosen from the config. With CLIP's
BPE tokenizer (end-of-text = 49407, the largest id) both pick the same position.

Nothing here downloads; the folder must exist locally.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HF_HINT = (
    "pass the folder written by transformers' CLIPModel.save_pretrained (config.json plus "
    "model.safetensors or pytorch_model.bin) with --set model.backbone.checkpoint=DIR "
    "--set model.backbone.checkpoint_format=hf"
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults: config.json files written
# by older versions store only the values that differ from these.
TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
ACTIVATIONS = {"quick_gelu": True, "gelu": False}
CLIP_BPE_SIZE = 49408
LEGACY_EOS_ID = 2  # transformers then pools at the argmax of the ids, as open_clip's `argmax`


class HFCheckpointError(ValueError):
    """The folder is not a readable transformers CLIPModel; the message says what to pass."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFCheckpointError(f"{path}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HFCheckpointError(f"{path}: expected a JSON object")
    return data


def check_folder(folder: str | Path) -> Path:
    """The folder, after checking it holds config.json and a weights file."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise HFCheckpointError(f"Hugging Face CLIP folder {folder} {what}; {HF_HINT}")
    if not (folder / "config.json").is_file():
        raise HFCheckpointError(f"{folder} holds no config.json; {HF_HINT}")
    if weights_file(folder) is None:
        raise HFCheckpointError(
            f"{folder} holds none of {', '.join(WEIGHT_FILES)}; {HF_HINT}"
        )
    return folder


def weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _tower(config: dict, key: str, defaults: dict, path: Path) -> dict:
    tower = config.get(key) or config.get(f"{key}_dict") or {}
    if not isinstance(tower, dict):
        raise HFCheckpointError(f"{path}: {key} must be an object")
    return {**defaults, **tower}


def _mlp_ratio(tower: dict, name: str, path: Path) -> float:
    width, hidden = int(tower["hidden_size"]), int(tower["intermediate_size"])
    ratio = hidden / width
    if int(width * ratio) != hidden:  # open_clip builds int(width * mlp_ratio) units
        raise HFCheckpointError(
            f"{path}: {name} intermediate_size {hidden} is not representable as "
            f"width {width} x mlp_ratio in open_clip"
        )
    return ratio


def _norm_kwargs(tower: dict) -> dict | None:
    eps = float(tower["layer_norm_eps"])
    return None if eps == 1e-5 else {"eps": eps}  # 1e-5 is torch's (and open_clip's) default


def open_clip_config(folder: str | Path) -> dict:
    """`{"model_cfg": ..., "preprocess_cfg": ...}` (open_clip_config.json's layout) of the folder.

    The preprocessing mean and std come from preprocessor_config.json when present, else CLIP's.
    """
    folder = check_folder(folder)
    path = folder / "config.json"
    config = _read_json(path)
    if config.get("model_type", "clip") != "clip":
        raise HFCheckpointError(
            f"{path}: model_type {config.get('model_type')!r} is not 'clip'; {HF_HINT}"
        )
    text = _tower(config, "text_config", TEXT_DEFAULTS, path)
    vision = _tower(config, "vision_config", VISION_DEFAULTS, path)
    acts = {text["hidden_act"], vision["hidden_act"]}
    if len(acts) != 1 or not acts <= set(ACTIVATIONS):
        raise HFCheckpointError(
            f"{path}: hidden_act must be one of {sorted(ACTIVATIONS)} and the same in both "
            f"towers, got text {text['hidden_act']!r}, vision {vision['hidden_act']!r}"
        )
    if int(vision["num_channels"]) != 3:
        raise HFCheckpointError(f"{path}: num_channels {vision['num_channels']} is not 3 (RGB)")
    for name, tower in (("text", text), ("vision", vision)):
        if int(tower["hidden_size"]) % int(tower["num_attention_heads"]):
            raise HFCheckpointError(
                f"{path}: {name} hidden_size {tower['hidden_size']} is not divisible by "
                f"num_attention_heads {tower['num_attention_heads']}"
            )
    if int(text["vocab_size"]) < CLIP_BPE_SIZE:
        raise HFCheckpointError(
            f"{path}: vocab_size {text['vocab_size']} is smaller than CLIP's BPE vocabulary "
            f"({CLIP_BPE_SIZE} tokens), which calm tokenizes with"
        )
    eos = text.get("eos_token_id")
    pool = {"pool_type": "argmax"} if eos in (None, LEGACY_EOS_ID) else {
        "pool_type": "eos", "eos_id": int(eos)}
    vision_cfg = {
        "image_size": int(vision["image_size"]),
        "patch_size": int(vision["patch_size"]),
        "width": int(vision["hidden_size"]),
        "layers": int(vision["num_hidden_layers"]),
        "head_width": int(vision["hidden_size"]) // int(vision["num_attention_heads"]),
        "mlp_ratio": _mlp_ratio(vision, "vision", path),
    }
    text_cfg = {
        "context_length": int(text["max_position_embeddings"]),
        "vocab_size": int(text["vocab_size"]),
        "width": int(text["hidden_size"]),
        "heads": int(text["num_attention_heads"]),
        "layers": int(text["num_hidden_layers"]),
        "mlp_ratio": _mlp_ratio(text, "text", path),
        **pool,
    }
    for cfg, tower in ((vision_cfg, vision), (text_cfg, text)):
        norm = _norm_kwargs(tower)
        if norm:
            cfg["norm_kwargs"] = norm
    model_cfg = {
        "embed_dim": int(config.get("projection_dim", 512)),
        "quick_gelu": ACTIVATIONS[vision["hidden_act"]],
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
    }
    return {"model_cfg": model_cfg, "preprocess_cfg": _preprocess(folder)}


def _preprocess(folder: Path) -> dict:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    data = _read_json(path)
    out = {}
    for src, dst in (("image_mean", "mean"), ("image_std", "std")):
        value = data.get(src)
        if value is not None:
            if not (isinstance(value, list) and len(value) == 3):
                raise HFCheckpointError(f"{path}: {src} must be a list of 3 numbers")
            out[dst] = tuple(float(v) for v in value)
    return out


# ---- weights -----------------------------------------------------------------------------------


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise HFCheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The transformers state dict of the folder (single file or shards listed in an index)."""
    folder = check_folder(folder)
    path = weights_file(folder)
    try:
        if path.name.endswith(".index.json"):
            weight_map = _read_json(path).get("weight_map")
            if not isinstance(weight_map, dict):
                raise HFCheckpointError(f"{path}: no 'weight_map' object")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise HFCheckpointError(f"{path} lists shard {shard}, which is missing")
                state.update(_load_one(folder / shard))
            return state
        return _load_one(path)
    except HFCheckpointError:
        raise
    except Exception as exc:  # safetensors / torch raise many types; name the file either way
        raise HFCheckpointError(
            f"cannot read {path}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


def _layers(state: dict, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def _block(take, src: str, dst: str) -> dict[str, torch.Tensor]:
    """One transformer block: q/k/v stacked into in_proj, norms and MLP renamed."""
    out = {}
    for kind in ("weight", "bias"):
        out[f"{dst}.attn.in_proj_{kind}"] = torch.cat(
            [take(f"{src}.self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
        )
        out[f"{dst}.attn.out_proj.{kind}"] = take(f"{src}.self_attn.out_proj.{kind}")
        out[f"{dst}.ln_1.{kind}"] = take(f"{src}.layer_norm1.{kind}")
        out[f"{dst}.ln_2.{kind}"] = take(f"{src}.layer_norm2.{kind}")
        out[f"{dst}.mlp.c_fc.{kind}"] = take(f"{src}.mlp.fc1.{kind}")
        out[f"{dst}.mlp.c_proj.{kind}"] = take(f"{src}.mlp.fc2.{kind}")
    return out


def convert_state_dict(hf: dict[str, torch.Tensor], source: str = "state dict") -> dict:
    """transformers CLIPModel keys -> open_clip CLIP keys; every source weight must be used."""
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise HFCheckpointError(f"{source}: missing weight {key!r} of a CLIPModel")
        used.add(key)
        return hf[key]

    out = {
        "logit_scale": take("logit_scale"),
        "token_embedding.weight": take("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": take("text_model.embeddings.position_embedding.weight"),
        "text_projection": take("text_projection.weight").t().contiguous(),
        "visual.conv1.weight": take("vision_model.embeddings.patch_embedding.weight"),
        "visual.class_embedding": take("vision_model.embeddings.class_embedding"),
        "visual.positional_embedding": take("vision_model.embeddings.position_embedding.weight"),
        "visual.proj": take("visual_projection.weight").t().contiguous(),
    }
    for kind in ("weight", "bias"):
        out[f"ln_final.{kind}"] = take(f"text_model.final_layer_norm.{kind}")
        out[f"visual.ln_pre.{kind}"] = take(f"vision_model.pre_layrnorm.{kind}")
        out[f"visual.ln_post.{kind}"] = take(f"vision_model.post_layernorm.{kind}")
    for src, dst in (("text_model.encoder.layers.", "transformer.resblocks."),
                     ("vision_model.encoder.layers.", "visual.transformer.resblocks.")):
        for i in range(_layers(hf, src)):
            out.update(_block(take, f"{src}{i}", f"{dst}{i}"))
    # position_ids: an index buffer transformers derives; nothing of the network is in it.
    unused = sorted(k for k in set(hf) - used if not k.endswith("position_ids"))
    if unused:
        raise HFCheckpointError(
            f"{source}: weights calm cannot place in a CLIP: {unused[:5]}"
            f"{' ...' if len(unused) > 5 else ''}"
        )
    return out
