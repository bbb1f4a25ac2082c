"""calm: CALM (class-anchor probability modelling) for video-text representation learning.

The public API, importable from `calm` directly:

    import calm
    model = calm.load("runs/x/checkpoints/best.safetensors")   # or a plain CLIP checkpoint
    videos = model.encode_videos(["a.mp4", "b.mp4"])
    scores = model.score(["a dog runs"], videos)

    cfg = calm.load_config("configs/msrvtt.yaml", ["train.lr=1e-5"])
    calm.train(cfg, "runs/msrvtt")
    calm.evaluate_checkpoint(ckpt, "msrvtt", "ann/", "videos/")

Names are resolved on first use, so `import calm` (and `calm --help`) stays fast: torch and
open_clip load only when a model is touched.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "load": ("calm.api", "load"),
    "CalmModel": ("calm.api", "CalmModel"),
    "EncodedVideos": ("calm.api", "EncodedVideos"),
    "CapabilityError": ("calm.api", "CapabilityError"),
    "ExperimentConfig": ("calm.config", "ExperimentConfig"),
    "ConfigError": ("calm.config", "ConfigError"),
    "load_config": ("calm.config", "load"),
    "train": ("calm.engine.train", "train"),
    "evaluate_checkpoint": ("calm.engine.drivers", "evaluate_checkpoint"),
    "load_checkpoint": ("calm.engine.models", "open_model"),
    "open_model": ("calm.engine.models", "open_model"),
    "save_checkpoint": ("calm.engine.checkpoint", "save_model"),
    "task_for": ("calm.engine.tasks", "task_for"),
    "CALM": ("calm.model.retrieval", "CALM"),
    "CALMCaptioner": ("calm.model.captioner", "CALMCaptioner"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calm' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
