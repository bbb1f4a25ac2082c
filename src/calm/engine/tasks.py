"""Task objects: everything that differs between retrieval and captioning, in one place.

A task builds its model and loss, evaluates a split, names the number that selects the best
checkpoint on the validation split, and says what DDP must know about unused parameters. The
training loop, evaluation commands and `model-info` ask the task; nothing else reads `cfg.task`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from calm.config import ConfigError, ExperimentConfig
from calm.config.schema import AnchorConfig, ModelConfig
from calm.data.annotations import SplitAnnotations
from calm.engine.evaluation.anchors import anchor_diagnostics, zero_shot_anchor_diagnostics
from calm.engine.evaluation.captioning import evaluate_captioning
from calm.engine.evaluation.retrieval import evaluate, save_similarity
from calm.engine.evaluation.uncertainty import evaluate_uncertainty, require_vae
from calm.engine.inputs import DataSetup
from calm.model.captioner import CALMCaptioner
from calm.model.factory import MODELS, check_task
from calm.model.losses import (
    CALMLoss,
    captioning_task_loss,
    clamp_logit_scale_,
    retrieval_task_loss,
)
from calm.model.retrieval import CALM
from calm.registry import Registry

TASKS: Registry[Task] = Registry("task")


class Task:
    name = ""
    selection_metric = ""  # what `selection_score` measures, as written into test metrics
    generates_captions = False
    # DDP must search for parameters that get no gradient in a step (captioning never uses CLIP's
    # logit scale); searching costs a graph traversal per step, so only tasks that need it do.
    find_unused_parameters = False

    def build_model(self, cfg: ModelConfig) -> nn.Module:
        raise NotImplementedError

    def build_loss(self, cfg: ExperimentConfig) -> CALMLoss:
        raise NotImplementedError

    def text_length(self, cfg: ExperimentConfig) -> int:
        return cfg.data.text_length

    def evaluate(self, model, ann: SplitAnnotations, data: DataSetup, cfg: ExperimentConfig,
                 device: torch.device, progress: bool = False, save_sim: str | Path | None = None,
                 score=None, uncertainty: bool = False,
                 anchor_prompts: AnchorConfig | None = None) -> dict:
        """Metrics of one split. `save_sim` writes the score matrix; `score` overrides the
        config's ranking score; `uncertainty` adds the evaluation of the VAE's sigma;
        `anchor_prompts` measures a model trained without anchors with these prompts encoded by
        its own text encoder (zero-shot anchor diagnostics), in the same pass."""
        raise NotImplementedError

    def check_uncertainty(self, model) -> None:
        """Raises unless this task and model can evaluate uncertainty (before any encoding)."""
        raise ValueError(f"--uncertainty applies to retrieval checkpoints; this one is {self.name}")

    def selection_score(self, metrics: dict) -> float:
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        """Called after each completed optimizer step: the alignment objective's schedule
        (KL warm-up) advances, a learned anchor scale is clamped back within its bound; tasks
        add their own parameter constraints."""
        model.alignment.step_done()
        model.after_optimizer_step()


@TASKS.register("retrieval")
class RetrievalTask(Task):
    name = "retrieval"
    selection_metric = "t2v R@1 + v2t R@1"

    def build_model(self, cfg: ModelConfig) -> CALM:
        return MODELS.build(self.name, cfg)

    def build_loss(self, cfg: ExperimentConfig) -> CALMLoss:
        return CALMLoss(partial(retrieval_task_loss, same_video=cfg.train.same_video))

    def evaluate(self, model, ann, data, cfg, device, progress=False, save_sim=None, score=None,
                 uncertainty=False, anchor_prompts=None):
        if uncertainty:
            self.check_uncertainty(model)
        with model.evaluation_anchors():
            metrics, sim, emb = evaluate(model, ann, data, score or cfg.model.score,
                                         cfg.train.eval_batch_size, device, cfg.train.precision,
                                         progress)
            if save_sim:
                save_similarity(save_sim, sim, emb)
            if model.has_anchors:
                source = "trained anchors and VAE" if model.has_vae else "trained anchors"
                metrics["anchors"] = {"source": source,
                                      **anchor_diagnostics(model, emb, device, ann.truth)}
            elif anchor_prompts is not None:
                metrics["anchors"] = {
                    "source": "zero-shot anchors (no e_k, no VAE)",
                    **zero_shot_anchor_diagnostics(model, anchor_prompts, emb, device, ann.truth)}
            if uncertainty:
                metrics["uncertainty"] = evaluate_uncertainty(model, emb, sim, device,
                                                             ann.truth)
        return metrics

    def check_uncertainty(self, model) -> None:
        require_vae(model)

    def selection_score(self, metrics: dict) -> float:
        return float(metrics["t2v"]["R@1"] + metrics["v2t"]["R@1"])

    def after_step(self, model: CALM) -> None:
        super().after_step(model)
        clamp_logit_scale_(model.logit_scale)


@TASKS.register("captioning")
class CaptioningTask(Task):
    name = "captioning"
    selection_metric = "CIDEr"
    generates_captions = True
    find_unused_parameters = True

    def build_model(self, cfg: ModelConfig) -> CALMCaptioner:
        return MODELS.build(self.name, cfg)

    def build_loss(self, cfg: ExperimentConfig) -> CALMLoss:
        return CALMLoss(captioning_task_loss)

    def text_length(self, cfg: ExperimentConfig) -> int:
        """Caption tokens must fit the decoder's positions."""
        return min(cfg.data.text_length, cfg.model.caption.max_length)

    def evaluate(self, model, ann, data, cfg, device, progress=False, save_sim=None, score=None,
                 uncertainty=False, anchor_prompts=None):
        if uncertainty:
            self.check_uncertainty(model)
        if save_sim:
            raise ValueError("--save-sim applies to retrieval checkpoints; this one is captioning")
        return evaluate_captioning(model, ann, data, cfg.train.eval_batch_size, device,
                                   cfg.train.precision, progress)

    def selection_score(self, metrics: dict) -> float:
        return float(metrics["CIDEr"])


def task_for(cfg: ExperimentConfig) -> Task:
    """The task object of `cfg.task`; an unregistered name is a ConfigError listing the tasks."""
    check_task(cfg.task)
    if cfg.task not in TASKS:
        raise ConfigError(f"task: {cfg.task!r} has a model but no task object; registered "
                          f"tasks: {TASKS.names()}")
    return TASKS.build(cfg.task)
