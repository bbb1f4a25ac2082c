"""Evaluating a saved checkpoint on any benchmark split (in-domain or out-of-domain)."""

from __future__ import annotations

import dataclasses

from calm.config import ExperimentConfig, apply_overrides, from_dict, to_dict
from calm.engine.checkpoint import load_model
from calm.engine.evaluation.retrieval import evaluate, save_similarity
from calm.engine.inputs import data_setup
from calm.engine.runtime import pick_device
from calm.engine.tasks import evaluate_captioning, text_length


def target_config(
    cfg: ExperimentConfig, dataset: str, annotations, videos, overrides=()
) -> ExperimentConfig:
    """The checkpoint's config pointed at another benchmark; dataset options do not carry over."""
    data = to_dict(cfg)
    data["data"].update(
        dataset=dataset, annotations=str(annotations), videos=str(videos), options={}
    )
    if dataset == "didemo" and data["data"]["text_length"] < 64 and data["task"] == "retrieval":
        data["data"]["text_length"] = 64
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
) -> dict:
    model, cfg, meta = loaded or load_model(checkpoint)
    cfg = target_config(cfg, dataset, annotations, videos, overrides)
    device = pick_device(cfg.train.device)
    model = model.to(device)
    score = cfg.model.score
    if score_mode is not None:
        score = dataclasses.replace(score, mode=score_mode)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                      text_length(cfg))
    ann = data.split(split)
    if cfg.task == "captioning":
        if save_sim:
            raise ValueError("--save-sim applies to retrieval checkpoints; this one is captioning")
        result = evaluate_captioning(model, ann, data, cfg.train.eval_batch_size, device,
                                     cfg.train.precision, progress)
    else:
        result, sim, emb = evaluate(model, ann, data, score, cfg.train.eval_batch_size, device,
                                    cfg.train.precision, progress)
        if save_sim:
            save_similarity(save_sim, sim, emb)
    result.update(task=cfg.task, dataset=dataset, split=split, checkpoint=str(checkpoint))
    return result
