"""Evaluating a saved checkpoint on any benchmark split (in-domain or out-of-domain)."""

from __future__ import annotations

import dataclasses

from calm.config import ExperimentConfig, apply_overrides, from_dict, to_dict
from calm.data.benchmarks.common import default_text_length
from calm.engine.checkpoint import load_model
from calm.engine.inputs import data_setup
from calm.engine.runtime import pick_device
from calm.engine.tasks import task_for


def target_config(
    cfg: ExperimentConfig, dataset: str, annotations, videos, overrides=(), options=None
) -> ExperimentConfig:
    """The checkpoint's config pointed at another benchmark; dataset options do not carry over.

    On another benchmark, texts get at least that benchmark's own length (DiDeMo's paragraphs
    need 64 tokens); on the training benchmark the trained length stays, so the numbers equal
    the ones `calm train` reported.
    """
    data = to_dict(cfg)
    length = data["data"]["text_length"]
    if dataset != cfg.data.dataset:
        length = max(length, default_text_length(dataset))
    data["data"].update(dataset=dataset, annotations=str(annotations), videos=str(videos),
                        options=dict(options or {}), text_length=length)
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
) -> dict:
    """Metrics of `checkpoint` on one split of any benchmark.

    `uncertainty`: also measure the VAE's sigma (an `"uncertainty"` block; retrieval models with
    a VAE only, refused before any encoding). `loaded`: a `(model, config, meta)` already built
    (e.g. zero_shot.model_from_config); `options`: the target dataset's loader options (a
    checkpoint's own never carry over).
    """
    model, cfg, meta = loaded or load_model(checkpoint)
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
                           save_sim=save_sim, score=score, uncertainty=uncertainty)
    result.update(task=cfg.task, dataset=dataset, split=split, checkpoint=str(checkpoint))
    return result
