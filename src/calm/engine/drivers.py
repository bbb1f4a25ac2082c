"""Evaluation drivers: a model opened from a path (or built from a config) evaluated on any
benchmark split, in-domain or out-of-domain, and the out-of-domain matrix of several checkpoints.

They sit above the task objects (`calm.engine.tasks`), which do the evaluating: a driver opens
the model (`calm.engine.models.open_model`), points its config at the target benchmark, builds
the inputs and asks the task. Nothing below this module imports it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from calm.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, to_dict
from calm.config.loader import check_required, located, read_yaml
from calm.data.benchmarks.common import default_text_length
from calm.data.errors import DataError
from calm.engine.inputs import data_setup
from calm.engine.models import model_from_config, open_model
from calm.engine.runtime import pick_device
from calm.engine.tasks import task_for


def _same_path(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _same_folder(a, b) -> bool:
    """Two video folders are the same (two unset ones too: the annotations name the files)."""
    return (a is None and b is None) or _same_path(a, b)


def target_config(
    cfg: ExperimentConfig, dataset: str, annotations, videos, overrides=(), options=None
) -> ExperimentConfig:
    """The checkpoint's config pointed at another benchmark; dataset options do not carry over.

    On another benchmark, texts get at least that benchmark's own length (DiDeMo's paragraphs
    need 64 tokens); on the training benchmark the trained length stays, so the numbers equal
    the ones `calm train` reported. A frame cache serves the video folder it was written from,
    so it stays only when the videos do (`--set data.frame_cache=...` names another's).
    """
    data = to_dict(cfg)
    length = data["data"]["text_length"]
    if dataset != cfg.data.dataset:
        length = max(length, default_text_length(dataset))
    same_videos = _same_folder(videos, cfg.data.videos)
    data["data"].update(dataset=dataset, annotations=str(annotations), videos=str(videos),
                        options=dict(options or {}), text_length=length,
                        frame_cache=cfg.data.frame_cache if same_videos else None)
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def evaluate_checkpoint(
    checkpoint,
    dataset: str,
    annotations,
    videos,
    split: str = "test",
    overrides=(),
    score_mode: str | None = None,
    save_sim=None,
    progress: bool = False,
    loaded=None,
    uncertainty: bool = False,
    options=None,
    anchor_prompts=None,
) -> dict:
    """Metrics of `checkpoint` on one split of any benchmark.

    `uncertainty`: also measure the VAE's sigma (an `"uncertainty"` block; retrieval models with
    a VAE only, refused before any encoding). `loaded`: a `(model, config, meta)` already built
    (e.g. `calm.engine.models.model_from_config`); `options`: the target dataset's loader options (a
    checkpoint's own never carry over); `anchor_prompts`: the `model.anchors` section whose
    prompts measure a model trained without anchors (zero-shot anchor diagnostics).
    """
    model, cfg, meta = loaded or open_model(checkpoint)
    cfg = target_config(cfg, dataset, annotations, videos, overrides, options)
    task = task_for(cfg)
    if uncertainty:
        task.check_uncertainty(model)
    device = pick_device(cfg.train.device)
    model = model.to(device)
    score = cfg.model.score
    if score_mode is not None:
        score = dataclasses.replace(score, mode=score_mode)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                      task.text_length(cfg))
    result = task.evaluate(model, data.split(split), data, cfg, device, progress,
                           save_sim=save_sim, score=score, uncertainty=uncertainty,
                           anchor_prompts=anchor_prompts)
    result.update(task=cfg.task, dataset=dataset, split=split, checkpoint=str(checkpoint))
    return result


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


@dataclass(frozen=True)
class Target:
    name: str
    dataset: str
    annotations: str
    videos: str
    split: str = "test"

    @classmethod
    def parse(cls, spec: str) -> Target:
        """NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]"""
        if "=" not in spec:
            raise DataError(f"target {spec!r}: expected NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]")
        name, rest = spec.split("=", 1)
        parts = rest.split(":")
        if len(parts) not in (3, 4):
            raise DataError(f"target {spec!r}: expected NAME=DATASET:ANNOTATIONS:VIDEOS[:SPLIT]")
        return cls(name, *parts)


def synthetic_targets(root: str | Path, split: str = "test") -> list[Target]:
    """Every domain of a `calm synth` folder, read from its manifest."""
    manifest_path = Path(root) / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path} does not exist; generate the benchmark with `calm synth`")
    manifest = json.loads(manifest_path.read_text())
    targets = []
    for domain in manifest["domains"]:
        base = Path(root) / domain["name"]
        targets.append(
            Target(
                domain["name"],
                domain["loader"],
                str(base / "annotations"),
                str(base / "videos"),
                split,
            )
        )
    return targets


def ood_matrix(checkpoints: list[tuple[str, str]], targets: list[Target], progress=False,
               anchor_prompts=None, in_domain_uncertainty: bool = False) -> dict:
    """results[checkpoint label][target name] = metrics, with `in_domain` marking the training
    data. `anchor_prompts` adds zero-shot anchor diagnostics for models without anchors;
    `in_domain_uncertainty` adds the uncertainty block on the training data for models with a
    VAE: everything the demo reports comes from one evaluation pass per model and domain."""
    rows = {}
    for label, path in checkpoints:
        loaded = open_model(path)
        trained_on = loaded.cfg.data.annotations
        row = {}
        for target in targets:
            in_domain = _same_path(trained_on, target.annotations)
            result = evaluate_checkpoint(
                path, target.dataset, target.annotations, target.videos, target.split,
                progress=progress, loaded=loaded, anchor_prompts=anchor_prompts,
                uncertainty=in_domain_uncertainty and in_domain and loaded.model.has_vae)
            result["in_domain"] = in_domain
            row[target.name] = result
        rows[label] = row
    return {"targets": [t.__dict__ for t in targets], "results": rows}
