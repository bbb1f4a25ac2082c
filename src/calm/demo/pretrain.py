"""A pretrained starting point for the synthetic world: a small CLIP trained on image-caption pairs.

Real CALM fine-tunes OpenAI's CLIP, whose text encoder already places "The content of <label>"
prompts meaningfully. The toy world has no such model, so calm trains one on the synthetic
benchmark's image-caption split and caches it, keyed by the data and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from calm.data.errors import DataError
from calm.engine.checkpoint import atomic_write
from calm.engine.optim import cosine_with_warmup
from calm.engine.runtime import seed_everything
from calm.model.checkpoints import load_clip
from calm.model.losses import clamp_logit_scale_, symmetric_info_nce


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "calm-small"  # 32 px, 4-px patches: small shapes survive, ~0.1 s a step on 2 cores
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1
    seed: int = 0


def default_cache_dir() -> Path:
    if os.environ.get("CALM_CACHE"):
        return Path(os.environ["CALM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "calm"


def load_image_captions(root: str | Path) -> tuple[np.ndarray, list[str]]:
    """The `pretrain/` split of a `calm synth` folder: images.npy (uint8 N x H x W x 3) + captions.json."""
    folder = Path(root) / "pretrain"
    images_path, captions_path = folder / "images.npy", folder / "captions.json"
    for path in (images_path, captions_path):
        if not path.is_file():
            raise DataError(f"{path} does not exist; generate the benchmark with `calm synth`")
    images = np.load(images_path)
    captions = json.loads(captions_path.read_text())
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 N x H x W x 3, got {images.dtype} {images.shape}")
    if len(captions) != len(images):
        raise DataError(f"{captions_path}: {len(captions)} captions for {len(images)} images")
    return images, captions


def cache_key(root: str | Path, cfg: PretrainConfig) -> str:
    digest = hashlib.sha256()
    for name in ("images.npy", "captions.json"):
        path = Path(root) / "pretrain" / name
        stat = path.stat()
        digest.update(f"{name}:{stat.st_size}".encode())
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
    digest.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _to_tensor(images: np.ndarray, size: int, mean, std) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean) / std


def pretrain_clip(root: str | Path, out: str | Path, cfg: PretrainConfig, progress=True) -> dict:
    """Trains a CLIP of `cfg.model` contrastively on the image-caption split; writes safetensors."""
    import open_clip

    from calm.model.backbone import CLIPBackbone

    seed_everything(cfg.seed)
    images, captions = load_image_captions(root)
    clip = load_clip(cfg.model)
    backbone = CLIPBackbone(clip, open_clip.get_tokenizer("ViT-B-32"))
    pre = backbone.preprocess
    pixels = _to_tensor(images, pre.image_size, pre.mean, pre.std)
    tokens = backbone.tokenize(captions)
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = cosine_with_warmup(optimizer, cfg.steps, cfg.warmup)
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(captions)
    batch = min(cfg.batch_size, n)
    losses, started = [], time.perf_counter()
    clip.train()
    bar = tqdm(range(cfg.steps), desc="pretrain toy CLIP", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randperm(n, generator=g)[:batch]
        img = backbone.clip.encode_image(pixels[idx])
        txt = backbone.encode_text(tokens[idx])
        sims = F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).t()
        loss = symmetric_info_nce(sims, clip.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        clamp_logit_scale_(clip.logit_scale)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    state = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    meta = {"model": cfg.model, "steps": str(cfg.steps), "final_loss": f"{np.mean(losses[-20:]):.4f}"}
    atomic_write(Path(out), lambda tmp: save_file(state, tmp, metadata=meta))
    return {"path": str(out), "first_loss": losses[0], "final_loss": float(np.mean(losses[-20:])),
            "seconds": time.perf_counter() - started, "pairs": n}


def pretrained_clip(root: str | Path, cfg: PretrainConfig, cache_dir: str | Path | None = None,
                    progress=True) -> tuple[Path, dict]:
    """The cached toy CLIP for this data and settings, trained first if it is not there yet."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"toyclip-{cfg.model}-{cache_key(root, cfg)}.safetensors"
    if path.is_file():
        return path, {"path": str(path), "cached": True}
    info = pretrain_clip(root, path, cfg, progress)
    info["cached"] = False
    return path, info
